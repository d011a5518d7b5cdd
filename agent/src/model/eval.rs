//! The reference evaluator: the verdict the firewall itself would give a flow. Everything
//! downstream (ZonePolicy translation, map compilation) must reproduce it.
//!
//! Matching order, first match wins (DESIGN.md section 4):
//! 1. shared pre-rules,
//! 2. device-group pre-rules from the root ancestor down to the target device group,
//! 3. (firewall only) the vsys' own rules,
//! 4. the target's post-rules, then its ancestors' post-rules up to the root,
//! 5. shared post-rules,
//! 6. `intrazone-default` (allow), `interzone-default` (deny), with overrides.
//!
//! The order lives in [`Policy::rules`], built by the PAN-OS resolver; this module only walks
//! the list.

use std::net::IpAddr;

use serde::Serialize;

use super::address::LabelSource;
use super::rule::{Action, Fidelity, Policy, Rule, RuleType, Rulebase};
use super::service::{PROTO_ICMP, PROTO_ICMPV6, PROTO_SCTP, PROTO_TCP, PROTO_UDP};

/// The first packet of a session, with the zones already decided.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Flow {
    pub source_zone: String,
    pub destination_zone: String,
    pub source: IpAddr,
    pub destination: IpAddr,
    /// IP protocol number (6 tcp, 17 udp, 1 icmp, 58 icmpv6, ...).
    pub protocol: u8,
    /// Ports, for protocols that have them (`None` for ICMP).
    pub source_port: Option<u16>,
    pub destination_port: Option<u16>,
}

/// Human name of an IP protocol number.
pub fn protocol_name(protocol: u8) -> String {
    match protocol {
        PROTO_TCP => "tcp".into(),
        PROTO_UDP => "udp".into(),
        PROTO_SCTP => "sctp".into(),
        PROTO_ICMP => "icmp".into(),
        PROTO_ICMPV6 => "icmpv6".into(),
        other => format!("protocol {other}"),
    }
}

/// Parses `tcp`, `udp`, `icmp`, `icmpv6`, `sctp` or a protocol number.
pub fn parse_protocol(text: &str) -> Option<u8> {
    match text.to_ascii_lowercase().as_str() {
        "tcp" => Some(PROTO_TCP),
        "udp" => Some(PROTO_UDP),
        "sctp" => Some(PROTO_SCTP),
        "icmp" => Some(PROTO_ICMP),
        "icmpv6" | "ipv6-icmp" => Some(PROTO_ICMPV6),
        number => number.parse().ok(),
    }
}

/// The deciding rule and why. Serializes to the `zonewall explain --json` object (plus the
/// extra fields).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Verdict {
    pub action: Action,
    pub rule: String,
    pub rulebase: Rulebase,
    pub device_group: String,
    pub src_zone: String,
    pub dst_zone: String,
    pub uuid: Option<String>,
    pub position: usize,
    /// Index in [`Policy::rules`].
    pub rule_index: usize,
    pub log_start: bool,
    pub log_end: bool,
    /// Why the rule matched, in the firewall's words.
    pub reason: String,
}

/// Exactly the object `zonewall explain --json` prints (DESIGN.md section 3).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ExplainJson<'a> {
    pub action: Action,
    pub rule: &'a str,
    pub rulebase: Rulebase,
    pub device_group: &'a str,
    pub src_zone: &'a str,
    pub dst_zone: &'a str,
}

impl Verdict {
    pub fn explain_json(&self) -> ExplainJson<'_> {
        ExplainJson {
            action: self.action,
            rule: &self.rule,
            rulebase: self.rulebase,
            device_group: &self.device_group,
            src_zone: &self.src_zone,
            dst_zone: &self.dst_zone,
        }
    }
}

fn zone_reason(rule: &Rule, flow: &Flow) -> Option<String> {
    let from_ok = rule.from.contains(&flow.source_zone);
    if !from_ok {
        return None;
    }
    let same_zone = flow.source_zone == flow.destination_zone;
    match rule.rule_type {
        RuleType::Intrazone => same_zone.then(|| {
            format!(
                "source zone '{}' is in from {} and the rule is intrazone, so destination zone '{}' (the same zone) is accepted without checking to",
                flow.source_zone, rule.from, flow.destination_zone
            )
        }),
        RuleType::Interzone | RuleType::Universal => {
            if rule.rule_type == RuleType::Interzone && same_zone {
                return None;
            }
            rule.to.contains(&flow.destination_zone).then(|| {
                format!(
                    "source zone '{}' is in from {}, destination zone '{}' is in to {} ({} rule)",
                    flow.source_zone,
                    rule.from,
                    flow.destination_zone,
                    rule.to,
                    rule.rule_type.as_str()
                )
            })
        }
    }
}

fn address_reason(
    set: &super::address::AddressSet,
    negate: bool,
    ip: IpAddr,
    column: &str,
    names: &[String],
    labels: &dyn LabelSource,
) -> Option<String> {
    let hit = set.match_reason(ip, labels);
    let listed = format!("[{}]", names.join(", "));
    match (hit, negate) {
        (Some(why), false) if why == "any" => {
            Some(format!("{column} {ip} is in {column} {listed}"))
        }
        (Some(why), false) => Some(format!("{column} {ip} is in {column} {listed} ({why})")),
        (None, true) => Some(format!(
            "{column} {ip} is not in {column} {listed} and the rule has negate-{column}"
        )),
        _ => None,
    }
}

/// Whether `rule` matches `flow`, and if so why. Disabled rules and rules that fail closed
/// never match.
pub fn rule_match_reason(rule: &Rule, flow: &Flow, labels: &dyn LabelSource) -> Option<String> {
    if rule.disabled || matches!(rule.fidelity, Fidelity::NeverMatches { .. }) {
        return None;
    }
    let zones = zone_reason(rule, flow)?;
    let source = address_reason(
        &rule.source,
        rule.negate_source,
        flow.source,
        "source",
        &rule.source_names,
        labels,
    )?;
    let destination = address_reason(
        &rule.destination,
        rule.negate_destination,
        flow.destination,
        "destination",
        &rule.destination_names,
        labels,
    )?;
    let service_hit =
        rule.service
            .match_reason(flow.protocol, flow.source_port, flow.destination_port)?;
    let what = match flow.destination_port {
        Some(port) => format!("{}/{port}", protocol_name(flow.protocol)),
        None => protocol_name(flow.protocol),
    };
    let listed = rule.service_names.join(", ");
    let service = if service_hit == "any" {
        format!("{what} is in service [{listed}]")
    } else {
        format!("{what} is in service [{listed}] ({service_hit})")
    };
    if rule.provenance.rulebase == Rulebase::Default {
        let scope = match rule.rule_type {
            RuleType::Intrazone => format!("traffic within zone '{}'", flow.source_zone),
            _ => format!(
                "traffic from zone '{}' to a different zone '{}'",
                flow.source_zone, flow.destination_zone
            ),
        };
        return Some(format!(
            "no earlier rule matched, and it covers all {scope}"
        ));
    }
    Some(format!("{zones}; {source}; {destination}; {service}"))
}

impl Policy {
    /// First match over the ordered rule list. The list always ends with the two default
    /// rules, so a verdict always exists; should a hand-built policy lack them, the flow is
    /// denied by an implicit rule named `(no rule matched)`.
    pub fn evaluate(&self, flow: &Flow, labels: &dyn LabelSource) -> Verdict {
        for (index, rule) in self.rules.iter().enumerate() {
            let Some(why) = rule_match_reason(rule, flow, labels) else {
                continue;
            };
            let p = &rule.provenance;
            let place = if p.rulebase == Rulebase::Default {
                match p.line {
                    Some(_) if p.device_group == "shared" => {
                        "default security rule, overridden in shared".to_string()
                    }
                    Some(_) => format!(
                        "default security rule, overridden in device group '{}'",
                        p.device_group
                    ),
                    None => "predefined default security rule".to_string(),
                }
            } else {
                let scope = if p.device_group == "shared" {
                    "shared".to_string()
                } else if p.rulebase == Rulebase::Local {
                    format!("vsys '{}'", p.device_group)
                } else {
                    format!("device group '{}'", p.device_group)
                };
                format!(
                    "{} of {scope}, position {}",
                    p.rulebase.long_name(),
                    p.position
                )
            };
            let logging = match (rule.log_start, rule.log_end) {
                (true, true) => "logs at session start and end",
                (false, true) => "logs at session end",
                (true, false) => "logs at session start",
                (false, false) => "does not log",
            };
            let mut reason = format!(
                "security rule '{}' ({place}) matched: {why}. Action {}; the rule {logging}.",
                p.rule_name, rule.action
            );
            if let Fidelity::Widened { reasons } = &rule.fidelity {
                reason.push_str(&format!(
                    " Note: this deny was widened because {}.",
                    reasons.join("; ")
                ));
            }
            if index > 0 {
                reason.push_str(&format!(" {index} earlier rule(s) did not match."));
            }
            return Verdict {
                action: rule.action,
                rule: p.rule_name.clone(),
                rulebase: p.rulebase,
                device_group: p.device_group.clone(),
                src_zone: flow.source_zone.clone(),
                dst_zone: flow.destination_zone.clone(),
                uuid: p.uuid.clone(),
                position: p.position,
                rule_index: index,
                log_start: rule.log_start,
                log_end: rule.log_end,
                reason,
            };
        }
        Verdict {
            action: Action::Deny,
            rule: "(no rule matched)".into(),
            rulebase: Rulebase::Default,
            device_group: self.target.clone(),
            src_zone: flow.source_zone.clone(),
            dst_zone: flow.destination_zone.clone(),
            uuid: None,
            position: 0,
            rule_index: self.rules.len(),
            log_start: false,
            log_end: false,
            reason: "no rule matched and the policy has no default rules; denied".into(),
        }
    }
}
