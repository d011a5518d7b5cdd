//! Desired tier vs the objects in the cluster -> the operations that make them equal (pure).
//!
//! Every object of the `firewall` tier is either produced by the controller (kept, updated or
//! restored) or removed: a stale one (the controller's own, no longer produced) and a foreign
//! one (hand-written, or the controller's own edited by someone) alike. Applying a plan and
//! planning again yields no operation.

use std::collections::BTreeMap;

use super::desired::{
    Desired, DesiredObject, in_firewall_tier, owned, recorded_hash, rules_involved, spec_hash,
};
use crate::policy::resource::ZonePolicy;

/// Why an operation is needed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum ChangeKind {
    /// Produced, not in the cluster.
    Create,
    /// The controller's own object, untouched, whose content the firewall changed.
    Update,
    /// Drift: the controller's object was edited (its spec no longer matches its hash), or an
    /// object under a produced name was not written by the controller. Re-applied.
    Restore,
    /// The controller's own object, no longer produced (a zone or rule went away).
    DeleteStale,
    /// Drift: an object in the tier that the controller did not produce.
    DeleteForeign,
}

impl ChangeKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ChangeKind::Create => "create",
            ChangeKind::Update => "update",
            ChangeKind::Restore => "restore",
            ChangeKind::DeleteStale => "delete-stale",
            ChangeKind::DeleteForeign => "delete-foreign",
        }
    }

    pub fn is_delete(self) -> bool {
        matches!(self, ChangeKind::DeleteStale | ChangeKind::DeleteForeign)
    }

    /// Drift remediation (as opposed to following the firewall).
    pub fn is_remediation(self) -> bool {
        matches!(self, ChangeKind::Restore | ChangeKind::DeleteForeign)
    }
}

/// The object as it is in the cluster, as far as a delete needs it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LiveRef {
    pub uid: Option<String>,
    pub resource_version: Option<String>,
    /// Managers of the object's fields other than the controller (who wrote the drift).
    pub other_managers: Vec<String>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Change {
    pub kind: ChangeKind,
    pub name: String,
    pub zone: String,
    /// Firewall rules whose translation this operation adds, removes or changes.
    pub rules: Vec<String>,
    /// Spec hash in the cluster before (computed from the live spec), when it exists.
    pub live_hash: Option<String>,
    /// Spec hash after, for applies.
    pub desired_hash: Option<String>,
    pub live: Option<LiveRef>,
}

fn live_ref(policy: &ZonePolicy) -> LiveRef {
    let other_managers = policy
        .metadata
        .managed_fields
        .iter()
        .flatten()
        .filter_map(|entry| entry.manager.clone())
        .filter(|manager| manager != super::desired::FIELD_MANAGER)
        .collect();
    LiveRef {
        uid: policy.metadata.uid.clone(),
        resource_version: policy.metadata.resource_version.clone(),
        other_managers,
    }
}

fn labels_hold(desired: &DesiredObject, live: &ZonePolicy) -> bool {
    let want = desired.policy.metadata.labels.iter().flatten();
    let have = live.metadata.labels.as_ref();
    want.into_iter()
        .all(|(key, value)| have.and_then(|labels| labels.get(key)) == Some(value))
}

/// The operations, applies in name order first, then deletes in name order.
pub fn plan(desired: &Desired, live: &BTreeMap<String, ZonePolicy>) -> Vec<Change> {
    let mut applies = Vec::new();
    for (name, object) in &desired.objects {
        let change = |kind, current: Option<&ZonePolicy>| Change {
            kind,
            name: name.clone(),
            zone: object.policy.spec.zone.clone(),
            rules: rules_involved(current.map(|c| &c.spec), Some(&object.policy.spec)),
            live_hash: current.map(|c| spec_hash(&c.spec)),
            desired_hash: Some(object.hash.clone()),
            live: current.map(live_ref),
        };
        let Some(current) = live.get(name) else {
            applies.push(change(ChangeKind::Create, None));
            continue;
        };
        let recorded = recorded_hash(current);
        // Equality of the specs themselves, not of hashes: an edit cannot hide behind a
        // forged annotation. (Equal specs and the desired hash recorded mean the recorded
        // hash is the live spec's: no need to hash megabytes of rules on every reconcile.)
        if owned(current)
            && recorded == Some(object.hash.as_str())
            && current.spec == object.policy.spec
            && labels_hold(object, current)
        {
            continue;
        }
        let untouched = owned(current) && recorded == Some(spec_hash(&current.spec).as_str());
        let kind = if untouched {
            ChangeKind::Update
        } else {
            ChangeKind::Restore
        };
        applies.push(change(kind, Some(current)));
    }
    let mut deletes = Vec::new();
    for (name, current) in live {
        if desired.objects.contains_key(name) || !in_firewall_tier(current) {
            continue;
        }
        let untouched =
            owned(current) && recorded_hash(current) == Some(spec_hash(&current.spec).as_str());
        deletes.push(Change {
            kind: if untouched {
                ChangeKind::DeleteStale
            } else {
                ChangeKind::DeleteForeign
            },
            name: name.clone(),
            zone: current.spec.zone.clone(),
            rules: rules_involved(Some(&current.spec), None),
            live_hash: Some(spec_hash(&current.spec)),
            desired_hash: None,
            live: Some(live_ref(current)),
        });
    }
    applies.extend(deletes);
    applies
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::firewall::panos;
    use crate::policy::resource::Tier;
    use crate::translate::{TranslateOptions, translate};

    const CONFIG: &str = r#"<config><devices><entry name="localhost.localdomain"><vsys><entry name="vsys1">
      <zone><entry name="trust"/><entry name="dmz"/></zone>
      <rulebase><security><rules>
        <entry name="web"><from><member>trust</member></from><to><member>dmz</member></to>
          <source><member>any</member></source><destination><member>any</member></destination>
          <application><member>any</member></application><service><member>any</member></service>
          <action>allow</action></entry>
      </rules></security></rulebase></entry></vsys></entry></devices></config>"#;

    fn desired() -> Desired {
        let config = panos::parse_config(CONFIG, "test.xml", panos::Limits::default()).unwrap();
        let resolved = panos::resolve(&config, &panos::ResolveOptions::default()).unwrap();
        let translation = translate(&resolved, &TranslateOptions::default()).unwrap();
        Desired::from_translation(translation, "test.xml".into(), None, None, 0)
    }

    /// The cluster after applying `desired` exactly.
    fn applied(desired: &Desired) -> BTreeMap<String, ZonePolicy> {
        desired
            .objects
            .iter()
            .map(|(name, object)| (name.clone(), object.policy.clone()))
            .collect()
    }

    #[test]
    fn applying_the_same_desired_state_twice_plans_nothing() {
        let desired = desired();
        let first = plan(&desired, &BTreeMap::new());
        assert_eq!(first.len(), desired.objects.len());
        assert!(first.iter().all(|change| change.kind == ChangeKind::Create));
        assert!(plan(&desired, &applied(&desired)).is_empty());
    }

    #[test]
    fn edits_are_restored_and_foreign_objects_removed_other_tiers_left_alone() {
        let desired = desired();
        let mut live = applied(&desired);
        let dmz = live
            .keys()
            .find(|name| name.starts_with("firewall-dmz"))
            .unwrap()
            .clone();
        // An edit that keeps the annotation: the spec no longer matches its hash.
        live.get_mut(&dmz).unwrap().spec.ingress.clear();
        // A hand-written object in the tier, and one in another tier.
        let mut foreign = desired.objects[&dmz].policy.clone();
        foreign.metadata = Default::default();
        foreign.metadata.name = Some("hand-written".into());
        live.insert("hand-written".into(), foreign.clone());
        let mut platform = foreign;
        platform.metadata.name = Some("platform-policy".into());
        platform.spec.tier = Tier::Platform;
        live.insert("platform-policy".into(), platform);

        let changes = plan(&desired, &live);
        let kinds: Vec<(ChangeKind, &str)> = changes
            .iter()
            .map(|change| (change.kind, change.name.as_str()))
            .collect();
        assert_eq!(
            kinds,
            [
                (ChangeKind::Restore, dmz.as_str()),
                (ChangeKind::DeleteForeign, "hand-written")
            ]
        );
        // Every rule with an ingress entry in the dmz object was touched by the edit.
        assert_eq!(
            changes[0].rules,
            [
                "vsys1/default/interzone-default",
                "vsys1/default/intrazone-default",
                "vsys1/local/web"
            ]
        );
    }

    #[test]
    fn a_forged_hash_does_not_hide_an_edit() {
        let desired = desired();
        let mut live = applied(&desired);
        let object = live.values_mut().next().unwrap();
        object.spec.egress.clear();
        let forged = spec_hash(&object.spec);
        object
            .metadata
            .annotations
            .as_mut()
            .unwrap()
            .insert(super::super::desired::SPEC_HASH_ANNOTATION.into(), forged);
        let changes = plan(&desired, &live);
        assert_eq!(changes.len(), 1);
        // Looks like an untouched object of an older commit: re-applied all the same.
        assert!(matches!(
            changes[0].kind,
            ChangeKind::Update | ChangeKind::Restore
        ));
    }

    #[test]
    fn objects_no_longer_produced_are_stale() {
        let desired = desired();
        let mut live = applied(&desired);
        let mut old = live.values().next().unwrap().clone();
        old.metadata.name = Some("firewall-gone-00000000".into());
        live.insert("firewall-gone-00000000".into(), old);
        let changes = plan(&desired, &live);
        assert_eq!(changes.len(), 1);
        assert_eq!(changes[0].kind, ChangeKind::DeleteStale);
    }
}
