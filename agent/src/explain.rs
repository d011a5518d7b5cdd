//! `zonewall explain`: which firewall rule decides a flow and why, in the firewall's words.
//!
//! Pure apart from reading the input files: zones come from the command line or from the
//! inventory (an address no endpoint owns is in the inventory's external zone), the verdict
//! from the reference evaluator over the resolved firewall policy, or from the ZonePolicy
//! evaluator over a directory of ZonePolicy YAML (the cluster form of the same policy).

use std::{net::IpAddr, path::PathBuf};

use crate::{
    firewall::panos::{self, Limits, PanosError, ResolveOptions, Warning},
    inventory::{Inventory, InventoryError},
    model::{Flow, LabelSource, NoLabels, Rulebase, Verdict, eval::protocol_name, has_ports},
    policy::{
        DecidedBy, PolicySet, PolicySetError, PolicyVerdict,
        load::{LoadError, load_dir},
        resource,
    },
};

/// Which form of the policy answers.
#[derive(Clone, Debug)]
pub enum PolicySource {
    /// The firewall configuration, through the reference evaluator.
    Panos {
        config: PathBuf,
        device_group: Option<String>,
    },
    /// A directory of ZonePolicy YAML, through the ZonePolicy evaluator.
    ZonePolicies(PathBuf),
}

/// Where the zones of the flow come from.
#[derive(Clone, Debug)]
pub enum Zones {
    Given { source: String, destination: String },
    Inventory(PathBuf),
}

#[derive(Clone, Debug)]
pub struct ExplainRequest {
    pub policy: PolicySource,
    pub zones: Zones,
    pub source: IpAddr,
    pub destination: IpAddr,
    pub protocol: u8,
    pub source_port: Option<u16>,
    pub destination_port: Option<u16>,
}

#[derive(Debug, thiserror::Error)]
pub enum ExplainError {
    #[error(transparent)]
    Config(#[from] PanosError),
    #[error(transparent)]
    Inventory(#[from] InventoryError),
    #[error(transparent)]
    Load(#[from] LoadError),
    #[error("invalid ZonePolicies: {0}")]
    Policies(#[from] PolicySetError),
    #[error("--src {src} and --dst {dst} are not the same IP version; a flow has one")]
    MixedFamilies { src: IpAddr, dst: IpAddr },
    #[error("--{flag} is only meaningful for tcp, udp and sctp, not {protocol}")]
    PortWithoutPorts {
        flag: &'static str,
        protocol: String,
    },
}

impl ExplainError {
    /// Exit code: 2 when the input (configuration, inventory, flow) is invalid.
    pub fn exit_code(&self) -> u8 {
        match self {
            ExplainError::Config(PanosError::Io { .. })
            | ExplainError::Inventory(InventoryError::Io { .. })
            | ExplainError::Load(LoadError::Io { .. }) => 1,
            _ => 2,
        }
    }
}

/// The answer, plus what the operator should know about how exact it is.
#[derive(Clone, Debug)]
pub struct Explanation {
    pub flow: Flow,
    pub verdict: Verdict,
    /// Warnings about the deciding rule itself.
    pub rule_warnings: Vec<Warning>,
    /// Warnings about every other rule and object that is not enforced exactly.
    pub other_warnings: Vec<Warning>,
    /// Zones of the flow the configuration does not define.
    pub undefined_zones: Vec<String>,
    /// With ZonePolicies: the verdicts at egress and at ingress.
    pub zone_policy: Option<(PolicyVerdict, PolicyVerdict)>,
}

pub fn explain(request: &ExplainRequest) -> Result<Explanation, ExplainError> {
    let (source, destination) = (request.source, request.destination);
    if source.is_ipv4() != destination.is_ipv4() {
        return Err(ExplainError::MixedFamilies {
            src: source,
            dst: destination,
        });
    }
    let has_ports = has_ports(request.protocol);
    for (flag, value) in [
        ("sport", request.source_port),
        ("dport", request.destination_port),
    ] {
        if value.is_some() && !has_ports {
            return Err(ExplainError::PortWithoutPorts {
                flag,
                protocol: protocol_name(request.protocol),
            });
        }
    }
    let (protocol, source_port, destination_port) = (
        request.protocol,
        request.source_port,
        request.destination_port,
    );
    let (inventory, flow) = match &request.zones {
        Zones::Inventory(path) => {
            let inventory = Inventory::load_file(path)?;
            let flow = inventory.flow(source, destination, protocol, source_port, destination_port);
            (Some(inventory), flow)
        }
        Zones::Given {
            source: source_zone,
            destination: destination_zone,
        } => {
            let flow = Flow {
                source_zone: source_zone.clone(),
                destination_zone: destination_zone.clone(),
                source,
                destination,
                protocol,
                source_port,
                destination_port,
            };
            (None, flow)
        }
    };
    let labels: &dyn LabelSource = match &inventory {
        Some(inventory) => inventory,
        None => &NoLabels,
    };
    let (config, device_group) = match &request.policy {
        PolicySource::Panos {
            config,
            device_group,
        } => (config, device_group),
        PolicySource::ZonePolicies(dir) => {
            let set = PolicySet::new(&load_dir(dir)?)?;
            let (egress, ingress) = set.evaluate_flow(&flow, labels);
            return Ok(Explanation {
                verdict: combined_verdict(&flow, &egress, &ingress),
                flow,
                rule_warnings: Vec::new(),
                other_warnings: Vec::new(),
                undefined_zones: Vec::new(),
                zone_policy: Some((egress, ingress)),
            });
        }
    };
    let started = std::time::Instant::now();
    let config = panos::load_file(config, Limits::default())?;
    let parsed = started.elapsed();
    let options = ResolveOptions {
        device_group: device_group.clone(),
        ..ResolveOptions::default()
    };
    let resolved = panos::resolve(&config, &options)?;
    tracing::debug!(
        parse_seconds = parsed.as_secs_f64(),
        resolve_seconds = (started.elapsed() - parsed).as_secs_f64(),
        rules = resolved.policy.rules.len(),
        warnings = resolved.warnings.len(),
        "firewall configuration loaded"
    );
    let verdict = resolved.policy.evaluate(&flow, labels);
    let undefined_zones = [&flow.source_zone, &flow.destination_zone]
        .into_iter()
        .filter(|zone| !resolved.policy.zones.contains(*zone))
        .cloned()
        .collect::<std::collections::BTreeSet<_>>()
        .into_iter()
        .collect();
    let (rule_warnings, others): (Vec<_>, Vec<_>) = resolved.warnings.into_iter().partition(|w| {
        w.rule.as_ref().is_some_and(|rule| {
            rule.name == verdict.rule && rule.device_group == verdict.device_group
        })
    });
    Ok(Explanation {
        flow,
        verdict,
        rule_warnings,
        other_warnings: others,
        undefined_zones,
        zone_policy: None,
    })
}

/// What the dataplane does with the flow, in the firewall's terms: the egress verdict when
/// it blocks, else the ingress verdict (both agree for a faithfully translated firewall tier).
fn combined_verdict(flow: &Flow, egress: &PolicyVerdict, ingress: &PolicyVerdict) -> Verdict {
    let deciding = if egress.decision.is_allow() {
        ingress
    } else {
        egress
    };
    let (rule, rulebase, device_group, uuid, position, index, log_start, log_end) =
        match &deciding.decided_by {
            DecidedBy::Rule(hit) => {
                let (rule, rulebase, device_group, uuid, position) = match &hit.provenance {
                    Some(p) => (
                        p.rule.clone(),
                        match p.rulebase {
                            resource::Rulebase::Pre => Rulebase::Pre,
                            resource::Rulebase::Local => Rulebase::Local,
                            resource::Rulebase::Post => Rulebase::Post,
                            resource::Rulebase::Default => Rulebase::Default,
                        },
                        p.device_group.clone(),
                        p.uuid.clone(),
                        p.position as usize,
                    ),
                    None => (
                        format!("{}[{}]", hit.direction.as_str(), hit.index),
                        Rulebase::Pre,
                        hit.policy.clone(),
                        None,
                        hit.index,
                    ),
                };
                (
                    rule,
                    rulebase,
                    device_group,
                    uuid,
                    position,
                    hit.index,
                    hit.log_start,
                    hit.log_end,
                )
            }
            DecidedBy::EndOfTier { .. } => (
                "(end of firewall tier)".to_string(),
                Rulebase::Default,
                String::new(),
                None,
                0,
                0,
                false,
                false,
            ),
            DecidedBy::NoZonePolicy { .. } => (
                "(no zone policy)".to_string(),
                Rulebase::Default,
                String::new(),
                None,
                0,
                0,
                false,
                false,
            ),
            DecidedBy::DefaultAllow => (
                "(default allow)".to_string(),
                Rulebase::Default,
                String::new(),
                None,
                0,
                0,
                false,
                false,
            ),
        };
    Verdict {
        action: deciding.decision.firewall_action(),
        rule,
        rulebase,
        device_group,
        src_zone: flow.source_zone.clone(),
        dst_zone: flow.destination_zone.clone(),
        uuid,
        position,
        rule_index: index,
        log_start,
        log_end,
        reason: format!("{}; {}", describe(egress), describe(ingress)),
    }
}

/// One direction's verdict in words.
fn describe(verdict: &PolicyVerdict) -> String {
    let by = match &verdict.decided_by {
        DecidedBy::Rule(hit) => format!(
            "rule {} '{}' of ZonePolicy '{}' (tier {})",
            hit.index,
            hit.provenance
                .as_ref()
                .map_or_else(|| "(unnamed)".to_string(), |p| p.rule.clone()),
            hit.policy,
            hit.tier.as_str()
        ),
        DecidedBy::EndOfTier { tier } => format!(
            "no rule of tier {} matched, so the tier denies as the firewall does after its last rule",
            tier.as_str()
        ),
        DecidedBy::NoZonePolicy { tier, zone } => format!(
            "tier {} has no ZonePolicy for zone '{zone}' and no 'any' ZonePolicy, so it fails closed",
            tier.as_str()
        ),
        DecidedBy::DefaultAllow => "no tier decided, so the default allows".to_string(),
    };
    let mut text = format!(
        "{} at zone '{}': {} by {by}",
        verdict.direction.as_str(),
        verdict.zone,
        verdict.decision.firewall_action()
    );
    if let Some((decision, _)) = &verdict.audit
        && !decision.is_allow()
    {
        text.push_str(&format!(
            " (an Audit policy would {})",
            decision.firewall_action()
        ));
    }
    text
}

impl Explanation {
    /// The `--json` object of DESIGN.md section 3.
    pub fn to_json(&self) -> Result<String, serde_json::Error> {
        serde_json::to_string(&self.verdict.explain_json())
    }

    /// The answer for a person; `all_warnings` lists the warnings about other rules too,
    /// instead of counting them.
    pub fn to_text(&self, all_warnings: bool) -> String {
        let (flow, verdict) = (&self.flow, &self.verdict);
        let port = |port: Option<u16>| port.map_or_else(|| "*".to_owned(), |p| p.to_string());
        let mut text = format!(
            "{action} by rule '{rule}' ({rulebase}, device group {dg}, position {position}{uuid})\n",
            action = verdict.action.as_str(),
            rule = verdict.rule,
            rulebase = verdict.rulebase.long_name(),
            dg = verdict.device_group,
            position = verdict.position,
            uuid = verdict
                .uuid
                .as_deref()
                .map(|u| format!(", uuid {u}"))
                .unwrap_or_default(),
        );
        text.push_str(&format!(
            "  flow:    {} {}:{} -> {}:{}, zone {} -> {}\n",
            protocol_name(flow.protocol),
            flow.source,
            port(flow.source_port),
            flow.destination,
            port(flow.destination_port),
            flow.source_zone,
            flow.destination_zone
        ));
        match &self.zone_policy {
            Some((egress, ingress)) => {
                text.push_str(&format!("  egress:  {}\n", describe(egress)));
                text.push_str(&format!("  ingress: {}\n", describe(ingress)));
            }
            None => text.push_str(&format!("  why:     {}\n", verdict.reason)),
        }
        let logging = match (verdict.log_start, verdict.log_end) {
            (true, true) => "logged at session start and end",
            (true, false) => "logged at session start",
            (false, true) => "logged at session end",
            (false, false) => "not logged by the rule",
        };
        text.push_str(&format!("  logging: {logging}\n"));
        for zone in &self.undefined_zones {
            text.push_str(&format!(
                "  note:    zone '{zone}' is not defined in the firewall configuration; only rules with `any` can match it\n"
            ));
        }
        for warning in &self.rule_warnings {
            text.push_str(&format!("  warning: {warning}\n"));
        }
        if all_warnings {
            for warning in &self.other_warnings {
                text.push_str(&format!("  warning: {warning}\n"));
            }
        } else if !self.other_warnings.is_empty() {
            text.push_str(&format!(
                "  note:    {} warnings about other rules or objects not enforced exactly; --all-warnings lists them\n",
                self.other_warnings.len()
            ));
        }
        text
    }
}
