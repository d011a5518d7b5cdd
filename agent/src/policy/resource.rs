//! The `ZonePolicy` custom resource (`zonewall.io/v1alpha1`, cluster-scoped): the Kubernetes
//! form of the firewall tier (DESIGN.md section 5).
//!
//! One object governs one zone: its egress rules decide flows leaving the zone, its ingress
//! rules flows entering it, each list first match in the firewall's order. The object whose
//! zone is `any` governs every zone that has no ZonePolicy of its own in the same tier, so a
//! workload in a zone the firewall never names still meets the firewall's `any` rules and
//! default rules.
//!
//! The shape is chosen so that a field lost on the way can never widen an allow: address and
//! service columns are required, and an empty column matches nothing (`any` must be said).
//! Enum values use the Kubernetes convention (`Allow`, `Enforce`), except `tier`, whose values
//! are the names DESIGN.md gives the tiers.
//!
//! Everything here is data plus [`ZonePolicy::validate`]; the evaluator lives in
//! [`super::eval`].

use std::collections::BTreeMap;
use std::fmt;
use std::io::Write as _;

use ipnet::IpNet;
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// The zone value of the object that governs every zone without a ZonePolicy of its own,
/// and the peer zone value that means every zone (PAN-OS reserves `any` the same way).
pub const ANY_ZONE: &str = "any";

fn is_false(value: &bool) -> bool {
    !*value
}

/// Desired state: one zone's ordered egress and ingress rules in one tier.
#[expect(
    clippy::duplicated_attributes,
    reason = "each printcolumn(...) repeats keys such as type_ by design"
)]
#[derive(CustomResource, Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[kube(
    group = "zonewall.io",
    version = "v1alpha1",
    kind = "ZonePolicy",
    plural = "zonepolicies",
    shortname = "zp",
    category = "zonewall",
    status = "ZonePolicyStatus",
    doc = "Zone-based firewall policy for one zone: ordered egress and ingress rules, first match, in one tier.",
    printcolumn(name = "Zone", type_ = "string", json_path = ".spec.zone"),
    printcolumn(name = "Tier", type_ = "string", json_path = ".spec.tier"),
    printcolumn(name = "Order", type_ = "integer", json_path = ".spec.order"),
    printcolumn(name = "Mode", type_ = "string", json_path = ".spec.mode"),
    printcolumn(
        name = "Egress",
        type_ = "integer",
        json_path = ".status.egressRules",
        description = "Number of egress rules"
    ),
    printcolumn(
        name = "Ingress",
        type_ = "integer",
        json_path = ".status.ingressRules",
        description = "Number of ingress rules"
    ),
    printcolumn(
        name = "Warnings",
        type_ = "integer",
        json_path = ".status.warningCount",
        description = "Rules not translated exactly (see status.warnings)"
    ),
    printcolumn(
        name = "Device-Group",
        type_ = "string",
        json_path = ".spec.provenance.deviceGroup"
    ),
    printcolumn(
        name = "Commit",
        type_ = "string",
        json_path = ".spec.provenance.commit",
        priority = "1"
    ),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[serde(rename_all = "camelCase")]
pub struct ZonePolicySpec {
    /// Tier; tiers are evaluated in the order firewall, platform, application.
    pub tier: Tier,
    /// Position among the policies of the same tier that govern the same zone (lower first).
    #[schemars(range(min = 1))]
    pub order: u32,
    /// `Enforce` drops what the rules deny; `Audit` only reports what it would deny.
    pub mode: Mode,
    /// The zone governed (`any`: every zone without its own ZonePolicy in this tier).
    #[schemars(length(min = 1, max = 31), pattern(r"^[A-Za-z0-9._ -]+$"))]
    pub zone: String,
    /// Set when one zone's rules were split over several objects to stay under the API
    /// server's object size limit: all parts must be present for the zone to be enforced.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub part: Option<Part>,
    /// Where the rules came from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub provenance: Option<PolicyProvenance>,
    /// Flows leaving the zone, first match.
    pub egress: Vec<ZoneRule>,
    /// Flows entering the zone, first match.
    pub ingress: Vec<ZoneRule>,
    /// Named address sets the rules' address columns refer to (`sets`): a large address
    /// group is written once per object instead of once per rule that uses it. Names are
    /// local to the object.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub address_sets: BTreeMap<String, AddressSetSpec>,
}

/// A named list of prefixes, shared by the address columns that refer to it.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
pub struct AddressSetSpec {
    /// IPv4 and IPv6 prefixes with host bits cleared (checked by validation, as in columns).
    pub prefixes: Vec<Prefix>,
}

/// An IPv4 or IPv6 prefix as a ZonePolicy writes it: a string such as `10.0.0.0/8`. Held
/// parsed when written in canonical form (as a translation writes every prefix), as the
/// text otherwise, so that validation reports it as written: a large policy holds hundreds
/// of thousands of them, and a parsed one takes no allocation of its own.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Prefix {
    Canonical(IpNet),
    Written(Box<str>),
}

impl From<IpNet> for Prefix {
    fn from(net: IpNet) -> Prefix {
        Prefix::Canonical(net)
    }
}

impl From<&str> for Prefix {
    fn from(text: &str) -> Prefix {
        if let Ok(net) = text.parse::<IpNet>()
            && net.trunc() == net
        {
            // The longest canonical form is 43 bytes (a full IPv6 address and `/128`).
            let mut canonical = [0u8; 64];
            let mut cursor = std::io::Cursor::new(&mut canonical[..]);
            if write!(cursor, "{net}").is_ok() {
                let length = cursor.position() as usize;
                if &canonical[..length] == text.as_bytes() {
                    return Prefix::Canonical(net);
                }
            }
        }
        Prefix::Written(text.into())
    }
}

impl From<String> for Prefix {
    fn from(text: String) -> Prefix {
        Prefix::from(text.as_str())
    }
}

impl fmt::Display for Prefix {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Prefix::Canonical(net) => write!(f, "{net}"),
            Prefix::Written(text) => f.write_str(text),
        }
    }
}

impl Serialize for Prefix {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Prefix {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Prefix, D::Error> {
        struct Text;
        impl serde::de::Visitor<'_> for Text {
            type Value = Prefix;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a CIDR prefix such as 10.0.0.0/8")
            }
            fn visit_str<E: serde::de::Error>(self, text: &str) -> Result<Prefix, E> {
                Ok(Prefix::from(text))
            }
        }
        deserializer.deserialize_str(Text)
    }
}

impl JsonSchema for Prefix {
    fn inline_schema() -> bool {
        true
    }

    fn schema_name() -> std::borrow::Cow<'static, str> {
        "Prefix".into()
    }

    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({
            "type": "string",
            "minLength": 4,
            "maxLength": 49,
            "pattern": r"^[0-9a-fA-F:.]+/[0-9]{1,3}$"
        })
    }
}

#[derive(
    Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, JsonSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum Tier {
    /// The security team's firewall policy, written only by the sync controller.
    Firewall,
    Platform,
    Application,
}

impl Tier {
    pub const ALL: [Tier; 3] = [Tier::Firewall, Tier::Platform, Tier::Application];

    pub fn as_str(self) -> &'static str {
        match self {
            Tier::Firewall => "firewall",
            Tier::Platform => "platform",
            Tier::Application => "application",
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
pub enum Mode {
    Enforce,
    Audit,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[schemars(extend("x-kubernetes-validations" = [
    {"rule": "self.index <= self.count", "message": "part index must not exceed the part count"}
]))]
pub struct Part {
    /// 1-based.
    #[schemars(range(min = 1))]
    pub index: u32,
    #[schemars(range(min = 1))]
    pub count: u32,
}

/// The firewall configuration the policy was translated from.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PolicyProvenance {
    /// Firewall family (`panos`).
    pub firewall: String,
    /// File or API the configuration was read from.
    pub origin: String,
    /// Panorama device group (or firewall vsys) whose rules these are.
    pub device_group: String,
    /// Firewall commit (Panorama job or config version) that last changed this object's
    /// content, when known: a later commit that leaves the object as it was does not rewrite
    /// it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub commit: Option<String>,
}

/// One rule. It matches a flow when the rule is active, the peer zone and rule type hold,
/// the source and destination addresses are in their columns (after negation), and the
/// service holds.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("x-kubernetes-validations" = [
    {"rule": "self.action == 'Reject' ? has(self.reset) : !has(self.reset)",
     "message": "reset is required with action Reject and not allowed otherwise"}
]))]
pub struct ZoneRule {
    pub action: RuleAction,
    /// Which side a `Reject` resets.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reset: Option<Reset>,
    /// `Intrazone`: the peer zone must be the governed zone; `Interzone`: it must differ;
    /// `Universal`: either.
    pub rule_type: RuleType,
    /// Zones at the other end of the flow (`[any]`: every zone).
    #[schemars(
        length(min = 1),
        inner(length(min = 1, max = 31), pattern(r"^[A-Za-z0-9._ -]+$"))
    )]
    pub peer_zones: Vec<String>,
    pub source: AddressMatch,
    pub destination: AddressMatch,
    pub service: ServiceMatch,
    pub log: Logging,
    /// Disabled in the firewall: never matches.
    #[serde(default, skip_serializing_if = "is_false")]
    pub disabled: bool,
    /// How faithfully the firewall rule is represented.
    #[serde(default, skip_serializing_if = "Fidelity::is_exact")]
    pub fidelity: Fidelity,
    /// Why the fidelity is not `Exact`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub notes: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub provenance: Option<RuleProvenance>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
pub enum RuleAction {
    Allow,
    /// Drop the packet (PAN-OS `deny`).
    Deny,
    /// Drop the packet silently (PAN-OS `drop`).
    Drop,
    /// Drop and send a TCP reset (ICMP unreachable for other protocols).
    Reject,
    /// Hand the flow to the next tier.
    Pass,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
pub enum Reset {
    Client,
    Server,
    Both,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
pub enum RuleType {
    Universal,
    Intrazone,
    Interzone,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default, Serialize, Deserialize, JsonSchema)]
pub enum Fidelity {
    #[default]
    Exact,
    /// An allow that could not be represented safely: it never matches.
    FailClosed,
    /// A deny whose unrepresentable parts were widened, so it blocks at least as much.
    Widened,
}

impl Fidelity {
    pub fn is_exact(&self) -> bool {
        *self == Fidelity::Exact
    }
}

/// An address column: the union of its entries. Empty (no `any`, no entries) matches
/// nothing; `negate` inverts the result, exactly like PAN-OS `negate-source` /
/// `negate-destination`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema, Hash)]
#[serde(rename_all = "camelCase")]
pub struct AddressMatch {
    #[serde(default, skip_serializing_if = "is_false")]
    pub any: bool,
    #[serde(default, skip_serializing_if = "is_false")]
    pub negate: bool,
    /// IPv4 and IPv6 prefixes with host bits cleared. The schema checks the shape; exact
    /// syntax and host bits are checked by validation (a CEL check per prefix would exceed the
    /// API server's cost budget on lists this long).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub prefixes: Vec<Prefix>,
    /// Names of address sets of this object (`spec.addressSets`) whose prefixes are in the
    /// column too.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(inner(
        length(min = 1, max = 63),
        pattern(r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$")
    ))]
    pub sets: Vec<String>,
    /// Non-contiguous wildcard masks (PAN-OS `ip-wildcard`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub wildcards: Vec<WildcardMatch>,
    /// Domain names, with the addresses they currently resolve to (none: matches nothing).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub fqdns: Vec<FqdnMatch>,
    /// Dynamic address groups: workloads whose labels satisfy the filter.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub selectors: Vec<LabelFilter>,
}

impl ZoneRule {
    /// The address sets its columns name.
    pub fn address_sets(&self) -> impl Iterator<Item = &str> {
        self.source
            .sets
            .iter()
            .chain(&self.destination.sets)
            .map(String::as_str)
    }
}

/// `address` with the bits set in `mask` ignored.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema, Hash)]
pub struct WildcardMatch {
    #[schemars(length(min = 2, max = 45), pattern(r"^[0-9a-fA-F:.]+$"))]
    pub address: String,
    #[schemars(length(min = 2, max = 45), pattern(r"^[0-9a-fA-F:.]+$"))]
    pub mask: String,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema, Hash)]
pub struct FqdnMatch {
    #[schemars(length(min = 1, max = 255))]
    pub name: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub addresses: Vec<String>,
}

/// A dynamic address group's tag filter, matched against workload labels: a tag `key=value`
/// (or `key:value`) holds when the workload has that label; `and`, `or`, `not` and
/// parentheses as in PAN-OS.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema, Hash)]
pub struct LabelFilter {
    /// The dynamic address group, for explanations.
    pub group: String,
    #[schemars(length(min = 1))]
    pub filter: String,
}

/// A service column. Empty matches nothing; `any` matches every protocol, port-less ones
/// (ICMP) included.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ServiceMatch {
    #[serde(default, skip_serializing_if = "is_false")]
    pub any: bool,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub entries: Vec<ServiceEntry>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ServiceEntry {
    pub protocol: Protocol,
    /// Destination ports.
    #[schemars(length(min = 1))]
    pub ports: Vec<PortRange>,
    /// Source ports; absent: any source port.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source_ports: Option<Vec<PortRange>>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
pub enum Protocol {
    #[serde(rename = "TCP")]
    Tcp,
    #[serde(rename = "UDP")]
    Udp,
    #[serde(rename = "SCTP")]
    Sctp,
}

/// `port`, or `port` to `endPort` inclusive.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("x-kubernetes-validations" = [
    {"rule": "!has(self.endPort) || self.endPort >= self.port", "message": "endPort must not be below port"}
]))]
pub struct PortRange {
    pub port: u16,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub end_port: Option<u16>,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct Logging {
    /// Report the flow when it starts.
    #[serde(default)]
    pub start: bool,
    /// Report the flow when it ends.
    #[serde(default)]
    pub end: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
pub enum Rulebase {
    Pre,
    Local,
    Post,
    Default,
}

/// The firewall rule a ZonePolicy rule was translated from.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RuleProvenance {
    /// Firewall rule name.
    pub rule: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uuid: Option<String>,
    /// Device group (`shared` for Panorama shared rules) or vsys.
    pub device_group: String,
    pub rulebase: Rulebase,
    /// 1-based position in its rulebase (default rules: 1 intrazone, 2 interzone).
    #[schemars(range(min = 1))]
    pub position: u32,
    /// Line of the rule in the configuration, when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub line: Option<u32>,
}

/// Observed state, written by the sync controller (and by `zonewall translate`).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ZonePolicyStatus {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    #[serde(default)]
    pub egress_rules: u32,
    #[serde(default)]
    pub ingress_rules: u32,
    #[serde(default)]
    pub warning_count: u32,
    /// Every rule of this object not translated exactly, and what zonewall did about it.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A prefix is held parsed only when its text is the canonical one, and is written back
    /// exactly as it was read either way.
    #[test]
    fn prefixes_are_written_back_as_read() {
        for (text, canonical) in [
            ("10.0.0.0/8", true),
            ("fd00:1::/64", true),
            ("10.0.0.1/8", false),
            ("2001:db8:0:0::/64", false),
            ("010.0.0.0/8", false),
            ("not a prefix", false),
        ] {
            let prefix = Prefix::from(text);
            assert_eq!(matches!(prefix, Prefix::Canonical(_)), canonical, "{text}");
            let json = serde_json::to_string(&prefix).expect("serializes");
            assert_eq!(json, format!("\"{text}\""));
            let back: Prefix = serde_json::from_str(&json).expect("deserializes");
            assert_eq!(back, prefix);
        }
    }
}
