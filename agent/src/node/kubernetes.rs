//! The agent in Kubernetes mode: ZonePolicy objects, every Pod and every Namespace are
//! watched into local caches; any change triggers a level-triggered reconcile (snapshot ->
//! inventory -> compile -> diff -> apply) of the whole desired state, which is idempotent.
//!
//! The caches are kube's reflector stores: a store is filled by a complete list before it
//! reports ready, and after a watch error the relisted objects replace the cache only once the
//! new list is complete. So a reconcile never sees a partial cache, and nothing is deleted
//! from the maps because a list was cut short. While the API server is unreachable the last
//! good policy stays enforced; the metrics (`zonewall_apiserver_reachable`) and `/readyz`
//! say so.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use futures::StreamExt as _;
use k8s_openapi::api::core::v1::{Namespace, Pod};
use kube::runtime::{WatchStreamExt as _, reflector, watcher};
use kube::{Api, Client};
use tokio::sync::Notify;

use super::{FlowOutput, NodeError, Snapshot, Telemetry, local_workloads_of};
use crate::datapath::Dataplane;
use crate::inventory::cluster::{ClusterOptions, inventory_from_cluster, trim_namespace, trim_pod};
use crate::metrics::ReconcileErrorKind;
use crate::policy::{PolicySet, ZonePolicy};

/// Watches one kind of object into a store, `trim` applied to each object before the store
/// keeps it; every event wakes the reconcile loop; watch errors mark the API server
/// unreachable until the next successful event.
fn watch<K>(
    api: Api<K>,
    trim: fn(&mut K),
    wake: std::sync::Arc<Notify>,
    telemetry: Telemetry,
) -> reflector::Store<K>
where
    K: kube::Resource<DynamicType = ()>
        + Clone
        + std::fmt::Debug
        + serde::de::DeserializeOwned
        + Send
        + Sync
        + 'static,
{
    let (reader, writer) = reflector::store();
    let stream = reflector(
        writer,
        watcher(api, watcher::Config::default()).modify(trim),
    )
    .default_backoff();
    tokio::spawn(async move {
        futures::pin_mut!(stream);
        while let Some(event) = stream.next().await {
            match event {
                Ok(_) => {
                    telemetry.metrics.set_apiserver_reachable(true);
                    wake.notify_one();
                }
                Err(e) => {
                    telemetry.metrics.set_apiserver_reachable(false);
                    telemetry.readiness.set_not_ready(
                        "the API server is unreachable; the last good policy stays enforced",
                    );
                    telemetry
                        .metrics
                        .record_reconcile_error(ReconcileErrorKind::Watch);
                    tracing::warn!(
                        "watching {} failed, enforcing the last good policy: {e}",
                        K::kind(&())
                    );
                }
            }
        }
    });
    reader
}

/// Runs until `stop` resolves.
pub async fn run_kubernetes(
    client: Client,
    dataplane: &mut dyn Dataplane,
    options: &ClusterOptions,
    mut flows: Option<FlowOutput<'_>>,
    telemetry: &Telemetry,
    stop: impl std::future::Future<Output = ()>,
) -> Result<(), NodeError> {
    let wake = std::sync::Arc::new(Notify::new());
    let policies = watch(
        Api::<ZonePolicy>::all(client.clone()),
        |policy| policy.metadata.managed_fields = None,
        wake.clone(),
        telemetry.clone(),
    );
    let pods = watch(
        Api::<Pod>::all(client.clone()),
        trim_pod,
        wake.clone(),
        telemetry.clone(),
    );
    let namespaces = watch(
        Api::<Namespace>::all(client),
        trim_namespace,
        wake.clone(),
        telemetry.clone(),
    );
    tokio::pin!(stop);
    // Nothing is compiled from a cache that has not been listed completely.
    tokio::select! {
        () = &mut stop => return Ok(()),
        ready = async {
            policies.wait_until_ready().await?;
            pods.wait_until_ready().await?;
            namespaces.wait_until_ready().await
        } => {
            if ready.is_err() {
                return Ok(());
            }
        }
    }
    let mut attached = BTreeMap::new();
    let events = flows.is_some();
    let node_name = options.node_name.clone();
    let mut current: Option<Snapshot> = None;
    // The last valid set, whose compiled objects the next reconcile reuses.
    let mut policy_set: Option<PolicySet> = None;
    let mut enricher = None;
    let mut reconcile = true;
    let mut tick = tokio::time::interval(Duration::from_millis(100));
    let mut ticks: u64 = 0;
    loop {
        if reconcile {
            reconcile = false;
            let started = Instant::now();
            // Shared with the watch caches, not copied: a large policy is hundreds of MiB.
            let pod_list = pods.state();
            let namespace_list = namespaces.state();
            let policy_list = policies.state();
            let outcome = (|| {
                let cluster = inventory_from_cluster(&pod_list, &namespace_list, options)?;
                for line in &cluster.left_out {
                    tracing::debug!("not enforced as a workload: {line}");
                }
                let set = PolicySet::new_shared(&policy_list, policy_set.as_ref())?;
                let previous = current.as_ref().map(|s: &Snapshot| &s.compiled);
                let compiled = super::compile_set(&cluster.inventory, &set, previous)?;
                telemetry.metrics.record_compile(started.elapsed());
                let workloads =
                    local_workloads_of(&cluster.inventory, |name| cluster.local.contains(name))?;
                let snapshot = Snapshot {
                    inventory: cluster.inventory,
                    compiled,
                    workloads,
                };
                let report = telemetry.timed_apply(dataplane, &mut attached, &snapshot, events)?;
                Ok::<_, NodeError>((report, snapshot, set))
            })();
            match outcome {
                Ok((report, snapshot, set)) => {
                    policy_set = Some(set);
                    if report.written > 0 || report.removed > 0 || current.is_none() {
                        tracing::info!(
                            generation = report.generation,
                            written = report.written,
                            removed = report.removed,
                            workloads = snapshot.inventory.endpoints.len(),
                            local = snapshot.workloads.len(),
                            policies = policy_list.len(),
                            seconds = started.elapsed().as_secs_f64(),
                            "policy live"
                        );
                    }
                    telemetry.readiness.set_ready();
                    enricher = Some(super::enricher(&snapshot, &attached, &node_name));
                    current = Some(snapshot);
                }
                Err(e) => {
                    telemetry.metrics.record_reconcile_error(e.kind());
                    tracing::error!("reconcile failed, the last good policy stays live: {e}");
                }
            }
        }
        // Level-triggered: any change wakes a full reconcile (after a burst settles); a
        // reconcile also runs every 10 s. Flow events are read every 100 ms.
        tokio::select! {
            () = &mut stop => break,
            () = wake.notified() => {
                tokio::time::sleep(Duration::from_millis(50)).await;
                reconcile = true;
            }
            _ = tick.tick() => {}
        }
        ticks += 1;
        if ticks.is_multiple_of(100) {
            reconcile = true;
        }
        if let (Some(flows), Some(enricher)) = (flows.as_mut(), enricher.as_ref())
            && let Err(e) = super::pump_events(
                dataplane,
                &mut flows.reader,
                enricher,
                ticks.is_multiple_of(10),
                Some(&telemetry.metrics),
                flows.consumer,
            )
        {
            tracing::error!("reading flow events failed: {e}");
        }
        if ticks.is_multiple_of(10)
            && let Some(snapshot) = &current
        {
            telemetry.refresh(dataplane, &snapshot.compiled);
        }
        if ticks % 100 == 1 {
            telemetry.refresh_conntrack(dataplane);
        }
    }
    Ok(())
}
