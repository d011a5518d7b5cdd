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

#[cfg(feature = "user")]
mod user {
    // SAFETY: plain `#[repr(C)]` integers and byte arrays, no padding the compiler may leave
    // uninitialised (sizes are asserted above), every bit pattern is valid.
    unsafe impl aya::Pod for super::BlockKey {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::BlockValue {}
}
