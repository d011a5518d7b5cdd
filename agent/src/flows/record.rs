//! The flow record: one line of SIEM output before formatting (DESIGN.md section 7).
//!
//! The flow table builds these from ring-buffer events and enrichment; the formatters in
//! [`super::format`] only read them. Every string here may come from something a workload
//! owner or a firewall administrator controls (pod names, namespaces, rule names, zone
//! names), so the formatters treat all of them as hostile.

use std::fmt;
use std::net::IpAddr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// What happened to the flow, the `subtype` of a PAN-OS traffic log.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum EventClass {
    /// The first packet was allowed and the deciding rule logs at session start.
    Start,
    /// An allowed flow ended (FIN, RST, idle timeout, ...), with counters both ways.
    End,
    /// Denied by a rule whose action is `deny` or a `reset-*` action.
    Deny,
    /// Denied by a rule whose action is `drop`.
    Drop,
    /// Audit mode: the policy would have denied the flow but let it pass.
    WouldDeny,
}

impl EventClass {
    pub const ALL: [EventClass; 5] = [
        EventClass::Start,
        EventClass::End,
        EventClass::Deny,
        EventClass::Drop,
        EventClass::WouldDeny,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            EventClass::Start => "start",
            EventClass::End => "end",
            EventClass::Deny => "deny",
            EventClass::Drop => "drop",
            EventClass::WouldDeny => "would-deny",
        }
    }

    /// True for the classes whose packets were actually discarded.
    pub fn is_blocked(self) -> bool {
        matches!(self, EventClass::Deny | EventClass::Drop)
    }

    /// True for the classes a security analyst treats as a denial, enforced or not.
    pub fn is_denial(self) -> bool {
        matches!(
            self,
            EventClass::Deny | EventClass::Drop | EventClass::WouldDeny
        )
    }
}

impl fmt::Display for EventClass {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The deciding rule's action: the firewall model's own type, so a record can never spell an
/// action the policy does not have.
pub use crate::model::Action;

/// Why a flow record was closed. The strings are PAN-OS `session_end_reason` values where
/// PAN-OS has one, so SIEM content that groups by end reason keeps working; the last two
/// are zonewall's own.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum EndReason {
    /// Both sides closed with FIN.
    TcpFin,
    /// The source (client) sent a RST.
    TcpRstFromSource,
    /// The destination (server) sent a RST.
    TcpRstFromDestination,
    /// No packet for the idle timeout (PAN-OS "aged-out").
    IdleTimeout,
    /// The flow was refused by policy (deny/drop records).
    PolicyDeny,
    /// A new policy generation no longer allows the flow (rematch).
    PolicyChange,
    /// The agent flushed its flow table on shutdown.
    AgentShutdown,
}

impl EndReason {
    pub const ALL: [EndReason; 7] = [
        EndReason::TcpFin,
        EndReason::TcpRstFromSource,
        EndReason::TcpRstFromDestination,
        EndReason::IdleTimeout,
        EndReason::PolicyDeny,
        EndReason::PolicyChange,
        EndReason::AgentShutdown,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            EndReason::TcpFin => "tcp-fin",
            EndReason::TcpRstFromSource => "tcp-rst-from-client",
            EndReason::TcpRstFromDestination => "tcp-rst-from-server",
            EndReason::IdleTimeout => "aged-out",
            EndReason::PolicyDeny => "policy-deny",
            EndReason::PolicyChange => "policy-change",
            EndReason::AgentShutdown => "agent-shutdown",
        }
    }
}

impl fmt::Display for EndReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Which PAN-OS rulebase the deciding rule came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Rulebase {
    Pre,
    Post,
    Default,
}

impl Rulebase {
    pub const ALL: [Rulebase; 3] = [Rulebase::Pre, Rulebase::Post, Rulebase::Default];

    pub fn as_str(self) -> &'static str {
        match self {
            Rulebase::Pre => "pre",
            Rulebase::Post => "post",
            Rulebase::Default => "default",
        }
    }
}

/// Direction of the packet that created the record, seen from the workload interface the
/// program is attached to: `Ingress` enters the workload, `Egress` leaves it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Direction {
    Ingress,
    Egress,
}

impl Direction {
    pub fn as_str(self) -> &'static str {
        match self {
            Direction::Ingress => "ingress",
            Direction::Egress => "egress",
        }
    }
}

/// Nanoseconds since the UNIX epoch, UTC. The kernel clock is converted once, in the
/// flow table; formatters only print.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct UnixNanos(pub u64);

impl UnixNanos {
    pub fn from_system_time(time: SystemTime) -> Self {
        let since = time.duration_since(UNIX_EPOCH).unwrap_or(Duration::ZERO);
        UnixNanos(u64::try_from(since.as_nanos()).unwrap_or(u64::MAX))
    }

    pub fn to_system_time(self) -> SystemTime {
        UNIX_EPOCH + Duration::from_nanos(self.0)
    }

    pub fn as_millis(self) -> u64 {
        self.0 / 1_000_000
    }
}

/// ICMP or ICMPv6 type and code (instead of ports).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Icmp {
    pub icmp_type: u8,
    pub code: u8,
}

/// The flow's addresses, IANA protocol number and ports, as the source sent its first
/// packet. Ports are absent for protocols without them; ICMP carries type and code.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct FiveTuple {
    pub source: IpAddr,
    pub destination: IpAddr,
    /// IANA protocol number (6 tcp, 17 udp, 1 icmp, 58 ipv6-icmp, ...).
    pub protocol: u8,
    pub source_port: Option<u16>,
    pub destination_port: Option<u16>,
    pub icmp: Option<Icmp>,
}

impl FiveTuple {
    /// Lower-case IANA keyword for the protocol, as PAN-OS, ECS and QRadar print it; the
    /// number itself for protocols zonewall does not name.
    pub fn protocol_name(&self) -> String {
        protocol_name(self.protocol)
    }
}

pub fn protocol_name(protocol: u8) -> String {
    match protocol {
        1 => "icmp".to_owned(),
        6 => "tcp".to_owned(),
        17 => "udp".to_owned(),
        47 => "gre".to_owned(),
        50 => "esp".to_owned(),
        51 => "ah".to_owned(),
        58 => "ipv6-icmp".to_owned(),
        132 => "sctp".to_owned(),
        other => other.to_string(),
    }
}

/// A Kubernetes workload (or a standalone-inventory entry). External peers have none.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Workload {
    pub namespace: String,
    pub name: String,
    /// The node the workload runs on, when known.
    pub node: Option<String>,
    /// The workload's labels (Kubernetes pod labels, or the inventory's).
    pub labels: std::collections::BTreeMap<String, String>,
}

/// Provenance of the deciding firewall rule, as carried on the ZonePolicy rule.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct RuleRef {
    pub name: String,
    pub uuid: Option<String>,
    pub device_group: Option<String>,
    pub rulebase: Option<Rulebase>,
}

/// The ZonePolicy object and tier that carried the deciding rule.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct PolicyRef {
    pub name: String,
    pub tier: String,
}

/// Where the flow was seen.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ObservationPoint {
    pub node: String,
    pub interface: String,
    pub direction: Direction,
}

/// Packet and byte counters in both directions. "From source" is what the PAN-OS traffic
/// log calls sent (client to server); "from destination" is received.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct Counters {
    pub packets_from_source: u64,
    pub bytes_from_source: u64,
    pub packets_from_destination: u64,
    pub bytes_from_destination: u64,
}

impl Counters {
    pub fn total_packets(&self) -> u64 {
        self.packets_from_source
            .saturating_add(self.packets_from_destination)
    }

    pub fn total_bytes(&self) -> u64 {
        self.bytes_from_source
            .saturating_add(self.bytes_from_destination)
    }
}

/// One flow record, ready to format.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct FlowRecord {
    pub class: EventClass,
    /// First packet of the flow (for aggregated denies: first attempt in the window).
    pub start: UnixNanos,
    /// End of the flow (for aggregated denies: last attempt); absent on start records.
    pub end: Option<UnixNanos>,
    pub tuple: FiveTuple,
    pub source_zone: String,
    pub destination_zone: String,
    pub source_workload: Option<Workload>,
    pub destination_workload: Option<Workload>,
    pub rule: RuleRef,
    pub policy: Option<PolicyRef>,
    pub action: Action,
    pub counters: Counters,
    pub end_reason: Option<EndReason>,
    pub observation: ObservationPoint,
    /// How many attempts this record stands for (1 unless aggregated).
    pub repeat_count: u64,
    /// Host name of the reporting agent (the syslog HOSTNAME, CEF `dvchost`).
    pub reporting_host: String,
}

impl FlowRecord {
    /// The time the record is about: the end when there is one, else the start.
    pub fn event_time(&self) -> UnixNanos {
        self.end.unwrap_or(self.start)
    }

    /// Elapsed time of the flow, when it has ended.
    pub fn elapsed(&self) -> Option<Duration> {
        self.end
            .map(|end| Duration::from_nanos(end.0.saturating_sub(self.start.0)))
    }
}
