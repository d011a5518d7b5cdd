//! JSON lines with Elastic Common Schema (ECS) field names, nested objects.
//!
//! ECS fields: `@timestamp`, `ecs.version`, `event.*` (kind, category, type, action,
//! outcome, reason, start, end, duration, module, dataset), `source.*`/`destination.*`
//! (ip, port, bytes, packets), `network.*` (transport, iana_number, type, bytes,
//! packets, direction), `observer.*` (hostname, type, vendor, product, version,
//! ingress.zone = source zone, egress.zone = destination zone, ingress/egress
//! interface.name), `rule.*` (name, uuid, ruleset = device group), `orchestrator.*`.
//!
//! What ECS has no field for lives under the documented `zonewall.` prefix:
//! `zonewall.event_class`, `zonewall.action`, `zonewall.repeat_count`,
//! `zonewall.rulebase`, `zonewall.policy.{name,tier}`, `zonewall.icmp.{type,code}`,
//! `zonewall.observation.{node,interface,direction}`, and the workloads, in the layout
//! of ECS's own `kubernetes`-style fields:
//! `zonewall.{source,destination}.kubernetes.{namespace,pod.name,pod.labels,node.name}`.
//!
//! `event.action` uses the flow verbs of the PAN-OS Elastic integration (`flow_started`,
//! `flow_terminated`, `flow_denied`, `flow_dropped`) plus `flow_would_deny`.
//! `orchestrator.namespace` is the source workload's namespace, else the destination's.
//!
//! Keys are sorted (serde_json's default map), absent values are left out rather than
//! null, and every control character and U+2028/9 is escaped, so the line is exact and
//! one line for any input.

use serde_json::{Map, Value, json};

use std::fmt::Write;

use super::time::Civil;
use super::{FormatOptions, is_unsafe_char};
use crate::flows::record::{Direction, EventClass, FlowRecord, Workload};

/// The ECS version the field names follow.
pub const ECS_VERSION: &str = "8.11.0";

pub fn format(record: &FlowRecord, options: &FormatOptions) -> String {
    escape_line_breakers(&to_value(record, options).to_string())
}

/// serde_json escapes only the C0 controls; DEL, the C1 controls (NEL among them) and
/// U+2028/9 stay raw, and some log tools break lines on them. They can only occur inside
/// JSON strings here, where a `\uXXXX` escape means the same character.
pub fn escape_line_breakers(serialized: &str) -> String {
    if !serialized.chars().any(is_unsafe_char) {
        return serialized.to_owned();
    }
    let mut out = String::with_capacity(serialized.len() + 16);
    for c in serialized.chars() {
        if is_unsafe_char(c) {
            let _ = write!(out, "\\u{:04x}", u32::from(c));
        } else {
            out.push(c);
        }
    }
    out
}

/// The record as a JSON value (what [`format`] serializes).
pub fn to_value(record: &FlowRecord, options: &FormatOptions) -> Value {
    let tuple = &record.tuple;
    let counters = &record.counters;
    let time = |nanos| Civil::from_unix_nanos(nanos).rfc3339(9);

    let (action, types, outcome) = match record.class {
        EventClass::Start => (
            "flow_started",
            &["connection", "start", "allowed"][..],
            "success",
        ),
        EventClass::End => (
            "flow_terminated",
            &["connection", "end", "allowed"][..],
            "success",
        ),
        EventClass::Deny => ("flow_denied", &["connection", "denied"][..], "failure"),
        EventClass::Drop => ("flow_dropped", &["connection", "denied"][..], "failure"),
        // Audit mode: the flow passed, but the policy would have denied it.
        EventClass::WouldDeny => ("flow_would_deny", &["connection", "allowed"][..], "success"),
    };

    let mut event = Map::new();
    event.insert("kind".into(), json!("event"));
    event.insert("category".into(), json!(["network"]));
    event.insert("type".into(), json!(types));
    event.insert("action".into(), json!(action));
    event.insert("outcome".into(), json!(outcome));
    event.insert("module".into(), json!("zonewall"));
    event.insert("dataset".into(), json!("zonewall.flow"));
    event.insert("start".into(), json!(time(record.start)));
    if let Some(end) = record.end {
        event.insert("end".into(), json!(time(end)));
    }
    if let Some(elapsed) = record.elapsed() {
        let nanos = u64::try_from(elapsed.as_nanos()).unwrap_or(u64::MAX);
        event.insert("duration".into(), json!(nanos));
    }
    if let Some(reason) = record.end_reason {
        event.insert("reason".into(), json!(reason.as_str()));
    }

    let endpoint = |address: std::net::IpAddr, port: Option<u16>, bytes: u64, packets: u64| {
        let mut object = Map::new();
        object.insert("ip".into(), json!(address.to_string()));
        if let Some(port) = port {
            object.insert("port".into(), json!(port));
        }
        object.insert("bytes".into(), json!(bytes));
        object.insert("packets".into(), json!(packets));
        Value::Object(object)
    };

    let network = json!({
        "transport": tuple.protocol_name(),
        "iana_number": tuple.protocol.to_string(),
        "type": if tuple.source.is_ipv4() { "ipv4" } else { "ipv6" },
        "bytes": counters.total_bytes(),
        "packets": counters.total_packets(),
        "direction": record.observation.direction.as_str(),
    });

    let interface_side = match record.observation.direction {
        Direction::Ingress => "ingress",
        Direction::Egress => "egress",
    };
    let mut observer = json!({
        "hostname": record.reporting_host,
        "type": "firewall",
        "vendor": "zonewall",
        "product": "zonewall",
        "version": options.product_version,
        "ingress": { "zone": record.source_zone },
        "egress": { "zone": record.destination_zone },
    });
    observer[interface_side]["interface"] = json!({ "name": record.observation.interface });

    let mut rule = Map::new();
    rule.insert("name".into(), json!(record.rule.name));
    if let Some(uuid) = &record.rule.uuid {
        rule.insert("uuid".into(), json!(uuid));
    }
    if let Some(device_group) = &record.rule.device_group {
        rule.insert("ruleset".into(), json!(device_group));
    }

    let mut zonewall = Map::new();
    zonewall.insert("event_class".into(), json!(record.class.as_str()));
    zonewall.insert("action".into(), json!(record.action.as_str()));
    zonewall.insert("repeat_count".into(), json!(record.repeat_count));
    if let Some(rulebase) = record.rule.rulebase {
        zonewall.insert("rulebase".into(), json!(rulebase.as_str()));
    }
    if let Some(policy) = &record.policy {
        zonewall.insert(
            "policy".into(),
            json!({ "name": policy.name, "tier": policy.tier }),
        );
    }
    if let Some(icmp) = tuple.icmp {
        zonewall.insert(
            "icmp".into(),
            json!({ "type": icmp.icmp_type, "code": icmp.code }),
        );
    }
    zonewall.insert(
        "observation".into(),
        json!({
            "node": record.observation.node,
            "interface": record.observation.interface,
            "direction": record.observation.direction.as_str(),
        }),
    );
    for (side, workload) in [
        ("source", &record.source_workload),
        ("destination", &record.destination_workload),
    ] {
        if let Some(workload) = workload {
            zonewall.insert(side.into(), json!({ "kubernetes": kubernetes(workload) }));
        }
    }

    let mut root = Map::new();
    root.insert("@timestamp".into(), json!(time(record.event_time())));
    root.insert("ecs".into(), json!({ "version": ECS_VERSION }));
    root.insert("event".into(), Value::Object(event));
    root.insert(
        "source".into(),
        endpoint(
            tuple.source,
            tuple.source_port,
            counters.bytes_from_source,
            counters.packets_from_source,
        ),
    );
    root.insert(
        "destination".into(),
        endpoint(
            tuple.destination,
            tuple.destination_port,
            counters.bytes_from_destination,
            counters.packets_from_destination,
        ),
    );
    root.insert("network".into(), network);
    root.insert("observer".into(), observer);
    root.insert("rule".into(), Value::Object(rule));
    if let Some(namespace) = record
        .source_workload
        .as_ref()
        .or(record.destination_workload.as_ref())
        .map(|workload| &workload.namespace)
    {
        root.insert(
            "orchestrator".into(),
            json!({ "type": "kubernetes", "namespace": namespace }),
        );
    }
    root.insert("zonewall".into(), Value::Object(zonewall));
    Value::Object(root)
}

fn kubernetes(workload: &Workload) -> Value {
    let mut object = json!({
        "namespace": workload.namespace,
        "pod": { "name": workload.name },
    });
    if let Some(node) = &workload.node {
        object["node"] = json!({ "name": node });
    }
    if !workload.labels.is_empty() {
        object["pod"]["labels"] = json!(workload.labels);
    }
    object
}
