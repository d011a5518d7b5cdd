//! The controller's view of the `firewall` tier in the cluster, fed by a watch (pure).
//!
//! Drift remediation deletes what this view holds and the firewall does not produce, so the
//! view must never be partial: [`TierCache::snapshot`] answers only once a complete list has
//! arrived, and not while a re-list (after a watch reset) is in progress. During a re-list the
//! objects arrive into a buffer that replaces the view in one step when the list is complete.

use std::collections::BTreeMap;

use kube::runtime::watcher::Event;

use crate::policy::resource::ZonePolicy;

#[derive(Debug, Default)]
pub struct TierCache {
    objects: BTreeMap<String, ZonePolicy>,
    /// Objects of a list in progress.
    listing: Option<BTreeMap<String, ZonePolicy>>,
    /// A complete list has arrived at least once.
    listed: bool,
    /// Complete lists so far (the first one and every re-list).
    pub lists: u64,
}

fn name(policy: &ZonePolicy) -> String {
    policy.metadata.name.clone().unwrap_or_default()
}

/// Resource versions are opaque to clients; the API server's are integers in practice, which
/// is the only case where an older event can be told from a newer write and ignored.
fn older(candidate: &ZonePolicy, than: &ZonePolicy) -> bool {
    let version = |p: &ZonePolicy| {
        p.metadata
            .resource_version
            .as_deref()
            .and_then(|v| v.parse::<u64>().ok())
    };
    matches!((version(candidate), version(than)), (Some(a), Some(b)) if a < b)
}

impl TierCache {
    pub fn new() -> Self {
        Self::default()
    }

    /// Applies one watch event.
    pub fn on_event(&mut self, event: Event<ZonePolicy>) {
        match event {
            Event::Init => self.listing = Some(BTreeMap::new()),
            Event::InitApply(policy) => {
                self.listing
                    .get_or_insert_with(BTreeMap::new)
                    .insert(name(&policy), policy);
            }
            Event::InitDone => {
                if let Some(listed) = self.listing.take() {
                    self.objects = listed;
                }
                self.listed = true;
                self.lists += 1;
            }
            Event::Apply(policy) => self.record_applied(policy),
            Event::Delete(policy) => {
                let key = name(&policy);
                if self
                    .objects
                    .get(&key)
                    .is_none_or(|current| !older(&policy, current))
                {
                    self.objects.remove(&key);
                }
            }
        }
    }

    /// Records an object the controller wrote (or a watch reported), unless the view already
    /// holds a newer version of it.
    pub fn record_applied(&mut self, policy: ZonePolicy) {
        let key = name(&policy);
        if self
            .objects
            .get(&key)
            .is_none_or(|current| !older(&policy, current))
        {
            self.objects.insert(key, policy);
        }
    }

    /// Records an object the controller deleted.
    pub fn record_deleted(&mut self, name: &str) {
        self.objects.remove(name);
    }

    /// Whether a complete view exists now.
    pub fn ready(&self) -> bool {
        self.listed && self.listing.is_none()
    }

    /// Every object, when the view is complete; `None` before the first complete list and
    /// during a re-list.
    pub fn snapshot(&self) -> Option<BTreeMap<String, ZonePolicy>> {
        self.view().cloned()
    }

    /// The complete view without copying it (a large tier holds tens of MiB of rules).
    pub fn view(&self) -> Option<&BTreeMap<String, ZonePolicy>> {
        self.ready().then_some(&self.objects)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::resource::{Mode, Tier, ZonePolicySpec};

    fn policy(name: &str, version: &str) -> ZonePolicy {
        let mut policy = ZonePolicy::new(
            name,
            ZonePolicySpec {
                tier: Tier::Firewall,
                order: 1,
                mode: Mode::Enforce,
                zone: "dmz".into(),
                part: None,
                provenance: None,
                egress: vec![],
                ingress: vec![],
                address_sets: Default::default(),
            },
        );
        policy.metadata.resource_version = Some(version.into());
        policy
    }

    #[test]
    fn no_snapshot_before_the_first_complete_list() {
        let mut cache = TierCache::new();
        assert!(cache.snapshot().is_none());
        cache.on_event(Event::Init);
        cache.on_event(Event::InitApply(policy("a", "1")));
        assert!(cache.snapshot().is_none(), "partial list must not be used");
        cache.on_event(Event::InitDone);
        assert_eq!(cache.snapshot().unwrap().len(), 1);
    }

    #[test]
    fn a_relist_keeps_the_old_view_hidden_until_complete() {
        let mut cache = TierCache::new();
        cache.on_event(Event::Init);
        cache.on_event(Event::InitApply(policy("a", "1")));
        cache.on_event(Event::InitApply(policy("b", "2")));
        cache.on_event(Event::InitDone);
        // Watch reset: the re-list has delivered only "a" so far.
        cache.on_event(Event::Init);
        cache.on_event(Event::InitApply(policy("a", "3")));
        assert!(cache.snapshot().is_none());
        cache.on_event(Event::InitApply(policy("b", "3")));
        cache.on_event(Event::InitDone);
        let snapshot = cache.snapshot().unwrap();
        assert_eq!(snapshot.keys().collect::<Vec<_>>(), ["a", "b"]);
        assert_eq!(cache.lists, 2);
    }

    #[test]
    fn older_events_do_not_undo_newer_writes() {
        let mut cache = TierCache::new();
        cache.on_event(Event::Init);
        cache.on_event(Event::InitDone);
        cache.record_applied(policy("a", "10"));
        cache.on_event(Event::Apply(policy("a", "9")));
        assert_eq!(
            cache.snapshot().unwrap()["a"]
                .metadata
                .resource_version
                .as_deref(),
            Some("10")
        );
        cache.on_event(Event::Delete(policy("a", "9")));
        assert!(cache.snapshot().unwrap().contains_key("a"));
        cache.on_event(Event::Delete(policy("a", "11")));
        assert!(cache.snapshot().unwrap().is_empty());
    }
}
