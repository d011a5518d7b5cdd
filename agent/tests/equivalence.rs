//! Proof of equivalence: random Panorama configurations, written as PAN-OS XML so the real
//! parser and resolver run, translated into ZonePolicies, written to YAML and read back; on
//! random flows the ZonePolicy verdict at egress (source zone) and at ingress (destination
//! zone) must equal the firewall reference verdict: same action, same deciding rule
//! (name, uuid, device group, rulebase, position), same logging flags.
//!
//! Generated: zones (with one the firewall never names, for the `any` object), address
//! objects (IPv4/IPv6 netmask, ranges, non-contiguous wildcards, tags), nested static groups
//! (cycles and unknown members included), dynamic groups with tag filters matched against
//! tagged objects and workload labels, services with source ports, service groups,
//! predefined services, application-default and named applications (fail-closed / widened
//! rules), negation, every rule type and action, disabled rules, default-rule overrides, and
//! a two-level device-group hierarchy with shared, parent and child pre/post rules. Some
//! translations use a tiny object size limit so zones are split into parts.
//!
//! Flows take addresses at, just inside and just outside the configured prefixes, so rules
//! actually match. `ZONEWALL_PROPTEST_SCALE=10` multiplies the number of configurations.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::sync::atomic::{AtomicUsize, Ordering};

use proptest::prelude::*;
use proptest::test_runner::{Config, TestCaseError, TestRunner};
use zonewall::firewall::panos::{self, ResolveOptions};
use zonewall::model::{Flow, LabelSource, Verdict};
use zonewall::policy::load::parse_documents;
use zonewall::policy::{Direction, PolicySet, PolicyVerdict, resource};
use zonewall::translate::{self, TranslateOptions};

const CONFIGS_PER_RUN: u32 = 200;
const FLOWS_PER_CONFIG: usize = 500;

const ZONES: [&str; 5] = ["trust", "dmz", "untrust", "Lab Net", "DMZ"];
/// A zone no rule names: only `any` rules and default rules decide it.
const UNNAMED_ZONE: &str = "guest";
const TAGS: [&str; 4] = ["web", "prod", "app=web", "env=dev"];
const FILTERS: [&str; 6] = [
    "'web'",
    "'web' and not 'prod'",
    "'app=web' or 'env=dev'",
    "('web' or 'app=web') and not 'env=dev'",
    "not 'prod'",
    "'app=db'",
];
const LABELS: [(&str, &str); 3] = [("app", "web"), ("env", "dev"), ("app", "db")];
const PORTS: [&str; 7] = ["22", "53", "80", "443", "8000-8080", "1000-2000", "0-1023"];
const ACTIONS: [&str; 6] = [
    "allow",
    "deny",
    "drop",
    "reset-client",
    "reset-server",
    "reset-both",
];

#[derive(Clone, Debug)]
enum AddressValue {
    V4Net(u8, u8, u8),
    V6Net(u16, u8),
    V4Range(u8, u8, u8),
    V6Range(u16, u16),
    V4Wildcard(u8, u8),
}

#[derive(Clone, Debug)]
struct Address {
    scope: usize,
    name: usize,
    value: AddressValue,
    tags: Vec<usize>,
}

#[derive(Clone, Debug)]
enum Group {
    Static(Vec<usize>),
    Dynamic(usize),
}

#[derive(Clone, Debug)]
struct Service {
    scope: usize,
    name: usize,
    udp: bool,
    ports: Vec<usize>,
    source_port: Option<usize>,
}

#[derive(Clone, Debug)]
struct RuleSpec {
    scope: usize,
    post: bool,
    rule_type: u8,
    from: Vec<usize>,
    to: Vec<usize>,
    source: Vec<usize>,
    destination: Vec<usize>,
    negate_source: bool,
    negate_destination: bool,
    service: u8,
    service_members: Vec<usize>,
    application: bool,
    action: usize,
    disabled: bool,
    log_start: u8,
    log_end: u8,
}

#[derive(Clone, Debug)]
struct DefaultOverride {
    scope: usize,
    intrazone: bool,
    action: Option<usize>,
    log_end: Option<bool>,
}

#[derive(Clone, Debug)]
struct Spec {
    zones: usize,
    addresses: Vec<Address>,
    groups: Vec<(usize, Group)>,
    services: Vec<Service>,
    service_groups: Vec<(usize, Vec<usize>)>,
    rules: Vec<RuleSpec>,
    overrides: Vec<DefaultOverride>,
    /// Workload labels: (address index, offset, label indexes).
    workloads: Vec<(usize, u8, Vec<usize>)>,
    split: bool,
    /// [`TranslateOptions::address_sets_from`].
    sets_from: usize,
}

fn address_strategy() -> impl Strategy<Value = Address> {
    let value = prop_oneof![
        (0u8..4, 0u8..4, 8u8..=32).prop_map(|(a, b, l)| AddressValue::V4Net(a, b, l)),
        (0u16..4, 32u8..=128).prop_map(|(a, l)| AddressValue::V6Net(a, l)),
        (0u8..4, any::<u8>(), any::<u8>()).prop_map(|(a, s, n)| AddressValue::V4Range(a, s, n)),
        (any::<u16>(), any::<u16>()).prop_map(|(s, n)| AddressValue::V6Range(s, n)),
        (0u8..4, any::<u8>()).prop_map(|(a, m)| AddressValue::V4Wildcard(a, m)),
    ];
    (
        0usize..3,
        0usize..6,
        value,
        prop::collection::vec(0usize..TAGS.len(), 0..3),
    )
        .prop_map(|(scope, name, value, tags)| Address {
            scope,
            name,
            value,
            tags,
        })
}

fn rule_strategy() -> impl Strategy<Value = RuleSpec> {
    let members = || prop::collection::vec(0usize..20, 0..3);
    (
        (0usize..3, any::<bool>(), 0u8..4),
        (
            prop::collection::vec(0usize..7, 0..3),
            prop::collection::vec(0usize..7, 0..3),
        ),
        (members(), members(), any::<bool>(), any::<bool>()),
        (
            0u8..6,
            prop::collection::vec(0usize..8, 1..3),
            any::<bool>(),
        ),
        (
            prop_oneof![3 => Just(0usize), 2 => 1usize..6],
            prop::bool::weighted(0.1),
            0u8..3,
            0u8..3,
        ),
    )
        .prop_map(
            |(
                (scope, post, rule_type),
                (from, to),
                (source, destination, negate_source, negate_destination),
                (service, service_members, application),
                (action, disabled, log_start, log_end),
            )| RuleSpec {
                negate_source: negate_source && source.len() % 2 == 1,
                negate_destination: negate_destination && destination.len() % 2 == 1,
                scope,
                post,
                rule_type,
                from,
                to,
                source,
                destination,
                service,
                service_members,
                application: application && service == 5,
                action,
                disabled,
                log_start,
                log_end,
            },
        )
}

fn spec_strategy() -> impl Strategy<Value = Spec> {
    (
        2usize..=5,
        prop::collection::vec(address_strategy(), 1..10),
        prop::collection::vec(
            (
                0usize..3,
                prop_oneof![
                    prop::collection::vec(0usize..10, 0..4).prop_map(Group::Static),
                    (0usize..FILTERS.len()).prop_map(Group::Dynamic),
                ],
            ),
            0..5,
        ),
        prop::collection::vec(
            (
                0usize..3,
                0usize..4,
                any::<bool>(),
                prop::collection::vec(0usize..PORTS.len(), 1..3),
                prop::option::weighted(0.3, 0usize..PORTS.len()),
            )
                .prop_map(|(scope, name, udp, ports, source_port)| Service {
                    scope,
                    name,
                    udp,
                    ports,
                    source_port,
                }),
            0..5,
        ),
        prop::collection::vec((0usize..3, prop::collection::vec(0usize..6, 0..3)), 0..3),
        prop::collection::vec(rule_strategy(), 1..16),
        prop::collection::vec(
            (
                0usize..3,
                any::<bool>(),
                prop::option::of(0usize..6),
                prop::option::of(any::<bool>()),
            )
                .prop_map(|(scope, intrazone, action, log_end)| DefaultOverride {
                    scope,
                    intrazone,
                    action,
                    log_end,
                }),
            0..3,
        ),
        prop::collection::vec(
            (
                0usize..16,
                any::<u8>(),
                prop::collection::vec(0usize..3, 0..3),
            ),
            0..4,
        ),
        (
            prop::bool::weighted(0.2),
            prop_oneof![
                Just(1),
                Just(2),
                Just(translate::DEFAULT_ADDRESS_SETS_FROM),
                Just(usize::MAX)
            ],
        ),
    )
        .prop_map(
            |(
                zones,
                addresses,
                groups,
                services,
                service_groups,
                rules,
                overrides,
                workloads,
                (split, sets_from),
            )| Spec {
                zones,
                addresses,
                groups,
                services,
                service_groups,
                rules,
                overrides,
                workloads,
                split,
                sets_from,
            },
        )
}

fn v4(a: u8, b: u8, c: u8, d: u8) -> Ipv4Addr {
    Ipv4Addr::new(10, a, b.wrapping_mul(7) % 4, c)
        .to_bits()
        .wrapping_add(u32::from(d))
        .into()
}

fn v6(a: u16, low: u16) -> Ipv6Addr {
    Ipv6Addr::new(0xfd00, a % 4, 0, 0, 0, 0, 0, low)
}

impl AddressValue {
    fn xml(&self) -> String {
        match *self {
            AddressValue::V4Net(a, b, len) => {
                format!("<ip-netmask>{}/{len}</ip-netmask>", v4(a, b, 0, 0))
            }
            AddressValue::V6Net(a, len) => format!("<ip-netmask>{}/{len}</ip-netmask>", v6(a, 0)),
            AddressValue::V4Range(a, start, count) => format!(
                "<ip-range>{}-{}</ip-range>",
                v4(a, 0, start, 0),
                v4(a, 0, start, count)
            ),
            AddressValue::V6Range(start, count) => format!(
                "<ip-range>{}-{}</ip-range>",
                v6(0, start),
                v6(0, start.saturating_add(count % 512))
            ),
            AddressValue::V4Wildcard(a, mask) => {
                format!("<ip-wildcard>{}/0.0.{mask}.0</ip-wildcard>", v4(a, 0, 5, 0))
            }
        }
    }

    /// Addresses at the edges of and inside the value.
    fn probes(&self, pick: u32) -> IpAddr {
        let edge = |base: u128, last: u128, v6: bool| -> IpAddr {
            let span = last.saturating_sub(base).max(1);
            let value = match pick % 6 {
                0 => base,
                1 => last,
                2 => base.wrapping_sub(1),
                3 => last.wrapping_add(1),
                _ => base + u128::from(pick / 6) % span,
            };
            if v6 {
                IpAddr::V6(Ipv6Addr::from(value))
            } else {
                IpAddr::V4(Ipv4Addr::from(value as u32))
            }
        };
        match *self {
            AddressValue::V4Net(a, b, len) => {
                let base = u128::from(
                    v4(a, b, 0, 0).to_bits()
                        & (u32::MAX.checked_shl(32 - u32::from(len)).unwrap_or(0)),
                );
                let size = 1u128 << (32 - u32::from(len));
                edge(base, base + size - 1, false)
            }
            AddressValue::V6Net(a, len) => {
                let base =
                    v6(a, 0).to_bits() & u128::MAX.checked_shl(128 - u32::from(len)).unwrap_or(0);
                let size_minus_one = if len == 0 {
                    u128::MAX
                } else {
                    (1u128 << (128 - u32::from(len))) - 1
                };
                edge(base, base + size_minus_one, true)
            }
            AddressValue::V4Range(a, start, count) => edge(
                u128::from(v4(a, 0, start, 0).to_bits()),
                u128::from(v4(a, 0, start, count).to_bits()),
                false,
            ),
            AddressValue::V6Range(start, count) => edge(
                v6(0, start).to_bits(),
                v6(0, start.saturating_add(count % 512)).to_bits(),
                true,
            ),
            AddressValue::V4Wildcard(a, mask) => {
                let base = v4(a, 0, 5, 0).to_bits() & !(u32::from(mask) << 8);
                let bits = (pick.rotate_left(7) & u32::from(mask)) << 8;
                let flip = if pick.is_multiple_of(5) { 1 } else { 0 };
                IpAddr::V4(Ipv4Addr::from((base | bits) ^ flip))
            }
        }
    }
}

fn members(tag: &str, names: &[String]) -> String {
    let mut out = format!("<{tag}>");
    for name in names {
        out.push_str(&format!("<member>{name}</member>"));
    }
    out.push_str(&format!("</{tag}>"));
    out
}

/// A rule's address member: objects, groups, literals and an unknown name.
fn address_member(index: usize) -> String {
    match index {
        0..=5 => format!("a{index}"),
        6..=10 => format!("g{}", index - 6),
        11 => "10.1.2.3".to_string(),
        12 => "10.0.0.0/24".to_string(),
        13 => "10.2.0.5-10.2.0.9".to_string(),
        14 => "fd00:1::/64".to_string(),
        15 => "nope".to_string(),
        _ => "any".to_string(),
    }
}

fn zone_member(spec: &Spec, index: usize) -> String {
    if index > spec.zones {
        "any".to_string()
    } else if index == spec.zones {
        // Names a zone the configuration does not define: the rule fails closed (allow)
        // or is widened (deny).
        "nowhere".to_string()
    } else {
        ZONES[index].to_string()
    }
}

fn scope_xml(spec: &Spec, scope: usize) -> String {
    let mut out = String::new();
    let mut seen = std::collections::BTreeSet::new();
    out.push_str("<address>");
    for address in spec.addresses.iter().filter(|a| a.scope == scope) {
        if !seen.insert(address.name) {
            continue;
        }
        let tags: Vec<String> = address.tags.iter().map(|t| TAGS[*t].to_string()).collect();
        out.push_str(&format!(
            "<entry name=\"a{}\">{}{}</entry>",
            address.name,
            address.value.xml(),
            if tags.is_empty() {
                String::new()
            } else {
                members("tag", &tags)
            }
        ));
    }
    out.push_str("</address><address-group>");
    for (index, (group_scope, group)) in spec.groups.iter().enumerate() {
        if *group_scope != scope {
            continue;
        }
        let body = match group {
            Group::Static(list) => {
                let names: Vec<String> = list
                    .iter()
                    .map(|m| {
                        if *m < 6 {
                            format!("a{m}")
                        } else {
                            format!("g{}", m - 6)
                        }
                    })
                    .collect();
                members("static", &names)
            }
            Group::Dynamic(filter) => format!(
                "<dynamic><filter>{}</filter></dynamic>",
                FILTERS[*filter].replace('\'', "&apos;")
            ),
        };
        out.push_str(&format!("<entry name=\"g{index}\">{body}</entry>"));
    }
    out.push_str("</address-group><service>");
    let mut seen = std::collections::BTreeSet::new();
    for service in spec.services.iter().filter(|s| s.scope == scope) {
        if !seen.insert(service.name) {
            continue;
        }
        let ports: Vec<&str> = service.ports.iter().map(|p| PORTS[*p]).collect();
        let source = service
            .source_port
            .map(|p| format!("<source-port>{}</source-port>", PORTS[p]))
            .unwrap_or_default();
        let protocol = if service.udp { "udp" } else { "tcp" };
        out.push_str(&format!(
            "<entry name=\"s{}\"><protocol><{protocol}><port>{}</port>{source}</{protocol}></protocol></entry>",
            service.name,
            ports.join(",")
        ));
    }
    out.push_str("</service><service-group>");
    for (index, (group_scope, list)) in spec.service_groups.iter().enumerate() {
        if *group_scope != scope {
            continue;
        }
        let names: Vec<String> = list
            .iter()
            .map(|m| {
                if *m < 4 {
                    format!("s{m}")
                } else {
                    format!("sg{}", m - 4)
                }
            })
            .collect();
        out.push_str(&format!(
            "<entry name=\"sg{index}\">{}</entry>",
            members("members", &names)
        ));
    }
    out.push_str("</service-group>");
    for post in [false, true] {
        out.push_str(if post {
            "<post-rulebase>"
        } else {
            "<pre-rulebase>"
        });
        out.push_str("<security><rules>");
        for (index, rule) in spec.rules.iter().enumerate() {
            if rule.scope != scope || rule.post != post {
                continue;
            }
            out.push_str(&rule_xml(spec, index, rule));
        }
        out.push_str("</rules></security>");
        if post {
            out.push_str("<default-security-rules><rules>");
            for o in spec.overrides.iter().filter(|o| o.scope == scope) {
                let name = if o.intrazone {
                    "intrazone-default"
                } else {
                    "interzone-default"
                };
                out.push_str(&format!("<entry name=\"{name}\">"));
                if let Some(action) = o.action {
                    out.push_str(&format!("<action>{}</action>", ACTIONS[action]));
                }
                if let Some(log) = o.log_end {
                    out.push_str(&format!(
                        "<log-end>{}</log-end>",
                        if log { "yes" } else { "no" }
                    ));
                }
                out.push_str("</entry>");
            }
            out.push_str("</rules></default-security-rules>");
        }
        out.push_str(if post {
            "</post-rulebase>"
        } else {
            "</pre-rulebase>"
        });
    }
    out
}

fn rule_xml(spec: &Spec, index: usize, rule: &RuleSpec) -> String {
    let zones = |list: &[usize]| -> Vec<String> {
        if list.is_empty() {
            vec!["any".to_string()]
        } else {
            list.iter().map(|z| zone_member(spec, *z)).collect()
        }
    };
    let addresses = |list: &[usize]| -> Vec<String> {
        if list.is_empty() {
            vec!["any".to_string()]
        } else {
            list.iter().map(|a| address_member(*a)).collect()
        }
    };
    let service: Vec<String> = match rule.service {
        0 | 1 => vec!["any".to_string()],
        2 => vec!["application-default".to_string()],
        3 => vec!["service-https".to_string(), "service-http".to_string()],
        _ => rule
            .service_members
            .iter()
            .map(|m| match m {
                0..=3 => format!("s{m}"),
                4..=6 => format!("sg{}", m - 4),
                _ => "unknown-service".to_string(),
            })
            .collect(),
    };
    let mut out = format!("<entry name=\"r{index}\" uuid=\"00000000-0000-4000-8000-{index:012}\">");
    match rule.rule_type {
        1 => out.push_str("<rule-type>universal</rule-type>"),
        2 => out.push_str("<rule-type>intrazone</rule-type>"),
        3 => out.push_str("<rule-type>interzone</rule-type>"),
        _ => {}
    }
    out.push_str(&members("from", &zones(&rule.from)));
    out.push_str(&members("to", &zones(&rule.to)));
    out.push_str(&members("source", &addresses(&rule.source)));
    out.push_str(&members("destination", &addresses(&rule.destination)));
    if rule.negate_source {
        out.push_str("<negate-source>yes</negate-source>");
    }
    if rule.negate_destination {
        out.push_str("<negate-destination>yes</negate-destination>");
    }
    out.push_str(&members("service", &service));
    let application = if rule.application { "ssl" } else { "any" };
    out.push_str(&members("application", &[application.to_string()]));
    out.push_str(&format!("<action>{}</action>", ACTIONS[rule.action]));
    if rule.disabled {
        out.push_str("<disabled>yes</disabled>");
    }
    for (field, value) in [("log-start", rule.log_start), ("log-end", rule.log_end)] {
        match value {
            1 => out.push_str(&format!("<{field}>yes</{field}>")),
            2 => out.push_str(&format!("<{field}>no</{field}>")),
            _ => {}
        }
    }
    out.push_str("</entry>");
    out
}

fn config_xml(spec: &Spec) -> String {
    let zones: String = ZONES[..spec.zones]
        .iter()
        .map(|z| format!("<entry name=\"{z}\"/>"))
        .collect();
    format!(
        "<config><shared>{shared}</shared><devices><entry name=\"localhost.localdomain\">\
         <template><entry name=\"t\"><config><devices><entry name=\"localhost.localdomain\"><vsys><entry name=\"vsys1\"><zone>{zones}</zone></entry></vsys></entry></devices></config></entry></template>\
         <device-group><entry name=\"dg-root\">{root}</entry><entry name=\"dg-child\"><parent-dg>dg-root</parent-dg>{child}</entry></device-group>\
         </entry></devices></config>",
        shared = scope_xml(spec, 0),
        root = scope_xml(spec, 1),
        child = scope_xml(spec, 2),
    )
}

struct Workloads(BTreeMap<IpAddr, BTreeMap<String, String>>);

impl LabelSource for Workloads {
    fn labels(&self, ip: IpAddr) -> Option<&BTreeMap<String, String>> {
        self.0.get(&ip)
    }
}

fn workloads(spec: &Spec) -> Workloads {
    let mut out = BTreeMap::new();
    for (address, pick, labels) in &spec.workloads {
        let value = &spec.addresses[address % spec.addresses.len()].value;
        let ip = value.probes(u32::from(*pick) * 6 + 4);
        let labels = labels
            .iter()
            .map(|l| (LABELS[*l].0.to_string(), LABELS[*l].1.to_string()))
            .collect();
        out.insert(ip, labels);
    }
    Workloads(out)
}

/// A flow built from random numbers, with addresses near the configuration's.
fn make_flow(spec: &Spec, labels: &Workloads, seed: (u32, u32, u32, u32, u32)) -> Flow {
    let (zones, a, b, proto, ports) = seed;
    let zone = |z: u32| {
        if z.is_multiple_of(8) {
            UNNAMED_ZONE.to_string()
        } else {
            ZONES[(z >> 3) as usize % spec.zones].to_string()
        }
    };
    let workload_ips: Vec<IpAddr> = labels.0.keys().copied().collect();
    let address = |pick: u32| -> IpAddr {
        if !workload_ips.is_empty() && pick.is_multiple_of(7) {
            return workload_ips[(pick / 7) as usize % workload_ips.len()];
        }
        match pick % 11 {
            0 => "10.1.2.3".parse().expect("literal"),
            1 => "10.2.0.7".parse().expect("literal"),
            _ => spec.addresses[(pick / 11) as usize % spec.addresses.len()]
                .value
                .probes(pick / 3),
        }
    };
    let source = address(a);
    let mut destination = address(b);
    if source.is_ipv4() != destination.is_ipv4() {
        destination = match source {
            IpAddr::V4(_) => IpAddr::V4(Ipv4Addr::new(10, 0, (b % 4) as u8, (b >> 8) as u8)),
            IpAddr::V6(_) => IpAddr::V6(v6((b % 4) as u16, (b >> 8) as u16)),
        };
    }
    let protocol = match proto % 6 {
        0 | 1 => 6,
        2 | 3 => 17,
        4 => 132,
        _ => {
            if source.is_ipv4() {
                1
            } else {
                58
            }
        }
    };
    let has_ports = zonewall::model::has_ports(protocol);
    let port = |p: u32| -> u16 {
        const NEAR: [u16; 14] = [
            22, 53, 80, 443, 8080, 8000, 7999, 8081, 1000, 2000, 2001, 1023, 1024, 0,
        ];
        if p.is_multiple_of(4) {
            (p >> 2) as u16
        } else {
            NEAR[(p >> 2) as usize % NEAR.len()]
        }
    };
    Flow {
        source_zone: zone(zones),
        destination_zone: zone(zones >> 12),
        source,
        destination,
        protocol,
        source_port: has_ports.then(|| port(ports >> 16)),
        destination_port: has_ports.then(|| port(ports & 0xffff)),
    }
}

fn check(reference: &Verdict, got: &PolicyVerdict) -> Result<(), String> {
    let hit = got
        .rule()
        .ok_or_else(|| format!("no rule decided: {:?}", got.decided_by))?;
    let provenance = hit
        .provenance
        .as_ref()
        .ok_or_else(|| "the deciding rule has no provenance".to_string())?;
    let rulebase = match provenance.rulebase {
        resource::Rulebase::Pre => "pre",
        resource::Rulebase::Local => "local",
        resource::Rulebase::Post => "post",
        resource::Rulebase::Default => "default",
    };
    let want = (
        reference.action,
        reference.rule.as_str(),
        reference.uuid.as_deref(),
        reference.device_group.as_str(),
        reference.rulebase.as_str(),
        reference.position,
        reference.log_start,
        reference.log_end,
    );
    let have = (
        got.decision.firewall_action(),
        provenance.rule.as_str(),
        provenance.uuid.as_deref(),
        provenance.device_group.as_str(),
        rulebase,
        provenance.position as usize,
        hit.log_start,
        hit.log_end,
    );
    if want == have {
        Ok(())
    } else {
        Err(format!("firewall {want:?} but ZonePolicy {have:?}"))
    }
}

/// What the run covered, so a generator that stops exercising something is noticed.
#[derive(Default)]
struct Coverage {
    configs: AtomicUsize,
    flows: AtomicUsize,
    /// Flows decided by a configured rule rather than a default rule.
    by_configured_rule: AtomicUsize,
    /// Flows the firewall allowed.
    allowed: AtomicUsize,
    /// Flows with a zone no rule names (decided through the `any` object).
    unnamed_zone: AtomicUsize,
    /// Configurations whose translation split a zone into parts.
    split: AtomicUsize,
    /// Flows decided by a rule with a dynamic group selector in a column.
    with_selector: AtomicUsize,
    /// Flows decided by a rule with a column written as a named address set.
    with_set: AtomicUsize,
}

/// Parses, resolves, translates, round-trips through YAML, and compares on every flow.
fn check_config(
    spec: &Spec,
    seeds: &[(u32, u32, u32, u32, u32)],
    coverage: &Coverage,
) -> Result<(), String> {
    let xml = config_xml(spec);
    let options = ResolveOptions {
        device_group: Some("dg-child".to_string()),
        ..ResolveOptions::default()
    };
    let resolved = panos::load_policy(&xml, "generated.xml", &options)
        .map_err(|e| format!("generated configuration does not load: {e}\n{xml}"))?;
    let translate_options = TranslateOptions {
        max_object_bytes: if spec.split {
            12_000
        } else {
            translate::DEFAULT_MAX_OBJECT_BYTES
        },
        address_sets_from: spec.sets_from,
        ..TranslateOptions::default()
    };
    let translation = translate::translate(&resolved, &translate_options)
        .map_err(|e| format!("translation failed: {e}\n{xml}"))?;
    let yaml = translate::to_yaml(&translation.policies).map_err(|e| e.to_string())?;
    let again = translate::to_yaml(
        &translate::translate(&resolved, &translate_options)
            .map_err(|e| e.to_string())?
            .policies,
    )
    .map_err(|e| e.to_string())?;
    if yaml != again {
        return Err("translating twice gave different YAML".to_string());
    }
    let policies = parse_documents(&yaml, "translated.yaml").map_err(|e| e.to_string())?;
    let same = policies.len() == translation.policies.len()
        && policies
            .iter()
            .zip(&translation.policies)
            .all(|(a, b)| a.metadata == b.metadata && a.spec == b.spec && a.status == b.status);
    if !same {
        return Err("YAML round trip changed the objects".to_string());
    }
    let set = PolicySet::new(&policies).map_err(|e| format!("translated set invalid: {e}"))?;
    if policies
        .iter()
        .any(|p| p.spec.part.is_some_and(|part| part.count > 1))
    {
        coverage.split.fetch_add(1, Ordering::Relaxed);
    }
    let labels = workloads(spec);
    for seed in seeds {
        let flow = make_flow(spec, &labels, *seed);
        let reference = resolved.policy.evaluate(&flow, &labels);
        let count = |counter: &AtomicUsize, yes: bool| {
            if yes {
                counter.fetch_add(1, Ordering::Relaxed);
            }
        };
        let rule = &resolved.policy.rules[reference.rule_index];
        count(
            &coverage.by_configured_rule,
            reference.rulebase != zonewall::model::Rulebase::Default,
        );
        count(&coverage.allowed, reference.action.is_allow());
        count(
            &coverage.unnamed_zone,
            flow.source_zone == UNNAMED_ZONE || flow.destination_zone == UNNAMED_ZONE,
        );
        count(
            &coverage.with_selector,
            !rule.source.dynamic.is_empty() || !rule.destination.dynamic.is_empty(),
        );
        let named = |column: &zonewall::model::AddressSet| {
            !column.prefixes.is_empty() && column.prefixes.len() >= spec.sets_from
        };
        count(
            &coverage.with_set,
            named(&rule.source) || named(&rule.destination),
        );
        for direction in [Direction::Egress, Direction::Ingress] {
            let got = set.evaluate(&flow, direction, &labels);
            check(&reference, &got).map_err(|problem| {
                format!(
                    "{} verdict differs for {flow:?}: {problem}\nfirewall reason: {}\nconfiguration:\n{xml}",
                    direction.as_str(),
                    reference.reason
                )
            })?;
        }
    }
    coverage.configs.fetch_add(1, Ordering::Relaxed);
    coverage.flows.fetch_add(seeds.len(), Ordering::Relaxed);
    Ok(())
}

fn scale() -> u32 {
    std::env::var("ZONEWALL_PROPTEST_SCALE")
        .ok()
        .and_then(|s| s.parse().ok())
        .filter(|s| *s > 0)
        .unwrap_or(1)
}

#[test]
fn zone_policies_give_the_firewall_verdict_at_egress_and_ingress() {
    let scale = scale();
    let cases = CONFIGS_PER_RUN * scale;
    let mut runner = TestRunner::new(Config {
        cases,
        failure_persistence: None,
        ..Config::default()
    });
    let coverage = Coverage::default();
    let seeds = prop::collection::vec(
        (
            any::<u32>(),
            any::<u32>(),
            any::<u32>(),
            any::<u32>(),
            any::<u32>(),
        ),
        FLOWS_PER_CONFIG,
    );
    let started = std::time::Instant::now();
    let result = runner.run(&(spec_strategy(), seeds), |(spec, seeds)| {
        check_config(&spec, &seeds, &coverage).map_err(TestCaseError::fail)
    });
    if let Err(failure) = result {
        panic!("{failure}");
    }
    let get = |counter: &AtomicUsize| counter.load(Ordering::Relaxed);
    let (configs, flows) = (get(&coverage.configs), get(&coverage.flows));
    eprintln!(
        "equivalence: {configs} configurations ({} split into parts), {flows} flows checked at egress and ingress in {:.1}s; {} decided by configured rules, {} allowed, {} with a zone no rule names, {} by rules with dynamic-group selectors, {} by rules with a named address set",
        get(&coverage.split),
        started.elapsed().as_secs_f64(),
        get(&coverage.by_configured_rule),
        get(&coverage.allowed),
        get(&coverage.unnamed_zone),
        get(&coverage.with_selector),
        get(&coverage.with_set),
    );
    assert!(configs >= (CONFIGS_PER_RUN * scale) as usize);
    assert!(flows >= 100_000 * scale as usize);
    // The generator must keep exercising what the test claims to prove.
    for (what, counter, at_least) in [
        (
            "decided by configured rules",
            &coverage.by_configured_rule,
            flows / 5,
        ),
        ("allowed", &coverage.allowed, flows / 10),
        (
            "through a zone no rule names",
            &coverage.unnamed_zone,
            flows / 10,
        ),
        (
            "decided by selector rules",
            &coverage.with_selector,
            flows / 200,
        ),
        (
            "decided by rules with a named address set",
            &coverage.with_set,
            flows / 50,
        ),
        ("split configurations", &coverage.split, configs / 20),
    ] {
        assert!(
            get(counter) >= at_least,
            "too few flows/configurations {what}: {}",
            get(counter)
        );
    }
}
