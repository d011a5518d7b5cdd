//! Exposition tests: what a scraper sees, parsed back from the text.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use super::*;
use crate::flows::record::{
    Counters, Direction, EventClass, FiveTuple, FlowRecord, ObservationPoint, RuleRef, UnixNanos,
};
use crate::flows::sink::{DropReason, SinkCounters};
use crate::model::rule::Action;

/// One sample line: metric name, labels in order, value.
#[derive(Debug, Clone, PartialEq)]
struct Sample {
    name: String,
    labels: Vec<(String, String)>,
    value: f64,
}

/// Parses sample lines (not comments) of either text format, unescaping label values.
fn samples(text: &str) -> Vec<Sample> {
    text.lines()
        .filter(|line| !line.starts_with('#') && !line.is_empty())
        .map(|line| parse_sample(line).unwrap_or_else(|| panic!("unparseable line {line:?}")))
        .collect()
}

fn parse_sample(line: &str) -> Option<Sample> {
    let name_end = line.find(['{', ' '])?;
    let name = line[..name_end].to_owned();
    let mut rest = &line[name_end..];
    let mut labels = Vec::new();
    if let Some(after_brace) = rest.strip_prefix('{') {
        let mut chars = after_brace.char_indices();
        let mut key = String::new();
        let mut value = String::new();
        let mut in_value = false;
        let mut end = None;
        while let Some((index, character)) = chars.next() {
            match (in_value, character) {
                (false, '}') => {
                    end = Some(index + 1);
                    break;
                }
                (false, ',') => {}
                (false, '=') => {
                    let (_, quote) = chars.next()?;
                    if quote != '"' {
                        return None;
                    }
                    in_value = true;
                }
                (false, other) => key.push(other),
                (true, '\\') => match chars.next()?.1 {
                    'n' => value.push('\n'),
                    escaped => value.push(escaped),
                },
                (true, '"') => {
                    labels.push((std::mem::take(&mut key), std::mem::take(&mut value)));
                    in_value = false;
                }
                (true, other) => value.push(other),
            }
        }
        rest = &after_brace[end?..];
    }
    let value = rest.trim().split(' ').next()?;
    let value = match value {
        "+Inf" => f64::INFINITY,
        other => other.parse().ok()?,
    };
    Some(Sample {
        name,
        labels,
        value,
    })
}

/// The value of the one sample with this name and exactly these labels (any order).
fn value(text: &str, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    let mut wanted: Vec<(String, String)> = labels
        .iter()
        .map(|(key, value)| ((*key).to_owned(), (*value).to_owned()))
        .collect();
    wanted.sort();
    let matching: Vec<f64> = samples(text)
        .into_iter()
        .filter(|sample| {
            let mut labels = sample.labels.clone();
            labels.sort();
            sample.name == name && labels == wanted
        })
        .map(|sample| sample.value)
        .collect();
    assert!(matching.len() <= 1, "{name} {labels:?} appears twice");
    matching.first().copied()
}

/// `# TYPE` declarations: family name -> type.
fn families(text: &str) -> BTreeMap<String, String> {
    text.lines()
        .filter_map(|line| line.strip_prefix("# TYPE "))
        .map(|declaration| {
            let (name, kind) = declaration.split_once(' ').expect("TYPE NAME KIND");
            (name.to_owned(), kind.to_owned())
        })
        .collect()
}

fn openmetrics(metrics: &Metrics) -> String {
    metrics
        .encode(ExpositionFormat::OpenMetrics)
        .expect("encodes")
}

fn prometheus_text(metrics: &Metrics) -> String {
    metrics
        .encode(ExpositionFormat::PrometheusText)
        .expect("encodes")
}

struct Everything {
    metrics: Metrics,
    agent: AgentMetrics,
    sinks: SinkMetrics,
    sync: SyncMetrics,
    sink_counters: Arc<SinkCounters>,
}

/// Every subsystem registered and every recording method called once.
fn everything() -> Everything {
    let mut metrics = Metrics::new();
    let agent = AgentMetrics::register(&mut metrics, AgentMetricsOptions::default());
    let sinks = SinkMetrics::register(&mut metrics);
    let sync = SyncMetrics::register(&mut metrics);
    let sink_counters = Arc::new(SinkCounters::default());
    sinks.add(
        "cef+tcp://siem.example:601",
        Arc::clone(&sink_counters),
        4096,
    );

    agent.record_flows("dmz", "trusted", FlowVerdict::Allow, 1, 10);
    agent.set_rule_hits([RuleHit {
        policy: "firewall-dg-prod",
        rule: "allow-web",
        packets: 10,
        bytes: 1500,
    }]);
    agent.record_compile(Duration::from_millis(3));
    agent.record_apply(Duration::from_millis(7), 4);
    agent.set_map_usage("ZW_POLICY", 120, 65_536);
    agent.set_ring_buffer_lost(2);
    agent.set_kernel_dropped("malformed", 3);
    let mut kernel = [0u64; zonewall_common::counter::COUNT as usize];
    kernel[zonewall_common::counter::PASS_ESTABLISHED as usize] = 100;
    agent.set_kernel_outcomes(&kernel);
    agent.record_reconcile_error(ReconcileErrorKind::Compile);
    agent.set_apiserver_reachable(true);

    sync.record_sync_success(SystemTime::now());
    sync.record_commit_applied(Duration::from_millis(1800));
    sync.record_objects(3, 1);
    sync.record_drift_remediation(DriftAction::Restored);
    sync.record_error(SyncErrorKind::Panorama);

    Everything {
        metrics,
        agent,
        sinks,
        sync,
        sink_counters,
    }
}

const EXPECTED_FAMILIES: [(&str, &str); 32] = [
    ("zonewall_build", "info"),
    ("zonewall_flows", "counter"),
    ("zonewall_flow_packets", "counter"),
    ("zonewall_rule_hit_packets", "counter"),
    ("zonewall_rule_hit_bytes", "counter"),
    ("zonewall_rule_hit_rules_omitted", "gauge"),
    ("zonewall_policy_generation", "gauge"),
    ("zonewall_policy_compile_duration_seconds", "histogram"),
    ("zonewall_policy_apply_duration_seconds", "histogram"),
    (
        "zonewall_policy_last_apply_success_timestamp_seconds",
        "gauge",
    ),
    ("zonewall_map_entries", "gauge"),
    ("zonewall_map_max_entries", "gauge"),
    ("zonewall_ring_buffer_lost_events", "counter"),
    ("zonewall_flow_packets_after_end", "counter"),
    ("zonewall_kernel_dropped_packets", "counter"),
    ("zonewall_kernel_packets", "counter"),
    ("zonewall_reconcile_errors", "counter"),
    ("zonewall_apiserver_reachable", "gauge"),
    ("zonewall_sink_records_offered", "counter"),
    ("zonewall_sink_records_delivered", "counter"),
    ("zonewall_sink_records_truncated", "counter"),
    ("zonewall_sink_connects", "counter"),
    ("zonewall_sink_connect_failures", "counter"),
    ("zonewall_sink_records_dropped", "counter"),
    ("zonewall_sink_queue_depth", "gauge"),
    ("zonewall_sink_queue_capacity", "gauge"),
    ("zonewall_sync_last_success_timestamp_seconds", "gauge"),
    ("zonewall_sync_commit_to_applied_seconds", "histogram"),
    ("zonewall_sync_objects_applied", "counter"),
    ("zonewall_sync_objects_deleted", "counter"),
    ("zonewall_sync_drift_remediations", "counter"),
    ("zonewall_sync_errors", "counter"),
];

#[test]
fn metrics_every_family_is_exposed_with_its_type() {
    let all = everything();
    let text = openmetrics(&all.metrics);
    let expected: BTreeMap<String, String> = EXPECTED_FAMILIES
        .iter()
        .map(|(name, kind)| ((*name).to_owned(), (*kind).to_owned()))
        .collect();
    assert_eq!(families(&text), expected, "{text}");
    assert!(text.ends_with("# EOF\n"));
}

#[test]
fn metrics_every_sample_belongs_to_a_declared_family() {
    let all = everything();
    let text = openmetrics(&all.metrics);
    let declared = families(&text);
    for sample in samples(&text) {
        let family = declared
            .iter()
            .find(|(family, kind)| {
                let suffixes: &[&str] = match kind.as_str() {
                    "counter" => &["_total", "_created"],
                    "histogram" => &["_bucket", "_sum", "_count", "_created"],
                    "info" => &["_info"],
                    _ => &[""],
                };
                suffixes
                    .iter()
                    .any(|suffix| sample.name == format!("{family}{suffix}"))
            })
            .unwrap_or_else(|| panic!("{} has no family in\n{text}", sample.name));
        assert!(sample.name.starts_with("zonewall_"), "{}", sample.name);
        for (label, _) in &sample.labels {
            assert!(
                [
                    "version",
                    "source_zone",
                    "destination_zone",
                    "verdict",
                    "policy",
                    "rule",
                    "map",
                    "reason",
                    "outcome",
                    "kind",
                    "sink",
                    "action",
                    "le"
                ]
                .contains(&label.as_str()),
                "unexpected label {label} on {} ({family:?})",
                sample.name
            );
        }
    }
    // Units are declared where the name carries one.
    assert!(text.contains("# UNIT zonewall_policy_apply_duration_seconds seconds\n"));
    assert!(text.contains("# UNIT zonewall_rule_hit_bytes bytes\n"));
}

#[test]
fn metrics_prometheus_text_names_counters_with_total() {
    let all = everything();
    let text = prometheus_text(&all.metrics);
    let declared = families(&text);
    for (name, kind) in &declared {
        if kind == "counter" {
            assert!(name.ends_with("_total"), "{name} in\n{text}");
        }
    }
    assert!(declared.contains_key("zonewall_flows_total"));
    assert!(declared.contains_key("zonewall_rule_hit_bytes_total"));
    assert!(!text.contains("# EOF"));
    assert_eq!(
        value(
            &text,
            "zonewall_flows_total",
            &[
                ("source_zone", "dmz"),
                ("destination_zone", "trusted"),
                ("verdict", "allow")
            ]
        ),
        Some(1.0)
    );
}

#[test]
fn metrics_flows_count_by_zone_pair_and_verdict() {
    let all = everything();
    all.agent
        .record_flows("dmz", "trusted", FlowVerdict::Allow, 1, 5);
    all.agent
        .record_flows("dmz", "trusted", FlowVerdict::Reset, 3, 3);
    all.agent
        .record_flows("untrust", "dmz", FlowVerdict::AuditWouldDeny, 1, 1);
    let text = openmetrics(&all.metrics);
    let pair = |source, destination, verdict| {
        [
            ("source_zone", source),
            ("destination_zone", destination),
            ("verdict", verdict),
        ]
    };
    assert_eq!(
        value(
            &text,
            "zonewall_flows_total",
            &pair("dmz", "trusted", "allow")
        ),
        Some(2.0)
    );
    assert_eq!(
        value(
            &text,
            "zonewall_flow_packets_total",
            &pair("dmz", "trusted", "allow")
        ),
        Some(15.0)
    );
    assert_eq!(
        value(
            &text,
            "zonewall_flows_total",
            &pair("dmz", "trusted", "reset")
        ),
        Some(3.0)
    );
    // Every verdict of a seen pair is a series from the start.
    assert_eq!(
        value(
            &text,
            "zonewall_flows_total",
            &pair("dmz", "trusted", "drop")
        ),
        Some(0.0)
    );
    assert_eq!(
        value(
            &text,
            "zonewall_flows_total",
            &pair("untrust", "dmz", "audit_would_deny")
        ),
        Some(1.0)
    );
    // Direction matters: dmz -> untrust was never seen.
    assert_eq!(
        value(
            &text,
            "zonewall_flows_total",
            &pair("dmz", "untrust", "allow")
        ),
        None
    );
}

#[test]
fn metrics_zone_pairs_past_the_limit_count_as_other() {
    let mut metrics = Metrics::new();
    let agent = AgentMetrics::register(
        &mut metrics,
        AgentMetricsOptions {
            max_zone_pairs: 2,
            ..AgentMetricsOptions::default()
        },
    );
    agent.record_flows("a", "b", FlowVerdict::Deny, 1, 1);
    agent.record_flows("a", "c", FlowVerdict::Deny, 1, 1);
    agent.record_flows("x", "y", FlowVerdict::Deny, 1, 1);
    agent.record_flows("x", "z", FlowVerdict::Deny, 1, 1);
    agent.record_flows("a", "b", FlowVerdict::Deny, 1, 1);
    let text = openmetrics(&metrics);
    let deny = |source, destination| {
        [
            ("source_zone", source),
            ("destination_zone", destination),
            ("verdict", "deny"),
        ]
    };
    assert_eq!(
        value(&text, "zonewall_flows_total", &deny("a", "b")),
        Some(2.0)
    );
    assert_eq!(
        value(&text, "zonewall_flows_total", &deny("a", "c")),
        Some(1.0)
    );
    assert_eq!(value(&text, "zonewall_flows_total", &deny("x", "y")), None);
    assert_eq!(
        value(&text, "zonewall_flows_total", &deny("_other", "_other")),
        Some(2.0)
    );
    let series = samples(&text)
        .iter()
        .filter(|sample| sample.name == "zonewall_flows_total")
        .count();
    assert_eq!(series, 3 * FlowVerdict::ALL.len());
}

#[test]
fn metrics_zone_names_are_escaped_not_trusted() {
    let all = everything();
    let hostile = "dmz\"} 1\nzonewall_forged_total 99\n#";
    all.agent
        .record_flows(hostile, "trusted", FlowVerdict::Deny, 1, 1);
    for text in [openmetrics(&all.metrics), prometheus_text(&all.metrics)] {
        assert!(
            samples(&text)
                .iter()
                .all(|sample| sample.name != "zonewall_forged_total"),
            "{text}"
        );
        assert!(!text.lines().any(|line| line == "#"), "{text}");
        assert_eq!(
            value(
                &text,
                "zonewall_flows_total",
                &[
                    ("source_zone", hostile),
                    ("destination_zone", "trusted"),
                    ("verdict", "deny")
                ]
            ),
            Some(1.0),
            "{text}"
        );
    }
}

#[test]
fn metrics_rule_hits_replace_sum_and_keep_the_busiest() {
    let mut metrics = Metrics::new();
    let agent = AgentMetrics::register(
        &mut metrics,
        AgentMetricsOptions {
            max_rule_series: 2,
            ..AgentMetricsOptions::default()
        },
    );
    let hit = |rule, packets| RuleHit {
        policy: "fw",
        rule,
        packets,
        bytes: packets * 100,
    };
    agent.set_rule_hits([
        hit("quiet", 1),
        hit("busy", 50),
        hit("middle", 5),
        hit("middle", 5),
    ]);
    let text = openmetrics(&metrics);
    let rule = |name| [("policy", "fw"), ("rule", name)];
    assert_eq!(
        value(&text, "zonewall_rule_hit_packets_total", &rule("busy")),
        Some(50.0)
    );
    // One rule compiled into two kernel entries is summed.
    assert_eq!(
        value(&text, "zonewall_rule_hit_packets_total", &rule("middle")),
        Some(10.0)
    );
    assert_eq!(
        value(&text, "zonewall_rule_hit_bytes_total", &rule("middle")),
        Some(1000.0)
    );
    assert_eq!(
        value(&text, "zonewall_rule_hit_packets_total", &rule("quiet")),
        None
    );
    assert_eq!(
        value(&text, "zonewall_rule_hit_rules_omitted", &[]),
        Some(1.0)
    );

    // A new policy generation without "busy": its series goes away.
    agent.set_rule_hits([hit("quiet", 2)]);
    let text = openmetrics(&metrics);
    assert_eq!(
        value(&text, "zonewall_rule_hit_packets_total", &rule("busy")),
        None
    );
    assert_eq!(
        value(&text, "zonewall_rule_hit_packets_total", &rule("quiet")),
        Some(2.0)
    );
    assert_eq!(
        value(&text, "zonewall_rule_hit_rules_omitted", &[]),
        Some(0.0)
    );

    agent.set_rule_hits([]);
    let text = openmetrics(&metrics);
    assert!(!text.contains("zonewall_rule_hit_packets"), "{text}");
}

#[test]
fn metrics_policy_apply_records_generation_duration_and_time() {
    let all = everything();
    let before = unix_seconds(SystemTime::now());
    all.agent.record_apply(Duration::from_millis(40), 9);
    let text = openmetrics(&all.metrics);
    assert_eq!(value(&text, "zonewall_policy_generation", &[]), Some(9.0));
    assert_eq!(
        value(&text, "zonewall_policy_apply_duration_seconds_count", &[]),
        Some(2.0)
    );
    // 7 ms and 40 ms: one in the 10 ms bucket, both in the 50 ms one.
    assert_eq!(
        value(
            &text,
            "zonewall_policy_apply_duration_seconds_bucket",
            &[("le", "0.01")]
        ),
        Some(1.0)
    );
    assert_eq!(
        value(
            &text,
            "zonewall_policy_apply_duration_seconds_bucket",
            &[("le", "0.05")]
        ),
        Some(2.0)
    );
    let applied_at = value(
        &text,
        "zonewall_policy_last_apply_success_timestamp_seconds",
        &[],
    )
    .expect("timestamp");
    assert!(applied_at >= before.floor() && applied_at < before + 60.0);
    assert_eq!(
        value(&text, "zonewall_policy_compile_duration_seconds_count", &[]),
        Some(1.0)
    );
}

#[test]
fn metrics_kernel_totals_are_counters_set_not_added() {
    let all = everything();
    all.agent.set_kernel_dropped("malformed", 10);
    all.agent.set_kernel_dropped("drop_blocked", 4);
    all.agent.set_ring_buffer_lost(7);
    all.agent.set_map_usage("ZW_POLICY", 300, 65_536);
    let text = openmetrics(&all.metrics);
    assert_eq!(
        value(
            &text,
            "zonewall_kernel_dropped_packets_total",
            &[("reason", "malformed")]
        ),
        Some(10.0)
    );
    assert_eq!(
        value(
            &text,
            "zonewall_kernel_dropped_packets_total",
            &[("reason", "drop_blocked")]
        ),
        Some(4.0)
    );
    assert_eq!(
        value(&text, "zonewall_ring_buffer_lost_events_total", &[]),
        Some(7.0)
    );
    assert_eq!(
        value(&text, "zonewall_map_entries", &[("map", "ZW_POLICY")]),
        Some(300.0)
    );
    assert_eq!(
        value(&text, "zonewall_map_max_entries", &[("map", "ZW_POLICY")]),
        Some(65_536.0)
    );
}

#[test]
fn metrics_kernel_outcome_counters_map_to_their_families() {
    use zonewall_common::counter;

    let mut metrics = Metrics::new();
    let agent = AgentMetrics::register(&mut metrics, AgentMetricsOptions::default());
    let mut totals = [0u64; counter::COUNT as usize];
    totals[counter::PASS_NEW as usize] = 40;
    totals[counter::DROP_POLICY as usize] = 7;
    totals[counter::DROP_SPOOFED as usize] = 2;
    totals[counter::AUDIT_WOULD_DENY as usize] = 3;
    totals[counter::EVENTS_LOST as usize] = 9;
    agent.set_kernel_outcomes(&totals);
    let text = openmetrics(&metrics);
    let dropped = |reason| {
        value(
            &text,
            "zonewall_kernel_dropped_packets_total",
            &[("reason", reason)],
        )
    };
    let outcome = |outcome| {
        value(
            &text,
            "zonewall_kernel_packets_total",
            &[("outcome", outcome)],
        )
    };
    assert_eq!(dropped("policy"), Some(7.0));
    assert_eq!(dropped("spoofed"), Some(2.0));
    assert_eq!(dropped("no_policy"), Some(0.0));
    assert_eq!(outcome("pass_new"), Some(40.0));
    assert_eq!(outcome("audit_would_deny"), Some(3.0));
    assert_eq!(outcome("drop_policy"), None);
    assert_eq!(outcome("events_lost"), None);
    assert_eq!(
        value(&text, "zonewall_ring_buffer_lost_events_total", &[]),
        Some(9.0)
    );
    // Every kernel counter lands in exactly one series.
    let kernel_series = samples(&text)
        .iter()
        .filter(|sample| {
            sample.name.starts_with("zonewall_kernel_")
                || sample.name == "zonewall_ring_buffer_lost_events_total"
        })
        .count();
    assert_eq!(kernel_series, counter::COUNT as usize);
}

#[test]
fn metrics_reconcile_errors_and_apiserver_state() {
    let mut metrics = Metrics::new();
    let agent = AgentMetrics::register(&mut metrics, AgentMetricsOptions::default());
    let text = openmetrics(&metrics);
    for kind in ReconcileErrorKind::ALL {
        assert_eq!(
            value(
                &text,
                "zonewall_reconcile_errors_total",
                &[("kind", kind.as_str())]
            ),
            Some(0.0)
        );
    }
    // Standalone agents never set it: no series rather than a false "unreachable".
    assert!(!text.contains("zonewall_apiserver_reachable"), "{text}");

    agent.record_reconcile_error(ReconcileErrorKind::Watch);
    agent.set_apiserver_reachable(false);
    let text = openmetrics(&metrics);
    assert_eq!(
        value(
            &text,
            "zonewall_reconcile_errors_total",
            &[("kind", "watch")]
        ),
        Some(1.0)
    );
    assert_eq!(value(&text, "zonewall_apiserver_reachable", &[]), Some(0.0));
    agent.set_apiserver_reachable(true);
    let text = openmetrics(&metrics);
    assert_eq!(value(&text, "zonewall_apiserver_reachable", &[]), Some(1.0));
}

#[test]
fn metrics_sink_counters_are_read_at_scrape_time() {
    let all = everything();
    let sink = [("sink", "cef+tcp://siem.example:601")];
    let text = openmetrics(&all.metrics);
    assert_eq!(
        value(&text, "zonewall_sink_records_delivered_total", &sink),
        Some(0.0)
    );
    assert_eq!(
        value(&text, "zonewall_sink_queue_capacity", &sink),
        Some(4096.0)
    );

    // The sink's own counters move; the next scrape sees them, nothing else is told.
    let counters = &all.sink_counters;
    for _ in 0..6 {
        counters.record_offered();
    }
    counters.record_enqueued();
    counters.record_enqueued();
    counters.record_dequeued();
    counters.record_delivered(3);
    counters.record_dropped(DropReason::QueueFull, 2);
    counters.record_truncated();
    counters.record_connect(true);
    counters.record_connect(false);
    let text = openmetrics(&all.metrics);
    assert_eq!(
        value(&text, "zonewall_sink_records_offered_total", &sink),
        Some(6.0)
    );
    assert_eq!(
        value(&text, "zonewall_sink_records_delivered_total", &sink),
        Some(3.0)
    );
    assert_eq!(
        value(&text, "zonewall_sink_records_truncated_total", &sink),
        Some(1.0)
    );
    assert_eq!(value(&text, "zonewall_sink_queue_depth", &sink), Some(1.0));
    assert_eq!(
        value(&text, "zonewall_sink_connects_total", &sink),
        Some(1.0)
    );
    assert_eq!(
        value(&text, "zonewall_sink_connect_failures_total", &sink),
        Some(1.0)
    );
    for reason in DropReason::ALL {
        let expected = if reason == DropReason::QueueFull {
            2.0
        } else {
            0.0
        };
        assert_eq!(
            value(
                &text,
                "zonewall_sink_records_dropped_total",
                &[
                    ("sink", "cef+tcp://siem.example:601"),
                    ("reason", reason.as_str())
                ]
            ),
            Some(expected),
            "{reason}"
        );
    }
}

#[test]
fn metrics_sinks_with_the_same_description_get_distinct_labels() {
    let all = everything();
    let second = Arc::new(SinkCounters::default());
    second.record_delivered(5);
    all.sinks
        .add("cef+tcp://siem.example:601", Arc::clone(&second), 10);
    all.sinks
        .add("cef+tcp://siem.example:601", Arc::default(), 10);
    let text = openmetrics(&all.metrics);
    assert_eq!(
        value(
            &text,
            "zonewall_sink_records_delivered_total",
            &[("sink", "cef+tcp://siem.example:601#2")]
        ),
        Some(5.0)
    );
    assert_eq!(
        value(
            &text,
            "zonewall_sink_records_delivered_total",
            &[("sink", "cef+tcp://siem.example:601#3")]
        ),
        Some(0.0)
    );
}

#[test]
fn metrics_sync_controller_records() {
    let all = everything();
    all.sync.record_objects(2, 0);
    all.sync.record_drift_remediation(DriftAction::Deleted);
    all.sync.record_commit_applied(Duration::from_millis(600));
    let at = SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000);
    all.sync.record_sync_success(at);
    let text = openmetrics(&all.metrics);
    assert_eq!(
        value(&text, "zonewall_sync_objects_applied_total", &[]),
        Some(5.0)
    );
    assert_eq!(
        value(&text, "zonewall_sync_objects_deleted_total", &[]),
        Some(1.0)
    );
    for (action, expected) in [("deleted", 1.0), ("restored", 1.0)] {
        assert_eq!(
            value(
                &text,
                "zonewall_sync_drift_remediations_total",
                &[("action", action)]
            ),
            Some(expected)
        );
    }
    assert_eq!(
        value(&text, "zonewall_sync_errors_total", &[("kind", "panorama")]),
        Some(1.0)
    );
    assert_eq!(
        value(&text, "zonewall_sync_errors_total", &[("kind", "apply")]),
        Some(0.0)
    );
    assert_eq!(
        value(&text, "zonewall_sync_commit_to_applied_seconds_count", &[]),
        Some(2.0)
    );
    assert_eq!(
        value(
            &text,
            "zonewall_sync_commit_to_applied_seconds_bucket",
            &[("le", "1.0")]
        ),
        Some(1.0)
    );
    assert_eq!(
        value(&text, "zonewall_sync_last_success_timestamp_seconds", &[]),
        Some(1_800_000_000.0)
    );
}

#[test]
fn metrics_verdicts_follow_the_rule_action() {
    assert_eq!(FlowVerdict::of_action(Action::Allow), FlowVerdict::Allow);
    assert_eq!(FlowVerdict::of_action(Action::Drop), FlowVerdict::Drop);
    for reset in [Action::ResetClient, Action::ResetServer, Action::ResetBoth] {
        assert_eq!(FlowVerdict::of_action(reset), FlowVerdict::Reset);
    }
    let labels: Vec<&str> = FlowVerdict::ALL
        .iter()
        .map(|verdict| verdict.as_str())
        .collect();
    assert_eq!(
        labels,
        ["allow", "deny", "drop", "reset", "audit_would_deny"]
    );
    for (index, verdict) in FlowVerdict::ALL.iter().enumerate() {
        assert_eq!(verdict.index(), index);
    }
}

#[test]
fn metrics_accept_header_negotiation() {
    use ExpositionFormat::{OpenMetrics, PrometheusText};
    let prometheus_server = "application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1";
    assert_eq!(
        ExpositionFormat::negotiate(Some(prometheus_server)),
        OpenMetrics
    );
    assert_eq!(
        ExpositionFormat::negotiate(Some("Application/OpenMetrics-Text")),
        OpenMetrics
    );
    assert_eq!(ExpositionFormat::negotiate(None), PrometheusText);
    assert_eq!(ExpositionFormat::negotiate(Some("*/*")), PrometheusText);
    assert_eq!(
        ExpositionFormat::negotiate(Some("text/plain;version=0.0.4")),
        PrometheusText
    );
    assert_eq!(
        ExpositionFormat::negotiate(Some("application/openmetrics-text;q=0, text/plain")),
        PrometheusText
    );
}

fn flow_record(class: EventClass, action: Action, packets: u64, repeat_count: u64) -> FlowRecord {
    FlowRecord {
        class,
        start: UnixNanos(1_000),
        end: (class != EventClass::Start).then_some(UnixNanos(2_000)),
        tuple: FiveTuple {
            source: "10.0.0.1".parse().expect("address"),
            destination: "10.0.1.1".parse().expect("address"),
            protocol: 6,
            source_port: Some(40_000),
            destination_port: Some(443),
            icmp: None,
        },
        source_zone: "dmz".to_owned(),
        destination_zone: "trusted".to_owned(),
        source_workload: None,
        destination_workload: None,
        rule: RuleRef {
            name: "allow-web".to_owned(),
            uuid: None,
            device_group: None,
            rulebase: None,
        },
        policy: None,
        action,
        counters: Counters {
            packets_from_source: packets,
            bytes_from_source: packets * 100,
            packets_from_destination: packets,
            bytes_from_destination: packets * 100,
        },
        end_reason: None,
        observation: ObservationPoint {
            node: "node-1".to_owned(),
            interface: "veth1".to_owned(),
            direction: Direction::Egress,
        },
        repeat_count,
        reporting_host: "node-1".to_owned(),
    }
}

#[test]
fn metrics_flow_records_count_once_with_their_verdict() {
    let mut metrics = Metrics::new();
    let agent = AgentMetrics::register(&mut metrics, AgentMetricsOptions::default());
    // One allowed flow: a start record, then its end record with 3 + 3 packets.
    agent.record_flow_record(&flow_record(EventClass::Start, Action::Allow, 0, 1));
    agent.record_flow_record(&flow_record(EventClass::End, Action::Allow, 3, 1));
    // An aggregated deny record standing for 5 attempts.
    agent.record_flow_record(&flow_record(EventClass::Deny, Action::ResetBoth, 0, 5));
    // Audit mode let a flow pass that the rule would have denied.
    agent.record_flow_record(&flow_record(EventClass::WouldDeny, Action::Deny, 1, 1));
    let text = openmetrics(&metrics);
    let pair = |verdict| {
        [
            ("source_zone", "dmz"),
            ("destination_zone", "trusted"),
            ("verdict", verdict),
        ]
    };
    assert_eq!(
        value(&text, "zonewall_flows_total", &pair("allow")),
        Some(1.0)
    );
    assert_eq!(
        value(&text, "zonewall_flow_packets_total", &pair("allow")),
        Some(6.0)
    );
    assert_eq!(
        value(&text, "zonewall_flows_total", &pair("reset")),
        Some(5.0)
    );
    assert_eq!(
        value(&text, "zonewall_flows_total", &pair("deny")),
        Some(0.0)
    );
    assert_eq!(
        value(&text, "zonewall_flows_total", &pair("audit_would_deny")),
        Some(1.0)
    );
}
