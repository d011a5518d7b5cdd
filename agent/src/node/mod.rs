//! The node agent's standalone mode: policy from a firewall configuration or a ZonePolicy
//! directory, workloads from an inventory file, enforced by the kernel programs on the local
//! workloads' interfaces until the process is stopped. Files are watched: a change is
//! compiled and applied; a bad new file is reported and the last good policy stays live.

pub mod kubernetes;

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime};

use std::collections::HashMap;
use std::sync::Arc;

use sha2::{Digest as _, Sha256};

use crate::datapath::{self, DatapathError, Dataplane, DesiredTables, EventReader, InterfaceError};
use crate::firewall::panos::{self, Limits, PanosError, ResolveOptions};
use crate::flows::FlowRecord;
use crate::flows::events::{Enricher, monotonic_now_ns};
use crate::inventory::{Inventory, InventoryError};
use crate::metrics::{
    AgentMetrics, AgentMetricsOptions, Metrics, Readiness, ReconcileErrorKind, RuleHit,
};
use crate::policy::ZonePolicy;
use crate::policy::compile::{AddressCache, AddressPool, CompiledPolicy, compile_with};
use crate::policy::datapath_compile::RuleOrigin;
use crate::policy::datapath_compile::{self, CompileError, Compiled};
use crate::policy::eval::{PolicySet, PolicySetError};
use crate::policy::load::{LoadError, load_dir, parse_documents, read_dir_texts};
use crate::policy::resource::Mode;
use crate::translate::{self, TranslateError, TranslateOptions};
use zonewall_common as abi;

/// Where the policy comes from.
#[derive(Clone, Debug)]
pub enum PolicyInput {
    /// A PAN-OS or Panorama configuration, translated as `zonewall translate` does.
    Panos {
        config: PathBuf,
        device_group: Option<String>,
        mode: Mode,
    },
    /// A directory of ZonePolicy YAML.
    Policies(PathBuf),
}

#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    #[error(transparent)]
    Inventory(#[from] InventoryError),
    #[error(transparent)]
    Panos(#[from] PanosError),
    #[error("translating the firewall configuration failed: {0}")]
    Translate(#[from] TranslateError),
    #[error(transparent)]
    Load(#[from] LoadError),
    #[error("the ZonePolicies are inconsistent: {0}")]
    PolicySet(#[from] PolicySetError),
    #[error("compiling the policy for the kernel failed: {0}")]
    Compile(#[from] CompileError),
    #[error("endpoint '{endpoint}': {source}")]
    Interface {
        endpoint: String,
        #[source]
        source: InterfaceError,
    },
    #[error(transparent)]
    Datapath(#[from] DatapathError),
}

impl NodeError {
    /// The error's kind, for the reconcile error metric.
    pub fn kind(&self) -> ReconcileErrorKind {
        match self {
            NodeError::Inventory(_) => ReconcileErrorKind::Inventory,
            NodeError::Panos(_)
            | NodeError::Translate(_)
            | NodeError::Load(_)
            | NodeError::PolicySet(_) => ReconcileErrorKind::Policy,
            NodeError::Compile(_) => ReconcileErrorKind::Compile,
            NodeError::Interface { .. } => ReconcileErrorKind::Attach,
            NodeError::Datapath(_) => ReconcileErrorKind::Apply,
        }
    }
}

/// A workload on this node: the interface its traffic crosses and its addresses.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LocalWorkload {
    pub name: String,
    pub interface: String,
    pub ips: Vec<IpAddr>,
}

/// The ZonePolicies of `input`.
pub fn load_policies(input: &PolicyInput) -> Result<Vec<ZonePolicy>, NodeError> {
    match input {
        PolicyInput::Panos {
            config,
            device_group,
            mode,
        } => {
            let config = panos::load_file(config, Limits::default())?;
            let resolved = panos::resolve(
                &config,
                &ResolveOptions {
                    device_group: device_group.clone(),
                    ..ResolveOptions::default()
                },
            )?;
            for warning in &resolved.warnings {
                tracing::warn!("{warning}");
            }
            let options = TranslateOptions {
                mode: *mode,
                // The objects are compiled, never written out.
                documents: false,
                ..TranslateOptions::default()
            };
            Ok(translate::translate(&resolved, &options)?.policies)
        }
        PolicyInput::Policies(dir) => Ok(load_dir(dir)?),
    }
}

/// Compiles the policies for every endpoint of the inventory (peers on other nodes need their
/// identities too) and the inventory's external zone. `previous`: the compiled tables live
/// now, whose identity numbers are kept (see [`datapath_compile::compile_after`]).
pub fn compile<P: std::borrow::Borrow<ZonePolicy>>(
    inventory: &Inventory,
    policies: &[P],
    previous: Option<&Compiled>,
) -> Result<Compiled, NodeError> {
    compile_set(inventory, &PolicySet::new(policies)?, previous)
}

/// [`compile`] of a validated set.
pub fn compile_set(
    inventory: &Inventory,
    set: &PolicySet,
    previous: Option<&Compiled>,
) -> Result<Compiled, NodeError> {
    Ok(datapath_compile::compile_after(
        previous,
        set,
        &inventory.external_zone,
        &inventory.endpoints,
        &datapath_compile::Limits::default(),
    )?)
}

/// The inventory's workloads that run on this node: those with an `interface`, and those
/// whose address is routed to a local workload interface (a host route, or a bridge port).
pub fn local_workloads(inventory: &Inventory) -> Result<Vec<LocalWorkload>, NodeError> {
    local_workloads_of(inventory, |_| true)
}

/// [`local_workloads`] among the endpoints whose `namespace/name` passes `on_this_node`.
pub fn local_workloads_of(
    inventory: &Inventory,
    on_this_node: impl Fn(&str) -> bool,
) -> Result<Vec<LocalWorkload>, NodeError> {
    let mut out = Vec::new();
    for endpoint in inventory
        .endpoints
        .iter()
        .filter(|e| on_this_node(&e.qualified_name()))
    {
        let name = endpoint.qualified_name();
        let interface = match &endpoint.interface {
            Some(interface) => Some(interface.clone()),
            None => match endpoint.ips.first() {
                Some(ip) => match datapath::discover_interface(*ip) {
                    Ok(found) => found,
                    // An address without any route is not on this node.
                    Err(InterfaceError::NoRoute(_)) => None,
                    Err(source) => {
                        return Err(NodeError::Interface {
                            endpoint: name.clone(),
                            source,
                        });
                    }
                },
                None => None,
            },
        };
        if let Some(interface) = interface {
            out.push(LocalWorkload {
                name,
                interface,
                ips: endpoint.ips.clone(),
            });
        }
    }
    Ok(out)
}

/// Everything one apply needs, read from the files.
pub struct Snapshot {
    pub inventory: Inventory,
    pub compiled: Compiled,
    pub workloads: Vec<LocalWorkload>,
}

/// What the last snapshot read, so the next one parses and compiles only what changed: the
/// objects of each policy file, compiled, by the SHA-256 of its text (a directory input).
/// Only the compiled objects are kept, not the objects read: a large firewall's objects are
/// tens of MiB, and nothing needs them once compiled.
#[derive(Default)]
pub struct LoadedPolicies {
    files: HashMap<[u8; 32], Vec<Arc<CompiledPolicy>>>,
}

impl LoadedPolicies {
    /// The input's policy set. A directory's files whose text did not change keep the objects
    /// compiled last time; nothing is kept unless the whole set is valid.
    fn load(&mut self, input: &PolicyInput) -> Result<PolicySet, NodeError> {
        let PolicyInput::Policies(dir) = input else {
            return Ok(PolicySet::new(&load_policies(input)?)?);
        };
        // Each file read anew is compiled and dropped before the next is read; the parsed
        // address columns go from one to the next.
        let mut pool = AddressPool::default();
        let mut results = Vec::new();
        let mut files: HashMap<[u8; 32], Vec<Arc<CompiledPolicy>>> = HashMap::new();
        for file in read_dir_texts(dir)? {
            let digest: [u8; 32] = Sha256::digest(file.text.as_bytes()).into();
            if let Some(compiled) = self.files.get(&digest) {
                results.extend(compiled.iter().cloned().map(Ok));
                files.insert(digest, compiled.clone());
                continue;
            }
            let objects = parse_documents(&file.text, &file.path.display().to_string())?;
            drop(file);
            let mut addresses = AddressCache::with_pool(pool);
            let mut compiled = Vec::with_capacity(objects.len());
            for object in &objects {
                let result = compile_with(object, &mut addresses).map(Arc::new);
                if let Ok(done) = &result {
                    compiled.push(Arc::clone(done));
                }
                results.push(result);
            }
            pool = addresses.into_pool();
            files.insert(digest, compiled);
        }
        let set = PolicySet::from_compiled(results)?;
        self.files = files;
        Ok(set)
    }
}

/// The desired state from the files; `previous` as in [`compile`], `loaded` what the last
/// snapshot read (see [`LoadedPolicies`]).
pub fn snapshot(
    inventory_path: &Path,
    input: &PolicyInput,
    previous: Option<&Compiled>,
    loaded: &mut LoadedPolicies,
) -> Result<Snapshot, NodeError> {
    let inventory = Inventory::load_file(inventory_path)?;
    let set = loaded.load(input)?;
    let compiled = compile_set(&inventory, &set, previous)?;
    let workloads = local_workloads(&inventory)?;
    Ok(Snapshot {
        inventory,
        compiled,
        workloads,
    })
}

/// Attaches to every workload interface not attached yet and applies the snapshot. Returns
/// the apply report.
pub fn apply(
    dataplane: &mut dyn Dataplane,
    attached: &mut BTreeMap<String, u32>,
    snapshot: &Snapshot,
    events: bool,
) -> Result<datapath::ApplyReport, NodeError> {
    let mut local = Vec::new();
    let mut to_attach = Vec::new();
    for workload in &snapshot.workloads {
        let ifindex = match attached.get(&workload.interface) {
            Some(ifindex) => *ifindex,
            None => {
                let ifindex = datapath::interface_index(&workload.interface).map_err(|source| {
                    NodeError::Interface {
                        endpoint: workload.name.clone(),
                        source,
                    }
                })?;
                to_attach.push(workload.interface.clone());
                ifindex
            }
        };
        local.extend(workload.ips.iter().map(|ip| (ifindex, *ip)));
    }
    // The tables go in before the programs attach: an interface never runs without the
    // policy it needs (the programs drop everything until the first apply).
    let report = dataplane.apply(&DesiredTables::new(&snapshot.compiled, &local, events))?;
    let attached_any = !to_attach.is_empty();
    for interface in to_attach {
        let ifindex = dataplane.attach(&interface)?;
        attached.insert(interface, ifindex);
    }
    if attached_any {
        // Interfaces taken over from another layout version leave its pins unused.
        dataplane.retire_old_layouts()?;
    }
    Ok(report)
}

/// What the agent reports about itself: metrics and readiness.
#[derive(Clone, Debug)]
pub struct Telemetry {
    pub metrics: AgentMetrics,
    pub readiness: Readiness,
}

impl Telemetry {
    /// Conntrack entries against capacity, so an operator sees the table fill before the
    /// LRU evicts live flows. Counting copies the whole table out of the kernel, so the
    /// loops call this every 10 s, not with every refresh.
    pub fn refresh_conntrack(&self, dataplane: &dyn Dataplane) {
        let name = abi::map_names::CONNTRACK;
        if let (Some(entries), Some(capacity)) =
            (dataplane.conntrack_count(), dataplane.map_capacity(name))
        {
            self.metrics
                .set_map_usage(name, entries, u64::from(capacity));
        }
    }

    /// Telemetry registered in a fresh registry (for callers that do not serve it).
    pub fn unserved() -> Telemetry {
        let mut registry = Metrics::new();
        Telemetry {
            metrics: AgentMetrics::register(&mut registry, AgentMetricsOptions::default()),
            readiness: Readiness::new(),
        }
    }

    /// [`apply`], with its duration and the new generation recorded.
    pub fn timed_apply(
        &self,
        dataplane: &mut dyn Dataplane,
        attached: &mut BTreeMap<String, u32>,
        snapshot: &Snapshot,
        events: bool,
    ) -> Result<datapath::ApplyReport, NodeError> {
        let started = Instant::now();
        let report = apply(dataplane, attached, snapshot, events)?;
        self.metrics
            .record_apply(started.elapsed(), u64::from(report.generation));
        Ok(report)
    }

    /// Kernel counters, rule hits and map usage, read from the dataplane.
    fn refresh(&self, dataplane: &dyn Dataplane, compiled: &Compiled) {
        match dataplane.counters() {
            Ok(counters) => self.metrics.set_kernel_outcomes(&counters.0),
            Err(e) => tracing::warn!("cannot read the kernel's packet counters: {e}"),
        }
        if let Some(total) = dataplane.flow_packets_after_end() {
            self.metrics.set_flow_packets_after_end(total);
        }
        match dataplane.rule_stats() {
            Ok(stats) => {
                let hits = stats.iter().filter_map(|(id, stats)| {
                    let entry = compiled.rules.get(id)?;
                    let RuleOrigin::Rule {
                        policy, provenance, ..
                    } = &entry.origin
                    else {
                        return None;
                    };
                    Some(RuleHit {
                        policy,
                        rule: provenance.as_ref().map_or("unnamed", |p| p.rule.as_str()),
                        packets: stats.packets,
                        bytes: stats.bytes,
                    })
                });
                self.metrics.set_rule_hits(hits);
            }
            Err(e) => tracing::warn!("cannot read the rule statistics: {e}"),
        }
        let sizes = compiled.sizes();
        for (map, slot, entries) in [
            (
                abi::map_names::IDENTITY_V4_LONG,
                abi::map_names::IDENTITY_V4_LONG_SLOTS[0],
                compiled.identity_v4_split.long.len(),
            ),
            (
                abi::map_names::IDENTITY_V6,
                abi::map_names::IDENTITY_V6_SLOTS[0],
                sizes.identity_entries_v6,
            ),
            (
                abi::map_names::POLICY,
                abi::map_names::POLICY_SLOTS[0],
                sizes.policy_entries,
            ),
        ] {
            if let Some(capacity) = dataplane.map_capacity(slot) {
                self.metrics
                    .set_map_usage(map, entries as u64, u64::from(capacity));
            }
        }
    }
}

/// Where flow records go, and what they are built with.
pub struct FlowOutput<'a> {
    pub reader: EventReader,
    pub node: String,
    pub consumer: &'a mut (dyn FnMut(FlowRecord) + Send),
}

/// Turns waiting kernel events (and, with `sweep`, idle flows and closed deny windows) into
/// records for `consumer`; returns how many.
pub fn pump_events(
    dataplane: &mut dyn Dataplane,
    reader: &mut EventReader,
    enricher: &Enricher,
    sweep: bool,
    metrics: Option<&AgentMetrics>,
    consumer: &mut dyn FnMut(FlowRecord),
) -> Result<usize, NodeError> {
    let mut events = Vec::new();
    reader.drain(&mut events);
    if sweep {
        let now = monotonic_now_ns();
        events.extend(dataplane.sweep_conntrack(now)?);
        events.extend(dataplane.sweep_denies(now)?);
    }
    for event in &events {
        let record = enricher.record(event);
        if let Some(metrics) = metrics {
            metrics.record_flow_record(&record);
        }
        consumer(record);
    }
    Ok(events.len())
}

/// The enricher for a snapshot and the interfaces attached.
pub fn enricher(snapshot: &Snapshot, attached: &BTreeMap<String, u32>, node: &str) -> Enricher {
    let interfaces: HashMap<u32, String> = attached
        .iter()
        .map(|(name, index)| (*index, name.clone()))
        .collect();
    Enricher::new(&snapshot.compiled, &snapshot.inventory, interfaces, node)
}

/// The modification times of the watched files (a directory: of each entry).
fn fingerprint(paths: &[&Path]) -> Vec<(PathBuf, Option<SystemTime>)> {
    let mut out = Vec::new();
    for path in paths {
        let modified = |p: &Path| std::fs::metadata(p).and_then(|m| m.modified()).ok();
        out.push((path.to_path_buf(), modified(path)));
        if path.is_dir()
            && let Ok(entries) = std::fs::read_dir(path)
        {
            let mut entries: Vec<PathBuf> = entries.flatten().map(|e| e.path()).collect();
            entries.sort();
            for entry in entries {
                let time = modified(&entry);
                out.push((entry, time));
            }
        }
    }
    out
}

/// Runs until `stop` resolves: applies the files, then re-applies whenever one changes; with
/// `flows`, turns kernel events into records every 100 ms (and sweeps idle flows every
/// second).
pub async fn run_standalone(
    dataplane: &mut dyn Dataplane,
    inventory: &Path,
    input: &PolicyInput,
    mut flows: Option<FlowOutput<'_>>,
    telemetry: &Telemetry,
    stop: impl std::future::Future<Output = ()>,
) -> Result<(), NodeError> {
    let events = flows.is_some();
    let mut attached = BTreeMap::new();
    let started = Instant::now();
    let policy_path = match input {
        PolicyInput::Panos { config, .. } => config.as_path(),
        PolicyInput::Policies(dir) => dir.as_path(),
    };
    // Taken before the files are read: a change made while they are read is seen next.
    let mut seen = fingerprint(&[inventory, policy_path]);
    let mut loaded = LoadedPolicies::default();
    let mut current = snapshot(inventory, input, None, &mut loaded)?;
    telemetry.metrics.record_compile(started.elapsed());
    let report = telemetry.timed_apply(dataplane, &mut attached, &current, events)?;
    telemetry.readiness.set_ready();
    let sizes = current.compiled.sizes();
    tracing::info!(
        generation = report.generation,
        written = report.written,
        interfaces = attached.len(),
        identities = sizes.identities,
        policy_entries = sizes.policy_entries,
        seconds = started.elapsed().as_secs_f64(),
        "policy live"
    );
    for approximation in &current.compiled.approximations {
        tracing::warn!("{approximation}");
    }
    let node_name = flows.as_ref().map(|f| f.node.clone()).unwrap_or_default();
    // Only a flow output reads it (it names every workload and rule: MiBs at scale).
    let mut enricher = flows
        .is_some()
        .then(|| enricher(&current, &attached, &node_name));
    release_freed_memory();
    tokio::pin!(stop);
    let mut tick = tokio::time::interval(Duration::from_millis(100));
    // After a long reconcile the ticks missed are not made up in a burst (which would also
    // bring the periodic reconcile forward).
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut ticks: u64 = 0;
    loop {
        tokio::select! {
            () = &mut stop => break,
            _ = tick.tick() => {}
        }
        ticks += 1;
        if let (Some(flows), Some(enricher)) = (flows.as_mut(), enricher.as_ref())
            && let Err(e) = pump_events(
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
        if ticks.is_multiple_of(10) {
            telemetry.refresh(dataplane, &current.compiled);
        }
        if ticks % 100 == 1 {
            telemetry.refresh_conntrack(dataplane);
        }
        if !ticks.is_multiple_of(2) {
            continue;
        }
        let now = fingerprint(&[inventory, policy_path]);
        if now == seen {
            continue;
        }
        seen = now;
        let started = Instant::now();
        let applied =
            snapshot(inventory, input, Some(&current.compiled), &mut loaded).and_then(|s| {
                telemetry.metrics.record_compile(started.elapsed());
                let report = telemetry.timed_apply(dataplane, &mut attached, &s, events)?;
                Ok((s, report))
            });
        match applied {
            Ok((snapshot, report)) => {
                tracing::info!(
                    generation = report.generation,
                    written = report.written,
                    removed = report.removed,
                    seconds = started.elapsed().as_secs_f64(),
                    "policy reloaded"
                );
                current = snapshot;
                if enricher.is_some() {
                    enricher = Some(self::enricher(&current, &attached, &node_name));
                }
                release_freed_memory();
            }
            Err(e) => {
                telemetry.metrics.record_reconcile_error(e.kind());
                tracing::error!(
                    "the changed files were not applied, the previous policy stays live: {e}"
                );
            }
        }
    }
    if let (Some(flows), Some(enricher)) = (flows.as_mut(), enricher.as_ref()) {
        let _ = pump_events(
            dataplane,
            &mut flows.reader,
            enricher,
            false,
            Some(&telemetry.metrics),
            flows.consumer,
        );
    }
    match dataplane.counters() {
        Ok(counters) => tracing::info!("stopping; packet counters: {counters}"),
        Err(e) => tracing::warn!("stopping; cannot read the packet counters: {e}"),
    }
    Ok(())
}

/// Hands the heap memory a reconcile freed back to the kernel. A reconcile builds tables of
/// hundreds of thousands of entries and drops the previous ones; glibc keeps freed chunks in
/// its heap, where they count as resident until reused, so without this the agent's resident
/// memory stays at its peak. Called after the new state is live (it does not delay a switch).
pub(crate) fn release_freed_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only returns free memory of glibc's heap, under its own locks.
    unsafe {
        libc::malloc_trim(0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::resource::RuleAction;
    use crate::translate::{fixture_translation, object_yaml};

    const INVENTORY: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/inventory.yaml");

    fn write(dir: &Path, index: usize, policy: &ZonePolicy) {
        let text = object_yaml(policy).expect("serializes");
        std::fs::write(dir.join(format!("policy-{index}.yaml")), text).expect("write");
    }

    #[test]
    fn a_directory_reload_parses_and_compiles_only_the_changed_files() {
        let dir = tempfile::tempdir().expect("temporary directory");
        let mut policies = fixture_translation(false).policies;
        assert!(policies.len() >= 3, "the fixture has several zones");
        for (index, policy) in policies.iter().enumerate() {
            write(dir.path(), index, policy);
        }
        let input = PolicyInput::Policies(dir.path().to_path_buf());
        let inventory = Inventory::load_file(Path::new(INVENTORY)).expect("inventory");
        let mut loaded = LoadedPolicies::default();
        let first = loaded.load(&input).expect("first load");
        let compiled_first = compile_set(&inventory, &first, None).expect("compiles");

        // One object changes: its first rule flips between allow and deny.
        let spec = &mut policies[0].spec;
        let rule = spec
            .egress
            .iter_mut()
            .chain(spec.ingress.iter_mut())
            .next()
            .expect("the first object has a rule");
        rule.action = match rule.action {
            RuleAction::Allow => RuleAction::Deny,
            _ => RuleAction::Allow,
        };
        write(dir.path(), 0, &policies[0]);
        let second = loaded.load(&input).expect("second load");

        let reused = second
            .shared_policies()
            .filter(|p| first.shared_policies().any(|q| Arc::ptr_eq(p, q)))
            .count();
        assert_eq!(
            reused,
            policies.len() - 1,
            "every object but the changed one is taken over as compiled"
        );
        // What the reused objects compile to is what a fresh read of the files compiles to.
        let fresh =
            compile(&inventory, &load_dir(dir.path()).expect("load"), None).expect("compiles");
        let incremental =
            compile_set(&inventory, &second, Some(&compiled_first)).expect("compiles");
        assert!(
            incremental == fresh,
            "the reload gives the tables of a fresh read"
        );
        assert!(
            incremental != compiled_first,
            "the changed rule changes the tables"
        );
    }
}
