//! `zonewall explain`: which firewall rule decides a flow and why, in the firewall's words.
//!
//! Pure apart from reading the two input files: zones come from the command line or from the
//! inventory (an address no endpoint owns is in the inventory's external zone), the verdict
//! from the reference evaluator over the resolved firewall policy.

use std::{net::IpAddr, path::PathBuf};

use crate::{
    firewall::panos::{self, Limits, PanosError, ResolveOptions, Warning},
    inventory::{Inventory, InventoryError},
    model::{Flow, NoLabels, Verdict, eval::protocol_name},
};

/// Where the zones of the flow come from.
#[derive(Clone, Debug)]
pub enum Zones {
    Given { source: String, destination: String },
    Inventory(PathBuf),
}

#[derive(Clone, Debug)]
pub struct ExplainRequest {
    pub panos_config: PathBuf,
    pub device_group: Option<String>,
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
            | ExplainError::Inventory(InventoryError::Io { .. }) => 1,
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
}

pub fn explain(request: &ExplainRequest) -> Result<Explanation, ExplainError> {
    let (source, destination) = (request.source, request.destination);
    if source.is_ipv4() != destination.is_ipv4() {
        return Err(ExplainError::MixedFamilies {
            src: source,
            dst: destination,
        });
    }
    let has_ports = matches!(request.protocol, 6 | 17 | 132);
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
    let inventory = match &request.zones {
        Zones::Inventory(path) => Some(Inventory::load_file(path)?),
        Zones::Given { .. } => None,
    };
    let started = std::time::Instant::now();
    let config = panos::load_file(&request.panos_config, Limits::default())?;
    let parsed = started.elapsed();
    let options = ResolveOptions {
        device_group: request.device_group.clone(),
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

    let (source_zone, destination_zone) = match (&request.zones, &inventory) {
        (
            Zones::Given {
                source,
                destination,
            },
            _,
        ) => (source.clone(), destination.clone()),
        (Zones::Inventory(_), Some(inventory)) => (
            inventory.zone_of(source).to_owned(),
            inventory.zone_of(destination).to_owned(),
        ),
        (Zones::Inventory(_), None) => unreachable!("inventory loaded above"),
    };
    let flow = Flow {
        source_zone,
        destination_zone,
        source,
        destination,
        protocol: request.protocol,
        source_port: request.source_port,
        destination_port: request.destination_port,
    };
    let verdict = match &inventory {
        Some(inventory) => resolved.policy.evaluate(&flow, inventory),
        None => resolved.policy.evaluate(&flow, &NoLabels),
    };
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
    })
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
        text.push_str(&format!("  why:     {}\n", verdict.reason));
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
