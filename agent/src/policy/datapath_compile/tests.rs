use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;
use std::sync::Arc;

use proptest::prelude::*;
use zonewall_common as abi;

use super::emulate::Datapath;
use super::*;
use crate::model::{Flow, LabelSource};
use crate::policy::eval::{DecidedBy, PolicyVerdict};
use crate::policy::resource::{
    AddressMatch, AddressSetSpec, FqdnMatch, LabelFilter, Logging, Part, PortRange, Prefix,
    Protocol, Reset, RuleProvenance, Rulebase, ServiceEntry, ServiceMatch, WildcardMatch,
    ZonePolicy, ZonePolicySpec, ZoneRule,
};
use crate::policy::resource::{Fidelity, Mode, RuleAction, RuleType, Tier};

const ZONES: [&str; 4] = ["trust", "dmz", "untrust", "restricted"];
const EXTERNAL: &str = "untrust";
/// Policy zones: the inventory's, `any`, and one no workload is in.
const POLICY_ZONES: [&str; 6] = ["trust", "dmz", "untrust", "restricted", "any", "lab"];
const PREFIXES: [&str; 12] = [
    "10.0.0.0/8",
    "10.0.0.0/16",
    "10.0.1.0/24",
    "10.0.1.128/25",
    "10.0.2.0/24",
    "10.0.1.5/32",
    "192.0.2.0/24",
    "0.0.0.0/0",
    "fd00::/16",
    "fd00:0:0:1::/64",
    "fd00:0:0:1::5/128",
    "2001:db8::/32",
];
/// (address, wildcard mask): every 10.0.x.5, and the even addresses of 10.0.1.0/24.
const WILDCARDS: [(&str, &str); 2] = [("10.0.0.5", "0.0.255.0"), ("10.0.1.0", "0.0.0.254")];
const SELECTORS: [&str; 4] = [
    "'app=web'",
    "'app=db' or 'env=dev'",
    "not 'app=web'",
    "'env=dev' and not 'app=db'",
];
const LABELS: [(&str, &str); 3] = [("app", "web"), ("app", "db"), ("env", "dev")];
const WORKLOAD_IPS: [&str; 16] = [
    "10.0.1.1",
    "10.0.1.2",
    "10.0.1.5",
    "10.0.1.130",
    "10.0.2.1",
    "10.0.2.5",
    "10.0.3.5",
    "192.0.2.10",
    "fd00::1:1",
    "fd00::1:5",
    "fd00:0:0:1::1",
    "fd00:0:0:1::5",
    "fd00:0:0:1::6",
    "fd00:0:0:2::1",
    "2001:db8::7",
    "fd00:0:0:1::2",
];
const OTHER_V4: [&str; 12] = [
    "10.0.0.0",
    "10.0.1.0",
    "10.0.1.127",
    "10.0.1.128",
    "10.0.1.255",
    "10.0.2.255",
    "10.1.7.5",
    "10.0.7.5",
    "192.0.2.11",
    "8.8.8.8",
    "10.0.1.4",
    "9.255.255.255",
];
const OTHER_V6: [&str; 6] = [
    "fd00:0:0:1::ffff",
    "fd00:1::1",
    "2001:db8::1",
    "2001:db9::1",
    "::1",
    "fcff:ffff::1",
];
const PORT_RANGES: [(u16, Option<u16>); 8] = [
    (22, None),
    (53, None),
    (80, None),
    (443, None),
    (8000, Some(8080)),
    (1000, Some(2000)),
    (0, Some(1023)),
    (1024, Some(65535)),
];
const PORTS: [u16; 16] = [
    0, 22, 53, 79, 80, 81, 443, 999, 1000, 1023, 1024, 2000, 2001, 8000, 8080, 65535,
];
const PROTOCOLS: [u8; 6] = [6, 17, 132, 1, 58, 47];

fn ip(text: &str) -> IpAddr {
    text.parse().expect("test address")
}

fn address_match() -> impl Strategy<Value = AddressMatch> {
    prop_oneof![
        3 => Just(AddressMatch {
            any: true,
            ..AddressMatch::default()
        }),
        6 => (
            prop::collection::vec(0..PREFIXES.len(), 0..3),
            prop::option::weighted(0.2, 0..WILDCARDS.len()),
            prop::option::weighted(0.15, any::<bool>()),
            prop::collection::vec(0..SELECTORS.len(), 0..2),
            prop::bool::weighted(0.25),
        )
            .prop_map(|(prefixes, wildcard, fqdn, selectors, negate)| AddressMatch {
                any: false,
                negate,
                prefixes: prefixes.iter().map(|&i| PREFIXES[i].into()).collect(),
                sets: Vec::new(),
                wildcards: wildcard
                    .map(|i| WildcardMatch {
                        address: WILDCARDS[i].0.to_string(),
                        mask: WILDCARDS[i].1.to_string(),
                    })
                    .into_iter()
                    .collect(),
                fqdns: fqdn
                    .map(|resolved| FqdnMatch {
                        name: "db.example.com".to_string(),
                        addresses: if resolved {
                            vec!["192.0.2.10".into(), "10.0.1.4".into(), "fd00::1:5".into()]
                        } else {
                            Vec::new()
                        },
                    })
                    .into_iter()
                    .collect(),
                selectors: selectors
                    .iter()
                    .map(|&i| LabelFilter {
                        group: format!("dag{i}"),
                        filter: SELECTORS[i].to_string(),
                    })
                    .collect(),
            }),
    ]
}

fn service_match(source_ports: bool) -> impl Strategy<Value = ServiceMatch> {
    let entry = (
        0u8..3,
        prop::collection::vec(0..PORT_RANGES.len(), 1..3),
        prop::bool::weighted(0.3),
        0..PORT_RANGES.len(),
    )
        .prop_map(move |(protocol, ports, restricted, source)| ServiceEntry {
            protocol: [Protocol::Tcp, Protocol::Udp, Protocol::Sctp][protocol as usize],
            ports: ports.iter().map(|&i| port_range(i)).collect(),
            source_ports: (source_ports && restricted).then(|| vec![port_range(source)]),
        });
    prop_oneof![
        2 => Just(ServiceMatch {
            any: true,
            entries: Vec::new()
        }),
        3 => prop::collection::vec(entry, 0..3).prop_map(|entries| ServiceMatch {
            any: false,
            entries
        }),
    ]
}

fn port_range(index: usize) -> PortRange {
    PortRange {
        port: PORT_RANGES[index].0,
        end_port: PORT_RANGES[index].1,
    }
}

fn rule(source_ports: bool) -> impl Strategy<Value = ZoneRule> {
    (
        (0u8..9, 0u8..3, 0u8..3),
        prop_oneof![
            Just(vec!["any".to_string()]),
            prop::collection::btree_set(0..POLICY_ZONES.len() - 2, 1..3).prop_map(|set| set
                .into_iter()
                .map(|i| POLICY_ZONES[i].to_string())
                .collect()),
        ],
        address_match(),
        address_match(),
        service_match(source_ports),
        (
            any::<bool>(),
            any::<bool>(),
            prop::bool::weighted(0.1),
            prop::bool::weighted(0.05),
            0u32..1000,
        ),
    )
        .prop_map(
            |(
                (action, reset, rule_type),
                peer_zones,
                source,
                destination,
                service,
                (start, end, disabled, fail_closed, position),
            )| {
                let action = match action {
                    0..=2 => RuleAction::Allow,
                    3 | 4 => RuleAction::Deny,
                    5 => RuleAction::Drop,
                    6 => RuleAction::Reject,
                    _ => RuleAction::Pass,
                };
                ZoneRule {
                    action,
                    reset: (action == RuleAction::Reject)
                        .then(|| [Reset::Client, Reset::Server, Reset::Both][reset as usize]),
                    rule_type: [
                        RuleType::Universal,
                        RuleType::Intrazone,
                        RuleType::Interzone,
                    ][rule_type as usize],
                    peer_zones,
                    source,
                    destination,
                    service,
                    log: Logging { start, end },
                    disabled,
                    fidelity: if fail_closed && action == RuleAction::Allow {
                        Fidelity::FailClosed
                    } else {
                        Fidelity::Exact
                    },
                    notes: Vec::new(),
                    provenance: Some(RuleProvenance {
                        rule: format!("fw-rule-{position}"),
                        uuid: None,
                        device_group: "dg".to_string(),
                        rulebase: Rulebase::Pre,
                        position: position + 1,
                        line: None,
                    }),
                }
            },
        )
}

fn policies(source_ports: bool) -> impl Strategy<Value = Vec<ZonePolicy>> {
    prop::collection::vec(
        (
            prop_oneof![3 => Just(Tier::Firewall), 1 => Just(Tier::Platform), 1 => Just(Tier::Application)],
            0..POLICY_ZONES.len(),
            prop::bool::weighted(0.2),
            prop::collection::vec(rule(source_ports), 0..5),
            prop::collection::vec(rule(source_ports), 0..5),
        ),
        1..6,
    )
    .prop_map(|list| {
        list.into_iter()
            .enumerate()
            .map(|(i, (tier, zone, audit, egress, ingress))| {
                let spec = ZonePolicySpec {
                    tier,
                    order: i as u32 + 1,
                    mode: if audit { Mode::Audit } else { Mode::Enforce },
                    zone: POLICY_ZONES[zone].to_string(),
                    part: None::<Part>,
                    provenance: None,
                    egress,
                    ingress,
                    address_sets: BTreeMap::new(),
                };
                ZonePolicy::new(&format!("p{i}"), spec)
            })
            .collect()
    })
}

/// Moves every column's prefixes into a named set of the object. Names are numbered per
/// object, so other objects give the same names to other prefixes (which must not be
/// mistaken for each other), and some columns keep one prefix written out beside the set.
fn name_address_sets(spec: &mut ZonePolicySpec) {
    let mut names: HashMap<Vec<Prefix>, String> = HashMap::new();
    let mut sets = BTreeMap::new();
    for rule in spec.egress.iter_mut().chain(&mut spec.ingress) {
        for column in [&mut rule.source, &mut rule.destination] {
            if column.prefixes.is_empty() {
                continue;
            }
            let keep = if column.prefixes.len() > 1 && column.negate {
                column.prefixes.pop()
            } else {
                None
            };
            let prefixes = std::mem::replace(&mut column.prefixes, keep.into_iter().collect());
            let count = names.len();
            let name = names
                .entry(prefixes.clone())
                .or_insert_with(|| format!("s{count}"))
                .clone();
            sets.insert(name.clone(), AddressSetSpec { prefixes });
            column.sets.push(name);
        }
    }
    spec.address_sets = sets;
}

/// Each workload address goes to one of six workloads (or none); workloads get a zone and
/// labels.
fn endpoints() -> impl Strategy<Value = Vec<Endpoint>> {
    (
        prop::collection::vec(prop::option::weighted(0.7, 0usize..6), WORKLOAD_IPS.len()),
        prop::collection::vec(
            (
                0..ZONES.len(),
                prop::collection::btree_set(0..LABELS.len(), 0..3),
            ),
            6,
        ),
    )
        .prop_map(|(owners, workloads)| {
            workloads
                .iter()
                .enumerate()
                .filter_map(|(w, (zone, labels))| {
                    let ips: Vec<IpAddr> = owners
                        .iter()
                        .enumerate()
                        .filter(|(_, owner)| **owner == Some(w))
                        .map(|(i, _)| ip(WORKLOAD_IPS[i]))
                        .collect();
                    (!ips.is_empty()).then(|| Endpoint {
                        name: format!("w{w}"),
                        namespace: None,
                        zone: ZONES[*zone].to_string(),
                        ips,
                        labels: labels
                            .iter()
                            .map(|&l| (LABELS[l].0.to_string(), LABELS[l].1.to_string()))
                            .collect(),
                        interface: None,
                    })
                })
                .collect()
        })
}

#[derive(Clone, Debug)]
struct TestFlow {
    source: IpAddr,
    destination: IpAddr,
    protocol: u8,
    source_port: u16,
    destination_port: u16,
    fragment: bool,
}

fn address(v6: bool) -> impl Strategy<Value = IpAddr> {
    let workloads: Vec<IpAddr> = WORKLOAD_IPS
        .iter()
        .map(|s| ip(s))
        .filter(|a| a.is_ipv6() == v6)
        .collect();
    let others: Vec<IpAddr> = if v6 {
        OTHER_V6.iter().map(|s| ip(s)).collect()
    } else {
        OTHER_V4.iter().map(|s| ip(s)).collect()
    };
    prop_oneof![
        3 => prop::sample::select(workloads),
        2 => prop::sample::select(others),
        1 => any::<u16>().prop_map(move |low| if v6 {
            IpAddr::V6(std::net::Ipv6Addr::new(0xfd00, 0, 0, 1, 0, 0, 0, low))
        } else {
            IpAddr::V4(std::net::Ipv4Addr::from(0x0a00_0000 | u32::from(low & 0x3ff)))
        }),
    ]
}

fn flow() -> impl Strategy<Value = TestFlow> {
    let port = prop_oneof![3 => prop::sample::select(PORTS.to_vec()), 1 => any::<u16>()];
    (
        any::<bool>().prop_flat_map(|v6| (address(v6), address(v6))),
        prop::sample::select(PROTOCOLS.to_vec()),
        any::<u16>(),
        port,
        prop::bool::weighted(0.1),
    )
        .prop_map(
            |((source, destination), protocol, source_port, destination_port, fragment)| TestFlow {
                source,
                destination,
                protocol,
                source_port,
                destination_port,
                fragment,
            },
        )
}

struct TestLabels(HashMap<IpAddr, BTreeMap<String, String>>);

impl LabelSource for TestLabels {
    fn labels(&self, ip: IpAddr) -> Option<&BTreeMap<String, String>> {
        self.0.get(&ip)
    }
}

/// The evaluator's flow: zones from the endpoints, no ports for port-less protocols and
/// non-first fragments.
fn evaluator_flow(endpoints: &[Endpoint], flow: &TestFlow) -> Flow {
    let zone_of = |a: IpAddr| {
        endpoints
            .iter()
            .find(|e| e.ips.contains(&a))
            .map_or(EXTERNAL, |e| e.zone.as_str())
            .to_string()
    };
    let has_ports = crate::model::has_ports(flow.protocol) && !flow.fragment;
    Flow {
        source_zone: zone_of(flow.source),
        destination_zone: zone_of(flow.destination),
        source: flow.source,
        destination: flow.destination,
        protocol: flow.protocol,
        source_port: has_ports.then_some(flow.source_port),
        destination_port: has_ports.then_some(flow.destination_port),
    }
}

/// The rule id the compiled table gives what the evaluator says decided.
fn expected_rule_id(compiled: &Compiled, decided_by: &DecidedBy) -> u32 {
    match decided_by {
        DecidedBy::Rule(hit) => compiled
            .rules
            .values()
            .find(|entry| {
                matches!(&entry.origin, RuleOrigin::Rule { policy, tier, direction, index, .. }
                    if *policy == hit.policy && *tier == hit.tier
                        && *direction == hit.direction && *index == hit.index)
            })
            .map_or(u32::MAX, |entry| entry.id),
        DecidedBy::EndOfTier { .. } => abi::RULE_ID_FIREWALL_END,
        DecidedBy::NoZonePolicy { .. } => abi::RULE_ID_FIREWALL_NO_ZONE_POLICY,
        DecidedBy::DefaultAllow => abi::RULE_ID_DEFAULT_ALLOW,
    }
}

fn check_equal(
    compiled: &Compiled,
    datapath: &Datapath,
    evaluator: &PolicyVerdict,
    flow: &Flow,
) -> Result<(), String> {
    let port = flow.destination_port;
    let found = datapath
        .lookup(
            evaluator.direction,
            flow.source,
            flow.destination,
            flow.protocol,
            port,
        )
        .ok_or("a lookup missed")?;
    let zone = &compiled.zones[found.subject.zone as usize];
    let value = found.value;
    let (log_start, log_end) = evaluator.logging();
    let mut flags = 0;
    if log_start {
        flags |= abi::POLICY_FLAG_LOG_START;
    }
    if log_end {
        flags |= abi::POLICY_FLAG_LOG_END;
    }
    if evaluator.would_deny() {
        flags |= abi::POLICY_FLAG_WOULD_DENY;
    }
    let (audit_action, audit_rule_id) = match &evaluator.audit {
        Some((decision, by)) => (action_code(*decision), expected_rule_id(compiled, by)),
        None => (abi::ACTION_NONE, abi::RULE_ID_NONE),
    };
    let want = abi::PolicyValue {
        rule_id: expected_rule_id(compiled, &evaluator.decided_by),
        audit_rule_id,
        action: action_code(evaluator.decision),
        audit_action,
        flags,
        _pad: 0,
    };
    if *zone != evaluator.zone || value != want {
        return Err(format!(
            "{:?} {flow:?}: compiled {zone} {value:?} (rule {:?}), evaluator {} {want:?} ({:?})",
            evaluator.direction,
            compiled.rules.get(&value.rule_id),
            evaluator.zone,
            evaluator.decided_by
        ));
    }
    Ok(())
}

/// Each object compiled on its own, as the agent's caches hold them.
fn compiled_objects(policies: &[ZonePolicy]) -> Vec<Arc<CompiledPolicy>> {
    policies
        .iter()
        .map(|policy| Arc::new(crate::policy::compile::compile(policy).expect("valid")))
        .collect()
}

/// The set of those objects, sharing them.
fn set_of(objects: &[Arc<CompiledPolicy>]) -> PolicySet {
    PolicySet::from_compiled(objects.iter().cloned().map(Ok)).expect("valid")
}

fn labels_of(endpoints: &[Endpoint]) -> TestLabels {
    TestLabels(
        endpoints
            .iter()
            .flat_map(|e| e.ips.iter().map(|a| (*a, e.labels.clone())))
            .collect(),
    )
}

/// Every flow gets, from the emulated lookup over `compiled`, the verdicts (egress and
/// ingress) the evaluator gives on `set`.
fn agrees_with_the_evaluator(
    set: &PolicySet,
    compiled: &Compiled,
    endpoints: &[Endpoint],
    flows: &[TestFlow],
) -> Result<(), String> {
    let datapath = Datapath::new(compiled).expect("entries load");
    // The datapath shares tables in key order and has to copy and sort any other.
    if !(in_key_order(&compiled.identity_v4)
        && in_key_order(&compiled.identity_v6)
        && in_key_order(&compiled.policy))
    {
        return Err("a table is not in key order".into());
    }
    let labels = labels_of(endpoints);
    for test_flow in flows {
        let flow = evaluator_flow(endpoints, test_flow);
        let (egress, ingress) = set.evaluate_flow(&flow, &labels);
        for verdict in [&egress, &ingress] {
            check_equal(compiled, &datapath, verdict, &flow)?;
        }
    }
    Ok(())
}

/// `compiled` with its tables and identity numbers, but nothing its policy entries could be
/// taken over from.
fn nothing_kept(compiled: &Compiled) -> Compiled {
    let mut kept = compiled.clone();
    kept.policy_basis.numbering = Arc::default();
    kept.policy_basis.zones.clear();
    kept
}

const CONFIGS: u32 = 200;
const FLOWS_PER_CONFIG: usize = 250;

proptest! {
    #![proptest_config(ProptestConfig {
        cases: CONFIGS,
        max_shrink_iters: 200,
        ..ProptestConfig::default()
    })]

    /// 200 configurations x 250 flows x both directions = 100,000 verdicts per run.
    #[test]
    fn emulated_lookup_equals_the_evaluator(
        zone_policies in policies(false),
        endpoints in endpoints(),
        flows in prop::collection::vec(flow(), FLOWS_PER_CONFIG),
    ) {
        let set = PolicySet::new(&zone_policies).expect("generated policies are valid");
        let compiled = compile(&set, EXTERNAL, &endpoints, &Limits::default())
            .expect("compiles");
        prop_assert!(compiled.approximations.is_empty());
        agrees_with_the_evaluator(&set, &compiled, &endpoints, &flows)
            .map_err(TestCaseError::fail)?;
    }

    /// Prefixes moved into named address sets compile to the verdicts they had written out.
    /// Every object numbers its sets from `s0`, so objects share names for other prefixes.
    #[test]
    fn named_address_sets_give_the_verdicts_of_prefixes_written_out(
        zone_policies in policies(false),
        endpoints in endpoints(),
        flows in prop::collection::vec(flow(), 50),
    ) {
        let written_out = PolicySet::new(&zone_policies).expect("generated policies are valid");
        let mut named_policies = zone_policies.clone();
        for policy in &mut named_policies {
            name_address_sets(&mut policy.spec);
        }
        let named = PolicySet::new(&named_policies).expect("named sets are valid");
        let compiled = compile(&named, EXTERNAL, &endpoints, &Limits::default())
            .expect("compiles");
        agrees_with_the_evaluator(&written_out, &compiled, &endpoints, &flows)
            .map_err(TestCaseError::fail)?;
    }

    /// Identity numbers kept from the tables of other endpoints ([`compile_after`]) give the
    /// same verdicts as a fresh compile, and every class both compiles have keeps its number.
    #[test]
    fn numbers_kept_from_a_previous_compile_give_the_same_verdicts(
        zone_policies in policies(false),
        before in endpoints(),
        after in endpoints(),
        flows in prop::collection::vec(flow(), 100),
    ) {
        let set = PolicySet::new(&zone_policies).expect("generated policies are valid");
        let previous = compile(&set, EXTERNAL, &before, &Limits::default()).expect("compiles");
        let compiled = compile_after(Some(&previous), &set, EXTERNAL, &after, &Limits::default())
            .expect("compiles");
        for identity in &compiled.identities {
            if let Some(old) = previous
                .identities
                .iter()
                .find(|o| o.zone == identity.zone && o.member_of == identity.member_of)
            {
                prop_assert_eq!(old.id, identity.id, "{:?} was renumbered", identity);
            }
        }
        let mut ids: Vec<u32> = compiled.identities.iter().map(|i| i.id).collect();
        ids.dedup();
        prop_assert_eq!(ids.len(), compiled.identities.len(), "identity numbers are unique and sorted");
        agrees_with_the_evaluator(&set, &compiled, &after, &flows).map_err(TestCaseError::fail)?;
    }

    /// A set built over the previous one's compiled objects (the Kubernetes reconcile) gives
    /// the tables a set compiled from scratch gives, after one object's rules changed.
    #[test]
    fn reusing_compiled_objects_gives_the_tables_of_a_fresh_set(
        zone_policies in policies(false),
        replacement in policies(false),
        endpoints in endpoints(),
        which in any::<prop::sample::Index>(),
        flows in prop::collection::vec(flow(), 50),
    ) {
        let first = compiled_objects(&zone_policies);
        let previous = set_of(&first);
        let k = which.index(first.len());
        let mut values = zone_policies.clone();
        values[k].spec.egress = replacement[0].spec.egress.clone();
        values[k].spec.ingress = replacement[0].spec.ingress.clone();
        let mut second = first.clone();
        second[k] = compiled_objects(&values[k..=k]).remove(0);
        let shared = set_of(&second);
        let reused = shared
            .policies()
            .filter(|p| previous.policies().any(|q| std::ptr::eq(*p, q)))
            .count();
        prop_assert_eq!(reused, second.len() - 1, "every unchanged object is reused");
        let fresh = PolicySet::new(&values).expect("valid");
        let a = compile(&shared, EXTERNAL, &endpoints, &Limits::default()).expect("compiles");
        let b = compile(&fresh, EXTERNAL, &endpoints, &Limits::default()).expect("compiles");
        prop_assert_eq!(a, b);
        // Compiled after the tables of the set before the change (kept identity numbers, the
        // external tree reused when its predicates are equal): the evaluator's verdicts.
        let before = compile(&previous, EXTERNAL, &endpoints, &Limits::default()).expect("compiles");
        let after = compile_after(Some(&before), &shared, EXTERNAL, &endpoints, &Limits::default())
            .expect("compiles");
        agrees_with_the_evaluator(&shared, &after, &endpoints, &flows)
            .map_err(TestCaseError::fail)?;
        // The policy entries of the zones the change left alone were taken over: they are
        // exactly the ones compiled again with nothing to take over.
        let again = compile_after(Some(&nothing_kept(&before)), &shared, EXTERNAL, &endpoints, &Limits::default())
            .expect("compiles");
        prop_assert!(after == again, "entries taken over differ from the ones compiled again");
    }

    /// With source ports in services the kernel cannot match exactly: it never allows what
    /// the evaluator denies (or the compiler refuses the policy).
    #[test]
    fn source_port_approximation_never_widens(
        zone_policies in policies(true),
        endpoints in endpoints(),
        flows in prop::collection::vec(flow(), 100),
    ) {
        let set = PolicySet::new(&zone_policies).expect("generated policies are valid");
        let compiled = match compile(&set, EXTERNAL, &endpoints, &Limits::default()) {
            Ok(compiled) => compiled,
            Err(CompileError::Unrepresentable { problem, .. }) => {
                prop_assert!(problem.contains("Pass"), "{problem}");
                return Ok(());
            }
            Err(other) => return Err(TestCaseError::fail(other.to_string())),
        };
        let datapath = Datapath::new(&compiled).expect("entries load");
        let labels = labels_of(&endpoints);
        for test_flow in &flows {
            let flow = evaluator_flow(&endpoints, test_flow);
            for direction in [Direction::Egress, Direction::Ingress] {
                let verdict = set.evaluate(&flow, direction, &labels);
                let found = datapath
                    .lookup(direction, flow.source, flow.destination, flow.protocol, flow.destination_port)
                    .expect("lookups never miss");
                if found.value.action == abi::ACTION_ALLOW {
                    prop_assert!(verdict.decision.is_allow(), "{direction:?} {flow:?}: compiled allows, evaluator {verdict:?}");
                }
                if compiled.approximations.is_empty() {
                    check_equal(&compiled, &datapath, &verdict, &flow).map_err(TestCaseError::fail)?;
                }
            }
        }
    }

    #[test]
    fn port_prefixes_cover_the_range_exactly(a in any::<u16>(), b in any::<u16>()) {
        let (first, last) = (a.min(b), a.max(b));
        let mut next = u32::from(first);
        for (start, bits) in port_prefixes(first, last) {
            let size = 1u32 << (16 - bits);
            prop_assert_eq!(u32::from(start), next);
            prop_assert_eq!(u32::from(start) % size, 0, "unaligned");
            next += size;
        }
        prop_assert_eq!(next, u32::from(last) + 1);
    }
}

fn allow_rule(
    action: RuleAction,
    peers: &[&str],
    destination: AddressMatch,
    service: ServiceMatch,
) -> ZoneRule {
    ZoneRule {
        action,
        reset: None,
        rule_type: RuleType::Universal,
        peer_zones: peers.iter().map(|s| s.to_string()).collect(),
        source: AddressMatch {
            any: true,
            ..AddressMatch::default()
        },
        destination,
        service,
        log: Logging {
            start: false,
            end: true,
        },
        disabled: false,
        fidelity: Fidelity::Exact,
        notes: Vec::new(),
        provenance: None,
    }
}

fn zone_policy(
    name: &str,
    zone: &str,
    egress: Vec<ZoneRule>,
    ingress: Vec<ZoneRule>,
) -> ZonePolicy {
    ZonePolicy::new(
        name,
        ZonePolicySpec {
            tier: Tier::Firewall,
            order: 1,
            mode: Mode::Enforce,
            zone: zone.to_string(),
            part: None,
            provenance: None,
            egress,
            ingress,
            address_sets: BTreeMap::new(),
        },
    )
}

fn tcp(port: u16, end_port: Option<u16>) -> ServiceMatch {
    ServiceMatch {
        any: false,
        entries: vec![ServiceEntry {
            protocol: Protocol::Tcp,
            ports: vec![PortRange { port, end_port }],
            source_ports: None,
        }],
    }
}

fn prefixes(list: &[&str]) -> AddressMatch {
    AddressMatch {
        prefixes: list.iter().map(|&s| s.into()).collect(),
        ..AddressMatch::default()
    }
}

fn anywhere() -> AddressMatch {
    AddressMatch {
        any: true,
        ..AddressMatch::default()
    }
}

fn endpoint(name: &str, zone: &str, ips: &[&str]) -> Endpoint {
    Endpoint {
        name: name.to_string(),
        namespace: None,
        zone: zone.to_string(),
        ips: ips.iter().map(|s| ip(s)).collect(),
        labels: BTreeMap::new(),
        interface: None,
    }
}

/// trust may reach the database subnet 192.0.2.0/24 on tcp/5432, except 192.0.2.66, and
/// nothing else outside.
fn database_example() -> (PolicySet, Vec<Endpoint>) {
    let trust = zone_policy(
        "trust",
        "trust",
        vec![
            allow_rule(
                RuleAction::Deny,
                &["untrust"],
                prefixes(&["192.0.2.66/32"]),
                ServiceMatch {
                    any: true,
                    entries: Vec::new(),
                },
            ),
            allow_rule(
                RuleAction::Allow,
                &["untrust"],
                prefixes(&["192.0.2.0/24"]),
                tcp(5432, None),
            ),
            allow_rule(
                RuleAction::Allow,
                &["trust"],
                anywhere(),
                ServiceMatch {
                    any: true,
                    entries: Vec::new(),
                },
            ),
        ],
        vec![allow_rule(
            RuleAction::Allow,
            &["trust"],
            anywhere(),
            ServiceMatch {
                any: true,
                entries: Vec::new(),
            },
        )],
    );
    let untrust = zone_policy(
        "untrust",
        "untrust",
        Vec::new(),
        vec![allow_rule(
            RuleAction::Allow,
            &["any"],
            anywhere(),
            ServiceMatch {
                any: true,
                entries: Vec::new(),
            },
        )],
    );
    let set = PolicySet::new(&[trust, untrust]).expect("valid");
    let endpoints = vec![endpoint("app", "trust", &["10.244.0.5", "fd00:244::5"])];
    (set, endpoints)
}

fn action_of(
    datapath: &Datapath,
    direction: Direction,
    source: &str,
    destination: &str,
    protocol: u8,
    port: Option<u16>,
) -> u8 {
    datapath
        .lookup(direction, ip(source), ip(destination), protocol, port)
        .expect("lookup")
        .value
        .action
}

#[test]
fn nested_prefixes_get_the_identity_of_their_longest_match() {
    let (set, endpoints) = database_example();
    let compiled = compile(&set, EXTERNAL, &endpoints, &Limits::default()).expect("compiles");
    let datapath = Datapath::new(&compiled).expect("loads");
    let id = |a: &str| {
        datapath
            .identity(ip(a))
            .expect("every address has an identity")
            .identity
    };
    // The /32 inside the /24 inside the rest of the world: three classes of untrust.
    let (inside, hole, outside) = (id("192.0.2.1"), id("192.0.2.66"), id("198.51.100.1"));
    assert_ne!(inside, hole);
    assert_ne!(inside, outside);
    assert_ne!(hole, outside);
    assert_eq!(id("192.0.2.255"), inside);
    assert_eq!(id("192.0.3.0"), outside);
    assert_eq!(
        id("2001:db8::1"),
        outside,
        "IPv6 outside every prefix: the external root"
    );
    assert_ne!(id("10.244.0.5"), outside, "a workload has its own identity");
    assert_eq!(
        id("10.244.0.5"),
        id("fd00:244::5"),
        "same zone and class in both families"
    );

    let egress = Direction::Egress;
    assert_eq!(
        action_of(&datapath, egress, "10.244.0.5", "192.0.2.1", 6, Some(5432)),
        abi::ACTION_ALLOW
    );
    assert_eq!(
        action_of(&datapath, egress, "10.244.0.5", "192.0.2.1", 6, Some(5433)),
        abi::ACTION_DENY
    );
    assert_eq!(
        action_of(&datapath, egress, "10.244.0.5", "192.0.2.66", 6, Some(5432)),
        abi::ACTION_DENY
    );
    assert_eq!(
        action_of(&datapath, egress, "10.244.0.5", "192.0.2.1", 17, Some(5432)),
        abi::ACTION_DENY
    );
    assert_eq!(
        action_of(&datapath, egress, "10.244.0.5", "192.0.2.1", 1, None),
        abi::ACTION_DENY
    );
}

#[test]
fn a_non_first_fragment_never_matches_a_port_rule() {
    let (set, endpoints) = database_example();
    let compiled = compile(&set, EXTERNAL, &endpoints, &Limits::default()).expect("compiles");
    let datapath = Datapath::new(&compiled).expect("loads");
    // The first fragment carries the port and is allowed; later fragments have no port.
    assert_eq!(
        action_of(
            &datapath,
            Direction::Egress,
            "10.244.0.5",
            "192.0.2.1",
            6,
            Some(5432)
        ),
        abi::ACTION_ALLOW
    );
    assert_eq!(
        action_of(
            &datapath,
            Direction::Egress,
            "10.244.0.5",
            "192.0.2.1",
            6,
            None
        ),
        abi::ACTION_DENY
    );
    // A rule without a service restriction still matches fragments.
    assert_eq!(
        action_of(
            &datapath,
            Direction::Ingress,
            "10.244.0.5",
            "192.0.2.1",
            6,
            None
        ),
        abi::ACTION_ALLOW
    );
    // No entry names the protocol the program uses for port-less lookups.
    assert!(
        compiled
            .policy
            .iter()
            .all(|(k, _)| k.protocol != abi::PROTOCOL_NO_PORT)
    );
}

#[test]
fn port_ranges_become_port_prefixes_and_first_match_is_resolved() {
    // Deny 8000-8080 first, then allow 1024-65535: only the allow remains outside the range.
    let policy = zone_policy(
        "trust",
        "any",
        vec![
            allow_rule(
                RuleAction::Deny,
                &["any"],
                anywhere(),
                tcp(8000, Some(8080)),
            ),
            allow_rule(
                RuleAction::Allow,
                &["any"],
                anywhere(),
                tcp(1024, Some(65535)),
            ),
        ],
        vec![allow_rule(
            RuleAction::Allow,
            &["any"],
            anywhere(),
            ServiceMatch {
                any: true,
                entries: Vec::new(),
            },
        )],
    );
    let set = PolicySet::new(&[policy]).expect("valid");
    let endpoints = vec![endpoint("a", "trust", &["10.0.0.1"])];
    let compiled = compile(&set, EXTERNAL, &endpoints, &Limits::default()).expect("compiles");
    let datapath = Datapath::new(&compiled).expect("loads");
    for (port, want) in [
        (1023, abi::ACTION_DENY),
        (1024, abi::ACTION_ALLOW),
        (7999, abi::ACTION_ALLOW),
        (8000, abi::ACTION_DENY),
        (8080, abi::ACTION_DENY),
        (8081, abi::ACTION_ALLOW),
        (65535, abi::ACTION_ALLOW),
    ] {
        assert_eq!(
            action_of(
                &datapath,
                Direction::Egress,
                "10.0.0.1",
                "8.8.8.8",
                6,
                Some(port)
            ),
            want,
            "port {port}"
        );
    }
    // 8000-8080 is 8000/11 .. 8064/12, 8080/16 and similar: a handful of prefixes, not 81 entries.
    let port_entries = compiled
        .policy
        .iter()
        .filter(|(k, _)| k.prefix_len > abi::POLICY_PREFIX_PROTOCOL)
        .count();
    assert!(port_entries < 2 * 20, "{port_entries} port entries");
}

#[test]
fn capacity_is_an_error_not_a_truncated_table() {
    let (set, endpoints) = database_example();
    let limits = Limits {
        max_policy_entries: 2,
        ..Limits::default()
    };
    let error = compile(&set, EXTERNAL, &endpoints, &limits).expect_err("too small");
    assert!(
        matches!(
            error,
            CompileError::Capacity {
                what: "policy entries",
                ..
            }
        ),
        "{error}"
    );
    assert!(error.to_string().contains("raise the capacity"), "{error}");
    let limits = Limits {
        max_identities: 1,
        ..Limits::default()
    };
    assert!(matches!(
        compile(&set, EXTERNAL, &endpoints, &limits),
        Err(CompileError::Capacity {
            what: "identities",
            ..
        })
    ));
}

#[test]
fn a_pass_with_source_ports_is_refused() {
    let mut service = tcp(80, None);
    service.entries[0].source_ports = Some(vec![PortRange {
        port: 1024,
        end_port: Some(65535),
    }]);
    let mut pass = allow_rule(RuleAction::Pass, &["any"], anywhere(), service);
    pass.provenance = Some(RuleProvenance {
        rule: "web-from-high-ports".into(),
        uuid: None,
        device_group: "dg".into(),
        rulebase: Rulebase::Pre,
        position: 1,
        line: None,
    });
    let set =
        PolicySet::new(&[zone_policy("trust", "trust", vec![pass], Vec::new())]).expect("valid");
    let error = compile(
        &set,
        EXTERNAL,
        &[endpoint("a", "trust", &["10.0.0.1"])],
        &Limits::default(),
    )
    .expect_err("refused");
    let text = error.to_string();
    assert!(
        text.contains("ZonePolicy 'trust', egress rule 1 ('web-from-high-ports')"),
        "{text}"
    );
}

#[test]
fn compiling_twice_gives_identical_tables() {
    let (set, endpoints) = database_example();
    let first = compile(&set, EXTERNAL, &endpoints, &Limits::default()).expect("compiles");
    let second = compile(&set, EXTERNAL, &endpoints, &Limits::default()).expect("compiles");
    assert_eq!(first, second);
    assert!(
        first
            .identities
            .iter()
            .enumerate()
            .all(|(i, identity)| identity.id as usize == i + 1)
    );
}

#[test]
fn a_workload_that_changes_zone_changes_only_its_own_entries() {
    let (set, mut endpoints) = realistic();
    let first = compile(&set, EXTERNAL, &endpoints, &Limits::default()).expect("compiles");
    // A workload with a label set of its own moves: its class leaves one zone and appears in
    // another, which renumbers every later identity in a fresh compile.
    let moved = endpoints.len() - 1;
    endpoints[moved].zone = "trust".to_string();
    endpoints[moved]
        .labels
        .insert("tier".into(), "only-one".into());
    let fresh = compile(&set, EXTERNAL, &endpoints, &Limits::default()).expect("compiles");
    let kept = compile_after(Some(&first), &set, EXTERNAL, &endpoints, &Limits::default())
        .expect("compiles");
    let changed = |a: &Compiled, b: &Compiled| {
        let old: BTreeMap<_, _> = a
            .identity_v4
            .iter()
            .map(|(k, v)| ((k.prefix_len, k.addr_be), *v))
            .collect();
        b.identity_v4
            .iter()
            .filter(|(k, v)| old.get(&(k.prefix_len, k.addr_be)) != Some(v))
            .count()
    };
    assert!(
        changed(&first, &kept) <= 2,
        "keeping numbers: {} IPv4 identity entries changed",
        changed(&first, &kept)
    );
    assert!(
        changed(&first, &fresh) > 100,
        "the case must renumber without kept numbers (changed {})",
        changed(&first, &fresh)
    );
}

#[test]
fn a_workload_leaving_a_class_that_stays_reuses_the_policy_entries() {
    let (set, mut endpoints) = realistic();
    let first = compile(&set, EXTERNAL, &endpoints, &Limits::default()).expect("compiles");
    // Every label set has many workloads: one fewer changes no class.
    endpoints.pop();
    let second = compile_after(Some(&first), &set, EXTERNAL, &endpoints, &Limits::default())
        .expect("compiles");
    assert!(
        Arc::ptr_eq(&first.policy, &second.policy),
        "policy entries reused"
    );
    assert!(
        Arc::ptr_eq(&first.rules, &second.rules),
        "rule numbering reused"
    );
    // And the reused entries still give the evaluator's verdicts.
    let addresses: Vec<IpAddr> = endpoints
        .iter()
        .step_by(37)
        .flat_map(|e| e.ips.clone())
        .chain([ip("100.0.0.1"), ip("8.8.8.8")])
        .collect();
    let mut flows = Vec::new();
    for &source in &addresses {
        for &destination in &addresses {
            for (protocol, port) in [(6, 443), (17, 53), (6, 22)] {
                flows.push(TestFlow {
                    source,
                    destination,
                    protocol,
                    source_port: 40_000,
                    destination_port: port,
                    fragment: false,
                });
            }
        }
    }
    agrees_with_the_evaluator(&set, &second, &endpoints, &flows).expect("same verdicts");
    // A new rule set is compiled again, even with the same identities.
    let fresh_set = realistic().0;
    let third = compile_after(
        Some(&second),
        &fresh_set,
        EXTERNAL,
        &endpoints,
        &Limits::default(),
    )
    .expect("compiles");
    assert!(!Arc::ptr_eq(&second.policy, &third.policy));
    assert!(!Arc::ptr_eq(&second.rules, &third.rules));
    assert_eq!(second.policy, third.policy);
    assert_eq!(second.rules, third.rules);
}

/// A configuration shaped like a mid-size cluster: 4 zones, 400 workloads in 8 label sets,
/// 1,000 external prefixes in 10 address groups, 50 rules per zone and direction.
fn realistic() -> (PolicySet, Vec<Endpoint>) {
    let zones = ["trust", "dmz", "restricted", "untrust"];
    let groups: Vec<Vec<Prefix>> = (0..10)
        .map(|g| {
            (0..100)
                .map(|i| format!("{}.{}.{}.0/24", 100 + g, i / 10, (i % 10) * 16).into())
                .collect()
        })
        .collect();
    let mut policies = Vec::new();
    for (z, zone) in zones.iter().enumerate() {
        let mut egress = Vec::new();
        let mut ingress = Vec::new();
        for r in 0..50usize {
            let peer = zones[(z + r) % zones.len()];
            let destination = if r % 3 == 0 {
                AddressMatch {
                    prefixes: groups[r % groups.len()].clone(),
                    ..AddressMatch::default()
                }
            } else {
                AddressMatch {
                    selectors: vec![LabelFilter {
                        group: format!("tier{}", r % 8),
                        filter: format!("'tier=t{}'", r % 8),
                    }],
                    ..AddressMatch::default()
                }
            };
            let action = if r % 7 == 0 {
                RuleAction::Deny
            } else {
                RuleAction::Allow
            };
            let service = tcp(
                1000 + (r as u16) * 37,
                Some(1000 + (r as u16) * 37 + (r as u16 % 4) * 10),
            );
            egress.push(allow_rule(
                action,
                &[peer],
                destination.clone(),
                service.clone(),
            ));
            ingress.push(allow_rule(action, &[peer], anywhere(), service));
        }
        policies.push(zone_policy(zone, zone, egress, ingress));
    }
    let set = PolicySet::new(&policies).expect("valid");
    let endpoints = (0..400)
        .map(|i| {
            let mut e = endpoint(
                &format!("pod-{i}"),
                zones[i % 3],
                &[
                    &format!("10.244.{}.{}", i / 200, i % 200 + 1),
                    &format!("fd00:244::{:x}", i + 1),
                ],
            );
            e.labels.insert("tier".into(), format!("t{}", i % 8));
            e
        })
        .collect();
    (set, endpoints)
}

/// Prints the entry counts the benchmark sizes its maps with (`cargo test -p zonewall
/// size_figures -- --nocapture`).
#[test]
fn size_figures() {
    let (set, endpoints) = realistic();
    let compiled = compile(&set, EXTERNAL, &endpoints, &Limits::default()).expect("compiles");
    let sizes = compiled.sizes();
    println!(
        "realistic configuration (4 zones, 400 workloads x 2 addresses, 1,000 external prefixes, 400 rules): {sizes:?}"
    );
    assert_eq!(sizes.zones, 4);
    assert!(sizes.identity_entries_v4 >= 400 + 1000);
    assert_eq!(sizes.rules, 400 + 3);
    let datapath = Datapath::new(&compiled).expect("loads");
    assert!(datapath.identity(ip("10.244.0.1")).is_some());
}

/// The fixture translation changed in each object in turn, in the two ways a zone's entries
/// could be taken over wrongly: a rule's action flips (same rules count, another object), and
/// a rule is added (every later rule id moves, later objects unchanged). Each time the
/// entries after the change are exactly the ones compiled with nothing taken over, and
/// something was taken over.
#[test]
fn zones_a_change_leaves_alone_keep_their_entries_and_nothing_else_does() {
    let inventory = crate::inventory::Inventory::load_file(std::path::Path::new(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/inventory.yaml"
    )))
    .expect("inventory");
    let (external, endpoints) = (&inventory.external_zone, &inventory.endpoints);
    let objects = crate::translate::fixture_translation(false).policies;
    let first = compiled_objects(&objects);
    let set = set_of(&first);
    let before =
        compile_after(None, &set, external, endpoints, &Limits::default()).expect("compiles");
    let flip = |policy: &mut ZonePolicy| {
        let rule = policy.spec.egress.first_mut()?;
        rule.action = match rule.action {
            RuleAction::Allow => RuleAction::Deny,
            _ => RuleAction::Allow,
        };
        Some(())
    };
    let add = |policy: &mut ZonePolicy| {
        let copy = policy.spec.egress.first()?.clone();
        policy.spec.egress.push(copy);
        Some(())
    };
    let mut took_over = 0;
    for change in [&flip as &dyn Fn(&mut ZonePolicy) -> Option<()>, &add] {
        for k in 0..first.len() {
            let mut edited = objects[k].clone();
            if change(&mut edited).is_none() {
                continue;
            }
            let mut second = first.clone();
            second[k] = compiled_objects(&[edited]).remove(0);
            let shared = set_of(&second);
            let after = compile_after(
                Some(&before),
                &shared,
                external,
                endpoints,
                &Limits::default(),
            )
            .expect("compiles");
            let again = compile_after(
                Some(&nothing_kept(&before)),
                &shared,
                external,
                endpoints,
                &Limits::default(),
            )
            .expect("compiles");
            assert!(after == again, "object {k}: entries taken over differ");
            took_over += after
                .policy_basis
                .zones
                .iter()
                .filter(|(zone, basis)| before.policy_basis.zones.get(*zone) == Some(basis))
                .count();
        }
    }
    assert!(took_over > 0, "some zone kept its entries");
}
