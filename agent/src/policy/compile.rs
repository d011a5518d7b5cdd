//! ZonePolicy -> matchers the evaluator runs: every string parsed once, every problem the CRD
//! schema cannot catch reported with the object and rule it is in.
//!
//! [`ZonePolicy::validate`] is this compilation with the result thrown away, so what the
//! evaluator accepts and what validation accepts cannot drift apart.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::fmt;
use std::net::IpAddr;
use std::sync::Arc;

use ipnet::IpNet;

use super::resource::{
    ANY_ZONE, AddressMatch, Fidelity, Mode, PortRange, Prefix, Protocol, Reset, RuleAction,
    RuleProvenance, RuleType, ServiceMatch, Tier, ZonePolicy, ZoneRule,
};
use crate::model::{self, AddressSet, DynamicMatch, Fqdn, ServiceSet, TagExpr, Wildcard};

/// One problem in one ZonePolicy.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("ZonePolicy '{object}'{}: {problem}", location.as_deref().map(|l| format!(", {l}")).unwrap_or_default())]
pub struct ValidationError {
    pub object: String,
    /// `egress rule 3 ('allow-web')`, `spec.zone`, ...
    pub location: Option<String>,
    pub problem: String,
}

/// What the evaluator holds of one object.
#[derive(Clone, Debug)]
pub struct CompiledPolicy {
    pub name: String,
    pub tier: Tier,
    pub order: u32,
    pub mode: Mode,
    /// `None`: governs every zone without its own policy (`zone: any`).
    pub zone: Option<String>,
    pub part: Option<(u32, u32)>,
    pub egress: Vec<CompiledRule>,
    pub ingress: Vec<CompiledRule>,
}

#[derive(Clone, Debug)]
pub struct CompiledRule {
    /// 1-based position in its list.
    pub index: usize,
    pub action: RuleAction,
    pub reset: Option<Reset>,
    pub rule_type: RuleType,
    /// `None`: any peer zone.
    pub peers: Option<BTreeSet<String>>,
    /// Shared between the rules whose column is written the same way (see [`AddressCache`]).
    pub source: Arc<AddressSet>,
    pub negate_source: bool,
    pub destination: Arc<AddressSet>,
    pub negate_destination: bool,
    pub service: ServiceSet,
    pub log_start: bool,
    pub log_end: bool,
    /// False for disabled and fail-closed rules: they never match.
    pub active: bool,
    pub provenance: Option<RuleProvenance>,
}

impl CompiledRule {
    /// The firewall rule name, or `egress[3]`-style when the rule has no provenance.
    pub fn label(&self, direction: &str) -> String {
        match &self.provenance {
            Some(p) => p.rule.clone(),
            None => format!("{direction}[{}]", self.index),
        }
    }
}

impl fmt::Display for CompiledPolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.name)
    }
}

/// PAN-OS zone names: 1-31 letters, digits, `-`, `_`, `.` and spaces.
pub fn valid_zone_name(zone: &str) -> bool {
    !zone.trim().is_empty()
        && zone.chars().count() <= 31
        && zone
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | ' '))
}

struct Problems<'a> {
    object: &'a str,
    list: Vec<ValidationError>,
}

impl Problems<'_> {
    fn push(&mut self, location: Option<String>, problem: String) {
        self.list.push(ValidationError {
            object: self.object.to_string(),
            location,
            problem,
        });
    }
}

fn parse_ip(text: &str) -> Option<IpAddr> {
    text.parse().ok()
}

/// Address columns and named address sets already parsed. A large policy names the same
/// address groups in many rules and many objects (thousands of prefixes, hundreds of
/// times); each distinct set and column is parsed and normalized once and shared, which is
/// where most of the compile time and memory of a large policy went.
#[derive(Default)]
pub struct AddressCache<'a> {
    /// Named sets by content, whatever their name: objects carrying the same group share it.
    sets: HashMap<&'a [Prefix], Arc<[IpNet]>, foldhash::fast::RandomState>,
    /// Columns by their text and the parsed sets they name.
    parsed: HashMap<(&'a AddressMatch, Vec<Shared>), Arc<AddressSet>, foldhash::fast::RandomState>,
    /// What was parsed, by its parsed content.
    pool: AddressPool,
}

/// Parsed address sets and columns by content, which outlive the objects they were read
/// from: objects compiled apart (each policy file dropped once compiled) still share them.
#[derive(Default)]
pub struct AddressPool {
    sets: HashSet<Arc<[IpNet]>, foldhash::fast::RandomState>,
    columns: HashSet<Arc<AddressSet>, foldhash::fast::RandomState>,
}

impl AddressPool {
    /// Drops what nothing else holds any more (the columns of compiled objects that are gone,
    /// and parsed sets, which columns copy): for a pool kept as long as the agent runs.
    pub fn prune(&mut self) {
        self.sets.retain(|set| Arc::strong_count(set) > 1);
        self.columns.retain(|column| Arc::strong_count(column) > 1);
    }
}

/// The value of `pool` equal to `value`, which is added first when there is none.
fn intern<T, V>(pool: &mut HashSet<Arc<T>, foldhash::fast::RandomState>, value: V) -> Arc<T>
where
    T: ?Sized + Eq + std::hash::Hash,
    V: std::borrow::Borrow<T> + Into<Arc<T>>,
{
    if let Some(known) = pool.get(value.borrow()) {
        return Arc::clone(known);
    }
    let value: Arc<T> = value.into();
    pool.insert(Arc::clone(&value));
    value
}

/// A parsed named set, compared by identity: equal content is one allocation in
/// [`AddressCache::sets`], and holding it keeps its address from being reused.
#[derive(Clone)]
struct Shared(Arc<[IpNet]>);

impl PartialEq for Shared {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.0, &other.0)
    }
}

impl Eq for Shared {}

impl std::hash::Hash for Shared {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        Arc::as_ptr(&self.0).cast::<IpNet>().hash(state);
    }
}

/// An object's named address sets, parsed, by name.
type NamedSets<'a> = HashMap<&'a str, Arc<[IpNet]>>;

/// Address set names: what a Kubernetes name allows (lowercase letters, digits, `-` and
/// `.`, starting and ending with a letter or digit), at most 63 characters.
pub fn valid_set_name(name: &str) -> bool {
    let bytes = name.as_bytes();
    let edge = |b: Option<&u8>| b.is_some_and(|b| b.is_ascii_lowercase() || b.is_ascii_digit());
    bytes.len() <= 63
        && edge(bytes.first())
        && edge(bytes.last())
        && bytes
            .iter()
            .all(|&b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.')
}

impl<'a> AddressCache<'a> {
    /// A cache that takes over what `pool` holds.
    pub fn with_pool(pool: AddressPool) -> AddressCache<'a> {
        AddressCache {
            pool,
            ..AddressCache::default()
        }
    }

    /// What was parsed, for the next cache.
    pub fn into_pool(self) -> AddressPool {
        self.pool
    }

    /// The parsed set; problems are reported for every object that carries it (a set with
    /// problems is never cached).
    fn set(
        &mut self,
        prefixes: &'a [Prefix],
        location: &str,
        problems: &mut Problems<'_>,
    ) -> Arc<[IpNet]> {
        if let Some(parsed) = self.sets.get(prefixes) {
            return Arc::clone(parsed);
        }
        let before = problems.list.len();
        let mut parsed = Vec::with_capacity(prefixes.len());
        parse_prefixes("address set", prefixes, location, problems, &mut parsed);
        if problems.list.len() != before {
            return parsed.into();
        }
        let parsed = intern(&mut self.pool.sets, parsed);
        self.sets.insert(prefixes, Arc::clone(&parsed));
        parsed
    }

    /// The parsed column; problems are reported for every occurrence (a column with problems
    /// is never cached).
    fn get(
        &mut self,
        column: &str,
        set: &'a AddressMatch,
        named: &NamedSets<'_>,
        location: &str,
        problems: &mut Problems<'_>,
    ) -> Arc<AddressSet> {
        let before = problems.list.len();
        let mut sets = Vec::with_capacity(set.sets.len());
        for name in &set.sets {
            match named.get(name.as_str()) {
                Some(parsed) => sets.push(Shared(Arc::clone(parsed))),
                None => problems.push(
                    Some(location.to_string()),
                    format!(
                        "{column} names address set '{name}', which spec.addressSets does not define; define it there or remove the name"
                    ),
                ),
            }
        }
        let key = (set, sets);
        if let Some(parsed) = self.parsed.get(&key) {
            return Arc::clone(parsed);
        }
        let parsed = compile_addresses(column, set, &key.1, location, problems);
        if problems.list.len() != before {
            return Arc::new(parsed);
        }
        let parsed = intern(&mut self.pool.columns, parsed);
        self.parsed.insert(key, Arc::clone(&parsed));
        parsed
    }
}

/// Parses `prefixes` into `out`, reporting each one that is not a CIDR prefix with its host
/// bits cleared.
fn parse_prefixes(
    what: &str,
    prefixes: &[Prefix],
    location: &str,
    problems: &mut Problems<'_>,
    out: &mut Vec<IpNet>,
) {
    for prefix in prefixes {
        let prefix = match prefix {
            Prefix::Canonical(net) => {
                out.push(*net);
                continue;
            }
            Prefix::Written(text) => text,
        };
        match prefix.parse::<IpNet>() {
            Ok(net) if net.trunc() == net => out.push(net),
            Ok(net) => problems.push(
                Some(location.to_string()),
                format!(
                    "{what} prefix '{prefix}' has host bits set; write {} (or a /{} host prefix)",
                    net.trunc(),
                    net.max_prefix_len()
                ),
            ),
            Err(_) => problems.push(
                Some(location.to_string()),
                format!(
                    "{what} prefix '{prefix}' is not a CIDR prefix such as 10.0.0.0/8 or fd00::/64"
                ),
            ),
        }
    }
}

fn compile_addresses(
    column: &str,
    set: &AddressMatch,
    named: &[Shared],
    location: &str,
    problems: &mut Problems<'_>,
) -> AddressSet {
    let mut out = AddressSet {
        any: set.any,
        ..AddressSet::default()
    };
    let at = || Some(location.to_string());
    parse_prefixes(column, &set.prefixes, location, problems, &mut out.prefixes);
    for shared in named {
        out.prefixes.extend_from_slice(&shared.0);
    }
    for wildcard in &set.wildcards {
        let parsed = parse_ip(&wildcard.address)
            .zip(parse_ip(&wildcard.mask))
            .and_then(|(address, mask)| Wildcard::classify(address, mask));
        match parsed {
            Some(model::WildcardShape::Wildcard(w)) => out.wildcards.push(w),
            Some(model::WildcardShape::Prefix(net)) => out.prefixes.push(net),
            None => problems.push(
                at(),
                format!(
                    "{column} wildcard {}/{} is not an address and mask of the same IP family",
                    wildcard.address, wildcard.mask
                ),
            ),
        }
    }
    for fqdn in &set.fqdns {
        let mut resolved = Vec::new();
        for address in &fqdn.addresses {
            match parse_ip(address) {
                Some(ip) => resolved.push(ip),
                None => problems.push(
                    at(),
                    format!(
                        "{column} fqdn '{}' has address '{address}', which is not an IP address",
                        fqdn.name
                    ),
                ),
            }
        }
        out.fqdns.push(Fqdn {
            name: fqdn.name.clone(),
            resolved,
        });
    }
    for selector in &set.selectors {
        match TagExpr::parse(&selector.filter) {
            Ok(filter) => out.dynamic.push(DynamicMatch {
                group: selector.group.clone(),
                filter,
            }),
            Err(e) => problems.push(
                at(),
                format!("{column} selector of group '{}': {e}", selector.group),
            ),
        }
    }
    out.normalize();
    out
}

fn port_ranges(
    ranges: &[PortRange],
    what: &str,
    location: &str,
    problems: &mut Problems<'_>,
) -> Vec<model::PortRange> {
    let mut out = Vec::new();
    for range in ranges {
        let last = range.end_port.unwrap_or(range.port);
        if last < range.port {
            problems.push(
                Some(location.to_string()),
                format!("{what} range {}-{last} runs backwards", range.port),
            );
            continue;
        }
        out.push(model::PortRange {
            first: range.port,
            last,
        });
    }
    model::service::merge_ranges(out)
}

fn compile_services(set: &ServiceMatch, location: &str, problems: &mut Problems<'_>) -> ServiceSet {
    let mut out = ServiceSet {
        any: set.any,
        entries: Vec::new(),
    };
    for entry in &set.entries {
        if entry.ports.is_empty() {
            problems.push(
                Some(location.to_string()),
                "a service entry lists no destination ports".to_string(),
            );
        }
        out.entries.push(model::ServiceEntry {
            protocol: match entry.protocol {
                Protocol::Tcp => model::Protocol::Tcp,
                Protocol::Udp => model::Protocol::Udp,
                Protocol::Sctp => model::Protocol::Sctp,
            },
            destination_ports: port_ranges(&entry.ports, "port", location, problems),
            source_ports: entry
                .source_ports
                .as_ref()
                .map(|ranges| port_ranges(ranges, "source port", location, problems)),
        });
    }
    out
}

fn compile_rule<'a>(
    rule: &'a ZoneRule,
    direction: &str,
    index: usize,
    problems: &mut Problems<'_>,
    addresses: &mut AddressCache<'a>,
    named: &NamedSets<'_>,
) -> CompiledRule {
    let location = match &rule.provenance {
        Some(p) => format!("{direction} rule {index} ('{}')", p.rule),
        None => format!("{direction} rule {index}"),
    };
    let at = || Some(location.clone());
    match (rule.action, rule.reset) {
        (RuleAction::Reject, None) => problems.push(
            at(),
            "action Reject needs reset: Client, Server or Both".to_string(),
        ),
        (action, Some(_)) if action != RuleAction::Reject => problems.push(
            at(),
            format!("reset is only meaningful with action Reject, not {action:?}"),
        ),
        _ => {}
    }
    let peers = if rule.peer_zones.iter().any(|z| z == ANY_ZONE) {
        if rule.peer_zones.len() > 1 {
            problems.push(
                at(),
                "peerZones lists 'any' together with other zones; use [any] alone".to_string(),
            );
        }
        None
    } else {
        if rule.peer_zones.is_empty() {
            problems.push(
                at(),
                "peerZones is empty; list zones, or [any] for every zone".to_string(),
            );
        }
        for zone in &rule.peer_zones {
            if !valid_zone_name(zone) {
                problems.push(
                    at(),
                    format!("peer zone {zone:?} is not a zone name (1-31 letters, digits, '-', '_', '.', spaces)"),
                );
            }
        }
        Some(rule.peer_zones.iter().cloned().collect())
    };
    if rule.fidelity == Fidelity::FailClosed && rule.action != RuleAction::Allow {
        problems.push(
            at(),
            format!(
                "fidelity FailClosed is only for Allow rules; a {:?} that stops matching would let traffic through",
                rule.action
            ),
        );
    }
    CompiledRule {
        index,
        action: rule.action,
        reset: rule.reset,
        rule_type: rule.rule_type,
        peers,
        source: addresses.get("source", &rule.source, named, &location, problems),
        negate_source: rule.source.negate,
        destination: addresses.get("destination", &rule.destination, named, &location, problems),
        negate_destination: rule.destination.negate,
        service: compile_services(&rule.service, &location, problems),
        log_start: rule.log.start,
        log_end: rule.log.end,
        active: !rule.disabled && rule.fidelity != Fidelity::FailClosed,
        provenance: rule.provenance.clone(),
    }
}

/// Parses and checks one object.
pub fn compile(policy: &ZonePolicy) -> Result<CompiledPolicy, Vec<ValidationError>> {
    compile_with(policy, &mut AddressCache::default())
}

/// [`compile`], sharing parsed address columns with the other objects compiled through
/// `addresses`.
pub fn compile_with<'a>(
    policy: &'a ZonePolicy,
    addresses: &mut AddressCache<'a>,
) -> Result<CompiledPolicy, Vec<ValidationError>> {
    let name = policy.metadata.name.clone().unwrap_or_default();
    let mut problems = Problems {
        object: if name.is_empty() { "(unnamed)" } else { &name },
        list: Vec::new(),
    };
    let spec = &policy.spec;
    if name.is_empty() {
        problems.push(None, "metadata.name is missing".to_string());
    }
    let zone = if spec.zone == ANY_ZONE {
        None
    } else {
        if !valid_zone_name(&spec.zone) {
            problems.push(
                Some("spec.zone".into()),
                format!(
                    "{:?} is not a zone name (1-31 letters, digits, '-', '_', '.', spaces), nor 'any'",
                    spec.zone
                ),
            );
        }
        Some(spec.zone.clone())
    };
    if spec.order == 0 {
        problems.push(Some("spec.order".into()), "order starts at 1".to_string());
    }
    let part = spec.part.map(|p| (p.index, p.count));
    if let Some((index, count)) = part
        && (index == 0 || index > count)
    {
        problems.push(
            Some("spec.part".into()),
            format!("part {index} of {count} is impossible; parts count from 1 to count"),
        );
    }
    let mut named = NamedSets::with_capacity(spec.address_sets.len());
    for (name, set) in &spec.address_sets {
        let location = format!("spec.addressSets[{name}]");
        if !valid_set_name(name) {
            problems.push(
                Some(location.clone()),
                "an address set name is 1-63 lowercase letters, digits, '-' and '.', starting and ending with a letter or digit".to_string(),
            );
        }
        let parsed = addresses.set(&set.prefixes, &location, &mut problems);
        named.insert(name.as_str(), parsed);
    }
    let egress = spec
        .egress
        .iter()
        .enumerate()
        .map(|(i, r)| compile_rule(r, "egress", i + 1, &mut problems, addresses, &named))
        .collect();
    let ingress = spec
        .ingress
        .iter()
        .enumerate()
        .map(|(i, r)| compile_rule(r, "ingress", i + 1, &mut problems, addresses, &named))
        .collect();
    if !problems.list.is_empty() {
        return Err(problems.list);
    }
    Ok(CompiledPolicy {
        name,
        tier: spec.tier,
        order: spec.order,
        mode: spec.mode,
        zone,
        part,
        egress,
        ingress,
    })
}

impl ZonePolicy {
    /// Everything the CRD schema cannot check: CIDR syntax and host bits, wildcard families,
    /// tag filter syntax, port order, `reset` with `Reject` only, `any` alone in peer zones.
    /// Checks across objects (order overlaps, missing parts) are in
    /// [`super::PolicySet::new`].
    pub fn validate(&self) -> Result<(), Vec<ValidationError>> {
        compile(self).map(|_| ())
    }
}
