#![allow(
    dead_code,
    reason = "each test binary uses a different subset of the helpers"
)]

use std::net::IpAddr;
use std::path::PathBuf;

use zonewall::firewall::panos::{self, Limits, ResolveOptions, Resolved};
use zonewall::model::{Flow, LabelSource, NoLabels, Verdict, parse_protocol};

pub fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}

pub fn fixture_text(name: &str) -> String {
    std::fs::read_to_string(fixture(name)).expect("read fixture")
}

pub fn resolve_with(name: &str, options: ResolveOptions) -> Resolved {
    let config = panos::load_file(&fixture(name), Limits::default()).expect("parse fixture");
    panos::resolve(&config, &options).expect("resolve fixture")
}

pub fn resolve_dg(name: &str, device_group: &str) -> Resolved {
    resolve_with(
        name,
        ResolveOptions {
            device_group: Some(device_group.to_string()),
            ..ResolveOptions::default()
        },
    )
}

/// `flow("trust", "dmz", "10.0.0.1", "10.1.1.1", "tcp", 40000, 443)`; ports are ignored for
/// ICMP.
pub fn flow(
    src_zone: &str,
    dst_zone: &str,
    src: &str,
    dst: &str,
    proto: &str,
    sport: u16,
    dport: u16,
) -> Flow {
    let protocol = parse_protocol(proto).expect("protocol name");
    let has_ports = matches!(proto, "tcp" | "udp" | "sctp");
    Flow {
        source_zone: src_zone.to_string(),
        destination_zone: dst_zone.to_string(),
        source: src.parse::<IpAddr>().expect("source address"),
        destination: dst.parse::<IpAddr>().expect("destination address"),
        protocol,
        source_port: has_ports.then_some(sport),
        destination_port: has_ports.then_some(dport),
    }
}

pub fn decide(resolved: &Resolved, flow: &Flow) -> Verdict {
    resolved.policy.evaluate(flow, &NoLabels)
}

pub fn decide_with(resolved: &Resolved, flow: &Flow, labels: &dyn LabelSource) -> Verdict {
    resolved.policy.evaluate(flow, labels)
}

/// Asserts action, rule, rulebase and device group, printing the explanation on failure.
#[track_caller]
pub fn assert_verdict(v: &Verdict, action: &str, rule: &str, rulebase: &str, device_group: &str) {
    let got = (
        v.action.as_str(),
        v.rule.as_str(),
        v.rulebase.as_str(),
        v.device_group.as_str(),
    );
    assert_eq!(
        got,
        (action, rule, rulebase, device_group),
        "explanation: {}",
        v.reason
    );
}
