//! Problems confined to one rule or object. The rule they affect fails closed; the warning
//! says which rule, which reference, and what zonewall did about it.

use std::fmt;

use crate::model::Rulebase;

/// The rule a warning is about.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RuleRef {
    pub name: String,
    pub device_group: String,
    pub rulebase: Rulebase,
    pub position: usize,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum WarningKind {
    UnknownZone {
        zone: String,
        field: &'static str,
    },
    UnknownAddress {
        name: String,
        field: &'static str,
        /// The group whose member is unknown, when the rule names the group.
        in_group: Option<String>,
    },
    UnknownService {
        name: String,
        in_group: Option<String>,
    },
    GroupCycle {
        cycle: Vec<String>,
    },
    GroupTooDeep {
        group: String,
        limit: usize,
    },
    InvalidAddress {
        object: String,
        value: String,
        problem: String,
    },
    InvalidService {
        object: String,
        problem: String,
    },
    InvalidFilter {
        group: String,
        problem: String,
    },
    MissingField {
        field: &'static str,
    },
    InvalidAction {
        action: Option<String>,
    },
    InvalidRuleType {
        value: String,
    },
    /// Applications other than `any`, or `application-default`, which L4 cannot enforce.
    Applications {
        applications: Vec<String>,
        service: Vec<String>,
    },
    /// source-user, category, HIP profiles: not enforceable at L3/L4.
    UnsupportedCriterion {
        field: String,
        values: Vec<String>,
    },
    /// The rule is pushed only to some firewalls.
    Targeted {
        devices: Vec<String>,
        tags: Vec<String>,
        negate: bool,
    },
    UnknownDefaultRule {
        name: String,
    },
    NoZonesDefined,
    /// A note from reading the file (duplicates, hierarchy disagreements).
    Config {
        message: String,
    },
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Effect {
    /// An allow that cannot be represented safely: it now matches nothing.
    RuleMatchesNothing,
    /// A deny-family rule widened in the named column, so it still blocks at least as much.
    DenyWidened { field: &'static str },
    /// Allow mapped by the opt-in application default-ports table (L7 not enforced).
    AllowApproximated,
    /// Nothing changed in enforcement; for the operator's information.
    Informational,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Warning {
    /// File or API, and the line of the entry concerned when known.
    pub origin: String,
    pub line: Option<u32>,
    pub rule: Option<RuleRef>,
    pub kind: WarningKind,
    pub effect: Effect,
}

impl fmt::Display for WarningKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            WarningKind::UnknownZone { zone, field } => write!(
                f,
                "unknown zone '{zone}' in {field} (define it in a template or the vsys, or fix the name)"
            ),
            WarningKind::UnknownAddress {
                name,
                field,
                in_group,
            } => match in_group {
                Some(group) => write!(
                    f,
                    "address group '{group}' (in {field}) has unknown member '{name}' (define the object in the device group, an ancestor or shared, or fix the name)"
                ),
                None => write!(
                    f,
                    "unknown address '{name}' in {field} (define it in the device group, an ancestor or shared, or fix the name)"
                ),
            },
            WarningKind::UnknownService { name, in_group } => match in_group {
                Some(group) => write!(
                    f,
                    "service group '{group}' has unknown member '{name}' (define the service or fix the name)"
                ),
                None => write!(
                    f,
                    "unknown service '{name}' (define the service or fix the name)"
                ),
            },
            WarningKind::GroupCycle { cycle } => write!(
                f,
                "group cycle {} (remove one of the memberships)",
                cycle.join(" -> ")
            ),
            WarningKind::GroupTooDeep { group, limit } => write!(
                f,
                "group '{group}' nests more than {limit} levels deep (flatten it)"
            ),
            WarningKind::InvalidAddress {
                object,
                value,
                problem,
            } => write!(
                f,
                "address '{object}' has invalid value {value:?}: {problem}"
            ),
            WarningKind::InvalidService { object, problem } => {
                write!(f, "service '{object}' is invalid: {problem}")
            }
            WarningKind::InvalidFilter { group, problem } => {
                write!(
                    f,
                    "dynamic address group '{group}' has an invalid filter: {problem}"
                )
            }
            WarningKind::MissingField { field } => {
                write!(
                    f,
                    "the rule has no {field} members (PAN-OS requires at least one)"
                )
            }
            WarningKind::InvalidAction { action } => match action {
                Some(a) => write!(f, "unknown action {a:?}"),
                None => write!(f, "the rule has no action"),
            },
            WarningKind::InvalidRuleType { value } => write!(
                f,
                "unknown rule-type {value:?} (expected universal, intrazone or interzone)"
            ),
            WarningKind::Applications {
                applications,
                service,
            } => write!(
                f,
                "applications [{}] with service [{}] cannot be enforced exactly at L4",
                applications.join(", "),
                service.join(", ")
            ),
            WarningKind::UnsupportedCriterion { field, values } => write!(
                f,
                "{field} [{}] cannot be enforced at L3/L4",
                values.join(", ")
            ),
            WarningKind::Targeted {
                devices,
                tags,
                negate,
            } => write!(
                f,
                "the rule targets {}devices [{}] / tags [{}] (set the cluster's device serial to decide exactly)",
                if *negate { "all but " } else { "only " },
                devices.join(", "),
                tags.join(", ")
            ),
            WarningKind::UnknownDefaultRule { name } => write!(
                f,
                "default-security-rules entry '{name}' is not intrazone-default or interzone-default; ignored"
            ),
            WarningKind::NoZonesDefined => write!(
                f,
                "the configuration defines no zones (no template or vsys zones); zone names in rules are not checked"
            ),
            WarningKind::Config { message } => f.write_str(message),
        }
    }
}

impl fmt::Display for Effect {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Effect::RuleMatchesNothing => {
                f.write_str("this allow rule now matches nothing (fails closed)")
            }
            Effect::DenyWidened { field } => write!(
                f,
                "this rule still blocks, with {field} widened to any so it blocks at least what the firewall blocks"
            ),
            Effect::AllowApproximated => f.write_str(
                "this allow is enforced on ports only, using the application default-ports table (the application itself is not checked)",
            ),
            Effect::Informational => f.write_str("enforcement is unchanged"),
        }
    }
}

impl fmt::Display for Warning {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.origin)?;
        if let Some(line) = self.line {
            write!(f, ":{line}")?;
        }
        write!(f, ": ")?;
        if let Some(rule) = &self.rule {
            let scope = if rule.device_group == "shared" {
                "shared".to_string()
            } else if rule.rulebase == Rulebase::Local {
                format!("vsys '{}'", rule.device_group)
            } else {
                format!("device group '{}'", rule.device_group)
            };
            write!(
                f,
                "rule '{}' ({} of {scope}, position {}): ",
                rule.name,
                rule.rulebase.long_name(),
                rule.position
            )?;
        }
        write!(f, "{}; {}", self.kind, self.effect)
    }
}
