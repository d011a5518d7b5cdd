//! Types shared by the kernel programs (`zonewall-ebpf`) and the agent.
//!
//! Every map key, map value and event has exactly one definition here. The layouts are
//! `#[repr(C)]` with explicit padding and a compile-time size check, because the kernel and
//! userspace read the same bytes. Byte order is part of the field name where it matters.
#![no_std]

use core::mem::size_of;

/// Part of every pin path; bump it whenever a pinned map layout changes so that an agent never
/// reuses a pinned map whose layout it does not understand.
pub const MAP_ABI_VERSION: u32 = 1;

/// Map names (the kernel keeps at most 15 characters).
pub mod map_names {
    /// Flows the agent asked to drop: `BlockKey` -> `BlockValue`.
    pub const BLOCK: &str = "ZW_BLOCK";
    /// Per-CPU packet counters indexed by `counter::*`.
    pub const COUNTERS: &str = "ZW_COUNTERS";
    /// Every map name the eBPF object must define.
    pub const ALL: [&str; 2] = [BLOCK, COUNTERS];

    // Maps of the policy dataplane. The compiler (`zonewall::policy::datapath_compile`)
    // produces their entries already; they join `ALL` when the eBPF program defines them.

    /// LPM trie, IPv4 address -> identity: `IdentityKeyV4` -> `IdentityValue`.
    pub const IDENTITY_V4: &str = "ZW_IDENT_V4";
    /// LPM trie, IPv6 address -> identity: `IdentityKeyV6` -> `IdentityValue`.
    pub const IDENTITY_V6: &str = "ZW_IDENT_V6";
    /// LPM trie, (direction, subject, peer, protocol, port) -> verdict: `PolicyKey` ->
    /// `PolicyValue`.
    pub const POLICY: &str = "ZW_POLICY";
}

/// Program names (function names in the eBPF object).
pub mod program_names {
    /// Attached to a workload's host-side interface, TC ingress (packets sent by the workload).
    pub const FROM_WORKLOAD: &str = "zw_from_workload";
    /// Attached to a workload's host-side interface, TC egress (packets sent to the workload).
    pub const TO_WORKLOAD: &str = "zw_to_workload";
    /// Every program name the eBPF object must define.
    pub const ALL: [&str; 2] = [FROM_WORKLOAD, TO_WORKLOAD];
}

/// Indices into the `ZW_COUNTERS` per-CPU array: one counter per packet outcome.
pub mod counter {
    /// IPv4 or IPv6 packet that matched no block entry and was passed.
    pub const PASS_IP: u32 = 0;
    /// Not an IP packet (ARP, LLDP, ...): passed, the policy is about IP flows.
    pub const PASS_NOT_IP: u32 = 1;
    /// Dropped: its (source, destination, protocol, port) is in `ZW_BLOCK`.
    pub const DROP_BLOCKED: u32 = 2;
    /// Dropped: IP header truncated or inconsistent (fail closed).
    pub const DROP_MALFORMED: u32 = 3;
    /// Dropped: IPv6 extension header chain longer than the program walks (fail closed).
    pub const DROP_EXT_HEADERS: u32 = 4;
    /// Non-first IP fragment: no L4 header, so it never matches a port entry.
    pub const FRAGMENT: u32 = 5;
    /// Number of counters; the map has exactly this many entries.
    pub const COUNT: u32 = 6;

    /// Names for logs, metrics and tests, indexed like the counters.
    pub const NAMES: [&str; COUNT as usize] = [
        "pass_ip",
        "pass_not_ip",
        "drop_blocked",
        "drop_malformed",
        "drop_ext_headers",
        "fragment",
    ];
}

/// Address family values used in keys (the kernel's `AF_INET` / `AF_INET6`).
pub const FAMILY_V4: u8 = 2;
pub const FAMILY_V6: u8 = 10;

/// Capacity of `ZW_BLOCK`.
pub const BLOCK_MAX_ENTRIES: u32 = 16_384;

/// A flow the agent wants dropped. IPv4 addresses occupy the first 4 bytes, the rest is zero.
///
/// `dport_be` is the TCP/UDP destination port in network byte order; for ICMP and ICMPv6 it
/// holds the message type in its first byte (`[type, 0]` in memory), so echo requests can be
/// blocked without blocking error messages. Zero for protocols without ports.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub struct BlockKey {
    pub src_addr_be: [u8; 16],
    pub dst_addr_be: [u8; 16],
    pub family: u8,
    pub protocol: u8,
    pub dport_be: u16,
}
const _: () = assert!(size_of::<BlockKey>() == 36);

/// Value of a `ZW_BLOCK` entry; reserved for the rule id of later dataplane versions.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct BlockValue {
    pub rule_id: u32,
    pub _pad: u32,
}
const _: () = assert!(size_of::<BlockValue>() == 8);

/// Identities are small integers; 0 is never assigned, so a zeroed key field is no identity.
pub const IDENTITY_NONE: u32 = 0;

/// Key of `ZW_IDENT_V4` (LPM trie): `prefix_len` counts the leading bits of `addr_be` that
/// must match (0-32).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub struct IdentityKeyV4 {
    pub prefix_len: u32,
    pub addr_be: [u8; 4],
}
const _: () = assert!(size_of::<IdentityKeyV4>() == 8);

/// Key of `ZW_IDENT_V6` (LPM trie): `prefix_len` counts the leading bits of `addr_be` that
/// must match (0-128).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub struct IdentityKeyV6 {
    pub prefix_len: u32,
    pub addr_be: [u8; 16],
}
const _: () = assert!(size_of::<IdentityKeyV6>() == 20);

/// Value of both identity tries.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub struct IdentityValue {
    /// Never `IDENTITY_NONE`: every address has an identity (at least its zone's).
    pub identity: u32,
    /// Index of the identity's zone in the compiled zone list (for flow records).
    pub zone: u32,
}
const _: () = assert!(size_of::<IdentityValue>() == 8);

/// `PolicyKey::direction`: the packet leaves the subject (the subject zone's egress rules).
pub const DIRECTION_EGRESS: u8 = 0;
/// `PolicyKey::direction`: the packet enters the subject (the subject zone's ingress rules).
pub const DIRECTION_INGRESS: u8 = 1;

/// The protocol byte the program puts in a `PolicyKey` when the packet has no destination
/// port to match: a non-first fragment of any protocol. No policy entry ever names it (it is
/// IANA's reserved protocol 255), so the lookup falls back to the port-less entry, exactly as
/// a port rule never matches a packet without a port.
pub const PROTOCOL_NO_PORT: u8 = 255;

/// Bits of a `PolicyKey` before the protocol: direction, subject and peer identity.
pub const POLICY_PREFIX_PEER: u32 = 72;
/// Bits of a `PolicyKey` before the port: direction, identities and protocol.
pub const POLICY_PREFIX_PROTOCOL: u32 = 80;
/// Every bit of a `PolicyKey`.
pub const POLICY_PREFIX_FULL: u32 = 96;

/// Key of `ZW_POLICY` (LPM trie). The data bits, in order: direction (8), subject identity
/// (32), peer identity (32), IP protocol (8), destination port (16). A lookup sets
/// `prefix_len = POLICY_PREFIX_FULL`; entries use shorter prefixes for "any peer" (40),
/// "any protocol" (72), "any port" (80) and port ranges (80 + the range's prefix length).
/// The subject is the workload the direction is about (egress: the source, ingress: the
/// destination); the peer is the other end.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub struct PolicyKey {
    pub prefix_len: u32,
    pub direction: u8,
    pub subject_identity_be: [u8; 4],
    pub peer_identity_be: [u8; 4],
    pub protocol: u8,
    pub port_be: [u8; 2],
}
const _: () = assert!(size_of::<PolicyKey>() == 16);

/// `PolicyValue::action` and `audit_action`.
pub const ACTION_NONE: u8 = 0;
pub const ACTION_ALLOW: u8 = 1;
pub const ACTION_DENY: u8 = 2;
pub const ACTION_DROP: u8 = 3;
pub const ACTION_RESET_CLIENT: u8 = 4;
pub const ACTION_RESET_SERVER: u8 = 5;
pub const ACTION_RESET_BOTH: u8 = 6;

/// `PolicyValue::flags`: the deciding rule logs at flow start.
pub const POLICY_FLAG_LOG_START: u8 = 1;
/// `PolicyValue::flags`: the deciding rule logs at flow end.
pub const POLICY_FLAG_LOG_END: u8 = 2;
/// `PolicyValue::flags`: an `Audit` policy would not have allowed the flow ("would deny").
pub const POLICY_FLAG_WOULD_DENY: u8 = 4;

/// Rule ids with a fixed meaning; compiled rules are numbered from `RULE_ID_FIRST`.
pub const RULE_ID_NONE: u32 = 0;
/// No tier decided: allowed after the last tier.
pub const RULE_ID_DEFAULT_ALLOW: u32 = 1;
/// The firewall tier's policies for the zone ran out of rules: denied.
pub const RULE_ID_FIREWALL_END: u32 = 2;
/// The firewall tier has policies, but none governs the zone: denied.
pub const RULE_ID_FIREWALL_NO_ZONE_POLICY: u32 = 3;
pub const RULE_ID_FIRST: u32 = 4;

/// Value of `ZW_POLICY`: the verdict of the first matching rule, tiers already resolved.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub struct PolicyValue {
    /// The deciding rule (or a `RULE_ID_*` constant for an implicit decision).
    pub rule_id: u32,
    /// The first matching rule of an `Audit` policy, `RULE_ID_NONE` without one.
    pub audit_rule_id: u32,
    /// `ACTION_*` of `rule_id`.
    pub action: u8,
    /// `ACTION_*` of `audit_rule_id`; `ACTION_NONE` without one.
    pub audit_action: u8,
    /// `POLICY_FLAG_*`.
    pub flags: u8,
    pub _pad: u8,
}
const _: () = assert!(size_of::<PolicyValue>() == 12);

#[cfg(feature = "user")]
mod user {
    // SAFETY: plain `#[repr(C)]` integers and byte arrays, no padding the compiler may leave
    // uninitialised (sizes are asserted above), every bit pattern is valid.
    unsafe impl aya::Pod for super::BlockKey {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::BlockValue {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::IdentityKeyV4 {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::IdentityKeyV6 {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::IdentityValue {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::PolicyKey {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::PolicyValue {}
}
