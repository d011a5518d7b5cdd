//! The vendor-neutral rule list: one ordered list per enforcement target (a Panorama device
//! group or a firewall vsys), already flattened into the order the firewall evaluates it.

use std::collections::BTreeSet;
use std::fmt;
use std::net::IpAddr;

use serde::Serialize;

use super::address::AddressSet;
use super::service::ServiceSet;

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Action {
    Allow,
    Deny,
    Drop,
    ResetClient,
    ResetServer,
    ResetBoth,
}

impl Action {
    pub const ALL: [Action; 6] = [
        Action::Allow,
        Action::Deny,
        Action::Drop,
        Action::ResetClient,
        Action::ResetServer,
        Action::ResetBoth,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Action::Allow => "allow",
            Action::Deny => "deny",
            Action::Drop => "drop",
            Action::ResetClient => "reset-client",
            Action::ResetServer => "reset-server",
            Action::ResetBoth => "reset-both",
        }
    }

    pub fn parse(text: &str) -> Option<Action> {
        Some(match text {
            "allow" => Action::Allow,
            "deny" => Action::Deny,
            "drop" => Action::Drop,
            "reset-client" => Action::ResetClient,
            "reset-server" => Action::ResetServer,
            "reset-both" => Action::ResetBoth,
            _ => return None,
        })
    }

    pub fn is_allow(self) -> bool {
        self == Action::Allow
    }
}

impl fmt::Display for Action {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum RuleType {
    #[default]
    Universal,
    /// Source and destination zone are the same; `to` is ignored.
    Intrazone,
    /// Source and destination zone differ.
    Interzone,
}

impl RuleType {
    pub fn as_str(self) -> &'static str {
        match self {
            RuleType::Universal => "universal",
            RuleType::Intrazone => "intrazone",
            RuleType::Interzone => "interzone",
        }
    }
}

/// Where a rule sits. `Local` is a firewall's own (non-Panorama) rulebase.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Rulebase {
    Pre,
    Local,
    Post,
    Default,
}

impl Rulebase {
    pub fn as_str(self) -> &'static str {
        match self {
            Rulebase::Pre => "pre",
            Rulebase::Local => "local",
            Rulebase::Post => "post",
            Rulebase::Default => "default",
        }
    }

    /// The firewall's own name for this rulebase, for explanations.
    pub fn long_name(self) -> &'static str {
        match self {
            Rulebase::Pre => "pre-rulebase",
            Rulebase::Local => "rulebase",
            Rulebase::Post => "post-rulebase",
            Rulebase::Default => "default security rules",
        }
    }
}

impl fmt::Display for Rulebase {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ZoneSet {
    Any,
    Only(BTreeSet<String>),
}

impl ZoneSet {
    pub fn contains(&self, zone: &str) -> bool {
        match self {
            ZoneSet::Any => true,
            ZoneSet::Only(zones) => zones.contains(zone),
        }
    }
}

impl fmt::Display for ZoneSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ZoneSet::Any => f.write_str("[any]"),
            ZoneSet::Only(zones) => {
                write!(
                    f,
                    "[{}]",
                    zones.iter().cloned().collect::<Vec<_>>().join(", ")
                )
            }
        }
    }
}

/// Where a rule came from, for explanations, flow records and ZonePolicy provenance.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Provenance {
    pub rule_name: String,
    pub uuid: Option<String>,
    /// Device group (`shared` for Panorama shared rules) or vsys name.
    pub device_group: String,
    pub rulebase: Rulebase,
    /// 1-based position in the rulebase of its device group (defaults: 1 = intrazone).
    pub position: usize,
    /// File or API the rule was read from, and the line of its `<entry>` when known.
    pub origin: String,
    pub line: Option<u32>,
}

/// How faithfully a rule is represented. Anything but `Exact` was reported as a warning.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub enum Fidelity {
    #[default]
    Exact,
    /// An allow that could not be represented safely: it matches no flow (fails closed).
    NeverMatches { reasons: Vec<String> },
    /// A deny-family rule whose unrepresentable parts were widened to `any`, so it still
    /// blocks at least everything the firewall blocks.
    Widened { reasons: Vec<String> },
}

/// The PAN-OS `target` of a rule: which managed firewalls receive it.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct RuleTarget {
    /// Device serial numbers.
    pub devices: Vec<String>,
    pub tags: Vec<String>,
    /// Target every device except those listed.
    pub negate: bool,
}

impl RuleTarget {
    pub fn is_all(&self) -> bool {
        self.devices.is_empty() && self.tags.is_empty() && !self.negate
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rule {
    pub provenance: Provenance,
    pub from: ZoneSet,
    pub to: ZoneSet,
    pub rule_type: RuleType,
    /// Members of `source`, `destination` and `service` as written, for explanations.
    pub source_names: Vec<String>,
    pub destination_names: Vec<String>,
    pub service_names: Vec<String>,
    pub source: AddressSet,
    pub negate_source: bool,
    pub destination: AddressSet,
    pub negate_destination: bool,
    pub service: ServiceSet,
    /// Application names as written (`any` when the rule names none).
    pub applications: Vec<String>,
    pub action: Action,
    pub log_start: bool,
    pub log_end: bool,
    pub log_setting: Option<String>,
    pub disabled: bool,
    pub description: Option<String>,
    pub tags: Vec<String>,
    pub target: RuleTarget,
    pub fidelity: Fidelity,
}

impl Rule {
    pub fn name(&self) -> &str {
        &self.provenance.rule_name
    }
}

/// The ordered rule list for one target, ending with the two default rules, so every flow
/// gets a verdict.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Policy {
    /// File or API the configuration was read from.
    pub origin: String,
    /// The device group (Panorama) or vsys (firewall) this list applies to.
    pub target: String,
    /// Zones the configuration defines (from templates or the vsys).
    pub zones: BTreeSet<String>,
    pub rules: Vec<Rule>,
}

impl Policy {
    /// Every FQDN address object the rules reference; the caller resolves them periodically
    /// and feeds the answers to [`Policy::set_fqdn_addresses`].
    pub fn fqdn_names(&self) -> BTreeSet<String> {
        self.rules
            .iter()
            .flat_map(|r| r.source.fqdns.iter().chain(r.destination.fqdns.iter()))
            .map(|f| f.name.clone())
            .collect()
    }

    /// Records the current DNS answer for `name` in every rule that references it; returns
    /// how many rules changed. Until then an FQDN matches nothing.
    pub fn set_fqdn_addresses(&mut self, name: &str, addresses: &[IpAddr]) -> usize {
        let mut changed = 0;
        for rule in &mut self.rules {
            let in_source = rule.source.set_fqdn_addresses(name, addresses);
            let in_destination = rule.destination.set_fqdn_addresses(name, addresses);
            if in_source || in_destination {
                changed += 1;
            }
        }
        changed
    }
}
