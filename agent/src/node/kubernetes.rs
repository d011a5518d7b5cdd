//! The agent in Kubernetes mode: ZonePolicy objects, every Pod, every Namespace and its own
//! Node are watched into local caches; any change triggers a level-triggered reconcile
//! (snapshot -> inventory -> compile -> diff -> apply) of the whole desired state, which is
//! idempotent. A node name that is no Node of the cluster (a wrong `--node-name`, which would
//! make no pod local) is reported and not reconciled.
//!
//! The Pod, Namespace and Node caches are kube's reflector stores (a Pod read only for the
//! fields the inventory uses, [`ClusterPod`]); ZonePolicies are compiled as
//! they arrive and only the compiled objects kept ([`CompiledPolicies`]). Each cache is filled
//! by a complete list before it reports ready, and after a watch error the relisted objects
//! replace the cache only once the new list is complete. So a reconcile never sees a partial
//! cache, and nothing is deleted from the maps because a list was cut short. While the API
//! server is unreachable the last good policy stays enforced; the metrics
//! (`zonewall_apiserver_reachable`) and `/readyz` say so.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::StreamExt as _;
use k8s_openapi::api::core::v1::{Namespace, Node};
use kube::runtime::{WatchStreamExt as _, reflector, watcher};
use kube::{Api, Client};
use tokio::sync::Notify;

use super::{FlowOutput, NodeError, Snapshot, Telemetry, local_workloads_of};
use crate::datapath::Dataplane;
use crate::inventory::cluster::{
    ClusterOptions, ClusterPod, inventory_from_cluster, trim_namespace, trim_node, trim_pod,
};
use crate::metrics::ReconcileErrorKind;
use crate::policy::compile::{AddressCache, AddressPool, CompiledPolicy, compile_with};
use crate::policy::datapath_compile::Compiled;
use crate::policy::{PolicySet, ValidationError, ZonePolicy};

/// Watches one kind of object (those `config` selects) into a store, `trim` applied to each
/// object before the store keeps it; every event wakes the reconcile loop; watch errors mark
/// the API server unreachable until the next successful event.
fn watch<K>(
    api: Api<K>,
    config: watcher::Config,
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
    let stream = reflector(writer, watcher(api, config).modify(trim)).default_backoff();
    tokio::spawn(async move {
        futures::pin_mut!(stream);
        while let Some(event) = stream.next().await {
            match event {
                Ok(_) => {
                    telemetry.metrics.set_apiserver_reachable(true);
                    wake.notify_one();
                }
                Err(e) => watch_failed::<K>(&telemetry, &e),
            }
        }
    });
    reader
}

/// A watch error: the API server is unreachable until the next successful event.
fn watch_failed<K: kube::Resource<DynamicType = ()>>(
    telemetry: &Telemetry,
    error: &watcher::Error,
) {
    telemetry.metrics.set_apiserver_reachable(false);
    telemetry
        .readiness
        .set_not_ready("the API server is unreachable; the last good policy stays enforced");
    telemetry
        .metrics
        .record_reconcile_error(ReconcileErrorKind::Watch);
    tracing::warn!(
        "watching {} failed, enforcing the last good policy: {error}",
        K::kind(&())
    );
}

/// One ZonePolicy as the cache keeps it: compiled, or why it is invalid.
type CompiledObject = Result<Arc<CompiledPolicy>, Vec<ValidationError>>;

/// The cluster's ZonePolicy objects, compiled as they arrive; the objects themselves are not
/// kept (a large firewall's are tens of MiB, and nothing reads them once compiled). Like a
/// reflector store, a relist replaces the contents only once it is complete.
#[derive(Default)]
struct CompiledPolicies {
    /// By object name.
    objects: BTreeMap<String, CompiledObject>,
    /// A relist being received.
    relist: Option<BTreeMap<String, CompiledObject>>,
    /// A complete list has been received.
    listed: bool,
    /// Parsed address columns, shared by the objects that have equal ones.
    pool: AddressPool,
}

impl CompiledPolicies {
    fn compile(&mut self, policy: &ZonePolicy) -> (String, CompiledObject) {
        let name = policy.metadata.name.clone().unwrap_or_default();
        let mut addresses = AddressCache::with_pool(std::mem::take(&mut self.pool));
        let compiled = compile_with(policy, &mut addresses).map(Arc::new);
        self.pool = addresses.into_pool();
        (name, compiled)
    }

    fn apply(&mut self, event: watcher::Event<ZonePolicy>) {
        match event {
            watcher::Event::Init => self.relist = Some(BTreeMap::new()),
            watcher::Event::InitApply(policy) => {
                let (name, compiled) = self.compile(&policy);
                self.relist.get_or_insert_default().insert(name, compiled);
            }
            watcher::Event::InitDone => {
                self.objects = self.relist.take().unwrap_or_default();
                self.listed = true;
            }
            watcher::Event::Apply(policy) => {
                let (name, compiled) = self.compile(&policy);
                self.objects.insert(name, compiled);
            }
            watcher::Event::Delete(policy) => {
                self.objects
                    .remove(policy.metadata.name.as_deref().unwrap_or_default());
            }
        }
        self.pool.prune();
    }
}

/// Watches the ZonePolicy objects into a [`CompiledPolicies`], as [`watch`] does for the
/// other kinds.
fn watch_policies(
    api: Api<ZonePolicy>,
    wake: Arc<Notify>,
    telemetry: Telemetry,
) -> Arc<Mutex<CompiledPolicies>> {
    let cache = Arc::new(Mutex::new(CompiledPolicies::default()));
    // One object per list page: each is compiled and dropped before the next is read, where
    // a page of all of them (tens of MiB of JSON for a large firewall) would be held whole.
    let stream = watcher(api, watcher::Config::default().page_size(1)).default_backoff();
    let filled = Arc::clone(&cache);
    tokio::spawn(async move {
        futures::pin_mut!(stream);
        while let Some(event) = stream.next().await {
            match event {
                Ok(event) => {
                    filled
                        .lock()
                        .unwrap_or_else(std::sync::PoisonError::into_inner)
                        .apply(event);
                    telemetry.metrics.set_apiserver_reachable(true);
                    wake.notify_one();
                }
                Err(e) => watch_failed::<ZonePolicy>(&telemetry, &e),
            }
        }
    });
    cache
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
    let policies = watch_policies(
        Api::<ZonePolicy>::all(client.clone()),
        wake.clone(),
        telemetry.clone(),
    );
    let pods = watch(
        Api::<ClusterPod>::all(client.clone()),
        watcher::Config::default(),
        trim_pod,
        wake.clone(),
        telemetry.clone(),
    );
    let namespaces = watch(
        Api::<Namespace>::all(client.clone()),
        watcher::Config::default(),
        trim_namespace,
        wake.clone(),
        telemetry.clone(),
    );
    // Its own Node only: that the name it enforces for is a node of the cluster.
    let nodes = watch(
        Api::<Node>::all(client),
        watcher::Config::default().fields(&format!("metadata.name={}", options.node_name)),
        trim_node,
        wake.clone(),
        telemetry.clone(),
    );
    tokio::pin!(stop);
    // Nothing is compiled from a cache that has not been listed completely.
    tokio::select! {
        () = &mut stop => return Ok(()),
        ready = async {
            pods.wait_until_ready().await?;
            namespaces.wait_until_ready().await?;
            nodes.wait_until_ready().await?;
            while !policies.lock().unwrap_or_else(std::sync::PoisonError::into_inner).listed {
                wake.notified().await;
            }
            Ok::<_, reflector::store::WriterDropped>(())
        } => {
            if ready.is_err() {
                return Ok(());
            }
        }
    }
    let mut attached = BTreeMap::new();
    let events = flows.is_some();
    let node_name = options.node_name.clone();
    // The live policy, which the next compile starts from. The inventory is not kept: the
    // next reconcile builds it from the caches again.
    let mut current: Option<Compiled> = None;
    let mut enricher = None;
    let mut reconcile = true;
    let mut tick = tokio::time::interval(Duration::from_millis(100));
    // After a long reconcile the ticks missed are not made up in a burst (which would also
    // bring the periodic reconcile forward).
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut ticks: u64 = 0;
    // Pods are this node's by `spec.nodeName`: under a name that is no node of the cluster
    // none would be, and nothing would be enforced here. Such a state is not applied: what is
    // live stays, and readiness says why.
    let node_listed = || {
        nodes
            .state()
            .iter()
            .any(|n| n.metadata.name.as_deref() == Some(node_name.as_str()))
    };
    // Whether the last reconcile found this node missing (said once per absence).
    let mut node_missing = false;
    loop {
        if reconcile && !node_listed() {
            reconcile = false;
            let reason = format!(
                "node {node_name} is not in the cluster: --node-name (ZONEWALL_NODE_NAME) must be this node's name, spec.nodeName through the downward API"
            );
            telemetry.readiness.set_not_ready(&reason);
            telemetry
                .metrics
                .record_reconcile_error(ReconcileErrorKind::Inventory);
            if !node_missing {
                tracing::error!("{reason}; the last good policy stays live");
            }
            node_missing = true;
        } else if reconcile {
            node_missing = false;
            reconcile = false;
            let started = Instant::now();
            // Shared with the watch caches, not copied.
            let pod_list = pods.state();
            let namespace_list = namespaces.state();
            let policy_list: Vec<CompiledObject> = policies
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .objects
                .values()
                .cloned()
                .collect();
            let outcome = (|| {
                let cluster = inventory_from_cluster(&pod_list, &namespace_list, options)?;
                for line in &cluster.left_out {
                    tracing::debug!("not enforced as a workload: {line}");
                }
                let set = PolicySet::from_compiled(policy_list.iter().cloned())?;
                let previous = current.as_ref();
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
                Ok::<_, NodeError>((report, snapshot))
            })();
            match outcome {
                Ok((report, snapshot)) => {
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
                    if flows.is_some() {
                        enricher = Some(super::enricher(&snapshot, &attached, &node_name));
                    }
                    current = Some(snapshot.compiled);
                    super::release_freed_memory();
                }
                Err(e) => {
                    telemetry.metrics.record_reconcile_error(e.kind());
                    tracing::error!("reconcile failed, the last good policy stays live: {e}");
                }
            }
        }
        // Level-triggered: any change wakes a full reconcile at once (the caches hold it
        // before the wake-up; the changes that arrive during a reconcile are one wake-up for
        // the next); a reconcile also runs every 10 s. Flow events are read every 100 ms.
        tokio::select! {
            () = &mut stop => break,
            () = wake.notified() => reconcile = true,
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
            && let Some(compiled) = &current
        {
            telemetry.refresh(dataplane, compiled);
        }
        if ticks % 100 == 1 {
            telemetry.refresh_conntrack(dataplane);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::load::parse_documents;

    /// One rule to the address set `web`: 10.1.0.0/16 and `other`.
    fn policy_to(name: &str, order: u32, other: &str) -> ZonePolicy {
        let text = format!(
            "apiVersion: zonewall.io/v1alpha1\nkind: ZonePolicy\nmetadata:\n  name: {name}\nspec:\n  tier: firewall\n  order: {order}\n  mode: Enforce\n  zone: dmz\n  egress:\n  - action: Allow\n    ruleType: Universal\n    peerZones: [any]\n    source: {{any: true}}\n    destination: {{sets: [web]}}\n    service: {{any: true}}\n    log: {{start: false, end: false}}\n  ingress: []\n  addressSets:\n    web:\n      prefixes: [10.1.0.0/16, {other}]\n"
        );
        parse_documents(&text, "test.yaml")
            .expect("test policy")
            .remove(0)
    }

    fn policy(name: &str, order: u32) -> ZonePolicy {
        policy_to(name, order, "10.2.0.0/16")
    }

    fn names(cache: &CompiledPolicies) -> Vec<(&str, bool)> {
        cache
            .objects
            .iter()
            .map(|(name, compiled)| (name.as_str(), compiled.is_ok()))
            .collect()
    }

    /// As a reflector store: a relist shows only once complete, events apply in between,
    /// and an invalid object is kept as invalid (so the set is refused, not opened).
    #[test]
    fn the_compiled_cache_follows_the_watch_and_swaps_in_complete_lists() {
        let mut cache = CompiledPolicies::default();
        cache.apply(watcher::Event::Init);
        cache.apply(watcher::Event::InitApply(policy("a", 1)));
        cache.apply(watcher::Event::InitApply(policy("b", 2)));
        assert!(
            !cache.listed && cache.objects.is_empty(),
            "nothing before the list ends"
        );
        cache.apply(watcher::Event::InitDone);
        assert!(cache.listed);
        assert_eq!(names(&cache), [("a", true), ("b", true)]);
        // Equal columns of different objects are one parsed column.
        let column = |cache: &CompiledPolicies, name: &str| {
            let compiled = cache.objects[name].as_ref().expect("valid");
            Arc::clone(&compiled.egress[0].destination)
        };
        let first = {
            let first = column(&cache, "a");
            assert!(Arc::ptr_eq(&first, &column(&cache, "b")));
            assert_eq!(first.prefixes.len(), 2);
            Arc::downgrade(&first)
        };
        cache.apply(watcher::Event::Apply(policy("b", 0)));
        cache.apply(watcher::Event::Delete(policy("a", 1)));
        assert_eq!(names(&cache), [("b", false)], "order 0 is invalid");
        assert!(PolicySet::from_compiled(cache.objects.values().cloned()).is_err());
        // A relist after a watch error: the old contents stay until it is complete.
        cache.apply(watcher::Event::Init);
        cache.apply(watcher::Event::InitApply(policy_to("c", 1, "10.3.0.0/16")));
        assert_eq!(names(&cache), [("b", false)]);
        cache.apply(watcher::Event::InitDone);
        assert_eq!(names(&cache), [("c", true)]);
        // The objects that held the first column are gone, and so is the pool's hold on it.
        assert!(first.upgrade().is_none());
    }
}
