//! Resolved firewall policy -> ZonePolicy objects of the `firewall` tier (DESIGN.md section 5).
//!
//! One object per zone: every zone the configuration defines or a rule names, plus the
//! `zone: any` object for zones the firewall never names. For a zone Z:
//! - egress holds, in firewall order, every rule whose `from` holds Z (or is `any`); its peer
//!   zones are the rule's `to`;
//! - ingress holds every rule whose `to` holds Z (intrazone rules: whose `from` holds Z, as
//!   PAN-OS ignores `to` for them); its peer zones are the rule's `from`;
//! - intrazone rules get peer zones `[Z]` and keep `ruleType: Intrazone`, interzone rules keep
//!   `ruleType: Interzone`, so the zone conditions survive exactly.
//!
//! A rule that cannot match any flow of Z in a direction is left out of that list; dropping a
//! rule that cannot match changes no first-match verdict. So the egress list of the source
//! zone and the ingress list of the destination zone each give exactly the firewall's
//! verdict. The `any` object holds the rules whose `from` (egress) or `to` (ingress) is `any`:
//! the only rules that can match a zone no rule names.
//!
//! Fail-closed rules stay fail-closed (`fidelity: FailClosed`, never matches), widened denies
//! are marked `Widened`, and disabled rules are kept (never matching) so positions and
//! provenance read the same as in the firewall.
//!
//! Pure: the caller reads the configuration and writes the output.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use foldhash::{HashMap, HashSet};
use sha2::{Digest as _, Sha256};

use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

use crate::firewall::panos::{Resolved, Warning};
use crate::model::{self, AddressSet, Fidelity, Policy, Rule, ServiceSet, ZoneSet};
use crate::policy::directory::ObjectFile;
use crate::policy::resource::{
    self as crd, ANY_ZONE, AddressMatch, AddressSetSpec, FqdnMatch, LabelFilter, Logging, Mode,
    Part, PolicyProvenance, Prefix, Reset, RuleAction, RuleProvenance, ServiceMatch, Tier,
    WildcardMatch, ZonePolicy, ZonePolicySpec, ZonePolicyStatus, ZoneRule,
};
use crate::policy::valid_zone_name;
use crate::retired::Retired;

mod size;

/// The API server refuses objects over about 1.5 MiB (etcd's request limit); staying under
/// 1 MB leaves room for metadata the server adds (managed fields, annotations).
pub const DEFAULT_MAX_OBJECT_BYTES: usize = 1_000_000;

/// Address columns with at least this many prefixes are written once per object as a named
/// address set (`spec.addressSets`) that the columns name, instead of in every rule that has
/// them: a large rulebase names the same address groups in thousands of rules.
pub const DEFAULT_ADDRESS_SETS_FROM: usize = 8;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TranslateOptions {
    pub mode: Mode,
    /// Firewall commit the configuration is from, when known.
    pub commit: Option<String>,
    /// Serialized YAML size over which a zone's rules are split into ordered parts.
    pub max_object_bytes: usize,
    /// Whether to keep each object's YAML ([`Translation::documents`]). Without, the objects
    /// are the same (sizes are checked against a bound of their YAML, and serialized only
    /// when the bound is inconclusive): the sync controller writes YAML only for objects that
    /// changed, and none for the API server.
    pub documents: bool,
    /// Columns with at least this many prefixes name an address set
    /// ([`DEFAULT_ADDRESS_SETS_FROM`]; `usize::MAX` writes every column out).
    pub address_sets_from: usize,
}

impl Default for TranslateOptions {
    fn default() -> Self {
        TranslateOptions {
            mode: Mode::Enforce,
            commit: None,
            max_object_bytes: DEFAULT_MAX_OBJECT_BYTES,
            documents: true,
            address_sets_from: DEFAULT_ADDRESS_SETS_FROM,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum TranslateError {
    #[error(
        "{origin}: zone {zone:?} (named by rule '{rule}') is not a valid zone name (1-31 letters, digits, '-', '_', '.', spaces); fix the zone name in the firewall"
    )]
    InvalidZone {
        origin: String,
        zone: String,
        rule: String,
    },
    #[error(
        "rule '{rule}' alone serializes to {bytes} bytes in zone '{zone}', over the {limit}-byte object limit; split the rule in the firewall"
    )]
    RuleTooLarge {
        zone: String,
        rule: String,
        bytes: usize,
        limit: usize,
    },
    #[error("cannot serialize ZonePolicy '{name}' as YAML: {source}")]
    Yaml {
        name: String,
        #[source]
        source: serde_yaml_ng::Error,
    },
}

/// The objects, in output order (zones by name, then `any`).
#[derive(Clone, Debug)]
pub struct Translation {
    pub policies: Vec<ZonePolicy>,
    /// Each object's YAML, in the same order: serialized once, when its size was checked,
    /// and reused for output (tens of MiB for a large Panorama). Empty when
    /// [`TranslateOptions::documents`] is false.
    pub documents: Vec<String>,
}

impl Translation {
    /// Multi-document YAML, one document per object, in output order.
    pub fn to_yaml(&self) -> String {
        let mut out = String::with_capacity(self.documents.iter().map(|d| d.len() + 4).sum());
        for document in &self.documents {
            out.push_str("---\n");
            out.push_str(document);
        }
        out
    }

    /// One `<object name>.yaml` file per object, for [`crate::policy::directory::publish`].
    pub fn object_files(&self) -> Vec<ObjectFile> {
        self.policies
            .iter()
            .zip(&self.documents)
            .map(|(policy, document)| ObjectFile {
                name: format!(
                    "{}.yaml",
                    policy.metadata.name.as_deref().unwrap_or("unnamed")
                ),
                content: document.clone(),
            })
            .collect()
    }
}

/// File name prefix of every object of the firewall tier (see [`object_name`]): what a
/// directory publication may treat as its own.
pub const FIREWALL_FILE_PREFIX: &str = "firewall-";

/// 32-bit FNV-1a: stable across releases and platforms (unlike std's hasher), enough to
/// tell apart zone names that slug to the same text (`DMZ`, `dmz`).
fn fnv1a(text: &str) -> u32 {
    let mut hash: u32 = 0x811c_9dc5;
    for byte in text.bytes() {
        hash ^= u32::from(byte);
        hash = hash.wrapping_mul(0x0100_0193);
    }
    hash
}

/// Lowercase letters, digits and single dashes: a DNS label fragment.
fn slug(text: &str) -> String {
    let mut out = String::new();
    for c in text.chars() {
        if c.is_ascii_alphanumeric() {
            out.push(c.to_ascii_lowercase());
        } else if !out.ends_with('-') {
            out.push('-');
        }
    }
    let out = out.trim_matches('-');
    if out.is_empty() {
        "zone".to_string()
    } else {
        out.to_string()
    }
}

/// DNS-safe, stable object name: `firewall-<zone slug>-<hash of the exact zone name>`, with
/// `-part-N` from the second part on; `firewall-any` for the `any` object.
pub fn object_name(tier: Tier, zone: Option<&str>, part: u32) -> String {
    let base = match zone {
        None => format!("{}-{ANY_ZONE}", tier.as_str()),
        Some(zone) => format!("{}-{}-{:08x}", tier.as_str(), slug(zone), fnv1a(zone)),
    };
    if part > 1 {
        format!("{base}-part-{part}")
    } else {
        base
    }
}

/// The name a translation gives a list of prefixes: `set-` and 16 hex digits of its SHA-256,
/// so equal lists have one name in every object, every commit and every release.
pub fn address_set_name(prefixes: &[Prefix]) -> String {
    let (name, _) = named(prefixes);
    name
}

fn named(prefixes: &[Prefix]) -> (String, [u8; 32]) {
    use std::fmt::Write as _;
    let mut hasher = Sha256::new();
    let mut text = String::new();
    for prefix in prefixes {
        text.clear();
        let _ = writeln!(text, "{prefix}");
        hasher.update(text.as_bytes());
    }
    let digest: [u8; 32] = hasher.finalize().into();
    let hex: String = digest[..8].iter().map(|b| format!("{b:02x}")).collect();
    (format!("set-{hex}"), digest)
}

/// The address sets the converted rules name, by name, with their content's digest.
type SetTable = HashMap<String, ([u8; 32], Arc<AddressSetSpec>)>;

/// Each rule's [`zone_rule`], made the first time a zone needs it, and the address sets
/// they name.
#[derive(Default)]
struct Conversions {
    rules: Vec<Option<ZoneRule>>,
    sets: SetTable,
    /// [`TranslateOptions::address_sets_from`].
    sets_from: usize,
}

impl Conversions {
    /// The prefixes of a column, or the name of the set they become.
    fn prefixes(&mut self, set: &AddressSet) -> (Vec<Prefix>, Vec<String>) {
        let prefixes: Vec<Prefix> = set.prefixes.iter().copied().map(Prefix::from).collect();
        if prefixes.is_empty() || prefixes.len() < self.sets_from {
            return (prefixes, Vec::new());
        }
        let (name, digest) = named(&prefixes);
        match self.sets.get(&name) {
            Some((known, _)) if *known == digest => (Vec::new(), vec![name]),
            // Another list under the same 64-bit name: this one stays written out.
            Some(_) => (prefixes, Vec::new()),
            None => {
                let set = Arc::new(AddressSetSpec { prefixes });
                self.sets.insert(name.clone(), (digest, set));
                (Vec::new(), vec![name])
            }
        }
    }

    /// Keeps only the sets the converted rules name.
    fn prune(&mut self) {
        let named: HashSet<&str> = self
            .rules
            .iter()
            .flatten()
            .flat_map(ZoneRule::address_sets)
            .collect();
        self.sets.retain(|name, _| named.contains(name.as_str()));
    }
}

fn addresses(set: &AddressSet, negate: bool, conversions: &mut Conversions) -> AddressMatch {
    let (prefixes, sets) = conversions.prefixes(set);
    AddressMatch {
        any: set.any,
        negate,
        prefixes,
        sets,
        wildcards: set
            .wildcards
            .iter()
            .map(|w| WildcardMatch {
                address: w.address.to_string(),
                mask: w.mask.to_string(),
            })
            .collect(),
        fqdns: set
            .fqdns
            .iter()
            .map(|f| FqdnMatch {
                name: f.name.clone(),
                addresses: f.resolved.iter().map(ToString::to_string).collect(),
            })
            .collect(),
        selectors: set
            .dynamic
            .iter()
            .map(|d| LabelFilter {
                group: d.group.clone(),
                filter: filter_text(&d.filter),
            })
            .collect(),
    }
}

/// A tag filter written so that [`model::TagExpr::parse`] reads back the same expression.
/// A parsed tag never holds both quote characters, so one of them always fits.
fn filter_text(expr: &model::TagExpr) -> String {
    use model::TagExpr;
    let join = |terms: &[TagExpr], op: &str| {
        let parts: Vec<String> = terms.iter().map(filter_text).collect();
        format!("({})", parts.join(&format!(" {op} ")))
    };
    match expr {
        TagExpr::Tag(tag) if tag.contains('\'') => format!("\"{tag}\""),
        TagExpr::Tag(tag) => format!("'{tag}'"),
        TagExpr::Not(inner) => format!("not {}", filter_text(inner)),
        TagExpr::And(terms) => join(terms, "and"),
        TagExpr::Or(terms) => join(terms, "or"),
    }
}

fn ports(ranges: &[model::PortRange]) -> Vec<crd::PortRange> {
    ranges
        .iter()
        .map(|r| crd::PortRange {
            port: r.first,
            end_port: (r.last != r.first).then_some(r.last),
        })
        .collect()
}

fn services(set: &ServiceSet) -> ServiceMatch {
    ServiceMatch {
        any: set.any,
        entries: set
            .entries
            .iter()
            .map(|e| crd::ServiceEntry {
                protocol: match e.protocol {
                    model::Protocol::Tcp => crd::Protocol::Tcp,
                    model::Protocol::Udp => crd::Protocol::Udp,
                    model::Protocol::Sctp => crd::Protocol::Sctp,
                },
                ports: ports(&e.destination_ports),
                source_ports: e.source_ports.as_deref().map(ports),
            })
            .collect(),
    }
}

fn rulebase(rulebase: model::Rulebase) -> crd::Rulebase {
    match rulebase {
        model::Rulebase::Pre => crd::Rulebase::Pre,
        model::Rulebase::Local => crd::Rulebase::Local,
        model::Rulebase::Post => crd::Rulebase::Post,
        model::Rulebase::Default => crd::Rulebase::Default,
    }
}

/// The rule without its peer zones (they depend on the zone and direction).
fn zone_rule(rule: &Rule, conversions: &mut Conversions) -> ZoneRule {
    let (action, reset) = match rule.action {
        model::Action::Allow => (RuleAction::Allow, None),
        model::Action::Deny => (RuleAction::Deny, None),
        model::Action::Drop => (RuleAction::Drop, None),
        model::Action::ResetClient => (RuleAction::Reject, Some(Reset::Client)),
        model::Action::ResetServer => (RuleAction::Reject, Some(Reset::Server)),
        model::Action::ResetBoth => (RuleAction::Reject, Some(Reset::Both)),
    };
    let (fidelity, notes) = match &rule.fidelity {
        Fidelity::Exact => (crd::Fidelity::Exact, Vec::new()),
        Fidelity::NeverMatches { reasons } => (crd::Fidelity::FailClosed, reasons.clone()),
        Fidelity::Widened { reasons } => (crd::Fidelity::Widened, reasons.clone()),
    };
    let p = &rule.provenance;
    ZoneRule {
        action,
        reset,
        rule_type: match rule.rule_type {
            model::RuleType::Universal => crd::RuleType::Universal,
            model::RuleType::Intrazone => crd::RuleType::Intrazone,
            model::RuleType::Interzone => crd::RuleType::Interzone,
        },
        peer_zones: Vec::new(),
        source: addresses(&rule.source, rule.negate_source, conversions),
        destination: addresses(&rule.destination, rule.negate_destination, conversions),
        service: services(&rule.service),
        log: Logging {
            start: rule.log_start,
            end: rule.log_end,
        },
        disabled: rule.disabled,
        fidelity,
        notes,
        provenance: Some(RuleProvenance {
            rule: p.rule_name.clone(),
            uuid: p.uuid.clone(),
            device_group: p.device_group.clone(),
            rulebase: rulebase(p.rulebase),
            position: u32::try_from(p.position).unwrap_or(u32::MAX),
            line: p.line,
        }),
    }
}

fn zone_list(set: &ZoneSet) -> Vec<String> {
    match set {
        ZoneSet::Any => vec![ANY_ZONE.to_string()],
        ZoneSet::Only(zones) => zones.iter().cloned().collect(),
    }
}

/// Whether `set` holds `zone`, where `None` is the `any` object's zone: only `any` holds it.
fn holds(set: &ZoneSet, zone: Option<&str>) -> bool {
    match zone {
        Some(zone) => set.contains(zone),
        None => *set == ZoneSet::Any,
    }
}

/// Indices of the rules governing `zone` in one direction, in firewall order.
fn governing(policy: &Policy, zone: Option<&str>, egress: bool) -> Vec<usize> {
    let governs = |rule: &Rule| {
        if egress || rule.rule_type == model::RuleType::Intrazone {
            holds(&rule.from, zone)
        } else {
            holds(&rule.to, zone)
        }
    };
    (0..policy.rules.len())
        .filter(|&index| governs(&policy.rules[index]))
        .collect()
}

/// The zone's rules for one direction, with peer zones filled in.
fn rules_for(
    policy: &Policy,
    conversions: &mut Conversions,
    indices: &[usize],
    zone: Option<&str>,
    egress: bool,
) -> Vec<ZoneRule> {
    indices
        .iter()
        .map(|&index| {
            let rule = &policy.rules[index];
            let peers = if rule.rule_type == model::RuleType::Intrazone {
                vec![zone.unwrap_or(ANY_ZONE).to_string()]
            } else if egress {
                zone_list(&rule.to)
            } else {
                zone_list(&rule.from)
            };
            let mut zone_rule = match &conversions.rules[index] {
                Some(converted) => converted.clone(),
                None => {
                    let converted = zone_rule(rule, conversions);
                    conversions.rules[index] = Some(converted.clone());
                    converted
                }
            };
            zone_rule.peer_zones = peers;
            zone_rule
        })
        .collect()
}

/// A firewall rule's identity as both warnings and provenance record it: name, device group,
/// rulebase, position. Lookups by this key keep translation linear: a large Panorama has
/// thousands of rules and thousands of warnings.
type RuleKey<'a> = (&'a str, &'a str, crd::Rulebase, Option<u32>);

fn warning_key(warning: &Warning) -> Option<RuleKey<'_>> {
    warning.rule.as_ref().map(|w| {
        (
            w.name.as_str(),
            w.device_group.as_str(),
            rulebase(w.rulebase),
            u32::try_from(w.position).ok(),
        )
    })
}

fn rule_key(rule: &ZoneRule) -> Option<RuleKey<'_>> {
    rule.provenance.as_ref().map(|p| {
        (
            p.rule.as_str(),
            p.device_group.as_str(),
            p.rulebase,
            Some(p.position),
        )
    })
}

/// Warnings about the object's rules, plus those about the configuration as a whole. Each
/// warning comes with its text, formatted once for all objects.
fn object_warnings(
    warnings: &[(&Warning, String)],
    egress: &[ZoneRule],
    ingress: &[ZoneRule],
) -> Vec<String> {
    warnings_about(warnings, egress.iter().chain(ingress).filter_map(rule_key))
}

/// Texts of the warnings about these rules, and of those about the configuration as a whole.
fn warnings_about<'a>(
    warnings: &[(&Warning, String)],
    rules: impl Iterator<Item = RuleKey<'a>>,
) -> Vec<String> {
    let rules: HashSet<RuleKey<'a>> = rules.collect();
    warnings
        .iter()
        .filter(|(w, _)| warning_key(w).is_none_or(|key| rules.contains(&key)))
        .map(|(_, text)| text.clone())
        .collect()
}

struct ObjectContext<'a> {
    tier: Tier,
    zone: Option<&'a str>,
    provenance: &'a PolicyProvenance,
    mode: Mode,
    /// The resolution's warnings with their text.
    warnings: &'a [(&'a Warning, String)],
    /// The address sets the rules may name.
    sets: &'a SetTable,
}

/// The sets these rules name, for an object holding them.
fn sets_named(sets: &SetTable, rules: &[&[ZoneRule]]) -> BTreeMap<String, AddressSetSpec> {
    let names: BTreeSet<&str> = rules
        .iter()
        .flat_map(|list| list.iter())
        .flat_map(ZoneRule::address_sets)
        .collect();
    names
        .into_iter()
        .filter_map(|name| {
            let (_, set) = sets.get(name)?;
            Some((name.to_string(), AddressSetSpec::clone(set)))
        })
        .collect()
}

fn make_object(
    cx: &ObjectContext<'_>,
    part: u32,
    count: u32,
    egress: Vec<ZoneRule>,
    ingress: Vec<ZoneRule>,
) -> ZonePolicy {
    let zone_text = cx.zone.unwrap_or(ANY_ZONE);
    let labels: BTreeMap<String, String> = [
        ("app.kubernetes.io/managed-by", "zonewall".to_string()),
        ("zonewall.io/tier", cx.tier.as_str().to_string()),
        ("zonewall.io/zone", slug(zone_text)),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect();
    let warnings = object_warnings(cx.warnings, &egress, &ingress);
    let address_sets = sets_named(cx.sets, &[&egress, &ingress]);
    let status = ZonePolicyStatus {
        observed_generation: None,
        egress_rules: u32::try_from(egress.len()).unwrap_or(u32::MAX),
        ingress_rules: u32::try_from(ingress.len()).unwrap_or(u32::MAX),
        warning_count: u32::try_from(warnings.len()).unwrap_or(u32::MAX),
        warnings,
    };
    ZonePolicy {
        metadata: ObjectMeta {
            name: Some(object_name(cx.tier, cx.zone, part)),
            labels: Some(labels),
            ..ObjectMeta::default()
        },
        spec: ZonePolicySpec {
            tier: cx.tier,
            order: part,
            mode: cx.mode,
            zone: zone_text.to_string(),
            part: Some(Part { index: part, count }),
            provenance: Some(cx.provenance.clone()),
            egress,
            ingress,
            address_sets,
        },
        status: Some(status),
    }
}

fn yaml(policy: &ZonePolicy) -> Result<String, TranslateError> {
    serde_yaml_ng::to_string(policy).map_err(|source| TranslateError::Yaml {
        name: policy.metadata.name.clone().unwrap_or_default(),
        source,
    })
}

/// Bytes a rule adds to an object: a bound of its YAML as an item of `spec.egress` or
/// `spec.ingress` (computed without writing YAML; see [`size`]).
fn rule_bytes(rule: &ZoneRule) -> Result<usize, TranslateError> {
    if let Ok(bytes) = size::yaml_item_bound(rule, 2) {
        return Ok(bytes);
    }
    let text = serde_yaml_ng::to_string(rule).map_err(|source| TranslateError::Yaml {
        name: rule
            .provenance
            .as_ref()
            .map_or_else(String::new, |p| p.rule.clone()),
        source,
    })?;
    Ok(text.len() + 4 * text.lines().count())
}

/// Bytes a set adds to an object's `spec.addressSets`: an upper bound of its YAML (the
/// name's line, the `prefixes:` line, and each prefix on its own line, quotes allowed for).
fn set_bytes(name: &str, set: &AddressSetSpec) -> usize {
    const INDENT: usize = 6;
    (INDENT + name.len() + 2)
        + (INDENT + "prefixes:\n".len())
        + set
            .prefixes
            .iter()
            .map(|prefix| INDENT + "- ''\n".len() + text_len(prefix))
            .sum::<usize>()
}

/// Bytes a prefix takes written out (counted, not written).
fn text_len(prefix: &Prefix) -> usize {
    struct Count(usize);
    impl std::fmt::Write for Count {
        fn write_str(&mut self, text: &str) -> std::fmt::Result {
            self.0 += text.len();
            Ok(())
        }
    }
    let mut count = Count(0);
    let _ = std::fmt::Write::write_fmt(&mut count, format_args!("{prefix}"));
    count.0
}

/// Whether an object's YAML fits the limit.
enum Fit {
    /// It fits: the object with its YAML (empty when documents are not kept).
    Fits(ZonePolicy, String),
    /// Too large: the object back.
    TooLarge(ZonePolicy),
}

/// Checks an object against the limit. Without documents, the size bounds decide when the
/// upper one is under the limit or the lower one over it; otherwise the object is serialized,
/// so both modes decide alike.
fn fitting(object: ZonePolicy, limit: usize, documents: bool) -> Result<Fit, TranslateError> {
    if !documents {
        if size::yaml_bound(&object).is_ok_and(|bound| bound <= limit) {
            return Ok(Fit::Fits(object, String::new()));
        }
        if let Ok(lower) = size::yaml_lower_bound(&object)
            && lower > limit
        {
            return Ok(Fit::TooLarge(object));
        }
    }
    let document = yaml(&object)?;
    if document.len() > limit {
        return Ok(Fit::TooLarge(object));
    }
    let document = if documents { document } else { String::new() };
    Ok(Fit::Fits(object, document))
}

/// One zone's objects with their YAML: a single one when it fits, else ordered parts, each
/// under the limit.
fn zone_objects(
    cx: &ObjectContext<'_>,
    egress: Vec<ZoneRule>,
    ingress: Vec<ZoneRule>,
    limit: usize,
    documents: bool,
) -> Result<Vec<(ZonePolicy, String)>, TranslateError> {
    // Every rule serializes to well over this many bytes (action, rule type, peer zones and
    // the three columns), so more rules than fit at this size cannot fit in one object and
    // the whole-object serialization is skipped.
    const MIN_RULE_BYTES: usize = 120;
    if (egress.len() + ingress.len()).saturating_mul(MIN_RULE_BYTES) <= limit {
        let whole = make_object(cx, 1, 1, egress, ingress);
        let whole = match fitting(whole, limit, documents)? {
            Fit::Fits(object, document) => return Ok(vec![(object, document)]),
            Fit::TooLarge(whole) => whole,
        };
        let ZonePolicySpec {
            egress, ingress, ..
        } = whole.spec;
        return split(cx, egress, ingress, limit, documents);
    }
    split(cx, egress, ingress, limit, documents)
}

/// Ordered parts, each under `limit`, with their YAML.
fn split(
    cx: &ObjectContext<'_>,
    egress: Vec<ZoneRule>,
    ingress: Vec<ZoneRule>,
    limit: usize,
    documents: bool,
) -> Result<Vec<(ZonePolicy, String)>, TranslateError> {
    let empty = make_object(cx, 1, 1, Vec::new(), Vec::new());
    // Room for rules: the limit minus the fixed part (configuration-wide warnings included),
    // with a margin for the estimate's error. Each rule brings its own warnings along.
    let budget = limit.saturating_sub(yaml(&empty)?.len()).saturating_mul(9) / 10;
    let mut parts: Vec<(Vec<ZoneRule>, Vec<ZoneRule>)> = vec![(Vec::new(), Vec::new())];
    // Bytes each rule's own warnings add to the object it lands in.
    let mut warning_bytes: HashMap<RuleKey<'_>, usize> = HashMap::default();
    for (warning, text) in cx.warnings {
        if let Some(key) = warning_key(warning) {
            *warning_bytes.entry(key).or_default() += text.len() + 8;
        }
    }
    let sets = cx.sets;
    let mut in_part: HashSet<&str> = HashSet::default();
    let mut used = 0;
    for (is_egress, rule) in egress
        .into_iter()
        .map(|r| (true, r))
        .chain(ingress.into_iter().map(|r| (false, r)))
    {
        let warnings = rule_key(&rule)
            .and_then(|key| warning_bytes.get(&key))
            .copied()
            .unwrap_or(0);
        // The sets it names, each charged to the first rule of a part that names it.
        let named: Vec<(&str, usize)> = rule
            .address_sets()
            .filter_map(|name| sets.get_key_value(name))
            .map(|(name, (_, set))| (name.as_str(), set_bytes(name, set)))
            .collect();
        let own = rule_bytes(&rule)? + warnings;
        let alone = own + named.iter().map(|(_, bytes)| bytes).sum::<usize>();
        if alone > budget {
            return Err(TranslateError::RuleTooLarge {
                zone: cx.zone.unwrap_or(ANY_ZONE).to_string(),
                rule: rule
                    .provenance
                    .as_ref()
                    .map_or_else(String::new, |p| p.rule.clone()),
                bytes: alone,
                limit,
            });
        }
        let current_empty = parts
            .last()
            .is_some_and(|(e, i)| e.is_empty() && i.is_empty());
        let mut bytes = own
            + named
                .iter()
                .filter(|(name, _)| !in_part.contains(name))
                .map(|(_, bytes)| bytes)
                .sum::<usize>();
        if used + bytes > budget && !current_empty {
            parts.push((Vec::new(), Vec::new()));
            used = 0;
            in_part.clear();
            bytes = alone;
        }
        used += bytes;
        in_part.extend(named.iter().map(|(name, _)| *name));
        if let Some((e, i)) = parts.last_mut() {
            if is_egress {
                e.push(rule);
            } else {
                i.push(rule);
            }
        }
    }
    let count = u32::try_from(parts.len()).unwrap_or(u32::MAX);
    let mut objects = Vec::with_capacity(parts.len());
    for ((e, i), part) in parts.into_iter().zip(1..) {
        let object = make_object(cx, part, count, e, i);
        match fitting(object, limit, documents)? {
            Fit::Fits(object, document) => objects.push((object, document)),
            Fit::TooLarge(object) => {
                let bytes = yaml(&object)?.len();
                return Err(TranslateError::RuleTooLarge {
                    zone: cx.zone.unwrap_or(ANY_ZONE).to_string(),
                    rule: "(part)".to_string(),
                    bytes,
                    limit,
                });
            }
        }
    }
    Ok(objects)
}

/// Every zone of the translation: those the configuration defines and those rules name.
fn zones(policy: &Policy) -> Result<BTreeSet<String>, TranslateError> {
    let mut zones = policy.zones.clone();
    for rule in &policy.rules {
        for set in [&rule.from, &rule.to] {
            if let ZoneSet::Only(named) = set {
                for zone in named {
                    if !valid_zone_name(zone) || zone == ANY_ZONE {
                        return Err(TranslateError::InvalidZone {
                            origin: policy.origin.clone(),
                            zone: zone.clone(),
                            rule: rule.name().to_string(),
                        });
                    }
                    zones.insert(zone.clone());
                }
            }
        }
    }
    Ok(zones)
}

/// Translates a resolved policy into the firewall tier. `resolved.warnings` go into the
/// status of the objects holding the rules they are about (and configuration-wide ones into
/// every object).
pub fn translate(
    resolved: &Resolved,
    options: &TranslateOptions,
) -> Result<Translation, TranslateError> {
    let Outcome { objects, .. } = translate_zones(resolved, options, None)?;
    let mut translation = Translation {
        policies: Vec::new(),
        documents: Vec::new(),
    };
    for object in objects {
        // Nothing else holds the objects of a translation without a memo.
        translation
            .policies
            .push(Arc::try_unwrap(object.policy).unwrap_or_else(|shared| (*shared).clone()));
        if options.documents {
            translation.documents.push(object.document);
        }
    }
    Ok(translation)
}

/// Everything but the rules that a zone's objects depend on, the commit aside.
#[derive(Clone, PartialEq, Eq)]
struct MemoContext {
    origin: String,
    target: String,
    mode: Mode,
    max_object_bytes: usize,
    documents: bool,
    address_sets_from: usize,
}

/// One zone's objects as the previous translation made them.
#[derive(Clone)]
struct ZoneMemo {
    /// Indices into [`TranslateMemo::rules`] of the rules governing the zone.
    egress: Vec<usize>,
    ingress: Vec<usize>,
    /// Texts of the warnings its objects carry.
    warnings: Vec<String>,
    objects: Vec<(Arc<ZonePolicy>, String)>,
}

/// Each zone's memo, by zone (`None`: the `any` object's zone).
type ZoneMemos = HashMap<Option<String>, ZoneMemo>;

/// One object of a translation through a [`TranslateMemo`].
pub struct Translated {
    pub policy: Arc<ZonePolicy>,
    /// Its YAML (empty without [`TranslateOptions::documents`]).
    pub document: String,
    /// The very object the previous translation through the same memo gave.
    pub kept: bool,
}

/// Equal, but maybe for the commit they name.
fn same_but_commit(a: &ZonePolicy, b: &ZonePolicy) -> bool {
    let ZonePolicySpec {
        tier,
        order,
        mode,
        zone,
        part,
        provenance,
        egress,
        ingress,
        address_sets,
    } = &a.spec;
    fn commitless(p: &Option<PolicyProvenance>) -> Option<(&str, &str, &str)> {
        p.as_ref().map(|p| {
            (
                p.firewall.as_str(),
                p.origin.as_str(),
                p.device_group.as_str(),
            )
        })
    }
    a.metadata == b.metadata
        && a.status == b.status
        && *tier == b.spec.tier
        && *order == b.spec.order
        && *mode == b.spec.mode
        && *zone == b.spec.zone
        && *part == b.spec.part
        && commitless(provenance) == commitless(&b.spec.provenance)
        && *egress == b.spec.egress
        && *ingress == b.spec.ingress
        && *address_sets == b.spec.address_sets
}

/// What translating one resolved policy leaves for the next (the sync controller translates
/// every commit, and a commit usually changes few rules). A zone whose governing rules, their
/// warnings and the settings are all equal to last time keeps the objects it had without
/// translating them; every other zone is translated again, as [`translate`] would, and keeps
/// those of its objects that came out equal. A kept object keeps the commit it names:
/// `provenance.commit` is the commit that last changed the object's content.
#[derive(Default)]
pub struct TranslateMemo {
    context: Option<MemoContext>,
    /// The previous translation's rules, for comparison.
    rules: Vec<Rule>,
    /// Their [`zone_rule`]s, for those that were converted, and the sets these name.
    conversions: Conversions,
    zones: ZoneMemos,
    /// What the last translation replaced, until [`TranslateMemo::free_retired`] (or the next
    /// translation).
    retired: Retired,
}

/// A translation, and what it leaves for the next.
struct Outcome {
    objects: Vec<Translated>,
    zones: ZoneMemos,
    conversions: Conversions,
}

impl TranslateMemo {
    /// Frees what the last translation replaced: for when nothing waits.
    pub fn free_retired(&mut self) {
        self.retired.free();
    }

    /// [`translate`] by zone, keeping the objects of zones nothing changed; `resolved` replaces
    /// the memo's rules.
    pub fn translate(
        &mut self,
        resolved: Resolved,
        options: &TranslateOptions,
    ) -> Result<Vec<Translated>, TranslateError> {
        self.retired.free();
        let outcome = translate_zones(&resolved, options, Some(&mut *self));
        let context = memo_context(&resolved.policy, options);
        let previous = std::mem::replace(&mut self.rules, resolved.policy.rules);
        self.retired.keep(previous);
        match outcome {
            Ok(outcome) => {
                self.context = Some(context);
                self.zones = outcome.zones;
                self.conversions = outcome.conversions;
                Ok(outcome.objects)
            }
            Err(error) => {
                self.context = None;
                self.zones.clear();
                self.conversions = Conversions::default();
                Err(error)
            }
        }
    }
}

fn memo_context(policy: &Policy, options: &TranslateOptions) -> MemoContext {
    MemoContext {
        origin: policy.origin.clone(),
        target: policy.target.clone(),
        mode: options.mode,
        max_object_bytes: options.max_object_bytes,
        documents: options.documents,
        address_sets_from: options.address_sets_from,
    }
}

/// Texts of the warnings an object holding these rules carries: those about the rules, and
/// those about the configuration as a whole.
fn zone_warnings(policy: &Policy, warnings: &[(&Warning, String)], rules: &[usize]) -> Vec<String> {
    let key = |index: usize| {
        let p = &policy.rules[index].provenance;
        (
            p.rule_name.as_str(),
            p.device_group.as_str(),
            rulebase(p.rulebase),
            Some(u32::try_from(p.position).unwrap_or(u32::MAX)),
        )
    };
    warnings_about(warnings, rules.iter().map(|&index| key(index)))
}

/// For each rule, the index of the equal rule of `previous` at the same place (name, device
/// group, rulebase), if there is one.
fn unchanged_rules(policy: &Policy, previous: &[Rule]) -> Vec<Option<usize>> {
    fn place(rule: &Rule) -> (&str, &str, model::Rulebase) {
        let p = &rule.provenance;
        (p.rule_name.as_str(), p.device_group.as_str(), p.rulebase)
    }
    let by_place: HashMap<_, usize> = previous
        .iter()
        .enumerate()
        .map(|(index, rule)| (place(rule), index))
        .collect();
    policy
        .rules
        .iter()
        .map(|rule| {
            by_place
                .get(&place(rule))
                .copied()
                .filter(|&index| previous[index] == *rule)
        })
        .collect()
}

/// Every zone's objects, taking over from `memo` the zones nothing changed, and the memo of
/// this translation.
fn translate_zones(
    resolved: &Resolved,
    options: &TranslateOptions,
    memo: Option<&mut TranslateMemo>,
) -> Result<Outcome, TranslateError> {
    let policy = &resolved.policy;
    // A translation without a memo has no use for the next one's.
    let remember = memo.is_some();
    let zones = zones(policy)?;
    let provenance = PolicyProvenance {
        firewall: "panos".to_string(),
        origin: policy.origin.clone(),
        device_group: policy.target.clone(),
        commit: options.commit.clone(),
    };
    let warnings: Vec<(&Warning, String)> = resolved
        .warnings
        .iter()
        .map(|warning| (warning, warning.to_string()))
        .collect();
    let memo = memo.filter(|memo| memo.context == Some(memo_context(policy, options)));
    let unchanged = memo
        .as_ref()
        .map(|memo| unchanged_rules(policy, &memo.rules));
    // The previous indices of these rules, if every one of them is unchanged.
    let previously = |indices: &[usize]| -> Option<Vec<usize>> {
        let unchanged = unchanged.as_ref()?;
        indices.iter().map(|&index| unchanged[index]).collect()
    };
    // Unchanged rules come with the conversion they already had, and the sets it names.
    let mut conversions = Conversions {
        rules: vec![None; policy.rules.len()],
        sets: SetTable::default(),
        sets_from: options.address_sets_from,
    };
    let memo = memo.map(|memo| {
        if let Some(unchanged) = &unchanged {
            for (index, previous) in unchanged.iter().enumerate() {
                if let Some(base) = previous.and_then(|p| memo.conversions.rules.get_mut(p)) {
                    conversions.rules[index] = base.take();
                }
            }
        }
        conversions.sets = std::mem::take(&mut memo.conversions.sets);
        &*memo
    });
    let mut out = Vec::new();
    let mut next_memo = HashMap::default();
    let targets = zones.iter().map(|z| Some(z.as_str())).chain([None]);
    for zone in targets {
        let egress = governing(policy, zone, true);
        let ingress = governing(policy, zone, false);
        let texts = if remember {
            let governing_rules: Vec<usize> = egress.iter().chain(&ingress).copied().collect();
            zone_warnings(policy, &warnings, &governing_rules)
        } else {
            Vec::new()
        };
        let key = zone.map(str::to_string);
        let kept = memo.and_then(|memo| memo.zones.get(&key)).filter(|before| {
            before.warnings == texts
                && previously(&egress).is_some_and(|e| e == before.egress)
                && previously(&ingress).is_some_and(|i| i == before.ingress)
        });
        let objects: Vec<Translated> = match kept {
            Some(before) => before
                .objects
                .iter()
                .map(|(policy, document)| Translated {
                    policy: Arc::clone(policy),
                    document: document.clone(),
                    kept: true,
                })
                .collect(),
            None => {
                let egress_rules = rules_for(policy, &mut conversions, &egress, zone, true);
                let ingress_rules = rules_for(policy, &mut conversions, &ingress, zone, false);
                let cx = ObjectContext {
                    tier: Tier::Firewall,
                    zone,
                    provenance: &provenance,
                    mode: options.mode,
                    warnings: &warnings,
                    sets: &conversions.sets,
                };
                let before = memo.and_then(|memo| memo.zones.get(&key));
                zone_objects(
                    &cx,
                    egress_rules,
                    ingress_rules,
                    options.max_object_bytes,
                    options.documents,
                )?
                .into_iter()
                .map(|(policy, document)| {
                    // A part the change did not reach is kept as it was, commit included.
                    let same = before.and_then(|before| {
                        before.objects.iter().find(|(earlier, _)| {
                            earlier.metadata.name == policy.metadata.name
                                && same_but_commit(earlier, &policy)
                        })
                    });
                    match same {
                        Some((earlier, document)) => Translated {
                            policy: Arc::clone(earlier),
                            document: document.clone(),
                            kept: true,
                        },
                        None => Translated {
                            policy: Arc::new(policy),
                            document,
                            kept: false,
                        },
                    }
                })
                .collect()
            }
        };
        if remember {
            next_memo.insert(
                key,
                ZoneMemo {
                    egress,
                    ingress,
                    warnings: texts,
                    objects: objects
                        .iter()
                        .map(|o| (Arc::clone(&o.policy), o.document.clone()))
                        .collect(),
                },
            );
        }
        out.extend(objects);
    }
    if remember {
        conversions.prune();
    }
    Ok(Outcome {
        objects: out,
        zones: next_memo,
        conversions,
    })
}

/// Multi-document YAML, one document per object, in the given order.
pub fn to_yaml(policies: &[ZonePolicy]) -> Result<String, TranslateError> {
    let mut out = String::new();
    for policy in policies {
        out.push_str("---\n");
        out.push_str(&yaml(policy)?);
    }
    Ok(out)
}

/// One object's file content (for `-o DIR`).
pub fn object_yaml(policy: &ZonePolicy) -> Result<String, TranslateError> {
    yaml(policy)
}

/// The Panorama test fixture's device group `dg-prod`, translated (for unit tests here and in
/// the sync controller).
#[cfg(test)]
pub(crate) fn fixture_translation(documents: bool) -> Translation {
    use crate::firewall::panos;
    let text = include_str!("../../tests/fixtures/panorama.xml");
    let config = panos::parse_config(text, "panorama.xml", panos::Limits::default())
        .expect("fixture parses");
    let options = panos::ResolveOptions {
        device_group: Some("dg-prod".into()),
        ..panos::ResolveOptions::default()
    };
    let resolved = panos::resolve(&config, &options).expect("fixture resolves");
    let options = TranslateOptions {
        documents,
        ..TranslateOptions::default()
    };
    translate(&resolved, &options).expect("fixture translates")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn resolved_fixture(text: &str) -> Resolved {
        use crate::firewall::panos;
        let config = panos::parse_config(text, "panorama.xml", panos::Limits::default())
            .expect("fixture variant parses");
        let options = panos::ResolveOptions {
            device_group: Some("dg-prod".into()),
            ..panos::ResolveOptions::default()
        };
        panos::resolve(&config, &options).expect("fixture variant resolves")
    }

    /// ZonePolicy has no `PartialEq` (the derive comes from kube); its JSON form stands in.
    fn json(policy: Option<&ZonePolicy>) -> serde_json::Value {
        serde_json::to_value(policy).expect("serializes")
    }

    /// Through a memo, every translation equals a fresh one, except that an object nothing
    /// changed is kept, the commit it names included; and only such objects are.
    #[test]
    fn a_memo_keeps_exactly_the_objects_a_change_leaves_alone() {
        let fixture = include_str!("../../tests/fixtures/panorama.xml");
        let commit = |id: &str| TranslateOptions {
            documents: false,
            commit: Some(id.to_string()),
            ..TranslateOptions::default()
        };
        // (what changed since the step before, text, commit)
        let steps = [
            ("only the commit", fixture.to_string(), "2"),
            (
                "one rule's logging (untrust to dmz)",
                fixture.replacen(
                    "<tag><member>web</member></tag>",
                    "<tag><member>web</member></tag><log-start>yes</log-start>",
                    1,
                ),
                "3",
            ),
            ("that logging back", fixture.to_string(), "4"),
            ("nothing", fixture.to_string(), "5"),
            (
                "an address object some rules use",
                fixture.replace("10.0.0.0/8", "10.0.0.0/9"),
                "6",
            ),
        ];
        let mut memo = TranslateMemo::default();
        let first = memo
            .translate(resolved_fixture(fixture), &commit("1"))
            .expect("fixture translates");
        assert!(first.iter().all(|object| !object.kept));
        let mut before: Vec<ZonePolicy> = first.iter().map(|o| (*o.policy).clone()).collect();
        for (change, text, id) in steps {
            let fresh = translate(&resolved_fixture(&text), &commit(id)).expect("translates");
            let translated = memo
                .translate(resolved_fixture(&text), &commit(id))
                .expect("translates");
            let objects: Vec<(&ZonePolicy, bool)> = translated
                .iter()
                .map(|object| (&*object.policy, object.kept))
                .collect();
            assert_eq!(objects.len(), fresh.policies.len(), "{change}");
            let commit_of =
                |p: &ZonePolicy| p.spec.provenance.as_ref().and_then(|p| p.commit.clone());
            let mut kept = 0;
            for ((object, is_kept), fresh) in objects.iter().zip(&fresh.policies) {
                let previous = before
                    .iter()
                    .find(|p| p.metadata.name == object.metadata.name);
                let mut expected = fresh.clone();
                if *is_kept {
                    kept += 1;
                    // Kept: the object as it was, from the commit that made it.
                    assert_eq!(json(Some(*object)), json(previous), "{change}: kept object");
                    expected
                        .spec
                        .provenance
                        .as_mut()
                        .expect("provenance")
                        .commit = commit_of(object);
                } else {
                    assert_eq!(commit_of(object).as_deref(), Some(id), "{change}");
                    // Translated again only when something but the commit changed.
                    let mut earlier = previous.cloned();
                    if let Some(earlier) = &mut earlier {
                        earlier.spec.provenance.as_mut().expect("provenance").commit =
                            Some(id.to_string());
                    }
                    assert_ne!(
                        json(earlier.as_ref()),
                        json(Some(*object)),
                        "{change}: needlessly new"
                    );
                }
                assert_eq!(
                    json(Some(*object)),
                    json(Some(&expected)),
                    "{change}: same as a fresh translation"
                );
            }
            if matches!(change, "only the commit" | "nothing") {
                assert_eq!(kept, objects.len(), "{change}");
            } else {
                // Each change touches some objects, never all of them.
                assert!(kept > 0 && kept < objects.len(), "{change}: kept {kept}");
            }
            before = objects.into_iter().map(|(p, _)| p.clone()).collect();
        }
    }

    /// The bounds that decide splits without YAML are never below the real YAML (so no
    /// object can exceed the limit through them) and stay close to it (so objects are not
    /// split much earlier than needed).
    #[test]
    fn size_bounds_hold_for_real_rules_and_objects() {
        let translation = fixture_translation(true);
        let mut rules = 0;
        for (policy, document) in translation.policies.iter().zip(&translation.documents) {
            let bound = size::yaml_bound(policy).expect("modelled");
            assert!(bound >= document.len(), "{:?}", policy.metadata.name);
            let lower = size::yaml_lower_bound(policy).expect("modelled");
            assert!(lower <= document.len(), "{:?}", policy.metadata.name);
            assert!(
                bound <= document.len() + document.len() / 10 + 64,
                "{bound} vs {}",
                document.len()
            );
            for rule in policy.spec.egress.iter().chain(&policy.spec.ingress) {
                rules += 1;
                let wrapped: BTreeMap<&str, BTreeMap<&str, Vec<&ZoneRule>>> =
                    [("spec", [("egress", vec![rule])].into_iter().collect())]
                        .into_iter()
                        .collect();
                let real = serde_yaml_ng::to_string(&wrapped).expect("yaml").len()
                    - "spec:\n  egress:\n".len();
                let bound = rule_bytes(rule).expect("bound");
                assert!(bound >= real, "{rule:?}: bound {bound} < real {real}");
                assert!(
                    bound <= real + real / 8 + 16,
                    "{rule:?}: bound {bound}, real {real}"
                );
            }
        }
        assert!(rules > 10, "the fixture has rules");
    }
}
