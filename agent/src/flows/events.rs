//! From the kernel's flow events to enriched flow records: the ring-buffer events (flow start,
//! flow end on FIN/RST, denied attempts), plus what userspace finds itself by sweeping the
//! kernel's tables (flows that went idle, the rest of an aggregated deny window). Each record
//! gets its zones, workloads, the firewall rule (name, uuid, device group, rulebase) and the
//! ZonePolicy that carried it.

use std::collections::{BTreeMap, HashMap};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::sync::Arc;

use zonewall_common::{self as abi, FlowEvent};

use super::record::{
    Counters, Direction, EndReason, EventClass, FiveTuple, FlowRecord, ObservationPoint, PolicyRef,
    RuleRef, Rulebase, UnixNanos, Workload,
};
use crate::inventory::Inventory;
use crate::model::Action;
use crate::policy::datapath_compile::{Compiled, RuleEntry, RuleOrigin};
use crate::policy::resource::{Rulebase as PolicyRulebase, Tier};

/// What turns kernel events into records: the compiled tables' zones and rules, the
/// workloads by address, this node's name and interfaces, and the kernel clock's offset.
#[derive(Clone, Debug)]
pub struct Enricher {
    zones: Vec<String>,
    rules: Arc<BTreeMap<u32, RuleEntry>>,
    workloads: HashMap<IpAddr, Workload>,
    interfaces: HashMap<u32, String>,
    node: String,
    /// UNIX time minus the kernel's monotonic clock (`bpf_ktime_get_ns`), in nanoseconds.
    clock_offset: i128,
}

/// The kernel's monotonic clock (what `bpf_ktime_get_ns` reads), in nanoseconds.
pub fn monotonic_now_ns() -> u64 {
    let mut now = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: valid pointer to a timespec; CLOCK_MONOTONIC always exists.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut now) };
    (now.tv_sec as u64) * 1_000_000_000 + now.tv_nsec as u64
}

fn unix_now_ns() -> i128 {
    UnixNanos::from_system_time(std::time::SystemTime::now()).0 as i128
}

fn address(family: u8, bytes: &[u8; 16]) -> IpAddr {
    if family == abi::FAMILY_V4 {
        IpAddr::V4(Ipv4Addr::new(bytes[0], bytes[1], bytes[2], bytes[3]))
    } else {
        IpAddr::V6(Ipv6Addr::from(*bytes))
    }
}

fn action(code: u8) -> Action {
    match code {
        abi::ACTION_ALLOW => Action::Allow,
        abi::ACTION_DROP => Action::Drop,
        abi::ACTION_RESET_CLIENT => Action::ResetClient,
        abi::ACTION_RESET_SERVER => Action::ResetServer,
        abi::ACTION_RESET_BOTH => Action::ResetBoth,
        _ => Action::Deny,
    }
}

impl Enricher {
    pub fn new(
        compiled: &Compiled,
        inventory: &Inventory,
        interfaces: HashMap<u32, String>,
        node: &str,
    ) -> Enricher {
        let mut workloads = HashMap::new();
        for endpoint in &inventory.endpoints {
            let workload = Workload {
                namespace: endpoint.namespace.clone().unwrap_or_default(),
                name: endpoint.name.clone(),
                node: endpoint.interface.as_ref().map(|_| node.to_owned()),
                labels: endpoint.labels.clone(),
            };
            for ip in &endpoint.ips {
                workloads.insert(*ip, workload.clone());
            }
        }
        Enricher {
            zones: compiled.zones.clone(),
            rules: Arc::clone(&compiled.rules),
            workloads,
            interfaces,
            node: node.to_owned(),
            clock_offset: unix_now_ns() - i128::from(monotonic_now_ns()),
        }
    }

    fn time(&self, kernel_ns: u64) -> UnixNanos {
        UnixNanos(u64::try_from(i128::from(kernel_ns) + self.clock_offset).unwrap_or(0))
    }

    fn zone(&self, index: u32) -> String {
        self.zones
            .get(index as usize)
            .cloned()
            .unwrap_or_else(|| format!("zone-{index}"))
    }

    /// The rule a record names: of the rules involved, the one translated from a firewall
    /// rule (the security team's words), else the first.
    fn rule(&self, ids: &[u32]) -> (RuleRef, Option<PolicyRef>) {
        let entries: Vec<&RuleEntry> = ids.iter().filter_map(|id| self.rules.get(id)).collect();
        let chosen = entries
            .iter()
            .find(|e| {
                matches!(
                    &e.origin,
                    RuleOrigin::Rule {
                        tier: Tier::Firewall,
                        provenance: Some(_),
                        ..
                    }
                )
            })
            .or(entries.first());
        let Some(entry) = chosen else {
            return (
                RuleRef {
                    name: format!("rule-{}", ids.first().copied().unwrap_or(0)),
                    uuid: None,
                    device_group: None,
                    rulebase: None,
                },
                None,
            );
        };
        match &entry.origin {
            RuleOrigin::Rule {
                policy,
                tier,
                direction,
                index,
                provenance,
            } => {
                let rule = match provenance {
                    Some(p) => RuleRef {
                        name: p.rule.clone(),
                        uuid: p.uuid.clone(),
                        device_group: Some(p.device_group.clone()),
                        rulebase: match p.rulebase {
                            PolicyRulebase::Pre => Some(Rulebase::Pre),
                            PolicyRulebase::Post => Some(Rulebase::Post),
                            PolicyRulebase::Default => Some(Rulebase::Default),
                            PolicyRulebase::Local => None,
                        },
                    },
                    None => RuleRef {
                        name: format!("{policy}/{}/{index}", direction.as_str()),
                        uuid: None,
                        device_group: None,
                        rulebase: None,
                    },
                };
                (
                    rule,
                    Some(PolicyRef {
                        name: policy.clone(),
                        tier: tier.as_str().to_owned(),
                    }),
                )
            }
            other => {
                let name = match other {
                    RuleOrigin::DefaultAllow => "zonewall-default-allow",
                    RuleOrigin::FirewallEnd => "zonewall-firewall-end",
                    _ => "zonewall-no-zone-policy",
                };
                (
                    RuleRef {
                        name: name.to_owned(),
                        uuid: None,
                        device_group: None,
                        rulebase: None,
                    },
                    None,
                )
            }
        }
    }

    /// The record of one kernel event.
    pub fn record(&self, event: &FlowEvent) -> FlowRecord {
        let source = address(event.family, &event.src_addr_be);
        let destination = address(event.family, &event.dst_addr_be);
        let has_ports = crate::model::has_ports(event.protocol);
        let tuple = FiveTuple {
            source,
            destination,
            protocol: event.protocol,
            source_port: has_ports.then(|| u16::from_be_bytes(event.src_port_be)),
            destination_port: has_ports.then(|| u16::from_be_bytes(event.dst_port_be)),
            // The kernel's events carry the echo identifier, not the type and code.
            icmp: None,
        };
        let (class, end, end_reason, rule_ids) = match event.kind {
            abi::EVENT_FLOW_START => (
                EventClass::Start,
                None,
                None,
                vec![event.rule_id, event.other_rule_id],
            ),
            abi::EVENT_FLOW_END => (
                EventClass::End,
                Some(self.time(event.timestamp_ns)),
                Some(match event.reason {
                    abi::END_REASON_RST => EndReason::TcpRstFromSource,
                    abi::END_REASON_RST_RESPONDER => EndReason::TcpRstFromDestination,
                    abi::END_REASON_FIN => EndReason::TcpFin,
                    _ => EndReason::IdleTimeout,
                }),
                vec![event.rule_id, event.other_rule_id],
            ),
            _ => (
                if event.action == abi::ACTION_DROP {
                    EventClass::Drop
                } else {
                    EventClass::Deny
                },
                Some(self.time(event.timestamp_ns)),
                Some(EndReason::PolicyDeny),
                vec![event.rule_id],
            ),
        };
        let (rule, policy) = self.rule(&rule_ids);
        FlowRecord {
            class,
            start: self.time(event.created_ns),
            end,
            tuple,
            source_zone: self.zone(event.src_zone),
            destination_zone: self.zone(event.dst_zone),
            source_workload: self.workloads.get(&source).cloned(),
            destination_workload: self.workloads.get(&destination).cloned(),
            rule,
            policy,
            action: action(event.action),
            counters: Counters {
                packets_from_source: event.packets_forward,
                bytes_from_source: event.bytes_forward,
                packets_from_destination: event.packets_reverse,
                bytes_from_destination: event.bytes_reverse,
            },
            end_reason,
            observation: ObservationPoint {
                node: self.node.clone(),
                interface: self
                    .interfaces
                    .get(&event.ifindex)
                    .cloned()
                    .unwrap_or_else(|| format!("ifindex-{}", event.ifindex)),
                direction: if event.direction == abi::OBSERVED_FROM_WORKLOAD {
                    Direction::Egress
                } else {
                    Direction::Ingress
                },
            },
            repeat_count: u64::from(event.count.max(1)),
            reporting_host: self.node.clone(),
        }
    }
}

/// The end event of a conntrack entry that went idle (userspace finds those by sweeping),
/// timed at the end of its idle timeout.
pub fn idle_end_event(key: &abi::CtKey, entry: &abi::CtValue, now_ns: u64) -> FlowEvent {
    let idle_end = entry
        .last_seen_ns
        .saturating_add(abi::idle_timeout_ns(key.protocol, entry.flags));
    FlowEvent::flow_end(key, entry, now_ns.min(idle_end), 0)
}

/// The deny event for the attempts of an aggregation window the kernel did not report yet.
pub fn deny_rest_event(key: &abi::DenyKey, value: &abi::DenyValue, now_ns: u64) -> FlowEvent {
    FlowEvent {
        timestamp_ns: now_ns,
        created_ns: value.window_start_ns,
        src_addr_be: key.src_addr_be,
        dst_addr_be: key.dst_addr_be,
        dst_port_be: key.dst_port_be,
        rule_id: key.rule_id,
        src_zone: value.src_zone,
        dst_zone: value.dst_zone,
        ifindex: value.ifindex,
        count: value.unreported,
        kind: abi::EVENT_DENY,
        family: key.family,
        protocol: key.protocol,
        action: value.action,
        direction: value.direction,
        ..FlowEvent::default()
    }
}
