//! The node agent's metrics: flows by zone pair, rule hits, policy generation and timings,
//! eBPF map usage, kernel counters, reconcile errors and API server reachability.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU8, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::time::{Duration, SystemTime};

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{
    DescriptorEncoder, EncodeLabelSet, EncodeLabelValue, EncodeMetric, LabelValueEncoder,
    MetricEncoder,
};
use prometheus_client::metrics::counter::{ConstCounter, Counter};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::{ConstGauge, Gauge};
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::metrics::{MetricType, TypedMetric};
use prometheus_client::registry::Unit;

use zonewall_common::counter;

use super::kernel::KernelCounter;
use super::{Metrics, unix_seconds};
use crate::flows::record::{EventClass, FlowRecord};
use crate::model::rule::Action;

/// Compile and apply take milliseconds for small policies and seconds for 10,000 rules.
const POLICY_DURATION_BUCKETS: [f64; 14] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];

/// Zone label value standing for every zone pair past [`AgentMetricsOptions::max_zone_pairs`].
pub const OVERFLOW_ZONE: &str = "_other";

/// What the dataplane did with a flow: the firewall's actions, with the three `reset-*`
/// actions folded into one, plus audit mode's "would have denied".
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum FlowVerdict {
    Allow,
    Deny,
    Drop,
    Reset,
    /// Audit mode: the policy would have denied the flow but let it pass.
    AuditWouldDeny,
}

impl FlowVerdict {
    pub const ALL: [FlowVerdict; 5] = [
        FlowVerdict::Allow,
        FlowVerdict::Deny,
        FlowVerdict::Drop,
        FlowVerdict::Reset,
        FlowVerdict::AuditWouldDeny,
    ];

    /// Metric label value.
    pub fn as_str(self) -> &'static str {
        match self {
            FlowVerdict::Allow => "allow",
            FlowVerdict::Deny => "deny",
            FlowVerdict::Drop => "drop",
            FlowVerdict::Reset => "reset",
            FlowVerdict::AuditWouldDeny => "audit_would_deny",
        }
    }

    pub fn of_action(action: Action) -> FlowVerdict {
        match action {
            Action::Allow => FlowVerdict::Allow,
            Action::Deny => FlowVerdict::Deny,
            Action::Drop => FlowVerdict::Drop,
            Action::ResetClient | Action::ResetServer | Action::ResetBoth => FlowVerdict::Reset,
        }
    }

    /// The verdict a flow record reports: its rule's action, unless audit mode let it pass.
    pub fn of_record(record: &FlowRecord) -> FlowVerdict {
        if record.class == EventClass::WouldDeny {
            FlowVerdict::AuditWouldDeny
        } else {
            FlowVerdict::of_action(record.action)
        }
    }

    pub(super) fn index(self) -> usize {
        self as usize
    }
}

impl EncodeLabelValue for FlowVerdict {
    fn encode(&self, encoder: &mut LabelValueEncoder) -> Result<(), std::fmt::Error> {
        EncodeLabelValue::encode(&self.as_str(), encoder)
    }
}

/// Why one reconcile pass failed. The agent keeps enforcing the last good policy in every
/// case; these say where to look.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ReconcileErrorKind {
    /// A Kubernetes list or watch (ZonePolicy, Pod, Namespace, Node) failed.
    Watch,
    /// The standalone inventory file could not be read or parsed, or (Kubernetes mode) this
    /// node is not in the cluster.
    Inventory,
    /// A policy source (ZonePolicy object, policy directory, firewall configuration) is
    /// invalid.
    Policy,
    /// Compiling the policy into map entries failed (for example: a map would overflow).
    Compile,
    /// Writing the maps or switching the generation failed.
    Apply,
    /// Attaching the programs to a workload interface failed.
    Attach,
}

impl ReconcileErrorKind {
    pub const ALL: [ReconcileErrorKind; 6] = [
        ReconcileErrorKind::Watch,
        ReconcileErrorKind::Inventory,
        ReconcileErrorKind::Policy,
        ReconcileErrorKind::Compile,
        ReconcileErrorKind::Apply,
        ReconcileErrorKind::Attach,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            ReconcileErrorKind::Watch => "watch",
            ReconcileErrorKind::Inventory => "inventory",
            ReconcileErrorKind::Policy => "policy",
            ReconcileErrorKind::Compile => "compile",
            ReconcileErrorKind::Apply => "apply",
            ReconcileErrorKind::Attach => "attach",
        }
    }
}

impl EncodeLabelValue for ReconcileErrorKind {
    fn encode(&self, encoder: &mut LabelValueEncoder) -> Result<(), std::fmt::Error> {
        EncodeLabelValue::encode(&self.as_str(), encoder)
    }
}

/// Limits that keep the number of series bounded even when the inputs are not.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AgentMetricsOptions {
    /// Distinct (source zone, destination zone) pairs with their own series; flows of any
    /// further pair are counted under `_other`/`_other`. Zones are a closed set, so a real
    /// policy never reaches this; it protects against a namespace label gone wrong.
    pub max_zone_pairs: usize,
    /// Rules exported in `zonewall_rule_hit_*`. Rule series are bounded by the policy size,
    /// which can be 10,000 rules on every node; past this limit only the rules with the most
    /// packets are exported and `zonewall_rule_hit_rules_omitted` says how many are not.
    pub max_rule_series: usize,
}

impl Default for AgentMetricsOptions {
    fn default() -> Self {
        AgentMetricsOptions {
            max_zone_pairs: 1024,
            max_rule_series: 500,
        }
    }
}

/// One rule's hit counters as read from the kernel (totals, not increments).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RuleHit<'a> {
    /// The ZonePolicy the rule belongs to.
    pub policy: &'a str,
    /// The rule's name within that ZonePolicy (the firewall rule name): stable when rules
    /// are reordered, unlike an index.
    pub rule: &'a str,
    pub packets: u64,
    pub bytes: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct ZonePairLabels {
    source_zone: Arc<str>,
    destination_zone: Arc<str>,
    verdict: FlowVerdict,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct MapLabels {
    map: &'static str,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct ReasonLabels {
    reason: &'static str,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct OutcomeLabels {
    outcome: &'static str,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct ReconcileErrorLabels {
    kind: ReconcileErrorKind,
}

/// The counters of one zone pair, indexed by [`FlowVerdict::index`].
#[derive(Debug)]
struct PairSeries {
    flows: [Counter; FlowVerdict::ALL.len()],
    packets: [Counter; FlowVerdict::ALL.len()],
}

impl PairSeries {
    fn count(&self, verdict: FlowVerdict, flows: u64, packets: u64) {
        self.flows[verdict.index()].inc_by(flows);
        self.packets[verdict.index()].inc_by(packets);
    }
}

/// Zone pair -> its counters, looked up by `&str` so that counting a flow of a known pair
/// allocates nothing and takes one read lock.
#[derive(Debug, Default)]
struct ZonePairTable {
    by_source: HashMap<Arc<str>, HashMap<Arc<str>, Arc<PairSeries>>>,
    pairs: usize,
    overflow: Option<Arc<PairSeries>>,
}

impl ZonePairTable {
    /// The series of a known pair, or the `_other` series of every new pair once the table
    /// is full (so that those, too, only take the read lock).
    fn get(
        &self,
        source_zone: &str,
        destination_zone: &str,
        max_pairs: usize,
    ) -> Option<&Arc<PairSeries>> {
        let known = self
            .by_source
            .get(source_zone)
            .and_then(|destinations| destinations.get(destination_zone));
        known.or_else(|| {
            (self.pairs >= max_pairs)
                .then_some(self.overflow.as_ref())
                .flatten()
        })
    }
}

#[derive(Debug, Default)]
struct RuleHitsSnapshot {
    /// Ordered by (policy, rule), so the exposition is deterministic.
    rules: Vec<(String, String, u64, u64)>,
    omitted: u64,
}

/// Encodes the last rule hit snapshot at scrape time.
#[derive(Debug)]
struct RuleHitsCollector {
    snapshot: Arc<Mutex<RuleHitsSnapshot>>,
}

impl Collector for RuleHitsCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let snapshot = self.snapshot.lock().unwrap_or_else(PoisonError::into_inner);
        if !snapshot.rules.is_empty() {
            let mut packets = encoder.encode_descriptor(
                "rule_hit_packets",
                "Packets that hit a firewall rule, by ZonePolicy and rule name, read from the kernel's per-rule counters.",
                None,
                MetricType::Counter,
            )?;
            for (policy, rule, packet_count, _) in &snapshot.rules {
                let labels = [("policy", policy.as_str()), ("rule", rule.as_str())];
                ConstCounter::new(*packet_count).encode(packets.encode_family(&labels)?)?;
            }
            let mut bytes = encoder.encode_descriptor(
                "rule_hit",
                "Bytes of the packets that hit a firewall rule, by ZonePolicy and rule name.",
                Some(&Unit::Bytes),
                MetricType::Counter,
            )?;
            for (policy, rule, _, byte_count) in &snapshot.rules {
                let labels = [("policy", policy.as_str()), ("rule", rule.as_str())];
                ConstCounter::new(*byte_count).encode(bytes.encode_family(&labels)?)?;
            }
        }
        let omitted = encoder.encode_descriptor(
            "rule_hit_rules_omitted",
            "Rules with hit counters left out of zonewall_rule_hit_* because of the series limit (the rules with the fewest packets).",
            None,
            MetricType::Gauge,
        )?;
        ConstGauge::new(i64::try_from(snapshot.omitted).unwrap_or(i64::MAX)).encode(omitted)
    }
}

/// Unknown until the agent first talks to the API server (and in standalone mode, where
/// there is none), so that a standalone agent does not report "unreachable".
#[derive(Debug, Clone, Default)]
struct Reachability {
    /// 0 unknown, 1 unreachable, 2 reachable.
    state: Arc<AtomicU8>,
}

impl TypedMetric for Reachability {
    const TYPE: MetricType = MetricType::Gauge;
}

impl EncodeMetric for Reachability {
    fn encode(&self, mut encoder: MetricEncoder) -> Result<(), std::fmt::Error> {
        encoder.encode_gauge(&i64::from(self.state.load(Ordering::Relaxed) == 2))
    }

    fn metric_type(&self) -> MetricType {
        Self::TYPE
    }

    fn is_empty(&self) -> bool {
        self.state.load(Ordering::Relaxed) == 0
    }
}

/// The agent's recording handle. Clones share everything; pass one to each task.
#[derive(Debug, Clone)]
pub struct AgentMetrics {
    options: AgentMetricsOptions,
    flows: Family<ZonePairLabels, Counter>,
    flow_packets: Family<ZonePairLabels, Counter>,
    zone_pairs: Arc<RwLock<ZonePairTable>>,
    rule_hits: Arc<Mutex<RuleHitsSnapshot>>,
    policy_generation: Gauge,
    compile_duration: Histogram,
    apply_duration: Histogram,
    last_apply: Gauge<f64, AtomicU64>,
    map_entries: Family<MapLabels, Gauge>,
    map_max_entries: Family<MapLabels, Gauge>,
    ring_buffer_lost: KernelCounter,
    flow_packets_after_end: KernelCounter,
    kernel_drops: Family<ReasonLabels, KernelCounter>,
    kernel_outcomes: Family<OutcomeLabels, KernelCounter>,
    reconcile_errors: Family<ReconcileErrorLabels, Counter>,
    apiserver_reachable: Reachability,
}

impl AgentMetrics {
    pub fn register(metrics: &mut Metrics, options: AgentMetricsOptions) -> AgentMetrics {
        let agent = AgentMetrics {
            options,
            flows: Family::default(),
            flow_packets: Family::default(),
            zone_pairs: Arc::default(),
            rule_hits: Arc::default(),
            policy_generation: Gauge::default(),
            compile_duration: Histogram::new(POLICY_DURATION_BUCKETS),
            apply_duration: Histogram::new(POLICY_DURATION_BUCKETS),
            last_apply: Gauge::default(),
            map_entries: Family::default(),
            map_max_entries: Family::default(),
            ring_buffer_lost: KernelCounter::default(),
            flow_packets_after_end: KernelCounter::default(),
            kernel_drops: Family::default(),
            kernel_outcomes: Family::default(),
            reconcile_errors: Family::default(),
            apiserver_reachable: Reachability::default(),
        };
        // Every kind is a series from the start, so `increase(...) > 0` alerts work from the
        // first error.
        for kind in ReconcileErrorKind::ALL {
            drop(
                agent
                    .reconcile_errors
                    .get_or_create(&ReconcileErrorLabels { kind }),
            );
        }

        let registry = metrics.registry_mut();
        registry.register(
            "flows",
            "Flows by source zone, destination zone and verdict, counted when their flow record is produced",
            agent.flows.clone(),
        );
        registry.register(
            "flow_packets",
            "Packets of those flows, both directions",
            agent.flow_packets.clone(),
        );
        registry.register_collector(Box::new(RuleHitsCollector {
            snapshot: Arc::clone(&agent.rule_hits),
        }));
        registry.register(
            "policy_generation",
            "Generation of the policy live in the dataplane",
            agent.policy_generation.clone(),
        );
        registry.register_with_unit(
            "policy_compile_duration",
            "Time to compile a policy snapshot into map entries",
            Unit::Seconds,
            agent.compile_duration.clone(),
        );
        registry.register_with_unit(
            "policy_apply_duration",
            "Time to write a compiled policy into the maps and make it live",
            Unit::Seconds,
            agent.apply_duration.clone(),
        );
        registry.register_with_unit(
            "policy_last_apply_success_timestamp",
            "When a policy was last made live, in seconds since the Unix epoch",
            Unit::Seconds,
            agent.last_apply.clone(),
        );
        registry.register(
            "map_entries",
            "Entries in an eBPF map",
            agent.map_entries.clone(),
        );
        registry.register(
            "map_max_entries",
            "Capacity of an eBPF map (its max_entries)",
            agent.map_max_entries.clone(),
        );
        registry.register(
            "ring_buffer_lost_events",
            "Flow events the kernel could not write because the ring buffer was full",
            agent.ring_buffer_lost.clone(),
        );
        registry.register(
            "flow_packets_after_end",
            "Packets a flow passed on one CPU in the clock tick it ended on another, added to its counters after its end record went out (so not in it)",
            agent.flow_packets_after_end.clone(),
        );
        registry.register(
            "kernel_dropped_packets",
            "Packets the eBPF programs dropped, by reason, read from the kernel's counters",
            agent.kernel_drops.clone(),
        );
        registry.register(
            "kernel_packets",
            "Packets the eBPF programs passed, and resets and audit decisions they made, by outcome, read from the kernel's counters",
            agent.kernel_outcomes.clone(),
        );
        registry.register(
            "reconcile_errors",
            "Failed reconcile passes by kind; the last good policy stays live",
            agent.reconcile_errors.clone(),
        );
        registry.register(
            "apiserver_reachable",
            "1 while the Kubernetes API server answers, 0 while it does not (the last good policy stays live); absent in standalone mode",
            agent.apiserver_reachable.clone(),
        );
        agent
    }

    /// Counts `flows` flows (usually 1; an aggregated deny record stands for several
    /// attempts) with `packets` packets between two zones. Allocation free once the zone
    /// pair has been seen.
    pub fn record_flows(
        &self,
        source_zone: &str,
        destination_zone: &str,
        verdict: FlowVerdict,
        flows: u64,
        packets: u64,
    ) {
        {
            let table = self
                .zone_pairs
                .read()
                .unwrap_or_else(PoisonError::into_inner);
            if let Some(series) =
                table.get(source_zone, destination_zone, self.options.max_zone_pairs)
            {
                series.count(verdict, flows, packets);
                return;
            }
        }
        self.add_zone_pair(source_zone, destination_zone)
            .count(verdict, flows, packets);
    }

    /// [`Self::record_flows`] for one flow record. An allowed flow is counted by its end
    /// record, which carries its packets; its start record (rules that log at session start)
    /// is not counted, or the flow would count twice.
    pub fn record_flow_record(&self, record: &FlowRecord) {
        if record.class == EventClass::Start {
            return;
        }
        self.record_flows(
            &record.source_zone,
            &record.destination_zone,
            FlowVerdict::of_record(record),
            record.repeat_count.max(1),
            record.counters.total_packets(),
        );
    }

    #[cold]
    fn add_zone_pair(&self, source_zone: &str, destination_zone: &str) -> Arc<PairSeries> {
        let mut table = self
            .zone_pairs
            .write()
            .unwrap_or_else(PoisonError::into_inner);
        // Another thread may have added it between the read and the write lock.
        if let Some(series) = table.get(source_zone, destination_zone, self.options.max_zone_pairs)
        {
            return Arc::clone(series);
        }
        if table.pairs >= self.options.max_zone_pairs {
            let other: Arc<str> = Arc::from(OVERFLOW_ZONE);
            let series = Arc::new(self.pair_series(&other, &other));
            table.overflow = Some(Arc::clone(&series));
            return series;
        }
        let source: Arc<str> = match table.by_source.get_key_value(source_zone) {
            Some((known, _)) => Arc::clone(known),
            None => Arc::from(source_zone),
        };
        let destination: Arc<str> = Arc::from(destination_zone);
        let series = Arc::new(self.pair_series(&source, &destination));
        table
            .by_source
            .entry(Arc::clone(&source))
            .or_default()
            .insert(destination, Arc::clone(&series));
        table.pairs += 1;
        series
    }

    /// Creates the series of every verdict for a pair, so each shows 0 until it happens.
    fn pair_series(&self, source_zone: &Arc<str>, destination_zone: &Arc<str>) -> PairSeries {
        let labels = |verdict| ZonePairLabels {
            source_zone: Arc::clone(source_zone),
            destination_zone: Arc::clone(destination_zone),
            verdict,
        };
        PairSeries {
            flows: FlowVerdict::ALL.map(|verdict| self.flows.get_or_create_owned(&labels(verdict))),
            packets: FlowVerdict::ALL
                .map(|verdict| self.flow_packets.get_or_create_owned(&labels(verdict))),
        }
    }

    /// Replaces the rule hit counters with the kernel's current totals. Rules absent from
    /// `hits` (removed from the policy) disappear from the exposition. The same rule given
    /// twice (one rule compiled into several kernel entries) is summed.
    pub fn set_rule_hits<'a>(&self, hits: impl IntoIterator<Item = RuleHit<'a>>) {
        let mut merged: BTreeMap<(&str, &str), (u64, u64)> = BTreeMap::new();
        for hit in hits {
            let totals = merged.entry((hit.policy, hit.rule)).or_default();
            totals.0 = totals.0.saturating_add(hit.packets);
            totals.1 = totals.1.saturating_add(hit.bytes);
        }
        let mut rules: Vec<_> = merged.into_iter().collect();
        let mut omitted = 0;
        if rules.len() > self.options.max_rule_series {
            // Keep the busiest rules; ties go to the (policy, rule) order, so the choice
            // is deterministic.
            rules.sort_by(|(key_a, (packets_a, _)), (key_b, (packets_b, _))| {
                packets_b.cmp(packets_a).then_with(|| key_a.cmp(key_b))
            });
            omitted = (rules.len() - self.options.max_rule_series) as u64;
            rules.truncate(self.options.max_rule_series);
            rules.sort_by_key(|(key, _)| *key);
        }
        let snapshot = RuleHitsSnapshot {
            rules: rules
                .into_iter()
                .map(|((policy, rule), (packets, bytes))| {
                    (policy.to_owned(), rule.to_owned(), packets, bytes)
                })
                .collect(),
            omitted,
        };
        *self
            .rule_hits
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = snapshot;
    }

    /// A policy snapshot was compiled into map entries.
    pub fn record_compile(&self, duration: Duration) {
        self.compile_duration.observe(duration.as_secs_f64());
    }

    /// Policy `generation` was made live after `duration` of map writes.
    pub fn record_apply(&self, duration: Duration, generation: u64) {
        self.apply_duration.observe(duration.as_secs_f64());
        self.policy_generation
            .set(i64::try_from(generation).unwrap_or(i64::MAX));
        self.last_apply.set(unix_seconds(SystemTime::now()));
    }

    /// Current entries and capacity of one eBPF map (name from `zonewall_common::map_names`).
    pub fn set_map_usage(&self, map: &'static str, entries: u64, max_entries: u64) {
        let labels = MapLabels { map };
        self.map_entries
            .get_or_create(&labels)
            .set(i64::try_from(entries).unwrap_or(i64::MAX));
        self.map_max_entries
            .get_or_create(&labels)
            .set(i64::try_from(max_entries).unwrap_or(i64::MAX));
    }

    /// The kernel's total of events lost because the ring buffer was full.
    pub fn set_ring_buffer_lost(&self, total: u64) {
        self.ring_buffer_lost.set(total);
    }

    /// The kernel's total of packets counted into their flow after its end record.
    pub fn set_flow_packets_after_end(&self, total: u64) {
        self.flow_packets_after_end.set(total);
    }

    /// The kernel's total of packets dropped for `reason` (a constant; see
    /// [`Self::set_kernel_outcomes`], which feeds this from the kernel's counters).
    pub fn set_kernel_dropped(&self, reason: &'static str, total: u64) {
        self.kernel_drops
            .get_or_create(&ReasonLabels { reason })
            .set(total);
    }

    /// All of the kernel's outcome counters at once, summed over CPUs and indexed like
    /// `zonewall_common::counter` (the datapath's `Counters.0`): `drop_*` feed
    /// `zonewall_kernel_dropped_packets_total{reason}` (reason without the prefix),
    /// `events_lost` feeds `zonewall_ring_buffer_lost_events_total`, and every other outcome
    /// `zonewall_kernel_packets_total{outcome}`.
    pub fn set_kernel_outcomes(&self, totals: &[u64; counter::COUNT as usize]) {
        for (index, (&name, &total)) in counter::NAMES.iter().zip(totals).enumerate() {
            if index == counter::EVENTS_LOST as usize {
                self.set_ring_buffer_lost(total);
            } else if let Some(reason) = name.strip_prefix("drop_") {
                self.set_kernel_dropped(reason, total);
            } else {
                self.kernel_outcomes
                    .get_or_create(&OutcomeLabels { outcome: name })
                    .set(total);
            }
        }
    }

    pub fn record_reconcile_error(&self, kind: ReconcileErrorKind) {
        self.reconcile_errors
            .get_or_create(&ReconcileErrorLabels { kind })
            .inc();
    }

    /// Kubernetes mode: whether the last request to the API server got an answer.
    pub fn set_apiserver_reachable(&self, reachable: bool) {
        self.apiserver_reachable
            .state
            .store(if reachable { 2 } else { 1 }, Ordering::Relaxed);
    }
}
