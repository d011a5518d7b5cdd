//! ArcSight Common Event Format (CEF) version 0, keyed like a PAN-OS traffic log.
//!
//! `CEF:0|zonewall|zonewall|VERSION|CLASS|TRAFFIC|SEVERITY|key=value key=value ...`
//!
//! The header mirrors the PAN-OS default CEF traffic format: the signature is the
//! traffic subtype (`start`, `end`, `deny`, `drop`, plus zonewall's `would-deny`) and the
//! name is `TRAFFIC`. The extension uses the same keys as PAN-OS (`cs1` rule, `cs4`/`cs5`
//! zones with the PAN-OS labels, `act`, `cnt`, `in`/`out`, `reason`, `dvchost`, ...), so
//! SIEM content written for PAN-OS reads zonewall records. Fields PAN-OS has no key for
//! use `Zonewall`-prefixed custom keys, as the CEF rules for vendor keys ask.
//!
//! Escaping (CEF rules): in header fields `\` and `|` are backslash-escaped; in extension
//! values `\` and `=` are backslash-escaped and line feed / carriage return are written as
//! `\n` / `\r`. Characters CEF has no escape for (other control characters, U+2028/9),
//! and line breaks in the header (CEF allows multi-line text only in extension values),
//! become U+FFFD.

use std::fmt::Write;
use std::net::IpAddr;

use super::{FormatOptions, REPLACEMENT, is_unsafe_char};
use crate::flows::record::{Direction, EventClass, FlowRecord};

pub const VENDOR: &str = "zonewall";
pub const PRODUCT: &str = "zonewall";
/// The CEF `Name`: PAN-OS puts the log type there.
pub const NAME: &str = "TRAFFIC";

/// CEF severity (0-10): allowed traffic is low like PAN-OS traffic logs (1); denials are
/// medium so they stand out without paging anyone.
pub fn severity(class: EventClass) -> u8 {
    match class {
        EventClass::Start | EventClass::End => 1,
        EventClass::WouldDeny => 4,
        EventClass::Deny | EventClass::Drop => 5,
    }
}

/// Escapes one CEF header field.
pub fn escape_header(field: &str) -> String {
    let mut out = String::with_capacity(field.len());
    for c in field.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '|' => out.push_str("\\|"),
            c if is_unsafe_char(c) => out.push(REPLACEMENT),
            c => out.push(c),
        }
    }
    out
}

/// Escapes one CEF extension value.
pub fn escape_value(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for c in value.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '=' => out.push_str("\\="),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            c if is_unsafe_char(c) => out.push(REPLACEMENT),
            c => out.push(c),
        }
    }
    out
}

/// The CEF header fields after `CEF:0`, unescaped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Header<'a> {
    pub vendor: &'a str,
    pub product: &'a str,
    pub version: &'a str,
    pub signature: &'a str,
    pub name: &'a str,
    pub severity: u8,
}

/// Builds a complete CEF line from an unescaped header and extension pairs. Keys must be
/// CEF keys (ASCII letters and digits); they are not escaped.
pub fn line(header: &Header<'_>, extension: &[(&str, String)]) -> String {
    let mut out = String::with_capacity(256 + extension.len() * 24);
    let _ = write!(
        out,
        "CEF:0|{}|{}|{}|{}|{}|{}|",
        escape_header(header.vendor),
        escape_header(header.product),
        escape_header(header.version),
        escape_header(header.signature),
        escape_header(header.name),
        header.severity
    );
    append_extension(&mut out, extension);
    out
}

fn append_extension(out: &mut String, extension: &[(&str, String)]) {
    for (index, (key, value)) in extension.iter().enumerate() {
        debug_assert!(
            !key.is_empty() && key.chars().all(|c| c.is_ascii_alphanumeric()),
            "CEF key {key:?}"
        );
        if index > 0 {
            out.push(' ');
        }
        out.push_str(key);
        out.push('=');
        out.push_str(&escape_value(value));
    }
}

pub fn format(record: &FlowRecord, options: &FormatOptions) -> String {
    let header = Header {
        vendor: VENDOR,
        product: PRODUCT,
        version: &options.product_version,
        signature: record.class.as_str(),
        name: NAME,
        severity: severity(record.class),
    };
    line(&header, &extension(record))
}

/// The extension as unescaped (key, value) pairs, in output order.
pub(crate) fn extension(record: &FlowRecord) -> Vec<(&'static str, String)> {
    let mut pairs: Vec<(&'static str, String)> = Vec::with_capacity(48);
    let tuple = &record.tuple;
    let counters = &record.counters;

    pairs.push(("rt", record.event_time().as_millis().to_string()));
    pairs.push(("dvchost", record.reporting_host.clone()));
    push_address(&mut pairs, tuple.source, SOURCE_ADDRESS_KEYS);
    push_address(&mut pairs, tuple.destination, DESTINATION_ADDRESS_KEYS);
    pairs.push(("cs1Label", "Rule".to_owned()));
    pairs.push(("cs1", record.rule.name.clone()));
    pairs.push(("cs4Label", "Source Zone".to_owned()));
    pairs.push(("cs4", record.source_zone.clone()));
    pairs.push(("cs5Label", "Destination Zone".to_owned()));
    pairs.push(("cs5", record.destination_zone.clone()));
    if let Some(uuid) = &record.rule.uuid {
        pairs.push(("cs6Label", "Rule UUID".to_owned()));
        pairs.push(("cs6", uuid.clone()));
    }
    pairs.push(("cnt", record.repeat_count.to_string()));
    if let Some(port) = tuple.source_port {
        pairs.push(("spt", port.to_string()));
    }
    if let Some(port) = tuple.destination_port {
        pairs.push(("dpt", port.to_string()));
    }
    pairs.push(("proto", tuple.protocol_name()));
    pairs.push(("act", record.action.as_str().to_owned()));
    pairs.push(("flexNumber1Label", "Total bytes".to_owned()));
    pairs.push(("flexNumber1", counters.total_bytes().to_string()));
    // PAN-OS maps `in` to bytes sent by the client and `out` to bytes received; kept
    // as is so existing dashboards add up the same way.
    pairs.push(("in", counters.bytes_from_source.to_string()));
    pairs.push(("out", counters.bytes_from_destination.to_string()));
    pairs.push(("cn2Label", "Packets".to_owned()));
    pairs.push(("cn2", counters.total_packets().to_string()));
    pairs.push(("start", record.start.as_millis().to_string()));
    if let Some(end) = record.end {
        pairs.push(("end", end.as_millis().to_string()));
    }
    if let Some(elapsed) = record.elapsed() {
        pairs.push(("cn3Label", "Elapsed time in seconds".to_owned()));
        pairs.push(("cn3", elapsed.as_secs().to_string()));
    }
    if let Some(reason) = record.end_reason {
        pairs.push(("reason", reason.as_str().to_owned()));
    }
    // CEF deviceDirection: 0 inbound, 1 outbound (seen from the workload).
    let direction = match record.observation.direction {
        Direction::Ingress => "0",
        Direction::Egress => "1",
    };
    pairs.push(("deviceDirection", direction.to_owned()));

    pairs.push((
        "ZonewallPacketsSent",
        counters.packets_from_source.to_string(),
    ));
    pairs.push((
        "ZonewallPacketsReceived",
        counters.packets_from_destination.to_string(),
    ));
    if let Some(icmp) = tuple.icmp {
        pairs.push(("ZonewallIcmpType", icmp.icmp_type.to_string()));
        pairs.push(("ZonewallIcmpCode", icmp.code.to_string()));
    }
    if let Some(device_group) = &record.rule.device_group {
        pairs.push(("ZonewallDeviceGroup", device_group.clone()));
    }
    if let Some(rulebase) = record.rule.rulebase {
        pairs.push(("ZonewallRulebase", rulebase.as_str().to_owned()));
    }
    if let Some(policy) = &record.policy {
        pairs.push(("ZonewallPolicy", policy.name.clone()));
        pairs.push(("ZonewallTier", policy.tier.clone()));
    }
    if let Some(workload) = &record.source_workload {
        pairs.push(("ZonewallSourceNamespace", workload.namespace.clone()));
        pairs.push(("ZonewallSourceWorkload", workload.name.clone()));
        if let Some(node) = &workload.node {
            pairs.push(("ZonewallSourceNode", node.clone()));
        }
    }
    if let Some(workload) = &record.destination_workload {
        pairs.push(("ZonewallDestinationNamespace", workload.namespace.clone()));
        pairs.push(("ZonewallDestinationWorkload", workload.name.clone()));
        if let Some(node) = &workload.node {
            pairs.push(("ZonewallDestinationNode", node.clone()));
        }
    }
    pairs.push(("ZonewallObservationNode", record.observation.node.clone()));
    pairs.push((
        "ZonewallObservationInterface",
        record.observation.interface.clone(),
    ));
    pairs
}

/// Keys for one address: (IPv4 key, IPv6 key, IPv6 label key, IPv6 label).
type AddressKeys = (&'static str, &'static str, &'static str, &'static str);

const SOURCE_ADDRESS_KEYS: AddressKeys = ("src", "c6a2", "c6a2Label", "Source IPv6 Address");
const DESTINATION_ADDRESS_KEYS: AddressKeys =
    ("dst", "c6a3", "c6a3Label", "Destination IPv6 Address");

/// IPv4 addresses go in `src`/`dst`; CEF reserves those for IPv4, so IPv6 addresses go in
/// the custom IPv6 fields with the labels the CEF specification reserves for them.
fn push_address(pairs: &mut Vec<(&'static str, String)>, address: IpAddr, keys: AddressKeys) {
    let (ipv4_key, ipv6_key, ipv6_label_key, ipv6_label) = keys;
    match address {
        IpAddr::V4(v4) => pairs.push((ipv4_key, v4.to_string())),
        IpAddr::V6(v6) => {
            pairs.push((ipv6_label_key, ipv6_label.to_owned()));
            pairs.push((ipv6_key, v6.to_string()));
        }
    }
}
