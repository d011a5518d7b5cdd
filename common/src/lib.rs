//! Types shared by the kernel programs (`zonewall-ebpf`) and the agent.
//!
//! Every map key, map value and event has exactly one definition here. The layouts are
//! `#[repr(C)]` with explicit padding and a compile-time size check, because the kernel and
//! userspace read the same bytes. Byte order is part of the field name where it matters.
#![no_std]

use core::mem::size_of;

/// Part of every pin path; bump it whenever a pinned map layout changes so that an agent never
/// reuses a pinned map whose layout it does not understand.
/// 2: `CtValue` records the anti-spoofing checks already made for a flow, and keeps its
/// forward and reverse counters on separate cache lines.
/// 3: the IPv4 identity trie is split into a /16-indexed array and a hash of the longer
/// prefixes (`IdentityBlockV4`).
/// A new map does not change the layout: an agent adopting older pins creates it.
pub const MAP_ABI_VERSION: u32 = 3;

/// Map names (the kernel keeps at most 15 characters).
///
/// The identity and policy maps come in two slots: the live policy generation's parity picks
/// the slot the programs read (`Config::generation & 1`), the agent writes the other one
/// completely and then moves the generation on, so no packet ever sees half a policy.
pub mod map_names {
    /// The IPv4 identity table (longest prefix -> `IdentityValue`), held in two maps so that
    /// a lookup costs a bounded number of loads however many prefixes there are:
    /// `IDENTITY_V4_BLOCKS` and `IDENTITY_V4_LONG` (see `IdentityBlockV4`). The logical
    /// name, for messages about the table as a whole.
    pub const IDENTITY_V4: &str = "ZW_IDENT_V4";
    /// Array indexed by an address's top 16 bits: `IdentityBlockV4`.
    pub const IDENTITY_V4_BLOCKS: &str = "ZW_ID4_BLOCKS";
    pub const IDENTITY_V4_BLOCKS_SLOTS: [&str; 2] = ["ZW_ID4_BLOCKS_0", "ZW_ID4_BLOCKS_1"];
    /// Hash of the prefixes longer than 16 bits: `IdentityKeyV4` (address masked to the
    /// prefix) -> `IdentityValue`.
    pub const IDENTITY_V4_LONG: &str = "ZW_ID4_LONG";
    pub const IDENTITY_V4_LONG_SLOTS: [&str; 2] = ["ZW_ID4_LONG_0", "ZW_ID4_LONG_1"];
    /// LPM trie, IPv6 address -> identity (`IdentityKeyV6` -> `IdentityValue`).
    pub const IDENTITY_V6: &str = "ZW_IDENT_V6";
    pub const IDENTITY_V6_SLOTS: [&str; 2] = ["ZW_IDENT_V6_0", "ZW_IDENT_V6_1"];
    /// LPM trie, (direction, subject, peer, protocol, port) -> verdict (`PolicyKey` ->
    /// `PolicyValue`).
    pub const POLICY: &str = "ZW_POLICY";
    pub const POLICY_SLOTS: [&str; 2] = ["ZW_POLICY_0", "ZW_POLICY_1"];
    /// LRU hash, connection tracking: `CtKey` -> `CtValue`.
    pub const CONNTRACK: &str = "ZW_CT";
    /// Hash, the addresses each local workload interface may send from: `EndpointKey` ->
    /// `EndpointValue`.
    pub const ENDPOINTS: &str = "ZW_ENDPOINTS";
    /// Per-CPU array indexed by rule id: `RuleStats`.
    pub const RULE_STATS: &str = "ZW_RULE_STATS";
    /// Array with one `Config` entry (index 0).
    pub const CONFIG: &str = "ZW_CONFIG";
    /// Per-CPU packet counters indexed by `counter::*`.
    pub const COUNTERS: &str = "ZW_COUNTERS";
    /// Ring buffer of `FlowEvent`s.
    pub const EVENTS: &str = "ZW_EVENTS";
    /// LRU hash, denied attempts being aggregated: `DenyKey` -> `DenyValue`.
    pub const DENIES: &str = "ZW_DENIES";
    /// Per-CPU array with one `FlowCache`: the flows just passed on each CPU.
    pub const FLOW_CACHE: &str = "ZW_FLOW_CACHE";
    /// Per-CPU array with one `IdentityCache`: addresses whose identity this CPU just
    /// looked up.
    pub const IDENTITY_CACHE: &str = "ZW_IDENT_CACHE";
    /// Per-CPU array with one `PolicyCache`: policy verdicts this CPU just looked up.
    pub const POLICY_CACHE: &str = "ZW_POLICY_CACHE";
    /// Every map the eBPF object defines and pins (all but its per-CPU scratch space).
    pub const ALL: [&str; 18] = [
        IDENTITY_V4_BLOCKS_SLOTS[0],
        IDENTITY_V4_BLOCKS_SLOTS[1],
        IDENTITY_V4_LONG_SLOTS[0],
        IDENTITY_V4_LONG_SLOTS[1],
        IDENTITY_V6_SLOTS[0],
        IDENTITY_V6_SLOTS[1],
        POLICY_SLOTS[0],
        POLICY_SLOTS[1],
        CONNTRACK,
        ENDPOINTS,
        RULE_STATS,
        CONFIG,
        COUNTERS,
        EVENTS,
        DENIES,
        FLOW_CACHE,
        IDENTITY_CACHE,
        POLICY_CACHE,
    ];
}

/// Program names (function names in the eBPF object).
pub mod program_names {
    /// Attached to a workload's host-side interface, TC ingress (packets sent by the workload).
    pub const FROM_WORKLOAD: &str = "zw_from_workload";
    /// Attached to a workload's host-side interface, TC egress (packets sent to the workload).
    pub const TO_WORKLOAD: &str = "zw_to_workload";
    /// Passes every packet and does nothing else: the baseline of the kernel benchmark.
    pub const EMPTY: &str = "zw_empty";
    /// Every program name the eBPF object must define.
    pub const ALL: [&str; 3] = [FROM_WORKLOAD, TO_WORKLOAD, EMPTY];
}

/// Indices into the `ZW_COUNTERS` per-CPU array: one counter per packet outcome. Every packet
/// the programs see is counted exactly once.
pub mod counter {
    /// Passed: it belongs to a tracked, allowed flow (either direction).
    pub const PASS_ESTABLISHED: u32 = 0;
    /// Passed: first packet of a flow the policy allows (a conntrack entry was created).
    pub const PASS_NEW: u32 = 1;
    /// Passed: an ICMP error about a tracked, allowed flow.
    pub const PASS_RELATED: u32 = 2;
    /// Passed: not an IP packet (ARP, LLDP, ...), or IPv6 link-local control (neighbour
    /// discovery, MLD), which the policy is not about.
    pub const PASS_NOT_IP: u32 = 3;
    /// Passed: a non-first fragment the policy allows without a port.
    pub const PASS_FRAGMENT: u32 = 4;
    /// Passed: a reset zonewall itself sent (a RST or an ICMP unreachable).
    pub const PASS_OWN_RESET: u32 = 5;
    /// Dropped by a deny, drop or reset rule (or the end of the firewall tier).
    pub const DROP_POLICY: u32 = 6;
    /// Dropped: the source address is not one of the sending workload's (anti-spoofing).
    pub const DROP_SPOOFED: u32 = 7;
    /// Dropped: IP header truncated or inconsistent (fail closed).
    pub const DROP_MALFORMED: u32 = 8;
    /// Dropped: IPv6 extension header chain longer than the program walks (fail closed).
    pub const DROP_EXT_HEADERS: u32 = 9;
    /// Dropped: an identity or policy lookup missed, so the tables are incomplete (fail
    /// closed). Never expected; a non-zero value is a bug to report.
    pub const DROP_NO_VERDICT: u32 = 10;
    /// Dropped: no policy is loaded yet (generation 0): the programs fail closed.
    pub const DROP_NO_POLICY: u32 = 11;
    /// A reset was sent for a denied packet (also counted in `DROP_POLICY`).
    pub const RESET_SENT: u32 = 12;
    /// A reset could not be built (IP options, extension headers, helper failure); the packet
    /// was dropped instead (also counted in `DROP_POLICY`).
    pub const RESET_FAILED: u32 = 13;
    /// New flow that an `Audit` policy would have denied (passed or not, as enforced).
    pub const AUDIT_WOULD_DENY: u32 = 14;
    /// A flow event could not be written because the ring buffer was full.
    pub const EVENTS_LOST: u32 = 15;
    /// Number of counters; the map has exactly this many entries.
    pub const COUNT: u32 = 16;

    /// Names for logs, metrics and tests, indexed like the counters.
    pub const NAMES: [&str; COUNT as usize] = [
        "pass_established",
        "pass_new",
        "pass_related",
        "pass_not_ip",
        "pass_fragment",
        "pass_own_reset",
        "drop_policy",
        "drop_spoofed",
        "drop_malformed",
        "drop_ext_headers",
        "drop_no_verdict",
        "drop_no_policy",
        "reset_sent",
        "reset_failed",
        "audit_would_deny",
        "events_lost",
    ];
}

/// Address family values used in keys (the kernel's `AF_INET` / `AF_INET6`).
pub const FAMILY_V4: u8 = 2;
pub const FAMILY_V6: u8 = 10;

/// Identities are small integers; 0 is never assigned, so a zeroed key field is no identity.
pub const IDENTITY_NONE: u32 = 0;

/// An entry of the IPv4 identity table: `prefix_len` counts the leading bits of `addr_be`
/// that must match (0-32), the others are zero. Also the key of `ZW_ID4_LONG` (hash), which
/// holds the entries longer than `IDENTITY_V4_BLOCK_BITS`.
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

/// Value of the identity tables.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub struct IdentityValue {
    /// Never `IDENTITY_NONE`: every address has an identity (at least its zone's).
    pub identity: u32,
    /// Index of the identity's zone in the compiled zone list (for flow records).
    pub zone: u32,
}
const _: () = assert!(size_of::<IdentityValue>() == 8);

/// The IPv4 identity table is split at this prefix length: `ZW_ID4_BLOCKS` has one
/// `IdentityBlockV4` per 16-bit block, `ZW_ID4_LONG` the longer prefixes.
pub const IDENTITY_V4_BLOCK_BITS: u32 = 16;
/// Entries of `ZW_ID4_BLOCKS`.
pub const IDENTITY_V4_BLOCKS: u32 = 1 << IDENTITY_V4_BLOCK_BITS;

/// Value of `ZW_ID4_BLOCKS` at index `address >> 16`. The identity of an address is the
/// value of the longest prefix in `ZW_ID4_LONG` that holds it, trying only the lengths
/// `longer` names, longest first; else `value`.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub struct IdentityBlockV4 {
    /// The longest prefix of at most 16 bits that covers the whole block;
    /// `identity == IDENTITY_NONE` when none does (the lookup misses: fail closed).
    pub value: IdentityValue,
    /// Bit `n` set: `ZW_ID4_LONG` holds prefixes of length `IDENTITY_V4_BLOCK_BITS + 1 + n`
    /// inside this block.
    pub longer: u32,
}
const _: () = assert!(size_of::<IdentityBlockV4>() == 12);

impl IdentityBlockV4 {
    /// The prefix length that bit `n` of `longer` stands for.
    #[inline(always)]
    pub const fn length(n: u32) -> u32 {
        IDENTITY_V4_BLOCK_BITS + 1 + n
    }

    /// The key of `ZW_ID4_LONG` to try for `addr` (host order) at bit `n` of `longer`.
    #[inline(always)]
    pub const fn long_key(addr: u32, n: u32) -> IdentityKeyV4 {
        let prefix_len = Self::length(n);
        IdentityKeyV4 {
            prefix_len,
            addr_be: (addr & (u32::MAX << (32 - prefix_len))).to_be_bytes(),
        }
    }
}

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

/// The rules a packet of an allowed flow counts for: its egress rule, and its ingress rule
/// when that is another one (a rule that allowed both directions counts the packet once).
/// The programs count by it, and the agent adds packets still waiting in the flow cache by it.
#[inline(always)]
pub fn flow_rules(egress_rule_id: u32, ingress_rule_id: u32) -> [Option<u32>; 2] {
    [
        Some(egress_rule_id),
        (ingress_rule_id != egress_rule_id).then_some(ingress_rule_id),
    ]
}

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

/// Map capacities compiled into the object (the agent checks the compiled tables against
/// them before it writes anything).
pub mod capacity {
    /// Entries of each `ZW_ID4_LONG` slot (the IPv4 prefixes longer than 16 bits).
    pub const IDENTITY_V4: u32 = 262_144;
    pub const IDENTITY_V6: u32 = 262_144;
    pub const POLICY: u32 = 1_048_576;
    pub const CONNTRACK: u32 = 262_144;
    pub const ENDPOINTS: u32 = 65_536;
    /// Rule ids are below this (the rule statistics array has one slot per id).
    pub const RULES: u32 = 65_536;
    pub const DENIES: u32 = 16_384;
    /// Bytes of the event ring buffer (a power of two, a multiple of the page size).
    pub const EVENTS_BYTES: u32 = 4 * 1024 * 1024;
}

/// `skb->mark` of a reset zonewall built itself, so the program that sees it next passes it.
pub const MARK_OWN_RESET: u32 = 0x5a57_0001;

/// Idle timeouts: a conntrack entry not seen for longer is treated as absent (the next packet
/// is a new flow and goes through the policy); userspace reports and removes it.
pub mod timeout {
    const SECOND: u64 = 1_000_000_000;
    /// TCP, only the initiator's SYN seen.
    pub const TCP_SYN_NS: u64 = 60 * SECOND;
    /// TCP, both sides seen and no FIN or RST.
    pub const TCP_ESTABLISHED_NS: u64 = 2 * 3600 * SECOND;
    /// TCP after a RST, or after FINs from both sides.
    pub const TCP_CLOSING_NS: u64 = 10 * SECOND;
    pub const UDP_NS: u64 = 60 * SECOND;
    pub const ICMP_NS: u64 = 30 * SECOND;
    pub const OTHER_NS: u64 = 60 * SECOND;
    /// Denied attempts with the same (source, destination, protocol, port, rule) within this
    /// window are reported once, with a count.
    pub const DENY_WINDOW_NS: u64 = 5 * SECOND;
}

/// Conntrack key: the flow's two endpoints in canonical order (`(addr_a, port_a)` is the
/// smaller, comparing bytes), so both directions find the same entry with one lookup. IPv4
/// addresses occupy the first 4 bytes. For ICMP echo both ports hold the identifier; for
/// protocols without ports both are zero.
/// Aligned to 8 bytes so the programs compare and hash it as five words.
#[repr(C, align(8))]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub struct CtKey {
    pub addr_a_be: [u8; 16],
    pub addr_b_be: [u8; 16],
    pub port_a_be: [u8; 2],
    pub port_b_be: [u8; 2],
    pub protocol: u8,
    pub family: u8,
    pub _pad: [u8; 2],
}
const _: () = assert!(size_of::<CtKey>() == 40);

impl CtKey {
    /// The key's bytes as five machine words.
    #[inline(always)]
    pub fn words(&self) -> &[u64; 5] {
        // SAFETY: `CtKey` is 40 bytes of integers with explicit padding fields (no padding
        // the compiler adds) and 8-byte aligned, so it is a valid `[u64; 5]`.
        unsafe { &*(self as *const CtKey).cast::<[u64; 5]>() }
    }
}

/// `CtValue::flags`: the initiator is endpoint a of the key.
pub const CT_INITIATOR_A: u8 = 1;
/// `CtValue::flags`: a packet from the responder was seen.
pub const CT_REPLIED: u8 = 2;
/// `CtValue::flags`: FIN seen from the initiator.
pub const CT_FIN_INITIATOR: u8 = 4;
/// `CtValue::flags`: FIN seen from the responder.
pub const CT_FIN_RESPONDER: u8 = 8;
/// `CtValue::flags`: RST seen.
pub const CT_RST: u8 = 16;
/// `CtValue::flags`: the flow end was reported (FIN both ways or RST).
pub const CT_END_REPORTED: u8 = 32;
/// `CtValue::flags`: the RST came from the responder.
pub const CT_RST_FROM_RESPONDER: u8 = 64;

/// How long a conntrack entry lives without packets, given its protocol and `CT_*` flags;
/// the kernel treats an older entry as absent and userspace reports and removes it.
pub const fn idle_timeout_ns(protocol: u8, flags: u8) -> u64 {
    let both_fins = CT_FIN_INITIATOR | CT_FIN_RESPONDER;
    match protocol {
        6 => {
            if flags & CT_RST != 0 || flags & both_fins == both_fins {
                timeout::TCP_CLOSING_NS
            } else if flags & CT_REPLIED == 0 {
                timeout::TCP_SYN_NS
            } else {
                timeout::TCP_ESTABLISHED_NS
            }
        }
        17 => timeout::UDP_NS,
        1 | 58 => timeout::ICMP_NS,
        _ => timeout::OTHER_NS,
    }
}

/// Conntrack value. Only allowed flows have entries; a denied packet never creates one.
/// "Forward" counts packets from the initiator. The forward and reverse counters are 56 bytes
/// apart, so never on one cache line: the two directions of a flow are often counted on two
/// CPUs, and a shared line would move between them on every packet.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct CtValue {
    pub packets_forward: u64,
    pub bytes_forward: u64,
    pub created_ns: u64,
    pub last_seen_ns: u64,
    /// Policy generation the verdict was computed with.
    pub generation: u32,
    /// The rules that allowed the flow at egress (source zone) and ingress (destination
    /// zone).
    pub egress_rule_id: u32,
    pub ingress_rule_id: u32,
    /// The first matching rule of an `Audit` policy (`RULE_ID_NONE` without one).
    pub audit_rule_id: u32,
    /// Zone indexes of the initiator and the responder.
    pub initiator_zone: u32,
    pub responder_zone: u32,
    /// The interface whose programs count this flow's packets and bytes: the one that
    /// created the entry. A flow between two local workloads passes two interfaces; counting
    /// at one of them keeps the figures exact.
    pub ifindex: u32,
    /// Anti-spoofing already done for this flow in `generation`: the workload interface the
    /// initiator's (and the responder's) packets were checked against `ZW_ENDPOINTS` to be
    /// sent from, 0 while unchecked. A packet from that interface skips the lookup. The agent
    /// changes `ZW_ENDPOINTS` only before switching to a new generation, so a check is never
    /// older than the endpoints in force.
    pub initiator_sender: u32,
    pub responder_sender: u32,
    /// `CT_*` bits.
    pub flags: u8,
    /// `POLICY_FLAG_*` of the verdict.
    pub policy_flags: u8,
    /// `OBSERVED_*`: the hook (at `ifindex`) that created the entry.
    pub observed: u8,
    pub _pad: u8,
    pub packets_reverse: u64,
    pub bytes_reverse: u64,
}
const _: () = assert!(size_of::<CtValue>() == 88);
const _: () = assert!(core::mem::offset_of!(CtValue, packets_reverse) == 72);

impl CtValue {
    /// Whether a packet whose source is endpoint a of the key (or b) goes forward, from the
    /// initiator.
    #[inline(always)]
    pub fn forward(&self, source_is_a: bool) -> bool {
        (self.flags & CT_INITIATOR_A != 0) == source_is_a
    }

    /// Whether the hook `observed` of interface `ifindex` counts the flow's packets going
    /// `forward` (or back): the creating hook counts the initiator's packets, the other hook
    /// of the same interface the responder's.
    #[inline(always)]
    pub fn counted_at(&self, ifindex: u32, observed: u8, forward: bool) -> bool {
        let hook = if forward {
            self.observed
        } else {
            1 - self.observed
        };
        self.ifindex == ifindex && observed == hook
    }
}

/// Slots of the per-CPU flow cache (`ZW_FLOW_CACHE`), a power of two.
pub const FLOW_CACHE_SLOTS: usize = 8;

/// One flow the programs passed on this CPU in the current clock tick, seen at one hook of
/// one interface from one side. Another packet that matches it in the same tick and policy
/// generation, and carries no FIN or RST, passes without the conntrack lookup: everything
/// that lookup would check (idle timeout, anti-spoofing, verdict) was checked for the same
/// flow, sender and interface at most a tick before. Its packets and bytes wait in the slot
/// until the next conntrack lookup of the flow on this CPU (a tick later while it keeps
/// sending), another flow taking the slot, or the agent's idle sweep. The slot's index
/// says the hook and the side (`FlowCacheSlot::index`).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct FlowCacheSlot {
    pub key: CtKey,
    /// The low 32 bits of the jiffies counter in the tick the slot is valid for.
    pub tick: u32,
    /// Policy generation the slot was filled in; 0 (never live) marks an empty slot.
    pub generation: u32,
    pub ifindex: u32,
    /// Packets and bytes passed through the slot and not yet added to the flow's counters.
    pub packets: u32,
    pub bytes: u64,
    /// The rules the slot's packets count for (`RULE_ID_NONE` at a hook that does not count
    /// the flow): kept here so they are counted even when the flow's entry is gone.
    pub egress_rule_id: u32,
    pub ingress_rule_id: u32,
}
const _: () = assert!(size_of::<FlowCacheSlot>() == 72);

impl FlowCacheSlot {
    /// The slot of a flow seen at hook `observed` of `ifindex` from one side: bit 0 is the
    /// hook and bit 1 the side, so the two hooks and two directions of one flow never take
    /// each other's slot; the rest is a hash of the key and interface.
    #[inline(always)]
    pub fn index(key: &CtKey, ifindex: u32, observed: u8, source_is_a: bool) -> usize {
        let w = key.words();
        let mut h = w[0] ^ w[1] ^ w[2] ^ w[3] ^ w[4] ^ u64::from(ifindex);
        h ^= h >> 32;
        h ^= h >> 16;
        h ^= h >> 8;
        let low = (usize::from(source_is_a) << 1) | usize::from(observed & 1);
        ((h as usize) << 2 | low) & (FLOW_CACHE_SLOTS - 1)
    }

    /// Adds the packets and bytes waiting in the slot at `index` to the flow's entry if that
    /// slot's hook counts them (`CtValue::counted_at`); returns whether it did.
    #[inline(always)]
    pub fn add_to(&self, index: usize, entry: &mut CtValue) -> bool {
        let forward = entry.forward(index & 2 != 0);
        if self.packets == 0 || !entry.counted_at(self.ifindex, (index & 1) as u8, forward) {
            return false;
        }
        if forward {
            entry.packets_forward += u64::from(self.packets);
            entry.bytes_forward += self.bytes;
        } else {
            entry.packets_reverse += u64::from(self.packets);
            entry.bytes_reverse += self.bytes;
        }
        true
    }
}

/// Value of `ZW_FLOW_CACHE`, a per-CPU array with one entry.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct FlowCache {
    pub slots: [FlowCacheSlot; FLOW_CACHE_SLOTS],
    /// Packets added to their flow's counters only after its end was reported (they passed
    /// on another CPU in the tick the flow ended), so its end record does not include them.
    pub late_packets: u64,
}
const _: () = assert!(size_of::<FlowCache>() == FLOW_CACHE_SLOTS * 72 + 8);

/// Entries of the per-CPU identity cache (`ZW_IDENT_CACHE`), a power of two.
pub const IDENTITY_CACHE_ENTRIES: usize = 16;

/// One address's identity as the identity table of one policy generation gives it. A new
/// flow's two identity lookups (longest-prefix lookups over up to 100,000s of prefixes,
/// cold under load) are a large part of its cost; the workload's own address, and peers it talks to
/// again, are found here instead. An entry is used only while its generation is live: the
/// identity tables of a live generation never change, so it always equals the lookup.
#[repr(C, align(8))]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct IdentityCacheEntry {
    /// The address, IPv4 in the first four bytes and the rest zero.
    pub addr_be: [u8; 16],
    pub value: IdentityValue,
    /// Generation whose tables gave `value`; 0 (never live) marks an empty entry.
    pub generation: u32,
    pub family: u8,
    pub _pad: [u8; 3],
}
const _: () = assert!(size_of::<IdentityCacheEntry>() == 32);

impl IdentityCacheEntry {
    /// The entry an address of `family` maps to as a flow's source (`destination` false) or
    /// destination: bit 0 is the role, so a flow's two addresses never take each other's
    /// entry (a workload's own address is always one of them).
    #[inline(always)]
    pub fn index(family: u8, addr_be: &[u8; 16], destination: bool) -> usize {
        let mut h = u64::from_ne_bytes([
            addr_be[0], addr_be[1], addr_be[2], addr_be[3], addr_be[4], addr_be[5], addr_be[6],
            addr_be[7],
        ]) ^ u64::from_ne_bytes([
            addr_be[8],
            addr_be[9],
            addr_be[10],
            addr_be[11],
            addr_be[12],
            addr_be[13],
            addr_be[14],
            addr_be[15],
        ]) ^ u64::from(family);
        h ^= h >> 32;
        h ^= h >> 16;
        h ^= h >> 8;
        ((h as usize) << 1 | usize::from(destination)) & (IDENTITY_CACHE_ENTRIES - 1)
    }
}

/// Value of `ZW_IDENT_CACHE`, a per-CPU array with one entry.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct IdentityCache {
    pub entries: [IdentityCacheEntry; IDENTITY_CACHE_ENTRIES],
}

/// Entries of the per-CPU policy verdict cache (`ZW_POLICY_CACHE`), a power of two.
pub const POLICY_CACHE_ENTRIES: usize = 32;

/// One policy lookup's result in the tables of one policy generation: the key data of
/// `ZW_POLICY` (direction, subject, peer, protocol, port) and the value its longest match
/// gave. New flows between the same identities to the same service (every external address
/// of a feed, or of the external zone, is one identity) skip the policy trie. Used only
/// while its generation is live, whose tables never change, so it equals the lookup.
#[repr(C, align(8))]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct PolicyCacheEntry {
    pub data: [u8; 12],
    pub value: PolicyValue,
    /// Generation whose tables gave `value`; 0 (never live) marks an empty entry.
    pub generation: u32,
    pub _pad: u32,
}
const _: () = assert!(size_of::<PolicyCacheEntry>() == 32);

impl PolicyCacheEntry {
    /// The entry of a lookup with key data `data`: bit 0 is the direction, so the egress
    /// and ingress lookups of one flow never take each other's entry.
    #[inline(always)]
    pub fn index(data: &[u8; 12]) -> usize {
        let subject = u32::from_ne_bytes([data[1], data[2], data[3], data[4]]);
        let peer = u32::from_ne_bytes([data[5], data[6], data[7], data[8]]);
        let service = u32::from_ne_bytes([data[9], data[10], data[11], 0]);
        let mut h = subject ^ peer.rotate_left(11) ^ service.rotate_left(22);
        h ^= h >> 16;
        h ^= h >> 8;
        ((h as usize) << 1 | usize::from(data[0] & 1)) & (POLICY_CACHE_ENTRIES - 1)
    }
}

/// Value of `ZW_POLICY_CACHE`, a per-CPU array with one entry.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct PolicyCache {
    pub entries: [PolicyCacheEntry; POLICY_CACHE_ENTRIES],
}

/// Key of `ZW_ENDPOINTS`: one address a local workload interface may send from.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct EndpointKey {
    pub ifindex: u32,
    pub family: u8,
    pub _pad: [u8; 3],
    pub addr_be: [u8; 16],
}
const _: () = assert!(size_of::<EndpointKey>() == 24);

/// Value of `ZW_ENDPOINTS`: reserved (the key is what matters).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub struct EndpointValue {
    pub flags: u32,
}
const _: () = assert!(size_of::<EndpointValue>() == 4);

/// Value of `ZW_RULE_STATS`, per CPU: packets and bytes of flows a rule decided.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub struct RuleStats {
    pub packets: u64,
    pub bytes: u64,
}
const _: () = assert!(size_of::<RuleStats>() == 16);

/// `Config::flags`: flow events are wanted (someone reads the ring buffer): flow start for
/// rules that log at start, flow end for rules that log at end, and denied attempts.
pub const CONFIG_FLAG_EVENTS: u32 = 1;
/// `Config::flags`: new flows bypass the per-CPU identity and verdict caches
/// (`ZW_IDENT_CACHE`, `ZW_POLICY_CACHE`) and always take the table lookups. The kernel
/// benchmark sets it to time those lookups with a repeated packet; the agent never does.
pub const CONFIG_FLAG_NO_LOOKUP_CACHES: u32 = 2;

/// `ZW_CONFIG[0]`.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub struct Config {
    /// The live policy generation; 0 means no policy is loaded and everything IP is dropped.
    /// Its parity is the slot of the identity and policy maps the programs read. A conntrack
    /// entry of an older generation is evaluated again on its next packet.
    pub generation: u32,
    /// `CONFIG_FLAG_*`.
    pub flags: u32,
}
const _: () = assert!(size_of::<Config>() == 8);

/// `FlowEvent::kind`.
pub const EVENT_FLOW_START: u8 = 1;
/// The flow ended in the kernel's view (RST, or FIN from both sides); idle ends are found by
/// userspace.
pub const EVENT_FLOW_END: u8 = 2;
/// A denied attempt; `count` is how many were aggregated into it.
pub const EVENT_DENY: u8 = 3;

/// `FlowEvent::reason` for `EVENT_FLOW_END`.
pub const END_REASON_FIN: u8 = 1;
/// RST from the initiator.
pub const END_REASON_RST: u8 = 2;
/// RST from the responder.
pub const END_REASON_RST_RESPONDER: u8 = 3;

/// `FlowEvent::direction`: where the event was observed.
pub const OBSERVED_FROM_WORKLOAD: u8 = 0;
pub const OBSERVED_TO_WORKLOAD: u8 = 1;

/// One record of the `ZW_EVENTS` ring buffer. Source and destination are the initiator and
/// the responder (for a deny: the denied packet's).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct FlowEvent {
    pub timestamp_ns: u64,
    pub created_ns: u64,
    pub packets_forward: u64,
    pub bytes_forward: u64,
    pub packets_reverse: u64,
    pub bytes_reverse: u64,
    pub src_addr_be: [u8; 16],
    pub dst_addr_be: [u8; 16],
    pub src_port_be: [u8; 2],
    pub dst_port_be: [u8; 2],
    /// Deciding rule (for a deny: the denying rule).
    pub rule_id: u32,
    /// For allowed flows: the ingress rule (`rule_id` is the egress one).
    pub other_rule_id: u32,
    pub audit_rule_id: u32,
    pub src_zone: u32,
    pub dst_zone: u32,
    pub ifindex: u32,
    /// Aggregated attempts (deny), else 1.
    pub count: u32,
    pub kind: u8,
    pub family: u8,
    pub protocol: u8,
    pub action: u8,
    pub reason: u8,
    pub direction: u8,
    pub policy_flags: u8,
    pub _pad: u8,
}
const _: () = assert!(size_of::<FlowEvent>() == 120);

impl FlowEvent {
    /// The end event of a tracked flow, from its conntrack entry: source and destination are
    /// the initiator and the responder. `reason` is an `END_REASON_*` (0: idle, found by
    /// userspace). The kernel and userspace build end events only here.
    #[inline(always)]
    pub fn flow_end(key: &CtKey, entry: &CtValue, timestamp_ns: u64, reason: u8) -> FlowEvent {
        let initiator_a = entry.flags & CT_INITIATOR_A != 0;
        let (src, sport, dst, dport) = if initiator_a {
            (key.addr_a_be, key.port_a_be, key.addr_b_be, key.port_b_be)
        } else {
            (key.addr_b_be, key.port_b_be, key.addr_a_be, key.port_a_be)
        };
        FlowEvent {
            timestamp_ns,
            created_ns: entry.created_ns,
            packets_forward: entry.packets_forward,
            bytes_forward: entry.bytes_forward,
            packets_reverse: entry.packets_reverse,
            bytes_reverse: entry.bytes_reverse,
            src_addr_be: src,
            dst_addr_be: dst,
            src_port_be: sport,
            dst_port_be: dport,
            rule_id: entry.egress_rule_id,
            other_rule_id: entry.ingress_rule_id,
            audit_rule_id: entry.audit_rule_id,
            src_zone: entry.initiator_zone,
            dst_zone: entry.responder_zone,
            ifindex: entry.ifindex,
            count: 1,
            kind: EVENT_FLOW_END,
            family: key.family,
            protocol: key.protocol,
            action: ACTION_ALLOW,
            reason,
            direction: entry.observed,
            policy_flags: entry.policy_flags,
            _pad: 0,
        }
    }
}

/// Key of `ZW_DENIES`: one kind of denied attempt.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub struct DenyKey {
    pub src_addr_be: [u8; 16],
    pub dst_addr_be: [u8; 16],
    pub dst_port_be: [u8; 2],
    pub protocol: u8,
    pub family: u8,
    pub rule_id: u32,
}
const _: () = assert!(size_of::<DenyKey>() == 40);

/// Value of `ZW_DENIES`: when the current window started and how many attempts it has seen
/// that were not reported yet.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub struct DenyValue {
    pub window_start_ns: u64,
    pub unreported: u32,
    pub src_zone: u32,
    pub dst_zone: u32,
    pub ifindex: u32,
    pub action: u8,
    pub direction: u8,
    pub _pad: [u8; 6],
}
const _: () = assert!(size_of::<DenyValue>() == 32);

#[cfg(feature = "user")]
mod user {
    // SAFETY: plain `#[repr(C)]` integers and byte arrays, no padding the compiler may leave
    // uninitialised (sizes are asserted above), every bit pattern is valid.
    unsafe impl aya::Pod for super::IdentityKeyV4 {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::IdentityKeyV6 {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::IdentityValue {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::IdentityBlockV4 {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::PolicyKey {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::PolicyValue {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::CtKey {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::CtValue {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::EndpointKey {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::EndpointValue {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::RuleStats {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::Config {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::FlowEvent {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::DenyKey {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::DenyValue {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::FlowCache {}
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(initiator_a: bool, observed: u8) -> CtValue {
        CtValue {
            flags: if initiator_a { CT_INITIATOR_A } else { 0 },
            ifindex: 7,
            observed,
            ..CtValue::default()
        }
    }

    #[test]
    fn a_flows_hooks_and_sides_take_four_different_slots() {
        let key = CtKey {
            addr_a_be: [10, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0],
            addr_b_be: [10, 0, 0, 2, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0],
            port_a_be: 40000u16.to_be_bytes(),
            port_b_be: 8080u16.to_be_bytes(),
            protocol: 6,
            family: FAMILY_V4,
            _pad: [0; 2],
        };
        let mut slots = [
            (OBSERVED_FROM_WORKLOAD, true),
            (OBSERVED_TO_WORKLOAD, true),
            (OBSERVED_FROM_WORKLOAD, false),
            (OBSERVED_TO_WORKLOAD, false),
        ]
        .map(|(observed, side)| FlowCacheSlot::index(&key, 7, observed, side));
        assert!(slots.iter().all(|&slot| slot < FLOW_CACHE_SLOTS));
        slots.sort();
        assert!(slots.windows(2).all(|pair| pair[0] != pair[1]), "{slots:?}");
    }

    #[test]
    fn a_rule_allowing_both_directions_counts_a_packet_once() {
        assert_eq!(flow_rules(5, 5), [Some(5), None]);
        assert_eq!(flow_rules(5, 6), [Some(5), Some(6)]);
    }

    #[test]
    fn a_flows_source_and_destination_never_share_an_identity_cache_entry() {
        let mut addresses = [[0u8; 16]; 257];
        for (last, addr) in addresses.iter_mut().take(256).enumerate() {
            addr[..4].copy_from_slice(&[10, 0, 0, last as u8]);
        }
        addresses[256] = [0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1];
        let mut used = [false; IDENTITY_CACHE_ENTRIES];
        for addr in &addresses {
            for family in [FAMILY_V4, FAMILY_V6] {
                let source = IdentityCacheEntry::index(family, addr, false);
                let destination = IdentityCacheEntry::index(family, addr, true);
                assert!(source < IDENTITY_CACHE_ENTRIES && destination < IDENTITY_CACHE_ENTRIES);
                assert_eq!((source & 1, destination & 1), (0, 1));
                used[source] = true;
                used[destination] = true;
            }
        }
        // 256 neighbouring addresses spread over every entry, not a few.
        assert!(used.iter().all(|&u| u), "{used:?}");
    }

    #[test]
    fn a_flows_two_policy_lookups_never_share_a_cache_entry() {
        let mut used = [false; POLICY_CACHE_ENTRIES];
        // 90 identities against one peer, and one pair over 64 ports.
        let keys = (1u32..=90)
            .map(|subject| (subject, 7u32, 443u16))
            .chain((0..64).map(|port| (3, 5, 8000 + port)));
        for (subject, peer, port) in keys {
            let (s, p, port) = (
                subject.to_be_bytes(),
                peer.to_be_bytes(),
                port.to_be_bytes(),
            );
            let data = |direction: u8| {
                [
                    direction, s[0], s[1], s[2], s[3], p[0], p[1], p[2], p[3], 6, port[0], port[1],
                ]
            };
            let egress = PolicyCacheEntry::index(&data(DIRECTION_EGRESS));
            let ingress = PolicyCacheEntry::index(&data(DIRECTION_INGRESS));
            assert!(egress < POLICY_CACHE_ENTRIES && ingress < POLICY_CACHE_ENTRIES);
            assert_eq!((egress & 1, ingress & 1), (0, 1));
            used[egress] = true;
            used[ingress] = true;
        }
        assert!(used.iter().all(|&u| u), "{used:?}");
    }

    #[test]
    fn waiting_packets_go_to_their_direction_only_at_the_counting_hook() {
        let slot = FlowCacheSlot {
            ifindex: 7,
            packets: 3,
            bytes: 300,
            ..FlowCacheSlot::default()
        };
        // Index bit 1: the packets' source is endpoint a; bit 0: the hook.
        let (a_from, a_to, b_from) = (0b10, 0b11, 0b00);
        // Initiator a, entry created at the from-workload hook: a's packets count there.
        let mut created_from = entry(true, OBSERVED_FROM_WORKLOAD);
        assert!(slot.add_to(a_from, &mut created_from));
        assert_eq!(
            (created_from.packets_forward, created_from.bytes_forward),
            (3, 300)
        );
        assert!(
            !slot.add_to(a_to, &mut created_from),
            "not the counting hook"
        );
        assert_eq!(created_from.packets_forward, 3);
        // The responder's packets count at the other hook of the same interface.
        let mut responder = entry(true, OBSERVED_TO_WORKLOAD);
        assert!(slot.add_to(b_from, &mut responder));
        assert_eq!(
            (responder.packets_reverse, responder.packets_forward),
            (3, 0)
        );
        // Another interface never counts; an empty slot adds nothing.
        let elsewhere = FlowCacheSlot { ifindex: 8, ..slot };
        assert!(!elsewhere.add_to(a_from, &mut entry(true, OBSERVED_FROM_WORKLOAD)));
        let empty = FlowCacheSlot { packets: 0, ..slot };
        assert!(!empty.add_to(a_from, &mut entry(true, OBSERVED_FROM_WORKLOAD)));
    }
}
