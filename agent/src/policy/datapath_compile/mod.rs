//! ZonePolicies + endpoints -> the entries of the kernel's identity and policy maps
//! (DESIGN.md section 6). Pure: no I/O, no aya calls; [`emulate`] replays the kernel lookup
//! over the produced entries so tests can hold it against the evaluator.
//!
//! Lookup precedence (the eBPF program repeats this list):
//! 1. Identities: the source and the destination address are looked up in the IPv4 or the
//!    IPv6 identity table (longest prefix; the IPv4 table is held split at /16, see
//!    [`v4_split`]). Every address has an entry: workloads their /32 or /128,
//!    address-object prefixes theirs, and the /0 roots give everything else the external
//!    zone's identity.
//! 2. Subject and peer: at egress the subject is the source and the peer the destination; at
//!    ingress the other way round. The subject's zone governs (its egress or ingress rules).
//! 3. Policy key: (direction, subject identity, peer identity, protocol, destination port),
//!    with `prefix_len = POLICY_PREFIX_FULL`. A packet without a destination port (ICMP,
//!    ICMPv6, other protocols without ports, and every non-first fragment) is looked up with
//!    protocol `PROTOCOL_NO_PORT` and port 0: port rules never match it.
//! 4. The longest matching entry of `ZW_POLICY` decides, most specific first:
//!    a. port prefix of the protocol (80 + 1..16 bits),
//!    b. the protocol with any port (80 bits),
//!    c. the (subject, peer) pair with any protocol (72 bits),
//!    d. the subject with any peer (40 bits).
//!    Every subject identity has a (d) entry in both directions, so a lookup never misses; a
//!    miss means a broken table, and the program fails closed.
//! 5. The value is final: first match, tiers, `Pass` and `Audit` are resolved here, at
//!    compile time. `action` is what happens; `audit_*` and `POLICY_FLAG_WOULD_DENY` only
//!    report what an `Audit` policy would have done.
//! 6. A flow passes only when the egress verdict (source's zone) and the ingress verdict
//!    (destination's zone) both allow, as [`PolicySet::evaluate_flow`] describes.
//!
//! How the compiler gets there:
//! - Identity = (zone, membership class): for each zone, the address columns of every rule
//!   that can be evaluated with an address of that zone as subject or as peer are the zone's
//!   relevant predicates; two addresses of a zone share an identity exactly when every
//!   relevant predicate (prefixes, wildcards, resolved FQDNs, label selectors, `any`) gives
//!   the same answer. Negation is applied to the answer, so it does not split classes.
//!   Identities are numbered from 1 in the order (zone name, class), so the same input gives
//!   the same numbers; [`compile_after`] keeps the numbers of the live tables for the classes
//!   they share, so a change rewrites only what it changes.
//! - Reuse between compiles ([`compile_after`]): the external prefix tree when its predicates
//!   are equal, and the policy entries when the compiled policies are the same objects and
//!   the identities the same (number, zone, class). Both are pure functions of those inputs.
//! - Address entries: the prefixes of the external zone's relevant predicates (FQDN answers
//!   as host prefixes, non-contiguous wildcards expanded exactly) plus the two /0 roots form
//!   a prefix tree; the class of a tree node is the union of what its ancestors and itself
//!   are members of, which is exactly the class of every address whose longest match it is.
//!   A node whose identity equals its nearest kept ancestor's is left out. Workload addresses
//!   are /32 and /128 entries computed from the address itself and the workload's labels.
//! - Policy entries: for each (direction, subject, peer) the rules whose zones and address
//!   columns hold are fixed; the verdict then depends only on (protocol, port). The port
//!   boundaries of those rules cut each protocol into intervals with one verdict each, found
//!   by running the evaluator's own tier walk ([`PolicySet::walk`]) on one port per interval.
//!   The most common verdict of a protocol becomes its 80-bit entry, the other intervals are
//!   split into aligned port prefixes. Entries equal to the entry they would fall back to are
//!   left out.
//! - Source ports are not part of the key. A rule whose service restricts source ports is
//!   represented conservatively and reported in [`Compiled::approximations`]: a deny (Deny,
//!   Drop, Reject) blocks every source port; an Allow never matches (the flow falls through to
//!   later rules, which can only allow less); a `Pass` in an `Enforce` policy cannot be
//!   represented either way without risk of widening, and is an error.

pub mod emulate;
#[cfg(test)]
mod tests;
pub mod v4_split;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::IpAddr;
use std::rc::Rc;
use std::sync::Arc;

use ipnet::IpNet;
use zonewall_common as abi;

use super::compile::{CompiledPolicy, CompiledRule};
use super::eval::{Decider, Decision, Direction, Outcome, PolicySet};
use super::resource::{Mode, RuleAction, RuleProvenance, RuleType, Tier};
use crate::inventory::Endpoint;
use crate::model::{AddressSet, Wildcard};

/// Map capacities the compiled tables must fit in. Exceeding one is an error, never a
/// truncated table.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    pub max_identities: usize,
    /// IPv4 entries longer than /16 (the others are folded into a fixed array).
    pub max_identity_entries_v4: usize,
    pub max_identity_entries_v6: usize,
    pub max_policy_entries: usize,
    pub max_rules: usize,
    /// Prefixes one non-contiguous wildcard may expand to.
    pub max_wildcard_prefixes: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_identities: 65_536,
            max_identity_entries_v4: 262_144,
            max_identity_entries_v6: 262_144,
            max_policy_entries: 1_048_576,
            max_rules: 65_536,
            max_wildcard_prefixes: 4_096,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum CompileError {
    #[error(
        "the compiled policy needs {needed} {what}, more than the configured capacity of {capacity}; raise the capacity or simplify the policy (zonewall never enforces a truncated table)"
    )]
    Capacity {
        what: &'static str,
        needed: usize,
        capacity: usize,
    },
    #[error("{rule}: {problem}")]
    Unrepresentable { rule: String, problem: String },
    #[error("endpoint '{endpoint}': {problem}")]
    Endpoint { endpoint: String, problem: String },
}

/// A key of an LPM trie: a prefix length and the bytes it applies to.
///
/// Every table of entries (the compiler's, the datapath's record of a map) is sorted by
/// [`LpmKey::order`] and holds no key twice, so two tables compare in one pass.
pub trait LpmKey: Copy + Eq {
    type Data: Copy + Ord + AsRef<[u8]>;
    fn prefix_len(&self) -> u32;
    fn data(&self) -> Self::Data;
    fn from_parts(prefix_len: u32, data: Self::Data) -> Self;
    fn order(&self) -> (Self::Data, u32) {
        (self.data(), self.prefix_len())
    }
}

/// Identity keys: the data is the address.
macro_rules! identity_lpm_key {
    ($key:ty, $bytes:literal) => {
        impl LpmKey for $key {
            type Data = [u8; $bytes];
            fn prefix_len(&self) -> u32 {
                self.prefix_len
            }
            fn data(&self) -> [u8; $bytes] {
                self.addr_be
            }
            fn from_parts(prefix_len: u32, addr_be: [u8; $bytes]) -> Self {
                Self {
                    prefix_len,
                    addr_be,
                }
            }
        }
    };
}
identity_lpm_key!(abi::IdentityKeyV4, 4);
identity_lpm_key!(abi::IdentityKeyV6, 16);

/// Data: direction, subject identity, peer identity, protocol, port.
impl LpmKey for abi::PolicyKey {
    type Data = [u8; 12];
    fn prefix_len(&self) -> u32 {
        self.prefix_len
    }
    fn data(&self) -> [u8; 12] {
        let (s, p) = (self.subject_identity_be, self.peer_identity_be);
        [
            self.direction,
            s[0],
            s[1],
            s[2],
            s[3],
            p[0],
            p[1],
            p[2],
            p[3],
            self.protocol,
            self.port_be[0],
            self.port_be[1],
        ]
    }
    fn from_parts(prefix_len: u32, d: [u8; 12]) -> Self {
        abi::PolicyKey {
            prefix_len,
            direction: d[0],
            subject_identity_be: [d[1], d[2], d[3], d[4]],
            peer_identity_be: [d[5], d[6], d[7], d[8]],
            protocol: d[9],
            port_be: [d[10], d[11]],
        }
    }
}

/// Whether `table` is in [`LpmKey::order`] without a repeated key.
pub fn in_key_order<K: LpmKey, V>(table: &[(K, V)]) -> bool {
    table.is_sorted_by(|a, b| a.0.order() < b.0.order())
}

/// The entries of one LPM trie in [`LpmKey::order`], shared between a compile, the next
/// compile that needs the same entries, and the datapath's record of what a map holds.
pub type LpmEntries<K, V> = Arc<Vec<(K, V)>>;

/// What the compiler produced: map entries in key order plus the tables userspace keeps.
#[derive(Clone, Debug)]
pub struct Compiled {
    /// Zone index (as in [`abi::IdentityValue::zone`]) -> zone name, sorted.
    pub zones: Vec<String>,
    /// By id. Ids are dense from 1 unless numbers were kept from a previous compile
    /// ([`compile_after`]).
    pub identities: Vec<Identity>,
    pub identity_v4: LpmEntries<abi::IdentityKeyV4, abi::IdentityValue>,
    /// `identity_v4` as the kernel's maps hold it.
    pub identity_v4_split: v4_split::V4Split,
    pub identity_v6: LpmEntries<abi::IdentityKeyV6, abi::IdentityValue>,
    /// Shared with the next compile when it needs the same entries.
    pub policy: LpmEntries<abi::PolicyKey, abi::PolicyValue>,
    /// Rule id -> what it is; includes the fixed `RULE_ID_*` implicit decisions. Shared
    /// with the next compile when its policies are the same objects.
    pub rules: Arc<BTreeMap<u32, RuleEntry>>,
    /// Rules represented conservatively instead of exactly, with what was done.
    pub approximations: Vec<String>,
    /// The external zone's prefix tree, for the next compile to reuse.
    external: Arc<ExternalTree>,
    /// The workload zones' predicates indexed by prefix, for the next compile to reuse.
    workload_index: Arc<WorkloadIndex>,
    /// What `policy` was computed from, for the next compile to reuse it.
    policy_basis: PolicyBasis,
}

/// The inputs of the policy entries: the compiled policies as numbered (the same objects;
/// holding them keeps their addresses from being reused by others) and every identity's
/// number, zone and class.
#[derive(Clone)]
struct PolicyBasis {
    numbering: Arc<Numbering>,
    identities: Vec<(u32, String, Vec<u32>)>,
    /// What the entries of one zone's subjects in one direction depend on besides the
    /// identities (see [`ZoneBasis`]).
    zones: ZoneBases,
}

type ZoneBases = HashMap<(Direction, String), ZoneBasis>;
type PolicyEntry = (abi::PolicyKey, abi::PolicyValue);

/// The entries of a subject in one direction are a function of the identities and of its
/// zone's governing policies in that direction: the same objects (their addresses; the basis
/// holds them, so no other object can take one over) with the same rule ids. When only other
/// zones' policies change, the subject's entries are the ones compiled before.
#[derive(Clone, Debug, PartialEq, Eq)]
struct ZoneBasis {
    policies: Vec<usize>,
    rule_ids: Vec<u32>,
}

impl PolicyBasis {
    fn same(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.numbering, &other.numbering) && self.identities == other.identities
    }
}

impl std::fmt::Debug for PolicyBasis {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "PolicyBasis({} policies, {} identities)",
            self.numbering.policies.len(),
            self.identities.len()
        )
    }
}

/// Equal when the tables are: what is kept only for the next compile is left out.
impl PartialEq for Compiled {
    fn eq(&self, other: &Self) -> bool {
        self.zones == other.zones
            && self.identities == other.identities
            && self.identity_v4 == other.identity_v4
            && self.identity_v6 == other.identity_v6
            && self.policy == other.policy
            && self.rules == other.rules
            && self.approximations == other.approximations
    }
}

impl Eq for Compiled {}

/// The classes of the external zone's prefix tree, and what they were computed from.
#[derive(Clone, Debug)]
struct ExternalTree {
    /// Pre-order (see [`Compiler::external_tree`]).
    nodes: Vec<(IpNet, Vec<u32>)>,
    /// The relevant predicates (index, set).
    predicates: Vec<(u32, Arc<AddressSet>)>,
    wildcard_limit: usize,
}

/// Whether two lists of predicates (index, set) are equal sets at the same indexes (the same
/// shared set answers at once; comparing a hundred thousand prefixes takes well under a
/// millisecond, building a tree or index from them tens of them).
fn same_predicates(a: &[(u32, Arc<AddressSet>)], b: &[(u32, Arc<AddressSet>)]) -> bool {
    a.len() == b.len()
        && a.iter()
            .zip(b)
            .all(|((i, a), (j, b))| i == j && (Arc::ptr_eq(a, b) || a == b))
}

impl ExternalTree {
    /// Whether the tree was built from `predicates`.
    fn made_of(&self, predicates: &[(u32, Arc<AddressSet>)], wildcard_limit: usize) -> bool {
        self.wildcard_limit == wildcard_limit && same_predicates(&self.predicates, predicates)
    }
}

/// Which predicates hold a workload address, found by lookups rather than by testing every
/// prefix of every predicate for every address (with a large firewall's address groups,
/// seconds per reconcile): a hash lookup per prefix length present (resolved FQDN addresses
/// are host prefixes) and per wildcard mask present; dynamic groups are matched once per
/// distinct label set.
#[derive(Debug, Default)]
struct WorkloadIndex {
    /// What it was built from: the predicates of the workload zones (index, set).
    predicates: Vec<(u32, Arc<AddressSet>)>,
    /// Truncated prefix -> the predicates holding it.
    prefixes: HashMap<IpNet, Vec<u32>>,
    /// The prefix lengths present, per family.
    lengths_v4: Vec<u8>,
    lengths_v6: Vec<u8>,
    /// Wildcard mask -> wildcard address -> the predicates holding it.
    wildcards: HashMap<IpAddr, HashMap<IpAddr, Vec<u32>>>,
    /// Predicates that hold every address.
    any: Vec<u32>,
    /// Predicates with dynamic groups.
    by_labels: Vec<u32>,
}

impl WorkloadIndex {
    fn new(predicates: Vec<(u32, Arc<AddressSet>)>) -> WorkloadIndex {
        let mut index = WorkloadIndex::default();
        let (mut v4, mut v6) = (BTreeSet::new(), BTreeSet::new());
        for (p, set) in &predicates {
            let resolved = set
                .fqdns
                .iter()
                .flat_map(|f| &f.resolved)
                .map(|&ip| IpNet::from(ip));
            for net in set.prefixes.iter().copied().chain(resolved) {
                let net = net.trunc();
                match net {
                    IpNet::V4(_) => v4.insert(net.prefix_len()),
                    IpNet::V6(_) => v6.insert(net.prefix_len()),
                };
                index.prefixes.entry(net).or_default().push(*p);
            }
            // `contains` is exactly: the address's base under the mask is this address.
            for w in &set.wildcards {
                let holders = index.wildcards.entry(w.mask).or_default();
                holders.entry(w.address).or_default().push(*p);
            }
            if set.any {
                index.any.push(*p);
            }
            if !set.dynamic.is_empty() {
                index.by_labels.push(*p);
            }
        }
        index.lengths_v4 = v4.into_iter().collect();
        index.lengths_v6 = v6.into_iter().collect();
        index.predicates = predicates;
        index
    }

    /// The predicates whose dynamic groups hold a workload with `labels`.
    fn dynamic_matches(
        &self,
        labels: &BTreeMap<String, String>,
        predicates: &[Arc<AddressSet>],
    ) -> Vec<u32> {
        self.by_labels
            .iter()
            .copied()
            .filter(|&p| predicates[p as usize].holds_by_labels(labels))
            .collect()
    }

    /// The predicates of `relevant` holding `ip`, sorted, given those whose dynamic groups
    /// hold its workload (`dynamic`): the same as testing each of them.
    fn class(&self, ip: IpAddr, dynamic: &[u32], relevant: &BTreeSet<u32>) -> Vec<u32> {
        let lengths = match ip {
            IpAddr::V4(_) => &self.lengths_v4,
            IpAddr::V6(_) => &self.lengths_v6,
        };
        let by_prefix = lengths
            .iter()
            .filter_map(|&len| IpNet::new(ip, len).ok())
            .filter_map(|net| self.prefixes.get(&net.trunc()))
            .flatten();
        let by_wildcard = self
            .wildcards
            .iter()
            .filter_map(|(&mask, holders)| holders.get(&Wildcard::base(ip, mask)?))
            .flatten();
        let mut class: Vec<u32> = by_prefix
            .chain(by_wildcard)
            .chain(&self.any)
            .chain(dynamic)
            .copied()
            .filter(|p| relevant.contains(p))
            .collect();
        class.sort_unstable();
        class.dedup();
        class
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Identity {
    pub id: u32,
    pub zone: String,
    /// Relevant predicates (indexes into the compiler's predicate list) this class is in.
    pub member_of: Vec<u32>,
    /// Workload addresses with this identity.
    pub workload_addresses: usize,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RuleEntry {
    pub id: u32,
    /// `None` for `Pass`, which never decides.
    pub decision: Option<Decision>,
    pub log_start: bool,
    pub log_end: bool,
    pub origin: RuleOrigin,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RuleOrigin {
    Rule {
        policy: String,
        tier: Tier,
        direction: Direction,
        /// 1-based position in the policy's list for the direction.
        index: usize,
        /// Firewall rule name, uuid, device group, rulebase and position.
        provenance: Option<RuleProvenance>,
    },
    DefaultAllow,
    FirewallEnd,
    FirewallNoZonePolicy,
}

/// Entry counts, for sizing maps and benchmarks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Sizes {
    pub zones: usize,
    pub identities: usize,
    pub identity_entries_v4: usize,
    pub identity_entries_v6: usize,
    pub policy_entries: usize,
    pub rules: usize,
}

impl Compiled {
    pub fn sizes(&self) -> Sizes {
        Sizes {
            zones: self.zones.len(),
            identities: self.identities.len(),
            identity_entries_v4: self.identity_v4.len(),
            identity_entries_v6: self.identity_v6.len(),
            policy_entries: self.policy.len(),
            rules: self.rules.len(),
        }
    }
}

pub fn action_code(decision: Decision) -> u8 {
    match decision {
        Decision::Allow => abi::ACTION_ALLOW,
        Decision::Deny => abi::ACTION_DENY,
        Decision::Drop => abi::ACTION_DROP,
        Decision::ResetClient => abi::ACTION_RESET_CLIENT,
        Decision::ResetServer => abi::ACTION_RESET_SERVER,
        Decision::ResetBoth => abi::ACTION_RESET_BOTH,
    }
}

pub fn direction_code(direction: Direction) -> u8 {
    match direction {
        Direction::Egress => abi::DIRECTION_EGRESS,
        Direction::Ingress => abi::DIRECTION_INGRESS,
    }
}

const DIRECTIONS: [Direction; 2] = [Direction::Egress, Direction::Ingress];

fn rules_of(policy: &CompiledPolicy, direction: Direction) -> &[CompiledRule] {
    match direction {
        Direction::Egress => &policy.egress,
        Direction::Ingress => &policy.ingress,
    }
}

fn rule_name(policy: &CompiledPolicy, direction: Direction, rule: &CompiledRule) -> String {
    format!(
        "ZonePolicy '{}', {} rule {} ('{}')",
        policy.name,
        direction.as_str(),
        rule.index,
        rule.label(direction.as_str())
    )
}

/// Whether a rule of a policy governing `zone` can apply with a peer in `peer`.
fn peer_holds(rule: &CompiledRule, zone: &str, peer: &str) -> bool {
    rule.peers.as_ref().is_none_or(|p| p.contains(peer))
        && match rule.rule_type {
            RuleType::Universal => true,
            RuleType::Intrazone => zone == peer,
            RuleType::Interzone => zone != peer,
        }
}

fn is_deny(action: RuleAction) -> bool {
    matches!(
        action,
        RuleAction::Deny | RuleAction::Drop | RuleAction::Reject
    )
}

/// What the compiler knows of one rule.
struct RuleInfo {
    id: u32,
    /// Predicate index of the source and destination columns.
    source: u32,
    destination: u32,
}

fn host_net(ip: IpAddr) -> IpNet {
    IpNet::from(ip)
}

fn root_nets() -> [IpNet; 2] {
    [
        IpNet::V4(ipnet::Ipv4Net::default()),
        IpNet::V6(ipnet::Ipv6Net::default()),
    ]
}

fn check_capacity(what: &'static str, needed: usize, capacity: usize) -> Result<(), CompileError> {
    if needed > capacity {
        return Err(CompileError::Capacity {
            what,
            needed,
            capacity,
        });
    }
    Ok(())
}

/// Compiles `set` for the zones of `endpoints` and `external_zone`.
pub fn compile(
    set: &PolicySet,
    external_zone: &str,
    endpoints: &[Endpoint],
    limits: &Limits,
) -> Result<Compiled, CompileError> {
    compile_after(None, set, external_zone, endpoints, limits)
}

/// [`compile`], keeping the identity numbers of `previous` (the tables live now) for the
/// classes it had, so that a change touches only the entries it changes: a pod that moves
/// would otherwise shift the numbers of every identity after its own, and with them most
/// of the tables. The numbers are only labels within one generation, which is switched as a
/// whole, so any numbering is correct; this one keeps the difference small.
pub fn compile_after(
    previous: Option<&Compiled>,
    set: &PolicySet,
    external_zone: &str,
    endpoints: &[Endpoint],
    limits: &Limits,
) -> Result<Compiled, CompileError> {
    let zones: Vec<String> = endpoints
        .iter()
        .map(|e| e.zone.as_str())
        .chain([external_zone])
        .collect::<BTreeSet<_>>()
        .into_iter()
        .map(str::to_owned)
        .collect();
    let numbering = match previous.map(|p| &p.policy_basis.numbering) {
        Some(numbering) if numbering.zones == zones && numbering.made_of(set) => {
            Arc::clone(numbering)
        }
        _ => {
            let mut numbering = Numbering::new(set)?;
            numbering.relevant = numbering.relevant_predicates(set, &zones);
            numbering.zones = zones.clone();
            Arc::new(numbering)
        }
    };
    check_capacity("rules", numbering.rule_table.len(), limits.max_rules)?;
    let compiler = Compiler {
        set,
        limits,
        numbering: Arc::clone(&numbering),
    };
    let relevant = &numbering.relevant;
    let empty = BTreeSet::new();
    let relevant_of = |zone: &str| relevant.get(zone).unwrap_or(&empty);

    // Classes of workload addresses, through the index of the workload zones' predicates
    // (the previous compile's when it was made of the same ones).
    let workload_predicates: Vec<(u32, Arc<AddressSet>)> = endpoints
        .iter()
        .map(|e| e.zone.as_str())
        .collect::<BTreeSet<_>>()
        .into_iter()
        .flat_map(|zone| relevant_of(zone).iter().copied())
        .collect::<BTreeSet<u32>>()
        .into_iter()
        .map(|p| (p, Arc::clone(&numbering.predicates[p as usize])))
        .collect();
    let workload_index = match previous.map(|p| &p.workload_index) {
        Some(index) if same_predicates(&index.predicates, &workload_predicates) => {
            Arc::clone(index)
        }
        _ => Arc::new(WorkloadIndex::new(workload_predicates)),
    };
    type FastMap<K, V> = HashMap<K, V, foldhash::fast::RandomState>;
    let mut owners: FastMap<IpAddr, &Endpoint> = FastMap::default();
    let mut workload_classes: Vec<(IpAddr, &str, Vec<u32>)> = Vec::with_capacity(endpoints.len());
    let mut dynamic_of: FastMap<&BTreeMap<String, String>, Vec<u32>> = FastMap::default();
    for endpoint in endpoints {
        let dynamic = dynamic_of.entry(&endpoint.labels).or_insert_with(|| {
            workload_index.dynamic_matches(&endpoint.labels, &numbering.predicates)
        });
        for &ip in &endpoint.ips {
            if let Some(other) = owners.insert(ip, endpoint) {
                return Err(CompileError::Endpoint {
                    endpoint: endpoint.qualified_name(),
                    problem: format!(
                        "address {ip} also belongs to '{}'; an address belongs to one workload",
                        other.qualified_name()
                    ),
                });
            }
            let class = workload_index.class(ip, dynamic, relevant_of(&endpoint.zone));
            workload_classes.push((ip, &endpoint.zone, class));
        }
    }

    // Classes of the prefix tree of everything that is not a workload (external zone): the
    // previous compile's when it was made of the same predicates at the same indexes (a
    // reconcile where only workloads or services changed), built again otherwise.
    let external_relevant: Vec<(u32, Arc<AddressSet>)> = relevant_of(external_zone)
        .iter()
        .map(|&p| (p, Arc::clone(&numbering.predicates[p as usize])))
        .collect();
    let external = match previous.map(|p| &p.external) {
        Some(tree) if tree.made_of(&external_relevant, limits.max_wildcard_prefixes) => {
            Arc::clone(tree)
        }
        _ => Arc::new(ExternalTree {
            nodes: compiler.external_tree(relevant_of(external_zone))?,
            predicates: external_relevant,
            wildcard_limit: limits.max_wildcard_prefixes,
        }),
    };
    let external_tree = &external.nodes;

    // Number identities. Classes are borrowed from the lists above: the external tree has a
    // node per prefix but only a handful of classes.
    let mut classes: BTreeMap<(&str, &[u32]), usize> = BTreeMap::new();
    for (_, zone, class) in &workload_classes {
        *classes.entry((*zone, class.as_slice())).or_default() += 1;
    }
    for (_, class) in external_tree {
        classes
            .entry((external_zone, class.as_slice()))
            .or_default();
    }
    check_capacity("identities", classes.len(), limits.max_identities)?;
    let identity_of = number_identities(previous, &classes);
    let mut identities: Vec<Identity> = classes
        .iter()
        .map(|(&(zone, class), &workload_addresses)| Identity {
            id: identity_of[&(zone, class)],
            zone: zone.to_string(),
            member_of: class.to_vec(),
            workload_addresses,
        })
        .collect();
    identities.sort_by_key(|identity| identity.id);
    let zone_index = |zone: &str| -> u32 {
        zones
            .binary_search_by(|z| z.as_str().cmp(zone))
            .map_or(u32::MAX, |i| i as u32)
    };
    let value_of = |zone: &str, class: &[u32]| abi::IdentityValue {
        identity: identity_of
            .get(&(zone, class))
            .copied()
            .unwrap_or(abi::IDENTITY_NONE),
        zone: zone_index(zone),
    };

    // Address entries: tree nodes that change the identity, then workloads (which win on
    // equal keys; their host prefixes are longer than anything else otherwise).
    // Both lists are in key order (the tree in pre-order, the workloads sorted), so one merge
    // gives the entries in key order.
    let mut tree_entries: Vec<(IpNet, abi::IdentityValue)> = Vec::new();
    let mut stack: Vec<(IpNet, u32)> = Vec::new();
    for (net, class) in external_tree {
        while stack.last().is_some_and(|(top, _)| !top.contains(net)) {
            stack.pop();
        }
        let value = value_of(external_zone, class);
        if stack.last().is_none_or(|(_, id)| *id != value.identity) {
            tree_entries.push((*net, value));
        }
        stack.push((*net, value.identity));
    }
    let mut workload_entries: Vec<(IpNet, abi::IdentityValue)> = workload_classes
        .iter()
        .map(|(ip, zone, class)| (host_net(*ip), value_of(zone, class)))
        .collect();
    workload_entries.sort_unstable_by_key(|(net, _)| *net);
    let mut address_entries = Vec::with_capacity(tree_entries.len() + workload_entries.len());
    let mut tree = tree_entries.into_iter().peekable();
    for workload in workload_entries {
        while let Some(node) = tree.next_if(|(net, _)| *net < workload.0) {
            address_entries.push(node);
        }
        tree.next_if(|(net, _)| *net == workload.0);
        address_entries.push(workload);
    }
    address_entries.extend(tree);
    let mut identity_v4 = Vec::new();
    let mut identity_v6 = Vec::new();
    for (net, value) in address_entries {
        match net {
            IpNet::V4(n) => identity_v4.push((
                abi::IdentityKeyV4 {
                    prefix_len: u32::from(n.prefix_len()),
                    addr_be: n.network().octets(),
                },
                value,
            )),
            IpNet::V6(n) => identity_v6.push((
                abi::IdentityKeyV6 {
                    prefix_len: u32::from(n.prefix_len()),
                    addr_be: n.network().octets(),
                },
                value,
            )),
        }
    }
    // In key order (IpNet's is address first as well; sorting sorted entries is one pass).
    identity_v4.sort_unstable_by_key(|(k, _)| k.order());
    identity_v6.sort_unstable_by_key(|(k, _)| k.order());
    identity_v4.shrink_to_fit();
    identity_v6.shrink_to_fit();
    let identity_v4_split = v4_split::V4Split::new(&identity_v4);
    check_capacity(
        "IPv4 identity entries longer than /16",
        identity_v4_split.long.len(),
        limits.max_identity_entries_v4,
    )?;
    check_capacity(
        "IPv6 identity entries",
        identity_v6.len(),
        limits.max_identity_entries_v6,
    )?;

    // The policy entries are a function of the policies and the identities alone: a pod
    // that joins or leaves a class that exists anyway changes none of them.
    let mut basis = PolicyBasis {
        numbering: Arc::clone(&numbering),
        identities: identities
            .iter()
            .map(|i| (i.id, i.zone.clone(), i.member_of.clone()))
            .collect(),
        zones: HashMap::new(),
    };
    let policy = match previous {
        Some(previous) if previous.policy_basis.same(&basis) => {
            basis.zones = previous.policy_basis.zones.clone();
            Arc::clone(&previous.policy)
        }
        _ => {
            // The same identities: the subjects of zones whose policies did not change keep
            // their entries.
            let reuse = previous
                .filter(|p| p.policy_basis.identities == basis.identities)
                .map(|p| (&p.policy_basis.zones, p.policy.as_slice()));
            let (entries, zones) = compiler.policy_entries(&identities, reuse)?;
            basis.zones = zones;
            Arc::new(entries)
        }
    };
    check_capacity("policy entries", policy.len(), limits.max_policy_entries)?;

    Ok(Compiled {
        zones,
        identities,
        identity_v4: Arc::new(identity_v4),
        identity_v4_split,
        identity_v6: Arc::new(identity_v6),
        policy,
        rules: Arc::clone(&numbering.rule_table),
        approximations: numbering.approximations.clone(),
        external,
        workload_index,
        policy_basis: basis,
    })
}

/// Identity numbers for `classes`: a class `previous` had keeps its number, every other
/// class gets the lowest number free, in class order (without `previous`: 1, 2, 3, ...).
/// A class is (zone, predicate indexes); when a policy change renumbers the predicates, a
/// key may match a different class than before, which costs a larger difference, never a
/// wrong verdict.
fn number_identities<'k>(
    previous: Option<&Compiled>,
    classes: &BTreeMap<(&'k str, &'k [u32]), usize>,
) -> BTreeMap<(&'k str, &'k [u32]), u32> {
    let before: HashMap<(&str, &[u32]), u32> = previous
        .iter()
        .flat_map(|p| &p.identities)
        .map(|i| ((i.zone.as_str(), i.member_of.as_slice()), i.id))
        .collect();
    let mut numbers: BTreeMap<(&'k str, &'k [u32]), u32> = classes
        .keys()
        .filter_map(|&key| Some((key, *before.get(&key)?)))
        .collect();
    let taken: BTreeSet<u32> = numbers.values().copied().collect();
    let mut free = (1u32..).filter(|id| !taken.contains(id));
    for &key in classes.keys() {
        numbers.entry(key).or_insert_with(|| {
            free.next()
                .expect("u32 ids outnumber the identity capacity")
        });
    }
    numbers
}

/// The set's rules numbered and its address columns interned: a function of the compiled
/// policies alone (the same objects in the same order), so a compile where only workloads
/// changed takes it over, with the zones' relevant predicates when the zones are the same.
#[derive(Default)]
struct Numbering {
    /// What it was made of; holding the objects keeps their addresses (the keys of `rules`)
    /// from being reused by others.
    policies: Vec<Arc<CompiledPolicy>>,
    /// Distinct address columns, in first-seen order over the set's fixed policy order.
    predicates: Vec<Arc<AddressSet>>,
    /// A rule using each predicate, for error messages.
    predicate_users: Vec<String>,
    /// By the rule's address.
    rules: HashMap<usize, RuleInfo, foldhash::fast::RandomState>,
    rule_table: Arc<BTreeMap<u32, RuleEntry>>,
    approximations: Vec<String>,
    /// The zones `relevant` was worked out for.
    zones: Vec<String>,
    /// For each of `zones`, the predicates that can be evaluated on one of its addresses.
    relevant: BTreeMap<String, BTreeSet<u32>>,
}

impl Numbering {
    /// Rule ids in the set's fixed order (tier, zone, order; egress before ingress), the
    /// predicate list, and the source-port checks.
    fn new<'s>(set: &'s PolicySet) -> Result<Numbering, CompileError> {
        let mut rule_table = BTreeMap::new();
        for (id, origin, decision) in [
            (
                abi::RULE_ID_DEFAULT_ALLOW,
                RuleOrigin::DefaultAllow,
                Decision::Allow,
            ),
            (
                abi::RULE_ID_FIREWALL_END,
                RuleOrigin::FirewallEnd,
                Decision::Deny,
            ),
            (
                abi::RULE_ID_FIREWALL_NO_ZONE_POLICY,
                RuleOrigin::FirewallNoZonePolicy,
                Decision::Deny,
            ),
        ] {
            rule_table.insert(
                id,
                RuleEntry {
                    id,
                    decision: Some(decision),
                    log_start: false,
                    log_end: false,
                    origin,
                },
            );
        }
        let mut predicates: Vec<Arc<AddressSet>> = Vec::new();
        let mut predicate_users = Vec::new();
        let mut rules = HashMap::default();
        let mut approximations = Vec::new();
        // Equal columns are usually one shared set (see `AddressCache`): the pointer answers
        // first, the content only for sets parsed apart.
        let mut by_pointer: HashMap<*const AddressSet, u32, foldhash::fast::RandomState> =
            HashMap::default();
        let mut by_content: HashMap<&'s AddressSet, u32, foldhash::fast::RandomState> =
            HashMap::default();
        let mut next_id = abi::RULE_ID_FIRST;
        for policy in set.policies() {
            for direction in DIRECTIONS {
                for rule in rules_of(policy, direction) {
                    // Named only when a message or a new predicate needs it.
                    let name = || rule_name(policy, direction, rule);
                    let mut intern = |column: &'s Arc<AddressSet>| -> u32 {
                        let pointer = Arc::as_ptr(column);
                        if let Some(&index) = by_pointer.get(&pointer) {
                            return index;
                        }
                        let index = *by_content.entry(&**column).or_insert_with(|| {
                            predicates.push(Arc::clone(column));
                            predicate_users.push(name());
                            (predicates.len() - 1) as u32
                        });
                        by_pointer.insert(pointer, index);
                        index
                    };
                    let source = intern(&rule.source);
                    let destination = intern(&rule.destination);
                    if rule.active
                        && rule
                            .service
                            .entries
                            .iter()
                            .any(|e| e.source_ports.is_some())
                    {
                        approximations.push(source_ports_note(policy, rule, &name())?);
                    }
                    let id = next_id;
                    next_id += 1;
                    rules.insert(
                        rule as *const CompiledRule as usize,
                        RuleInfo {
                            id,
                            source,
                            destination,
                        },
                    );
                    rule_table.insert(
                        id,
                        RuleEntry {
                            id,
                            decision: Decision::of(rule.action, rule.reset),
                            log_start: rule.log_start,
                            log_end: rule.log_end,
                            origin: RuleOrigin::Rule {
                                policy: policy.name.clone(),
                                tier: policy.tier,
                                direction,
                                index: rule.index,
                                provenance: rule.provenance.clone(),
                            },
                        },
                    );
                }
            }
        }
        Ok(Numbering {
            policies: set.shared_policies().cloned().collect(),
            predicates,
            predicate_users,
            rules,
            rule_table: Arc::new(rule_table),
            approximations,
            zones: Vec::new(),
            relevant: BTreeMap::new(),
        })
    }

    /// Whether it was made of `set`'s policies, the very same objects in the same order.
    fn made_of(&self, set: &PolicySet) -> bool {
        let mut policies = set.shared_policies();
        self.policies
            .iter()
            .all(|p| policies.next().is_some_and(|q| Arc::ptr_eq(p, q)))
            && policies.next().is_none()
    }

    fn info(&self, rule: &CompiledRule) -> &RuleInfo {
        self.rules
            .get(&(rule as *const CompiledRule as usize))
            .expect("every rule of the set was numbered")
    }

    /// For each zone, the predicates that can be evaluated on one of its addresses.
    fn relevant_predicates(
        &self,
        set: &PolicySet,
        zones: &[String],
    ) -> BTreeMap<String, BTreeSet<u32>> {
        let mut relevant: Vec<BTreeSet<u32>> = vec![BTreeSet::new(); zones.len()];
        for (z, zone) in zones.iter().enumerate() {
            for direction in DIRECTIONS {
                for tier in Tier::ALL {
                    let Some(policies) = set.governing(tier, zone) else {
                        continue;
                    };
                    for policy in policies {
                        for rule in rules_of(policy, direction).iter().filter(|r| r.active) {
                            let info = self.info(rule);
                            let (subject, peer) = match direction {
                                Direction::Egress => (info.source, info.destination),
                                Direction::Ingress => (info.destination, info.source),
                            };
                            relevant[z].insert(subject);
                            for (p, peer_zone) in zones.iter().enumerate() {
                                if peer_holds(rule, zone, peer_zone) {
                                    relevant[p].insert(peer);
                                }
                            }
                        }
                    }
                }
            }
        }
        zones.iter().cloned().zip(relevant).collect()
    }
}

/// What is done with a rule that restricts source ports (which the kernel's key does not
/// hold), or why it cannot be enforced.
fn source_ports_note(
    policy: &CompiledPolicy,
    rule: &CompiledRule,
    name: &str,
) -> Result<String, CompileError> {
    let done = match rule.action {
        RuleAction::Pass if policy.mode == Mode::Enforce => {
            return Err(CompileError::Unrepresentable {
                rule: name.to_string(),
                problem: "a Pass rule that restricts source ports cannot be enforced in the kernel (its key has no source port, and matching more or fewer flows could open what a later tier closes); remove the source ports or use Allow/Deny".to_string(),
            });
        }
        action if is_deny(action) => "this deny blocks every source port",
        _ => "this rule never matches (its flows fall through to the following rules)",
    };
    Ok(format!(
        "{name}: source ports are not matched in the kernel; {done}"
    ))
}

struct Compiler<'a> {
    set: &'a PolicySet,
    limits: &'a Limits,
    numbering: Arc<Numbering>,
}

impl<'a> Compiler<'a> {
    /// The prefix tree of the external zone's predicates, in pre-order (every node after its
    /// ancestors), each node with the class of the addresses whose longest match it is.
    fn external_tree(
        &self,
        relevant: &BTreeSet<u32>,
    ) -> Result<Vec<(IpNet, Vec<u32>)>, CompileError> {
        let mut direct: BTreeMap<IpNet, Vec<u32>> = BTreeMap::new();
        for net in root_nets() {
            direct.entry(net).or_default();
        }
        for &p in relevant {
            let set = &self.numbering.predicates[p as usize];
            let mut nets: Vec<IpNet> = Vec::new();
            if set.any {
                nets.extend(root_nets());
            }
            nets.extend(set.prefixes.iter().map(IpNet::trunc));
            for fqdn in &set.fqdns {
                nets.extend(fqdn.resolved.iter().copied().map(host_net));
            }
            for wildcard in &set.wildcards {
                let expanded = wildcard
                    .to_prefixes(self.limits.max_wildcard_prefixes)
                    .ok_or_else(|| CompileError::Unrepresentable {
                        rule: self.numbering.predicate_users[p as usize].clone(),
                        problem: format!(
                            "wildcard {wildcard} expands to more than {} prefixes; use a mask with fewer non-contiguous bits or raise the wildcard limit",
                            self.limits.max_wildcard_prefixes
                        ),
                    })?;
                nets.extend(expanded);
            }
            // Label selectors never hold for an address no workload owns.
            for net in nets {
                direct.entry(net).or_default().push(p);
            }
        }
        let mut out: Vec<(IpNet, Vec<u32>)> = Vec::with_capacity(direct.len());
        let mut stack: Vec<usize> = Vec::new();
        for (net, members) in direct {
            while stack.last().is_some_and(|&i| !out[i].0.contains(&net)) {
                stack.pop();
            }
            let mut class = stack.last().map(|&i| out[i].1.clone()).unwrap_or_default();
            class.extend(members);
            class.sort_unstable();
            class.dedup();
            stack.push(out.len());
            out.push((net, class));
        }
        Ok(out)
    }

    fn value(&self, outcome: &Outcome<'_>) -> abi::PolicyValue {
        let id_of = |decider: &Decider<'_>| match decider {
            Decider::Rule { rule, .. } => self.numbering.info(rule).id,
            Decider::EndOfTier(_) => abi::RULE_ID_FIREWALL_END,
            Decider::NoZonePolicy(_) => abi::RULE_ID_FIREWALL_NO_ZONE_POLICY,
            Decider::DefaultAllow => abi::RULE_ID_DEFAULT_ALLOW,
        };
        let mut flags = 0;
        if let Decider::Rule { rule, .. } = outcome.decider {
            if rule.log_start {
                flags |= abi::POLICY_FLAG_LOG_START;
            }
            if rule.log_end {
                flags |= abi::POLICY_FLAG_LOG_END;
            }
        }
        let (audit_rule_id, audit_action) = match &outcome.audit {
            Some((decision, decider)) => {
                if !decision.is_allow() {
                    flags |= abi::POLICY_FLAG_WOULD_DENY;
                }
                (id_of(decider), action_code(*decision))
            }
            None => (abi::RULE_ID_NONE, abi::ACTION_NONE),
        };
        abi::PolicyValue {
            rule_id: id_of(&outcome.decider),
            audit_rule_id,
            action: action_code(outcome.decision),
            audit_action,
            flags,
            _pad: 0,
        }
    }

    /// What the entries of `zone`'s subjects in `direction` depend on (see [`ZoneBasis`]).
    fn zone_basis(&self, direction: Direction, zone: &str) -> ZoneBasis {
        let mut basis = ZoneBasis {
            policies: Vec::new(),
            rule_ids: Vec::new(),
        };
        for tier in Tier::ALL {
            for policy in self.set.governing(tier, zone).unwrap_or(&[]) {
                basis.policies.push(Arc::as_ptr(policy) as usize);
                basis.rule_ids.extend(
                    rules_of(policy, direction)
                        .iter()
                        .map(|r| self.numbering.info(r).id),
                );
            }
        }
        basis
    }

    /// The policy entries, in key order, and what each zone's were computed from. `reuse`:
    /// a previous compile's zone bases and entries, with the same identities.
    fn policy_entries(
        &self,
        identities: &[Identity],
        reuse: Option<(&ZoneBases, &[PolicyEntry])>,
    ) -> Result<(Vec<PolicyEntry>, ZoneBases), CompileError> {
        let mut zone_bases = ZoneBases::new();
        // Membership as bitsets over the predicates: the pair loop below asks millions of
        // times at the benchmark's size.
        let words = self.numbering.predicates.len().div_ceil(64);
        let bits: Vec<Vec<u64>> = identities
            .iter()
            .map(|identity| {
                let mut set = vec![0u64; words];
                for &p in &identity.member_of {
                    set[p as usize / 64] |= 1 << (p % 64);
                }
                set
            })
            .collect();
        // `identity`: the index in `identities`.
        let holds = |identity: usize, predicate: u32, negate: bool| {
            (bits[identity][predicate as usize / 64] >> (predicate % 64) & 1 == 1) != negate
        };
        // Each identity's zone as an index into `zones`, so the pair loop groups peers by
        // zone without hashing or comparing names.
        let mut zones: Vec<&str> = Vec::new();
        let zone_index: Vec<usize> = identities
            .iter()
            .map(
                |identity| match zones.iter().position(|z| *z == identity.zone) {
                    Some(index) => index,
                    None => {
                        zones.push(&identity.zone);
                        zones.len() - 1
                    }
                },
            )
            .collect();
        let mut entries: Vec<(abi::PolicyKey, abi::PolicyValue)> = Vec::new();
        // The verdict function of a (direction, zone) depends only on which of its rules hold;
        // most (subject, peer) pairs share their set with many others, so each is built once.
        // Keyed by (direction, zone), then by the ids of the rules that hold: a pair is looked
        // up by a slice of a reused buffer, and only a new function allocates its key.
        type Functions = HashMap<Vec<u32>, Rc<PeerFunction>, foldhash::fast::RandomState>;
        let mut functions: HashMap<(Direction, &str), Functions, foldhash::fast::RandomState> =
            HashMap::default();
        let mut held: Vec<usize> = Vec::new();
        let mut held_ids: Vec<u32> = Vec::new();
        for direction in DIRECTIONS {
            // Per zone (by index): whether its subjects keep their entries, worked out once.
            let mut keeps: Vec<Option<bool>> = vec![None; zones.len()];
            for (s, subject) in identities.iter().enumerate() {
                let keep = *keeps[zone_index[s]].get_or_insert_with(|| {
                    let key = (direction, subject.zone.clone());
                    let basis = self.zone_basis(direction, &subject.zone);
                    let same = reuse.is_some_and(|(bases, _)| bases.get(&key) == Some(&basis));
                    zone_bases.insert(key, basis);
                    same
                });
                if let Some((_, before)) = reuse
                    && keep
                {
                    // Entries are in key order: direction, then subject first.
                    let of_subject = (direction_code(direction), subject.id.to_be_bytes());
                    let start = before.partition_point(|(k, _)| {
                        (k.direction, k.subject_identity_be) < of_subject
                    });
                    let end = before.partition_point(|(k, _)| {
                        (k.direction, k.subject_identity_be) <= of_subject
                    });
                    entries.extend_from_slice(&before[start..end]);
                    check_capacity(
                        "policy entries",
                        entries.len(),
                        self.limits.max_policy_entries,
                    )?;
                    continue;
                }
                // Rules of the subject's zone whose subject column holds, in walk order, with
                // the column the peer must be in.
                let mut candidates: Vec<(&CompiledPolicy, &CompiledRule, u32, bool, u32)> =
                    Vec::new();
                for tier in Tier::ALL {
                    for policy in self.set.governing(tier, &subject.zone).unwrap_or(&[]) {
                        for rule in rules_of(policy, direction).iter().filter(|r| r.active) {
                            let info = self.numbering.info(rule);
                            let (held, peer_column, peer_negated) = match direction {
                                Direction::Egress => (
                                    holds(s, info.source, rule.negate_source),
                                    info.destination,
                                    rule.negate_destination,
                                ),
                                Direction::Ingress => (
                                    holds(s, info.destination, rule.negate_destination),
                                    info.source,
                                    rule.negate_source,
                                ),
                            };
                            if held {
                                candidates.push((policy, rule, peer_column, peer_negated, info.id));
                            }
                        }
                    }
                }
                // The peer zone test depends on the peer's zone only: once per zone.
                let mut by_peer_zone: Vec<Option<Vec<usize>>> = vec![None; zones.len()];
                let functions = functions.entry((direction, &subject.zone)).or_default();
                let mut per_peer: Vec<(u32, Rc<PeerFunction>)> =
                    Vec::with_capacity(identities.len());
                for (p, peer) in identities.iter().enumerate() {
                    let in_zone = by_peer_zone[zone_index[p]].get_or_insert_with(|| {
                        (0..candidates.len())
                            .filter(|&i| peer_holds(candidates[i].1, &subject.zone, &peer.zone))
                            .collect()
                    });
                    held.clear();
                    held.extend(in_zone.iter().copied().filter(|&i| {
                        let (_, _, column, negated, _) = candidates[i];
                        holds(p, column, negated)
                    }));
                    held_ids.clear();
                    held_ids.extend(held.iter().map(|&i| candidates[i].4));
                    let function = match functions.get(held_ids.as_slice()) {
                        Some(function) => Rc::clone(function),
                        None => {
                            let matched: Vec<(&CompiledPolicy, &CompiledRule)> = held
                                .iter()
                                .map(|&i| (candidates[i].0, candidates[i].1))
                                .collect();
                            let function = Rc::new(self.peer_function(&subject.zone, &matched));
                            functions.insert(held_ids.clone(), Rc::clone(&function));
                            function
                        }
                    };
                    per_peer.push((peer.id, function));
                }
                encode_subject(direction, subject.id, &per_peer, &mut entries);
                check_capacity(
                    "policy entries",
                    entries.len(),
                    self.limits.max_policy_entries,
                )?;
            }
        }
        entries.sort_by_key(|(key, _)| key.order());
        entries.shrink_to_fit();
        Ok((entries, zone_bases))
    }

    /// The verdict of one (direction, subject, peer) over (protocol, port), given the rules
    /// whose zones and addresses hold (with their policies, in walk order).
    fn peer_function(
        &self,
        zone: &str,
        matched: &[(&'a CompiledPolicy, &'a CompiledRule)],
    ) -> PeerFunction {
        // The walks below see only these rules: every other rule of the zone fails its
        // address columns, so the walk would test and skip it each time.
        let mut by_policy: Vec<(*const CompiledPolicy, Vec<&'a CompiledRule>)> = Vec::new();
        for &(policy, rule) in matched {
            let policy = policy as *const CompiledPolicy;
            match by_policy.last_mut() {
                Some((last, rules)) if *last == policy => rules.push(rule),
                _ => by_policy.push((policy, vec![rule])),
            }
        }
        let rules_of_policy = |policy: &'a CompiledPolicy| {
            let policy = policy as *const CompiledPolicy;
            by_policy
                .iter()
                .find(|(p, _)| *p == policy)
                .map(|(_, rules)| rules.as_slice())
                .unwrap_or_default()
                .iter()
                .copied()
        };
        let without_port = self
            .set
            .walk_over(zone, rules_of_policy, &mut |rule| rule.service.any);
        let mut boundaries: BTreeMap<u8, BTreeSet<u32>> = BTreeMap::new();
        for (_, rule) in matched {
            for entry in &rule.service.entries {
                let cuts = boundaries.entry(entry.protocol.number()).or_default();
                cuts.insert(0);
                for range in &entry.destination_ports {
                    cuts.insert(u32::from(range.first));
                    cuts.insert(u32::from(range.last) + 1);
                }
            }
        }
        let mut protocols = Vec::new();
        for (protocol, cuts) in boundaries {
            let cuts: Vec<u32> = cuts.into_iter().filter(|&c| c <= 0xffff).collect();
            let mut intervals: Vec<PortInterval> = Vec::new();
            for (i, &first) in cuts.iter().enumerate() {
                let last = cuts.get(i + 1).map_or(0xffff, |next| next - 1);
                let port = first as u16;
                let outcome = self.set.walk_over(zone, rules_of_policy, &mut |rule| {
                    service_matches(rule, protocol, port)
                });
                let value = self.value(&outcome);
                match intervals.last_mut() {
                    Some(previous) if previous.2 == value => previous.1 = last as u16,
                    _ => intervals.push((port, last as u16, value)),
                }
            }
            protocols.push((protocol, intervals));
        }
        PeerFunction::new(self.value(&without_port), &protocols)
    }
}

/// Whether `rule`'s service matches (protocol, port) as the kernel can see it: source-port
/// restrictions are read conservatively (see the module comment).
fn service_matches(rule: &CompiledRule, protocol: u8, port: u16) -> bool {
    rule.service.any
        || rule.service.entries.iter().any(|entry| {
            entry.protocol.number() == protocol
                && entry.destination_ports.iter().any(|r| r.contains(port))
                && (entry.source_ports.is_none() || is_deny(rule.action))
        })
}

/// First port, last port (inclusive) and the verdict for them.
type PortInterval = (u16, u16, abi::PolicyValue);

/// [`abi::PolicyValue`]'s fields as a sortable tuple.
type ValueOrder = (u32, u32, u8, u8, u8);

struct PeerFunction {
    /// The verdict for every protocol and port not listed below, and for packets without a
    /// port.
    without_port: abi::PolicyValue,
    /// The entries below the peer's own, as (prefix length, protocol, port, verdict): each
    /// protocol's most common verdict where it differs from `without_port`, then its port
    /// prefixes whose verdict differs from that. Shared by every (subject, peer) pair with
    /// this function, so worked out once.
    below_peer: Vec<(u32, u8, u16, abi::PolicyValue)>,
}

impl PeerFunction {
    /// `protocols`: protocol -> consecutive port intervals covering 0-65535, each with its
    /// verdict.
    fn new(without_port: abi::PolicyValue, protocols: &[(u8, Vec<PortInterval>)]) -> Self {
        let mut below_peer = Vec::new();
        for (protocol, intervals) in protocols {
            let protocol_default = most_common(
                intervals
                    .iter()
                    .map(|(first, last, v)| (*v, u64::from(*last - *first) + 1)),
            )
            .unwrap_or(without_port);
            if protocol_default != without_port {
                below_peer.push((abi::POLICY_PREFIX_PROTOCOL, *protocol, 0, protocol_default));
            }
            for (first, last, value) in intervals {
                if *value == protocol_default {
                    continue;
                }
                for (start, bits) in port_prefixes(*first, *last) {
                    below_peer.push((abi::POLICY_PREFIX_PROTOCOL + bits, *protocol, start, *value));
                }
            }
        }
        PeerFunction {
            without_port,
            below_peer,
        }
    }
}

fn value_order(value: &abi::PolicyValue) -> ValueOrder {
    (
        value.rule_id,
        value.audit_rule_id,
        value.action,
        value.audit_action,
        value.flags,
    )
}

/// The value that occurs most often, weighted; ties go to the lowest in `value_order`.
fn most_common<I: Iterator<Item = (abi::PolicyValue, u64)>>(values: I) -> Option<abi::PolicyValue> {
    let mut counts: BTreeMap<ValueOrder, (abi::PolicyValue, u64)> = BTreeMap::new();
    for (value, weight) in values {
        counts.entry(value_order(&value)).or_insert((value, 0)).1 += weight;
    }
    let mut best: Option<(abi::PolicyValue, u64)> = None;
    for (value, count) in counts.into_values() {
        if best.is_none_or(|(_, c)| count > c) {
            best = Some((value, count));
        }
    }
    best.map(|(v, _)| v)
}

fn policy_key(
    prefix_len: u32,
    direction: Direction,
    subject: u32,
    peer: u32,
    protocol: u8,
    port: u16,
) -> abi::PolicyKey {
    abi::PolicyKey {
        prefix_len,
        direction: direction_code(direction),
        subject_identity_be: subject.to_be_bytes(),
        peer_identity_be: peer.to_be_bytes(),
        protocol,
        port_be: port.to_be_bytes(),
    }
}

/// Aligned port prefixes covering exactly `first..=last`, as (start, prefix length 0-16).
pub fn port_prefixes(first: u16, last: u16) -> Vec<(u16, u32)> {
    let mut out = Vec::new();
    let (mut start, end) = (u32::from(first), u32::from(last));
    while start <= end {
        let mut size_bits = if start == 0 {
            16
        } else {
            start.trailing_zeros().min(16)
        };
        while start + (1 << size_bits) - 1 > end {
            size_bits -= 1;
        }
        out.push((start as u16, 16 - size_bits));
        start += 1 << size_bits;
    }
    out
}

/// Entries for one subject in one direction, leaving out every entry equal to the one its
/// lookup would otherwise fall back to.
fn encode_subject(
    direction: Direction,
    subject: u32,
    per_peer: &[(u32, Rc<PeerFunction>)],
    entries: &mut Vec<(abi::PolicyKey, abi::PolicyValue)>,
) {
    let Some(subject_default) = most_common(per_peer.iter().map(|(_, f)| (f.without_port, 1)))
    else {
        return;
    };
    entries.push((policy_key(40, direction, subject, 0, 0, 0), subject_default));
    for (peer, function) in per_peer {
        if function.without_port != subject_default {
            entries.push((
                policy_key(abi::POLICY_PREFIX_PEER, direction, subject, *peer, 0, 0),
                function.without_port,
            ));
        }
        for &(prefix_len, protocol, port, value) in &function.below_peer {
            entries.push((
                policy_key(prefix_len, direction, subject, *peer, protocol, port),
                value,
            ));
        }
    }
}
