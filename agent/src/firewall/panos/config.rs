//! The PAN-OS configuration as written: names and values kept as strings, with the line of
//! each entry so later warnings can point at it. Nothing here is resolved or validated beyond
//! the XML structure; [`super::resolve`] turns it into a [`crate::model::Policy`].

use std::collections::{BTreeMap, BTreeSet};

use crate::model::RuleTarget;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ConfigKind {
    /// Panorama: shared + device groups + templates.
    Panorama,
    /// A single firewall: vsys entries (+ optional `shared`).
    Firewall,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PanosConfig {
    /// File name or API address, for messages.
    pub origin: String,
    pub kind: ConfigKind,
    pub shared: Scope,
    /// Panorama device groups by name.
    pub device_groups: BTreeMap<String, DeviceGroup>,
    /// Firewall virtual systems by name.
    pub vsys: BTreeMap<String, Vsys>,
    /// Panorama: zones defined in any template or template stack.
    pub template_zones: BTreeSet<String>,
    /// Problems in the file that do not stop reading it (shown as warnings).
    pub notes: Vec<ConfigNote>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConfigNote {
    pub line: Option<u32>,
    pub message: String,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DeviceGroup {
    pub name: String,
    /// Parent device group; `None` means directly under shared.
    pub parent: Option<String>,
    pub scope: Scope,
    pub line: u32,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Vsys {
    pub name: String,
    pub zones: BTreeSet<String>,
    pub scope: Scope,
    pub line: u32,
}

/// Objects and rules at one level: `shared`, a device group, or a vsys.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct Scope {
    pub tags: BTreeSet<String>,
    pub addresses: BTreeMap<String, AddressObject>,
    pub address_groups: BTreeMap<String, AddressGroup>,
    pub services: BTreeMap<String, ServiceObject>,
    pub service_groups: BTreeMap<String, ServiceGroup>,
    /// Custom applications and application groups (names only).
    pub applications: BTreeSet<String>,
    pub pre_rules: Vec<SecurityRule>,
    pub post_rules: Vec<SecurityRule>,
    /// A firewall vsys' own rulebase.
    pub local_rules: Vec<SecurityRule>,
    pub default_rules: Vec<DefaultRuleOverride>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AddressValue {
    IpNetmask(String),
    IpRange(String),
    IpWildcard(String),
    Fqdn(String),
    /// None of the known forms (for example an unsupported future type).
    Missing,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AddressObject {
    pub name: String,
    pub value: AddressValue,
    pub tags: Vec<String>,
    pub line: u32,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AddressGroupKind {
    Static(Vec<String>),
    Dynamic(String),
    /// Neither `static` nor `dynamic`: an empty group.
    Empty,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AddressGroup {
    pub name: String,
    pub kind: AddressGroupKind,
    pub tags: Vec<String>,
    pub line: u32,
}

/// One `<protocol><tcp|udp|sctp>` element of a service object.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServiceProtocol {
    pub protocol: String,
    pub port: Option<String>,
    pub source_port: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServiceObject {
    pub name: String,
    pub protocols: Vec<ServiceProtocol>,
    pub line: u32,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServiceGroup {
    pub name: String,
    pub members: Vec<String>,
    pub line: u32,
}

#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct SecurityRule {
    pub name: String,
    pub uuid: Option<String>,
    pub line: u32,
    pub from: Vec<String>,
    pub to: Vec<String>,
    pub source: Vec<String>,
    pub destination: Vec<String>,
    pub negate_source: bool,
    pub negate_destination: bool,
    pub service: Vec<String>,
    pub application: Vec<String>,
    /// Match criteria zonewall cannot enforce at L3/L4 (source-user, category, HIP profiles),
    /// as (field, members); only non-`any` values are kept.
    pub other_criteria: Vec<(String, Vec<String>)>,
    /// As written. PAN-OS always writes one; a missing action is reported and fails closed.
    pub action: Option<String>,
    pub rule_type: Option<String>,
    pub disabled: bool,
    pub description: Option<String>,
    pub tags: Vec<String>,
    pub log_start: Option<bool>,
    pub log_end: Option<bool>,
    pub log_setting: Option<String>,
    pub target: RuleTarget,
}

/// An entry of `default-security-rules`: overrides of the predefined default rules.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct DefaultRuleOverride {
    pub name: String,
    pub action: Option<String>,
    pub log_start: Option<bool>,
    pub log_end: Option<bool>,
    pub log_setting: Option<String>,
    pub line: u32,
}
