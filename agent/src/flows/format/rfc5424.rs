//! RFC 5424 syslog messages with structured data.
//!
//! `<PRI>1 TIMESTAMP HOSTNAME APP-NAME PROCID MSGID [flow@PEN ...][rule@PEN ...]... MSG`
//!
//! - PRI = facility * 8 + severity; facility `local0` by default, severity
//!   `informational` for allowed flows and `warning` for denials (including audit-mode
//!   would-deny), all configurable.
//! - TIMESTAMP: RFC 3339 in UTC with microseconds (RFC 5424 allows at most six digits).
//! - HOSTNAME, APP-NAME, PROCID, MSGID: printable US-ASCII only (RFC 5424 section 6.2),
//!   anything else becomes `_`; empty becomes the nil value `-`; cut to the RFC's maximum
//!   lengths.
//! - SD-IDs are `name@PEN`. The default PEN 32473 is the example enterprise number that
//!   RFC 5612 reserves for documentation: a deployment that registers its own private
//!   enterprise number sets [`SyslogOptions::enterprise_number`].
//! - SD-PARAM values escape `"`, `\` and `]` with a backslash (section 6.3.3). RFC 5424
//!   has no escape for line breaks, so control characters and U+2028/9 become U+FFFD.
//! - MSG is a short human summary, without a BOM (RFC 5424 MSG-ANY).

use std::fmt::{self, Write};
use std::net::IpAddr;
use std::str::FromStr;

use super::time::Civil;
use super::{FormatError, FormatOptions, REPLACEMENT, is_unsafe_char, replace_unsafe};
use crate::flows::record::FlowRecord;

/// RFC 5612 section 3: the enterprise number reserved for documentation and examples.
pub const EXAMPLE_ENTERPRISE_NUMBER: u32 = 32473;

/// A syslog facility code (0-23).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Facility(u8);

impl Facility {
    pub const KERN: Facility = Facility(0);
    pub const USER: Facility = Facility(1);
    pub const DAEMON: Facility = Facility(3);
    pub const AUTH: Facility = Facility(4);
    pub const AUTHPRIV: Facility = Facility(10);
    pub const LOCAL0: Facility = Facility(16);
    pub const LOCAL4: Facility = Facility(20);
    pub const LOCAL7: Facility = Facility(23);

    /// Names in the order of their codes, as syslog implementations commonly spell them.
    const NAMES: [&'static str; 24] = [
        "kern", "user", "mail", "daemon", "auth", "syslog", "lpr", "news", "uucp", "cron",
        "authpriv", "ftp", "ntp", "audit", "alert", "clock", "local0", "local1", "local2",
        "local3", "local4", "local5", "local6", "local7",
    ];

    pub fn new(code: u8) -> Option<Facility> {
        (code <= 23).then_some(Facility(code))
    }

    pub fn code(self) -> u8 {
        self.0
    }
}

impl FromStr for Facility {
    type Err = FormatError;

    /// A name (`local0`, `auth`, ...) or the numeric code.
    fn from_str(name: &str) -> Result<Self, Self::Err> {
        let lower = name.to_ascii_lowercase();
        let by_name = Facility::NAMES
            .iter()
            .position(|known| *known == lower)
            .and_then(|code| u8::try_from(code).ok());
        by_name
            .or_else(|| lower.parse::<u8>().ok())
            .and_then(Facility::new)
            .ok_or_else(|| FormatError::UnknownFacility {
                name: name.to_owned(),
            })
    }
}

/// A syslog severity (RFC 5424 table 2).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Severity {
    Emergency = 0,
    Alert = 1,
    Critical = 2,
    Error = 3,
    Warning = 4,
    Notice = 5,
    Informational = 6,
    Debug = 7,
}

impl Severity {
    pub fn code(self) -> u8 {
        self as u8
    }
}

impl FromStr for Severity {
    type Err = FormatError;

    fn from_str(name: &str) -> Result<Self, Self::Err> {
        Ok(match name.to_ascii_lowercase().as_str() {
            "emerg" | "emergency" | "0" => Severity::Emergency,
            "alert" | "1" => Severity::Alert,
            "crit" | "critical" | "2" => Severity::Critical,
            "err" | "error" | "3" => Severity::Error,
            "warning" | "warn" | "4" => Severity::Warning,
            "notice" | "5" => Severity::Notice,
            "info" | "informational" | "6" => Severity::Informational,
            "debug" | "7" => Severity::Debug,
            _ => {
                return Err(FormatError::UnknownSeverity {
                    name: name.to_owned(),
                });
            }
        })
    }
}

/// PRI value: facility * 8 + severity (RFC 5424 section 6.2.1).
pub fn priority(facility: Facility, severity: Severity) -> u8 {
    facility.code() * 8 + severity.code()
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SyslogOptions {
    pub facility: Facility,
    /// Severity of start/end records of allowed flows.
    pub allowed_severity: Severity,
    /// Severity of deny, drop and would-deny records.
    pub denied_severity: Severity,
    /// The PEN in every SD-ID.
    pub enterprise_number: u32,
    pub app_name: String,
    /// PROCID; nil (`-`) when absent.
    pub procid: Option<String>,
}

impl Default for SyslogOptions {
    fn default() -> Self {
        SyslogOptions {
            facility: Facility::LOCAL0,
            allowed_severity: Severity::Informational,
            denied_severity: Severity::Warning,
            enterprise_number: EXAMPLE_ENTERPRISE_NUMBER,
            app_name: "zonewall".to_owned(),
            procid: None,
        }
    }
}

/// The header fields after PRI and VERSION, unescaped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Header<'a> {
    pub priority: u8,
    pub timestamp: &'a str,
    pub hostname: &'a str,
    pub app_name: &'a str,
    pub procid: &'a str,
    pub msgid: &'a str,
}

/// One SD-ELEMENT: SD-ID and its parameters, unescaped. Names must be SD-NAMEs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SdElement {
    pub id: String,
    pub params: Vec<(&'static str, String)>,
}

/// Maximum lengths of the header fields (RFC 5424 section 6).
const HOSTNAME_MAX: usize = 255;
const APP_NAME_MAX: usize = 48;
const PROCID_MAX: usize = 128;
const MSGID_MAX: usize = 32;

/// Makes a header field valid: printable US-ASCII (33-126) only, at most `max` characters,
/// nil `-` when empty.
pub fn header_field(value: &str, max: usize) -> String {
    let field: String = value
        .chars()
        .take(max)
        .map(|c| if ('!'..='~').contains(&c) { c } else { '_' })
        .collect();
    if field.is_empty() {
        "-".to_owned()
    } else {
        field
    }
}

/// True for a valid SD-NAME: 1-32 printable US-ASCII characters except `=`, space, `]`
/// and `"` (RFC 5424 section 6.3).
pub fn is_sd_name(name: &str) -> bool {
    (1..=32).contains(&name.len())
        && name
            .chars()
            .all(|c| ('!'..='~').contains(&c) && !matches!(c, '=' | ']' | '"'))
}

/// Escapes a PARAM-VALUE.
pub fn escape_param_value(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for c in value.chars() {
        match c {
            '"' | '\\' | ']' => {
                out.push('\\');
                out.push(c);
            }
            c if is_unsafe_char(c) => out.push(REPLACEMENT),
            c => out.push(c),
        }
    }
    out
}

/// Builds a complete message from unescaped parts.
pub fn message(header: &Header<'_>, structured_data: &[SdElement], msg: Option<&str>) -> String {
    let mut out = String::with_capacity(512);
    let _ = write!(
        out,
        "<{}>1 {} {} {} {} {} ",
        header.priority,
        header_field(header.timestamp, 64),
        header_field(header.hostname, HOSTNAME_MAX),
        header_field(header.app_name, APP_NAME_MAX),
        header_field(header.procid, PROCID_MAX),
        header_field(header.msgid, MSGID_MAX),
    );
    if structured_data.is_empty() {
        out.push('-');
    }
    for element in structured_data {
        debug_assert!(is_sd_name(element.id.split('@').next().unwrap_or("")));
        out.push('[');
        out.push_str(&element.id);
        for (name, value) in &element.params {
            debug_assert!(is_sd_name(name), "SD-NAME {name:?}");
            let _ = write!(out, " {name}=\"{}\"", escape_param_value(value));
        }
        out.push(']');
    }
    if let Some(msg) = msg {
        out.push(' ');
        out.push_str(&replace_unsafe(msg, &[]));
    }
    out
}

pub fn format(record: &FlowRecord, options: &FormatOptions) -> String {
    let syslog = &options.syslog;
    let severity = if record.class.is_denial() {
        syslog.denied_severity
    } else {
        syslog.allowed_severity
    };
    let timestamp = Civil::from_unix_nanos(record.event_time()).rfc3339(6);
    let header = Header {
        priority: priority(syslog.facility, severity),
        timestamp: &timestamp,
        hostname: &record.reporting_host,
        app_name: &syslog.app_name,
        procid: syslog.procid.as_deref().unwrap_or("-"),
        msgid: record.class.as_str(),
    };
    message(
        &header,
        &structured_data(record, syslog.enterprise_number),
        Some(&summary(record)),
    )
}

/// The structured data of a record, unescaped.
pub(crate) fn structured_data(record: &FlowRecord, enterprise_number: u32) -> Vec<SdElement> {
    let tuple = &record.tuple;
    let counters = &record.counters;
    let id = |name: &str| format!("{name}@{enterprise_number}");

    let mut flow: Vec<(&'static str, String)> = vec![
        ("class", record.class.as_str().to_owned()),
        ("action", record.action.as_str().to_owned()),
        ("proto", tuple.protocol_name()),
        ("src", tuple.source.to_string()),
    ];
    if let Some(port) = tuple.source_port {
        flow.push(("spt", port.to_string()));
    }
    flow.push(("dst", tuple.destination.to_string()));
    if let Some(port) = tuple.destination_port {
        flow.push(("dpt", port.to_string()));
    }
    if let Some(icmp) = tuple.icmp {
        flow.push(("icmpType", icmp.icmp_type.to_string()));
        flow.push(("icmpCode", icmp.code.to_string()));
    }
    flow.push(("srcZone", record.source_zone.clone()));
    flow.push(("dstZone", record.destination_zone.clone()));
    flow.push(("start", Civil::from_unix_nanos(record.start).rfc3339(6)));
    if let Some(end) = record.end {
        flow.push(("end", Civil::from_unix_nanos(end).rfc3339(6)));
    }
    flow.push(("packetsSent", counters.packets_from_source.to_string()));
    flow.push(("bytesSent", counters.bytes_from_source.to_string()));
    flow.push((
        "packetsReceived",
        counters.packets_from_destination.to_string(),
    ));
    flow.push(("bytesReceived", counters.bytes_from_destination.to_string()));
    flow.push(("repeatCount", record.repeat_count.to_string()));
    if let Some(reason) = record.end_reason {
        flow.push(("endReason", reason.as_str().to_owned()));
    }

    let mut rule: Vec<(&'static str, String)> = vec![("name", record.rule.name.clone())];
    if let Some(uuid) = &record.rule.uuid {
        rule.push(("uuid", uuid.clone()));
    }
    if let Some(device_group) = &record.rule.device_group {
        rule.push(("deviceGroup", device_group.clone()));
    }
    if let Some(rulebase) = record.rule.rulebase {
        rule.push(("rulebase", rulebase.as_str().to_owned()));
    }
    if let Some(policy) = &record.policy {
        rule.push(("policy", policy.name.clone()));
        rule.push(("tier", policy.tier.clone()));
    }

    let mut elements = vec![
        SdElement {
            id: id("flow"),
            params: flow,
        },
        SdElement {
            id: id("rule"),
            params: rule,
        },
    ];
    for (name, workload) in [
        ("source", &record.source_workload),
        ("destination", &record.destination_workload),
    ] {
        if let Some(workload) = workload {
            let mut params = vec![
                ("namespace", workload.namespace.clone()),
                ("name", workload.name.clone()),
            ];
            if let Some(node) = &workload.node {
                params.push(("node", node.clone()));
            }
            elements.push(SdElement {
                id: id(name),
                params,
            });
        }
    }
    elements.push(SdElement {
        id: id("observer"),
        params: vec![
            ("node", record.observation.node.clone()),
            ("interface", record.observation.interface.clone()),
            (
                "direction",
                record.observation.direction.as_str().to_owned(),
            ),
        ],
    });
    elements
}

/// `end allow tcp 10.0.0.1:40000 -> 10.0.0.2:443 (trusted -> dmz)`
fn summary(record: &FlowRecord) -> String {
    struct Endpoint(IpAddr, Option<u16>);
    impl fmt::Display for Endpoint {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            match (self.0, self.1) {
                (address, None) => write!(f, "{address}"),
                (IpAddr::V4(v4), Some(port)) => write!(f, "{v4}:{port}"),
                (IpAddr::V6(v6), Some(port)) => write!(f, "[{v6}]:{port}"),
            }
        }
    }
    let tuple = &record.tuple;
    format!(
        "{} {} {} {} -> {} ({} -> {})",
        record.class,
        record.action,
        tuple.protocol_name(),
        Endpoint(tuple.source, tuple.source_port),
        Endpoint(tuple.destination, tuple.destination_port),
        record.source_zone,
        record.destination_zone,
    )
}
