//! A generated firewall-tier policy of a chosen size, shaped like what `zonewall translate`
//! makes of a real rulebase: four workload zones and the external zone, 240 workloads (24
//! applications of 10 replicas, dual stack, labelled), address groups of external prefixes
//! (four large blocklist feeds and 64 partner/SaaS groups), and firewall rules with port
//! ranges, each mirrored as the source zone's egress rule and the destination zone's ingress
//! rule, as the translator does.
//!
//! The first three rules are fixed, so the benchmark's packets have known verdicts at every
//! size: workloads may not reach the blocklist feeds (Deny), the feeds may not reach
//! workloads (Drop), and `app-0` may reach `app-1` on tcp/8080 (Allow).

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::sync::Arc;

use zonewall::inventory::Endpoint;
use zonewall::policy::resource::{
    AddressMatch, AddressSetSpec, LabelFilter, Logging, Mode, PortRange, Prefix, Protocol,
    RuleAction, RuleProvenance, RuleType, Rulebase, ServiceEntry, ServiceMatch, Tier, ZonePolicy,
    ZonePolicySpec, ZoneRule,
};
use zonewall::translate;

pub const EXTERNAL_ZONE: &str = "untrust";
pub const WORKLOAD_ZONES: [&str; 4] = ["dmz", "trusted", "restricted", "mgmt"];
const APPLICATIONS: usize = 24;
const REPLICAS: usize = 10;
const FEEDS: usize = 4;
const PARTNER_GROUPS: usize = 64;
const TIERS: [&str; 3] = ["web", "api", "db"];

/// Size of one generated policy.
#[derive(Clone, Copy, Debug)]
pub struct Scale {
    /// Firewall rules (each becomes one egress and one ingress ZonePolicy rule).
    pub rules: usize,
    /// External address prefixes over all address groups.
    pub prefixes: usize,
}

/// The policy, the workloads, and addresses with known verdicts.
pub struct Generated {
    pub policies: Vec<ZonePolicy>,
    pub endpoints: Vec<Endpoint>,
    /// `app-0`, replica 0 (zone dmz): the client of both probe flows.
    pub client: Ipv4Addr,
    /// `app-1`, replica 0 (zone trusted): `client` may open tcp/`ALLOWED_PORT` to it.
    pub server: Ipv4Addr,
    /// A /32 of a blocklist feed, in the middle of the prefix list.
    pub blocked: Ipv4Addr,
    /// Up to `BLOCKED_HOSTS` feed /32s spread over the whole prefix list.
    pub blocked_hosts: Vec<Ipv4Addr>,
    /// The firewall rules the policies were made of, in order (the dataplane benchmark
    /// renders them for iptables and nftables too).
    pub rules: Vec<FirewallRule>,
}

pub const ALLOWED_PORT: u16 = 8080;
/// How many feed hosts `Generated::blocked_hosts` holds at most.
const BLOCKED_HOSTS: usize = 4096;

/// Replicas per application.
pub const REPLICAS_PER_APP: usize = REPLICAS;

/// The address of replica `replica` of application `app` and its zone.
pub fn workload_v4(app: usize, replica: usize) -> Ipv4Addr {
    Ipv4Addr::new(10, 244, app as u8, 10 + replica as u8)
}

fn workload_v6(app: usize, replica: usize) -> Ipv6Addr {
    Ipv6Addr::new(0xfd00, 0x244, 0, app as u16, 0, 0, 0, 10 + replica as u16)
}

pub fn zone_of_app(app: usize) -> &'static str {
    WORKLOAD_ZONES[app % WORKLOAD_ZONES.len()]
}

/// External prefix number `i` (below 2^17), with no two overlapping and none covering a
/// workload: hosts in 100.64.0.0/10, /24 networks in 12.0.0.0/7, /29 networks in
/// 172.16.0.0/12 and /64s of 2001:db8::/32.
fn prefix(i: usize) -> String {
    // Spread over each range by an odd multiplier (a bijection modulo a power of two), so
    // neighbours rarely share a class and the compiler can seldom merge them into a shorter
    // prefix: the tables hold about as many entries as the policy has prefixes.
    let spread = |bits: u32| ((i as u64 * 0x9e37_79b1) & ((1u64 << bits) - 1)) as u32;
    let v4 = |base: [u8; 4], bits: u32, shift: u32| {
        Ipv4Addr::from(u32::from(Ipv4Addr::from(base)) + (spread(bits) << shift))
    };
    match (i / 5) % 10 {
        0..=5 => format!("{}/32", v4([100, 64, 0, 0], 22, 0)),
        6 | 7 => format!("{}/24", v4([12, 0, 0, 0], 17, 8)),
        8 => format!("{}/29", v4([172, 16, 0, 0], 17, 3)),
        _ => {
            let n = spread(32);
            format!("2001:db8:{:x}:{:x}::/64", n >> 16, n & 0xffff)
        }
    }
}

/// Which group prefix `i` belongs to: four in five go to a blocklist feed.
enum Group {
    Feed(usize),
    Partner(usize),
}

fn group_of(i: usize) -> Group {
    if i % 5 < 4 {
        Group::Feed(i % FEEDS)
    } else {
        Group::Partner((i / 5) % PARTNER_GROUPS)
    }
}

fn selector(app: usize) -> AddressMatch {
    AddressMatch {
        selectors: vec![LabelFilter {
            group: format!("dag-app-{app}"),
            filter: format!("'app=app-{app}'"),
        }],
        ..AddressMatch::default()
    }
}

fn prefixes(list: Vec<String>) -> AddressMatch {
    AddressMatch {
        prefixes: list.into_iter().map(Prefix::from).collect(),
        ..AddressMatch::default()
    }
}

fn any_address() -> AddressMatch {
    AddressMatch {
        any: true,
        ..AddressMatch::default()
    }
}

fn tcp(port: u16, end_port: Option<u16>) -> ServiceMatch {
    service(Protocol::Tcp, port, end_port)
}

fn service(protocol: Protocol, port: u16, end_port: Option<u16>) -> ServiceMatch {
    ServiceMatch {
        any: false,
        entries: vec![ServiceEntry {
            protocol,
            ports: vec![PortRange { port, end_port }],
            source_ports: None,
        }],
    }
}

/// A firewall rule before it is split into the two zones' lists.
#[derive(Clone)]
pub struct FirewallRule {
    pub from: Vec<&'static str>,
    pub to: Vec<&'static str>,
    pub source: AddressMatch,
    pub destination: AddressMatch,
    pub service: ServiceMatch,
    pub action: RuleAction,
}

pub fn generate(scale: Scale) -> Generated {
    let mut feeds: Vec<Vec<String>> = vec![Vec::new(); FEEDS];
    let mut partners: Vec<Vec<String>> = vec![Vec::new(); PARTNER_GROUPS];
    for i in 0..scale.prefixes {
        match group_of(i) {
            Group::Feed(f) => feeds[f].push(prefix(i)),
            Group::Partner(g) => partners[g].push(prefix(i)),
        }
    }
    let feed_host = |i: usize| matches!(group_of(i), Group::Feed(_)) && (i / 5) % 10 <= 5;
    let host = |i: usize| -> Ipv4Addr {
        prefix(i)
            .trim_end_matches("/32")
            .parse()
            .expect("feed hosts are IPv4 /32 prefixes")
    };
    // A feed host from the middle of the list rather than the first one generated.
    let blocked = host(
        (scale.prefixes / 2..scale.prefixes)
            .find(|&i| feed_host(i))
            .expect("the prefix list has feed hosts"),
    );
    let hosts: Vec<usize> = (0..scale.prefixes).filter(|&i| feed_host(i)).collect();
    let blocked_hosts = hosts
        .iter()
        .step_by(hosts.len().div_ceil(BLOCKED_HOSTS).max(1))
        .map(|&i| host(i))
        .collect();

    let all_feeds: Vec<String> = feeds.concat();
    let mut rules = vec![
        FirewallRule {
            from: WORKLOAD_ZONES.to_vec(),
            to: vec![EXTERNAL_ZONE],
            source: any_address(),
            destination: prefixes(all_feeds.clone()),
            service: ServiceMatch {
                any: true,
                entries: Vec::new(),
            },
            action: RuleAction::Deny,
        },
        FirewallRule {
            from: vec![EXTERNAL_ZONE],
            to: WORKLOAD_ZONES.to_vec(),
            source: prefixes(all_feeds),
            destination: any_address(),
            service: ServiceMatch {
                any: true,
                entries: Vec::new(),
            },
            action: RuleAction::Drop,
        },
        FirewallRule {
            from: vec![zone_of_app(0)],
            to: vec![zone_of_app(1)],
            source: selector(0),
            destination: selector(1),
            service: tcp(ALLOWED_PORT, None),
            action: RuleAction::Allow,
        },
    ];
    // Two partner groups per rule. From 1,000 rules on every group is used; at 100 rules a
    // few are not, and their prefixes are not in the tables (the report shows the entries).
    let partner_pair = |k: usize| {
        let (a, b) = (k % PARTNER_GROUPS, (k * 5 + 1) % PARTNER_GROUPS);
        let mut list = partners[a].clone();
        if b != a {
            list.extend(partners[b].iter().cloned());
        }
        prefixes(list)
    };
    for k in 3..scale.rules.max(3) {
        let app = k % APPLICATIONS;
        let peer_app = (k / APPLICATIONS + app + 1) % APPLICATIONS;
        let port = 1024 + (k % 4000) as u16 * 10;
        let rule = match k % 10 {
            // Workloads out to partners and SaaS: HTTPS, a port range, DNS.
            0..=3 => FirewallRule {
                from: vec![zone_of_app(app)],
                to: vec![EXTERNAL_ZONE],
                source: selector(app),
                destination: partner_pair(k / 10 * 4 + k % 10),
                service: match k % 3 {
                    0 => tcp(443, None),
                    1 => tcp(port, Some(port + 9)),
                    _ => service(Protocol::Udp, 53, None),
                },
                action: if k % 17 == 0 {
                    RuleAction::Deny
                } else {
                    RuleAction::Allow
                },
            },
            // Partners in to published applications.
            4 | 5 => FirewallRule {
                from: vec![EXTERNAL_ZONE],
                to: vec![zone_of_app(app)],
                source: partner_pair(k / 10 * 2 + k % 10 - 4),
                destination: selector(app),
                service: if k % 2 == 0 {
                    tcp(8443, None)
                } else {
                    tcp(
                        30_000 + (k % 1000) as u16,
                        Some(30_000 + (k % 1000) as u16 + 99),
                    )
                },
                action: RuleAction::Allow,
            },
            // East-west between applications.
            6..=8 => FirewallRule {
                from: vec![zone_of_app(app)],
                to: vec![zone_of_app(peer_app)],
                source: selector(app),
                destination: selector(peer_app),
                service: if k % 4 == 0 {
                    tcp(port, Some(port + 99))
                } else {
                    tcp(5000 + (k % 500) as u16, None)
                },
                action: RuleAction::Allow,
            },
            // Explicit denies of the low ports between applications.
            _ => FirewallRule {
                from: vec![zone_of_app(app)],
                to: vec![zone_of_app(peer_app)],
                source: selector(app),
                destination: selector(peer_app),
                service: tcp(0, Some(1023)),
                action: if k % 20 == 9 {
                    RuleAction::Drop
                } else {
                    RuleAction::Deny
                },
            },
        };
        rules.push(rule);
    }
    rules.truncate(scale.rules.max(3));

    Generated {
        policies: zone_policies(&rules),
        endpoints: endpoints(),
        client: workload_v4(0, 0),
        server: workload_v4(1, 0),
        blocked,
        blocked_hosts,
        rules,
    }
}

/// `changed` as a watch delivers it to an agent that holds `live`: objects the change left
/// alone are the same shared objects, the others new.
pub fn as_watch_delivers(
    changed: Vec<ZonePolicy>,
    live: &[Arc<ZonePolicy>],
) -> Vec<Arc<ZonePolicy>> {
    changed
        .into_iter()
        .zip(live)
        .map(|(new, old)| {
            if new.metadata.name == old.metadata.name && new.spec == old.spec {
                Arc::clone(old)
            } else {
                Arc::new(new)
            }
        })
        .collect()
}

/// One ZonePolicy per zone: a rule goes to the egress list of every `from` zone and the
/// ingress list of every `to` zone, in firewall order. As the translator does, a column with
/// many prefixes names an address set, which each object that uses it carries once.
pub fn zone_policies(rules: &[FirewallRule]) -> Vec<ZonePolicy> {
    let mut lists: BTreeMap<&str, (Vec<ZoneRule>, Vec<ZoneRule>)> = BTreeMap::new();
    for zone in WORKLOAD_ZONES.iter().chain([&EXTERNAL_ZONE]) {
        lists.entry(zone).or_default();
    }
    let mut sets: BTreeMap<String, AddressSetSpec> = BTreeMap::new();
    let mut named = |column: &AddressMatch| {
        if column.prefixes.len() < translate::DEFAULT_ADDRESS_SETS_FROM {
            return column.clone();
        }
        let name = translate::address_set_name(&column.prefixes);
        sets.entry(name.clone()).or_insert_with(|| AddressSetSpec {
            prefixes: column.prefixes.clone(),
        });
        AddressMatch {
            any: column.any,
            negate: column.negate,
            prefixes: Vec::new(),
            sets: vec![name],
            wildcards: column.wildcards.clone(),
            fqdns: column.fqdns.clone(),
            selectors: column.selectors.clone(),
        }
    };
    for (position, rule) in rules.iter().enumerate() {
        let source = named(&rule.source);
        let destination = named(&rule.destination);
        let zone_rule = |peers: &[&str]| ZoneRule {
            action: rule.action,
            reset: None,
            rule_type: RuleType::Universal,
            peer_zones: peers.iter().map(|z| z.to_string()).collect(),
            source: source.clone(),
            destination: destination.clone(),
            service: rule.service.clone(),
            log: Logging {
                start: false,
                end: rule.action == RuleAction::Allow,
            },
            disabled: false,
            fidelity: Default::default(),
            notes: Vec::new(),
            provenance: Some(RuleProvenance {
                rule: format!("rule-{position}"),
                uuid: None,
                device_group: "bench".to_string(),
                rulebase: Rulebase::Pre,
                position: position as u32 + 1,
                line: None,
            }),
        };
        for zone in &rule.from {
            lists.entry(zone).or_default().0.push(zone_rule(&rule.to));
        }
        for zone in &rule.to {
            lists.entry(zone).or_default().1.push(zone_rule(&rule.from));
        }
    }
    lists
        .into_iter()
        .map(|(zone, (egress, ingress))| {
            let names: BTreeSet<&str> = egress
                .iter()
                .chain(&ingress)
                .flat_map(ZoneRule::address_sets)
                .collect();
            let address_sets = names
                .into_iter()
                .map(|name| (name.to_string(), sets[name].clone()))
                .collect();
            ZonePolicy::new(
                &format!("fw-{zone}"),
                ZonePolicySpec {
                    tier: Tier::Firewall,
                    order: 1,
                    mode: Mode::Enforce,
                    zone: zone.to_string(),
                    part: None,
                    provenance: None,
                    egress,
                    ingress,
                    address_sets,
                },
            )
        })
        .collect()
}

fn endpoints() -> Vec<Endpoint> {
    let mut out = Vec::with_capacity(APPLICATIONS * REPLICAS);
    for app in 0..APPLICATIONS {
        for replica in 0..REPLICAS {
            out.push(Endpoint {
                name: format!("app-{app}-{replica}"),
                namespace: Some("bench".to_string()),
                zone: zone_of_app(app).to_string(),
                ips: vec![
                    IpAddr::V4(workload_v4(app, replica)),
                    IpAddr::V6(workload_v6(app, replica)),
                ],
                labels: [
                    ("app".to_string(), format!("app-{app}")),
                    ("tier".to_string(), TIERS[app % TIERS.len()].to_string()),
                ]
                .into(),
                interface: None,
            });
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_are_the_requested_ones() {
        let generated = generate(Scale {
            rules: 100,
            prefixes: 1_000,
        });
        let rules = |list: fn(&ZonePolicySpec) -> usize| {
            generated
                .policies
                .iter()
                .map(|p| list(&p.spec))
                .sum::<usize>()
        };
        // The two feed rules name four zones on one side: three more rules on each side.
        assert_eq!(rules(|spec| spec.egress.len()), 103);
        assert_eq!(rules(|spec| spec.ingress.len()), 103);
        let dmz = &generated.policies[0].spec;
        let feed = &dmz.egress[0].destination;
        assert!(feed.prefixes.is_empty(), "the feeds are a named set");
        assert_eq!(
            dmz.address_sets[&feed.sets[0]].prefixes.len(),
            800,
            "four in five prefixes are feeds"
        );
        assert_eq!(generated.endpoints.len(), 240);
        let prefixes: std::collections::BTreeSet<String> = (0..100_000).map(prefix).collect();
        assert_eq!(prefixes.len(), 100_000, "no prefix is generated twice");
    }
}
