//! IBM QRadar Log Event Extended Format (LEEF) 2.0.
//!
//! `LEEF:2.0|zonewall|zonewall|VERSION|CLASS|DELIMITER|key=value<DELIMITER>key=value...`
//!
//! The event ID is the traffic class (`start`, `end`, `deny`, `drop`, `would-deny`) and
//! `cat` the firewall action, so a QRadar QID map keys on (class, action). Predefined LEEF
//! attributes are used wherever one fits (`src`, `dst`, `srcPort`, `dstPort`, `proto`,
//! `srcBytes`, `dstBytes`, `srcPackets`, `dstPackets`, `totalPackets`, `sev`, `cat`,
//! `policy`, `devTime` + `devTimeFormat`); `usrName` is not used (flows carry no user).
//! Everything else is a custom key in lower camel case.
//!
//! LEEF defines no escape sequences, and QRadar splits attributes on the delimiter and
//! the header on `|`; a backslash would not protect anything. So zonewall makes the
//! separators impossible inside values instead: the delimiter is a tab by default, and
//! every control character (tab and line breaks included), U+2028/9, and a configured
//! printable delimiter are replaced with U+FFFD in values; `|` and control characters
//! are replaced in header fields. `=` needs nothing: an attribute splits at its first `=`.

use super::time::{Civil, JAVA_MILLIS_PATTERN};
use super::{FormatOptions, LeefDelimiter, REPLACEMENT, cef, is_unsafe_char};
use crate::flows::record::FlowRecord;

pub const VENDOR: &str = "zonewall";
pub const PRODUCT: &str = "zonewall";

/// Makes a header field safe: no `|`, no control characters.
pub fn header_field(field: &str) -> String {
    field
        .chars()
        .map(|c| {
            if c == '|' || is_unsafe_char(c) {
                REPLACEMENT
            } else {
                c
            }
        })
        .collect()
}

/// Makes an attribute value safe for `delimiter`.
pub fn value(value: &str, delimiter: LeefDelimiter) -> String {
    value
        .chars()
        .map(|c| {
            if c == delimiter.as_char() || is_unsafe_char(c) {
                REPLACEMENT
            } else {
                c
            }
        })
        .collect()
}

/// The delimiter as written in the header: the character itself when printable, else
/// its hex code in LEEF's `xHH` form (tab is `x09`). `|` is written in hex too, since
/// the header itself is split on it.
pub fn delimiter_field(delimiter: LeefDelimiter) -> String {
    let c = delimiter.as_char();
    if c.is_ascii_graphic() && c != '|' {
        c.to_string()
    } else {
        format!("x{:02X}", u32::from(c))
    }
}

/// The LEEF header fields after `LEEF:2.0`, unescaped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Header<'a> {
    pub vendor: &'a str,
    pub product: &'a str,
    pub version: &'a str,
    pub event_id: &'a str,
    pub delimiter: LeefDelimiter,
}

/// Builds a complete LEEF 2.0 line from unescaped parts.
pub fn line(header: &Header<'_>, attributes: &[(&str, String)]) -> String {
    let delimiter = header.delimiter;
    let mut out = format!(
        "LEEF:2.0|{}|{}|{}|{}|{}|",
        header_field(header.vendor),
        header_field(header.product),
        header_field(header.version),
        header_field(header.event_id),
        delimiter_field(delimiter)
    );
    for (index, (key, text)) in attributes.iter().enumerate() {
        if index > 0 {
            out.push(delimiter.as_char());
        }
        out.push_str(key);
        out.push('=');
        out.push_str(&value(text, delimiter));
    }
    out
}

pub fn format(record: &FlowRecord, options: &FormatOptions) -> String {
    let header = Header {
        vendor: VENDOR,
        product: PRODUCT,
        version: &options.product_version,
        event_id: record.class.as_str(),
        delimiter: options.leef_delimiter,
    };
    line(&header, &attributes(record))
}

/// The attributes as unescaped (key, value) pairs, in output order.
pub(crate) fn attributes(record: &FlowRecord) -> Vec<(&'static str, String)> {
    let tuple = &record.tuple;
    let counters = &record.counters;
    let time = |nanos| Civil::from_unix_nanos(nanos).java_millis();

    let mut pairs: Vec<(&'static str, String)> = vec![
        ("devTime", time(record.event_time())),
        ("devTimeFormat", JAVA_MILLIS_PATTERN.to_owned()),
        ("cat", record.action.as_str().to_owned()),
        // LEEF `sev` is 1-10; the CEF scale (0-10) already starts at 1 for flows.
        ("sev", cef::severity(record.class).to_string()),
        ("proto", tuple.protocol_name()),
        ("src", tuple.source.to_string()),
        ("dst", tuple.destination.to_string()),
    ];
    if let Some(port) = tuple.source_port {
        pairs.push(("srcPort", port.to_string()));
    }
    if let Some(port) = tuple.destination_port {
        pairs.push(("dstPort", port.to_string()));
    }
    pairs.push(("srcBytes", counters.bytes_from_source.to_string()));
    pairs.push(("dstBytes", counters.bytes_from_destination.to_string()));
    pairs.push(("srcPackets", counters.packets_from_source.to_string()));
    pairs.push(("dstPackets", counters.packets_from_destination.to_string()));
    pairs.push(("totalPackets", counters.total_packets().to_string()));
    pairs.push(("policy", record.rule.name.clone()));

    if let Some(uuid) = &record.rule.uuid {
        pairs.push(("ruleUuid", uuid.clone()));
    }
    if let Some(device_group) = &record.rule.device_group {
        pairs.push(("deviceGroup", device_group.clone()));
    }
    if let Some(rulebase) = record.rule.rulebase {
        pairs.push(("rulebase", rulebase.as_str().to_owned()));
    }
    if let Some(policy) = &record.policy {
        pairs.push(("zonePolicy", policy.name.clone()));
        pairs.push(("tier", policy.tier.clone()));
    }
    pairs.push(("srcZone", record.source_zone.clone()));
    pairs.push(("dstZone", record.destination_zone.clone()));
    pairs.push(("action", record.action.as_str().to_owned()));
    pairs.push(("startTime", time(record.start)));
    if let Some(end) = record.end {
        pairs.push(("endTime", time(end)));
    }
    if let Some(reason) = record.end_reason {
        pairs.push(("endReason", reason.as_str().to_owned()));
    }
    pairs.push(("repeatCount", record.repeat_count.to_string()));
    if let Some(icmp) = tuple.icmp {
        pairs.push(("icmpType", icmp.icmp_type.to_string()));
        pairs.push(("icmpCode", icmp.code.to_string()));
    }
    if let Some(workload) = &record.source_workload {
        pairs.push(("srcNamespace", workload.namespace.clone()));
        pairs.push(("srcWorkload", workload.name.clone()));
        if let Some(node) = &workload.node {
            pairs.push(("srcNode", node.clone()));
        }
    }
    if let Some(workload) = &record.destination_workload {
        pairs.push(("dstNamespace", workload.namespace.clone()));
        pairs.push(("dstWorkload", workload.name.clone()));
        if let Some(node) = &workload.node {
            pairs.push(("dstNode", node.clone()));
        }
    }
    pairs.push(("observerNode", record.observation.node.clone()));
    pairs.push(("observerInterface", record.observation.interface.clone()));
    pairs.push((
        "observerDirection",
        record.observation.direction.as_str().to_owned(),
    ));
    pairs.push(("reportingHost", record.reporting_host.clone()));
    pairs
}
