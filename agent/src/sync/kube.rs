//! The Kubernetes target: server-side apply of the `firewall` tier (field manager
//! `zonewall-sync`), deletes with preconditions, a watch that keeps [`TierCache`] current,
//! and an Event per operation.

use std::sync::{Arc, Mutex};

use futures::StreamExt as _;
use k8s_openapi::api::core::v1::ObjectReference;
use kube::api::{Api, DeleteParams, Patch, PatchParams, Preconditions};
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use kube::runtime::{WatchStreamExt as _, watcher};
use kube::{Client, Resource as _};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

use super::cache::TierCache;
use super::desired::{CommitInfo, DesiredObject, FIELD_MANAGER};
use super::plan::{Change, ChangeKind};
use crate::policy::resource::ZonePolicy;

/// Longest Event note the API server accepts is 1 kB.
const MAX_NOTE_BYTES: usize = 1000;

#[derive(Debug, thiserror::Error)]
pub enum KubeError {
    #[error(
        "cannot {op} ZonePolicy {name}: {source}; check that the ZonePolicy CRD is installed (`zonewall crd | kubectl apply -f -`) and that this ServiceAccount may write zonepolicies"
    )]
    Write {
        op: &'static str,
        name: String,
        #[source]
        source: kube::Error,
    },
}

/// The cluster side of the controller. Cheap to clone.
#[derive(Clone)]
pub struct KubeTarget {
    api: Api<ZonePolicy>,
    recorder: Arc<Recorder>,
    cache: Arc<Mutex<TierCache>>,
    /// Woken on every watch event, so drift is handled without waiting for the interval.
    pub changed: Arc<Notify>,
    metrics: Option<crate::metrics::SyncMetrics>,
}

impl KubeTarget {
    pub fn new(client: Client) -> Self {
        let reporter = Reporter {
            controller: FIELD_MANAGER.to_string(),
            instance: std::env::var("POD_NAME").ok(),
        };
        KubeTarget {
            api: Api::all(client.clone()),
            recorder: Arc::new(Recorder::new(client, reporter)),
            cache: Arc::new(Mutex::new(TierCache::new())),
            changed: Arc::new(Notify::new()),
            metrics: None,
        }
    }

    /// Counts watch failures in the sync metrics.
    pub fn set_metrics(&mut self, metrics: crate::metrics::SyncMetrics) {
        self.metrics = Some(metrics);
    }

    fn with_cache<T>(&self, f: impl FnOnce(&mut TierCache) -> T) -> T {
        let mut cache = self
            .cache
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        f(&mut cache)
    }

    /// Every ZonePolicy in the cluster, once a complete list has arrived (see [`TierCache`]).
    pub fn snapshot(&self) -> Option<std::collections::BTreeMap<String, ZonePolicy>> {
        self.with_cache(|cache| cache.snapshot())
    }

    /// Whether a complete view exists.
    pub fn ready(&self) -> bool {
        self.with_cache(|cache| cache.ready())
    }

    /// The plan against the complete view, computed in place (`None`: no complete view yet).
    pub fn plan(&self, desired: &super::desired::Desired) -> Option<Vec<Change>> {
        self.with_cache(|cache| cache.view().map(|live| super::plan::plan(desired, live)))
    }

    /// Watches every ZonePolicy (not only labelled ones: hand-written objects carry none)
    /// until `cancel`, feeding the cache.
    pub fn spawn_watch(&self, cancel: CancellationToken) -> tokio::task::JoinHandle<()> {
        let target = self.clone();
        tokio::spawn(async move {
            let stream = watcher(target.api.clone(), watcher::Config::default()).default_backoff();
            let mut stream = std::pin::pin!(stream);
            loop {
                let next = tokio::select! {
                    () = cancel.cancelled() => return,
                    next = stream.next() => next,
                };
                match next {
                    None => return,
                    Some(Ok(event)) => {
                        if matches!(event, watcher::Event::InitDone) {
                            debug!("ZonePolicy list complete");
                        }
                        target.with_cache(|cache| cache.on_event(event));
                        target.changed.notify_one();
                    }
                    Some(Err(error)) => {
                        if let Some(metrics) = &target.metrics {
                            metrics.record_error(crate::metrics::SyncErrorKind::Watch);
                        }
                        warn!(%error, "ZonePolicy watch failed; retrying with backoff (no deletion happens until a complete list arrives)");
                    }
                }
            }
        })
    }

    /// Applies one object (spec through the main resource, status through its subresource).
    pub async fn apply(&self, object: &DesiredObject) -> Result<(), KubeError> {
        let name = object.policy.metadata.name.clone().unwrap_or_default();
        let params = PatchParams::apply(FIELD_MANAGER).force();
        let mut body = object.policy.clone();
        let status = body.status.take();
        let mut applied = self
            .api
            .patch(&name, &params, &Patch::Apply(&body))
            .await
            .map_err(|source| KubeError::Write {
                op: "apply",
                name: name.clone(),
                source,
            })?;
        if let Some(status) = status {
            let patch = serde_json::json!({
                "apiVersion": ZonePolicy::api_version(&()),
                "kind": ZonePolicy::kind(&()),
                "status": status,
            });
            applied = self
                .api
                .patch_status(&name, &params, &Patch::Apply(&patch))
                .await
                .map_err(|source| KubeError::Write {
                    op: "apply the status of",
                    name: name.clone(),
                    source,
                })?;
        }
        self.with_cache(|cache| cache.record_applied(applied));
        Ok(())
    }

    /// Deletes the object the change saw (same uid and resource version). An object that
    /// changed since is left for the next reconcile; one already gone counts as deleted.
    pub async fn delete(&self, change: &Change) -> Result<(), KubeError> {
        let live = change.live.as_ref();
        let params = DeleteParams {
            preconditions: Some(Preconditions {
                uid: live.and_then(|l| l.uid.clone()),
                resource_version: live.and_then(|l| l.resource_version.clone()),
            }),
            ..DeleteParams::default()
        };
        match self.api.delete(&change.name, &params).await {
            Ok(_) => {}
            Err(kube::Error::Api(status)) if status.is_not_found() => {}
            Err(source) => {
                return Err(KubeError::Write {
                    op: "delete",
                    name: change.name.clone(),
                    source,
                });
            }
        }
        self.with_cache(|cache| cache.record_deleted(&change.name));
        Ok(())
    }

    /// Publishes a Kubernetes Event about an operation. A failure is logged only.
    pub async fn publish_event(
        &self,
        change: &Change,
        commit: Option<&CommitInfo>,
        result: &Result<(), String>,
    ) {
        let reference = ObjectReference {
            api_version: Some(ZonePolicy::api_version(&()).into_owned()),
            kind: Some(ZonePolicy::kind(&()).into_owned()),
            name: Some(change.name.clone()),
            uid: change.live.as_ref().and_then(|live| live.uid.clone()),
            ..ObjectReference::default()
        };
        let reason = match (change.kind, result.is_ok()) {
            (_, false) => "SyncFailed",
            (ChangeKind::Create, true) => "Created",
            (ChangeKind::Update, true) => "Updated",
            (ChangeKind::Restore, true) => "DriftRestored",
            (ChangeKind::DeleteStale, true) => "Deleted",
            (ChangeKind::DeleteForeign, true) => "DriftRemoved",
        };
        let event = Event {
            type_: if change.kind.is_remediation() || result.is_err() {
                EventType::Warning
            } else {
                EventType::Normal
            },
            reason: reason.to_string(),
            note: Some(event_note(change, commit, result)),
            action: if change.kind.is_delete() {
                "Delete".to_string()
            } else {
                "Apply".to_string()
            },
            secondary: None,
        };
        if let Err(error) = self.recorder.publish(&event, &reference).await {
            warn!(%error, object = %change.name, "cannot publish the Kubernetes Event (the audit record is written regardless)");
        }
    }
}

/// A one-line summary: operation, commit, rules; cut to the Event size limit.
pub fn event_note(
    change: &Change,
    commit: Option<&CommitInfo>,
    result: &Result<(), String>,
) -> String {
    let mut note = format!("{} of zone '{}'", change.kind.as_str(), change.zone);
    if let Some(commit) = commit {
        if let Some(id) = commit.id {
            note.push_str(&format!(", Panorama commit {id}"));
        }
        if let Some(admin) = &commit.admin {
            note.push_str(&format!(" by {admin}"));
        }
        if let Some(description) = &commit.description {
            note.push_str(&format!(" ({description})"));
        }
    }
    if change.kind.is_remediation()
        && let Some(live) = &change.live
        && !live.other_managers.is_empty()
    {
        note.push_str(&format!("; written by {}", live.other_managers.join(", ")));
    }
    if !change.rules.is_empty() {
        note.push_str(&format!(
            "; {} rule(s): {}",
            change.rules.len(),
            change.rules.join(", ")
        ));
    }
    if let Err(error) = result {
        note.push_str(&format!("; failed: {error}"));
    }
    if note.len() > MAX_NOTE_BYTES {
        let mut cut = MAX_NOTE_BYTES - 3;
        while !note.is_char_boundary(cut) {
            cut -= 1;
        }
        note.truncate(cut);
        note.push_str("...");
    }
    note
}
