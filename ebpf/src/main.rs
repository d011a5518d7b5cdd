//! zonewall's TC programs, attached to the host-side interface of every local workload, both
//! directions.
//!
//! Per packet: our own resets pass; the packet is parsed (malformed fails closed); link-local
//! control and non-IP pass; a workload's packet with a source address that is not its own is
//! dropped; then conntrack first: a packet of a tracked, allowed flow passes (re-evaluated
//! once when the policy generation changed; within a clock tick on this CPU's flow cache,
//! `flowcache.rs`), an ICMP error about one passes. Only a new flow
//! does the identity and policy lookups (`policy.rs`); an allowed one gets a conntrack entry
//! with its rules and zones, a denied one is dropped (or reset) and reported, aggregated.
#![no_std]
#![no_main]
// Map keys are passed by reference on purpose: by value they would be copied onto the
// 512-byte BPF stack first.
#![allow(
    clippy::needless_borrows_for_generic_args,
    reason = "keys by reference keep them off the BPF stack"
)]

mod conntrack;
mod flowcache;
mod parse;
mod policy;
mod reset;

use aya_ebpf::{
    helpers::{bpf_jiffies64, bpf_ktime_get_coarse_ns},
    macros::{classifier, map},
    maps::{Array, HashMap, LruHashMap, PerCpuArray, RingBuf},
    programs::TcContext,
};
use parse::{IPPROTO_TCP, Kind, Packet, ParseError, TCP_FIN, TCP_RST};
use policy::FlowVerdict;
use zonewall_common::{
    ACTION_ALLOW, ACTION_RESET_BOTH, ACTION_RESET_CLIENT, CONFIG_FLAG_EVENTS,
    CONFIG_FLAG_NO_LOOKUP_CACHES, CT_END_REPORTED, CT_INITIATOR_A, CT_RST, CT_RST_FROM_RESPONDER,
    Config, CtKey, CtValue, DenyKey, DenyValue, END_REASON_FIN, END_REASON_RST,
    END_REASON_RST_RESPONDER, EVENT_DENY, EVENT_FLOW_START, EndpointKey, EndpointValue, FlowCache,
    FlowCacheSlot, FlowEvent, MARK_OWN_RESET, OBSERVED_FROM_WORKLOAD, OBSERVED_TO_WORKLOAD,
    POLICY_FLAG_LOG_END, POLICY_FLAG_LOG_START, POLICY_FLAG_WOULD_DENY, RuleStats, capacity,
    counter, flow_rules, timeout,
};

/// Pass the packet on: with tcx this is "next" (the CNI's own programs still run), with
/// clsact it is "unspecified" (the default action), so zonewall never short-cuts a chain.
const ACT_CONTINUE: i32 = -1;
const ACT_DROP: i32 = aya_ebpf::bindings::TC_ACT_SHOT;

#[map(name = "ZW_CT")]
static CONNTRACK: LruHashMap<CtKey, CtValue> = LruHashMap::pinned(capacity::CONNTRACK, 0);

#[map(name = "ZW_ENDPOINTS")]
static ENDPOINTS: HashMap<EndpointKey, EndpointValue> = HashMap::pinned(capacity::ENDPOINTS, 0);

#[map(name = "ZW_RULE_STATS")]
static RULE_STATS: PerCpuArray<RuleStats> = PerCpuArray::pinned(capacity::RULES, 0);

#[map(name = "ZW_CONFIG")]
static CONFIG: Array<Config> = Array::pinned(1, 0);

#[map(name = "ZW_COUNTERS")]
static COUNTERS: PerCpuArray<u64> = PerCpuArray::pinned(counter::COUNT, 0);

#[map(name = "ZW_EVENTS")]
static EVENTS: RingBuf = RingBuf::pinned(capacity::EVENTS_BYTES, 0);

#[map(name = "ZW_DENIES")]
static DENIES: LruHashMap<DenyKey, DenyValue> = LruHashMap::pinned(capacity::DENIES, 0);

#[map(name = "ZW_FLOW_CACHE")]
static FLOW_CACHE: PerCpuArray<FlowCache> = PerCpuArray::pinned(1, 0);

/// Packets the workload sends (TC ingress of its host-side interface).
#[classifier]
pub fn zw_from_workload(ctx: TcContext) -> i32 {
    decide(&ctx, OBSERVED_FROM_WORKLOAD)
}

/// Packets sent to the workload (TC egress of its host-side interface).
#[classifier]
pub fn zw_to_workload(ctx: TcContext) -> i32 {
    decide(&ctx, OBSERVED_TO_WORKLOAD)
}

/// What every step needs to know about the packet besides its headers.
#[derive(Clone, Copy, Default)]
struct Meta {
    observed: u8,
    ifindex: u32,
    generation: u32,
    config_flags: u32,
    /// The low 32 bits of the jiffies counter: the flow cache's clock tick.
    tick: u32,
    /// The coarse clock in ns; read only past the flow cache (`read_clock`).
    now: u64,
    bytes: u64,
}

/// The policy's verdicts for the packet (turned around to its flow's direction when
/// `initiator`) into `s.verdict`, through the per-CPU caches unless the configuration turns
/// them off; false when a lookup missed (the caller fails closed).
#[inline(always)]
fn evaluate(s: &mut Scratch, initiator: bool, with_port: bool) -> bool {
    let packet = if initiator { &s.initiator } else { &s.packet };
    let caches = s.meta.config_flags & CONFIG_FLAG_NO_LOOKUP_CACHES == 0;
    policy::evaluate(packet, s.meta.generation, caches, with_port, &mut s.verdict)
}

/// This CPU's value of a one-entry per-CPU map. A map's values are written through the
/// shared handle the program holds: that is what a BPF map is, hence the lint.
#[allow(clippy::mut_from_ref)]
#[inline(always)]
pub(crate) fn this_cpu<T>(map: &'static PerCpuArray<T>) -> Option<&'static mut T> {
    // SAFETY: a per-CPU value belongs to this CPU while the program runs, and each caller
    // takes one reference to it at a time.
    map.get_ptr_mut(0).map(|value| unsafe { &mut *value })
}

/// Per-CPU working memory of one decision: the BPF stack (512 bytes over all frames of a
/// call chain) is too small for the packet, keys, entries and events it needs. `repr(C)`:
/// what every packet writes (packet, key, meta) comes first, on two or three cache lines.
#[derive(Clone, Copy, Default)]
#[repr(C)]
struct Scratch {
    packet: Packet,
    key: CtKey,
    meta: Meta,
    /// The packet turned around, when a reply is evaluated in its flow's direction.
    initiator: Packet,
    related: CtKey,
    entry: CtValue,
    verdict: FlowVerdict,
    event: FlowEvent,
    deny_key: DenyKey,
    deny_value: DenyValue,
    /// The anti-spoofing key; its padding is never written, so stays zero.
    endpoint: EndpointKey,
}

#[map(name = "ZW_SCRATCH")]
static SCRATCH: PerCpuArray<Scratch> = PerCpuArray::pinned(1, 0);

/// `tracked` found no live entry: the packet starts a new flow.
const NEW_FLOW: i32 = i32::MIN;

/// Does nothing and passes: the baseline `cargo xtask bench` measures the other programs
/// against. Never attached.
#[classifier]
pub fn zw_empty(_ctx: TcContext) -> i32 {
    ACT_CONTINUE
}

#[inline(always)]
fn decide(ctx: &TcContext, observed: u8) -> i32 {
    // SAFETY: the context's socket buffer is valid for the whole program run.
    let (mark, ifindex, len) = unsafe {
        let skb = &*ctx.skb.skb;
        (skb.mark, skb.ifindex, skb.len)
    };
    if mark == MARK_OWN_RESET {
        // SAFETY: as above; the mark is ours and means nothing past this point.
        unsafe { (*ctx.skb.skb).mark = 0 };
        return pass_packet(counter::PASS_OWN_RESET);
    }
    let Some(s) = this_cpu(&SCRATCH) else {
        return drop_packet(counter::DROP_NO_VERDICT);
    };
    // `parse` fills every field of `s.packet`, and `s.related` when the packet is an ICMP
    // error.
    let kind = match parse::outcome(parse::parse(ctx, &mut s.packet, &mut s.related)) {
        Ok(kind) => kind,
        Err(ParseError::Malformed) => return drop_packet(counter::DROP_MALFORMED),
        Err(ParseError::TooManyExtensionHeaders) => return drop_packet(counter::DROP_EXT_HEADERS),
    };
    if kind == Kind::NotIp || kind == Kind::LinkControl {
        return pass_packet(counter::PASS_NOT_IP);
    }
    let (generation, config_flags) = match CONFIG.get(0) {
        Some(config) if config.generation != 0 => (config.generation, config.flags),
        _ => return drop_packet(counter::DROP_NO_POLICY),
    };
    s.meta = Meta {
        observed,
        ifindex,
        generation,
        config_flags,
        // On a 64-bit JIT the verifier turns this helper into one load of `jiffies`: the
        // flow cache's hit path reads no other clock.
        // SAFETY: helper without arguments.
        tick: unsafe { bpf_jiffies64() } as u32,
        now: 0,
        bytes: u64::from(len),
    };
    if kind == Kind::Fragment || kind == Kind::IcmpError {
        read_clock(&mut s.meta);
    }
    match kind {
        Kind::Fragment | Kind::IcmpError if spoofed(s) => drop_packet(counter::DROP_SPOOFED),
        Kind::Fragment => {
            // No ports in this packet: only a rule without ports can allow it.
            if !evaluate(s, false, false) {
                return drop_packet(counter::DROP_NO_VERDICT);
            }
            count_rule(s.verdict.rule_id, 1, s.meta.bytes);
            if s.verdict.action == ACTION_ALLOW {
                pass_packet(counter::PASS_FRAGMENT)
            } else {
                drop_packet(counter::DROP_POLICY)
            }
        }
        Kind::IcmpError => {
            if let Some(entry) = CONNTRACK.get_ptr(&s.related) {
                // SAFETY: pointer from a successful lookup; read only.
                let entry = unsafe { &*entry };
                if entry.generation == generation
                    && !conntrack::expired(entry, s.related.protocol, s.meta.now)
                {
                    return pass_packet(counter::PASS_RELATED);
                }
            }
            new_flow(ctx, s)
        }
        _ => match tracked(s) {
            NEW_FLOW if spoofed(s) => drop_packet(counter::DROP_SPOOFED),
            NEW_FLOW => new_flow(ctx, s),
            action => action,
        },
    }
}

/// Sets `meta.now` to the coarse clock (the monotonic clock as of the last tick, a few ms
/// behind at most): enough for idle timeouts and flow times, and a fraction of the cost of
/// reading the clock source on every packet.
#[inline(always)]
fn read_clock(meta: &mut Meta) {
    // SAFETY: helper without arguments.
    meta.now = unsafe { bpf_ktime_get_coarse_ns() };
}

/// Whether the packet comes out of a workload with a source address that is not that
/// workload's.
#[inline(always)]
fn spoofed(s: &mut Scratch) -> bool {
    s.meta.observed == OBSERVED_FROM_WORKLOAD
        && !sent_by_owner(s.meta.ifindex, &s.packet, &mut s.endpoint)
}

/// Whether `ifindex` (a workload interface) may send from the packet's source address.
#[inline(always)]
fn sent_by_owner(ifindex: u32, packet: &Packet, key: &mut EndpointKey) -> bool {
    // Field by field: building a fresh key zeroes its padding with a `memset` call.
    key.ifindex = ifindex;
    key.family = packet.family;
    key.addr_be = packet.src;
    ENDPOINTS.get_ptr(key).is_some()
}

/// A packet of a tracked flow: passes on its flow cache slot when this CPU passed the flow
/// there in this tick and generation; else passes (after the anti-spoofing check unless it
/// was made for this side of the flow and interface in this generation, and after a new
/// evaluation when the policy generation changed) and takes the slot, or `NEW_FLOW` when
/// there is no live entry.
#[inline(never)]
fn tracked(s: &mut Scratch) -> i32 {
    let bytes = s.meta.bytes;
    let source_is_a = conntrack::key_of(&s.packet, &mut s.key);
    // A FIN or RST changes the flow's state, which only the conntrack path records.
    let cacheable =
        !(s.packet.protocol == IPPROTO_TCP && s.packet.tcp_flags & (TCP_FIN | TCP_RST) != 0);
    let slot = FlowCacheSlot::index(&s.key, s.meta.ifindex, s.meta.observed, source_is_a);
    let mut cache = this_cpu(&FLOW_CACHE);
    if let Some(cache) = cache.as_deref_mut()
        && cacheable
        && let Some(hit) = cache.slots.get_mut(slot)
        && flowcache::hit(hit, &s.key, &s.meta)
    {
        // Counted as `PASS_ESTABLISHED` when the slot is settled.
        hit.packets += 1;
        hit.bytes += bytes;
        return ACT_CONTINUE;
    }
    read_clock(&mut s.meta);
    let now = s.meta.now;
    let Some(entry) = CONNTRACK.get_ptr_mut(&s.key) else {
        return NEW_FLOW;
    };
    // SAFETY: pointer from a successful lookup; the entry stays valid while the program
    // runs. Concurrent updates from other CPUs may lose a counter increment, never corrupt
    // the entry.
    let entry = unsafe { &mut *entry };
    if conntrack::expired(entry, s.packet.protocol, now) {
        return NEW_FLOW;
    }
    if let Some(cache) = cache.as_deref_mut() {
        flowcache::settle_slot(cache, slot, &s.key, &s.meta, entry);
    }
    let forward = entry.forward(source_is_a);
    let current = entry.generation == s.meta.generation;
    let checked_sender = if forward {
        entry.initiator_sender
    } else {
        entry.responder_sender
    };
    let check_sender =
        s.meta.observed == OBSERVED_FROM_WORKLOAD && !(current && checked_sender == s.meta.ifindex);
    if check_sender && !sent_by_owner(s.meta.ifindex, &s.packet, &mut s.endpoint) {
        return drop_packet(counter::DROP_SPOOFED);
    }
    if !current {
        // The policy changed since this flow was allowed: ask again, in the flow's own
        // direction.
        s.initiator = s.packet;
        if !forward {
            s.initiator.src = s.packet.dst;
            s.initiator.dst = s.packet.src;
            s.initiator.sport_be = s.packet.dport_be;
            s.initiator.dport_be = s.packet.sport_be;
        }
        if !evaluate(s, true, true) {
            let _ = CONNTRACK.remove(&s.key);
            return drop_packet(counter::DROP_NO_VERDICT);
        }
        if s.verdict.action != ACTION_ALLOW {
            let _ = CONNTRACK.remove(&s.key);
            count_rule(s.verdict.rule_id, 1, bytes);
            if s.meta.config_flags & CONFIG_FLAG_EVENTS != 0 {
                report_deny(s, true);
            }
            return drop_packet(counter::DROP_POLICY);
        }
        entry.generation = s.meta.generation;
        entry.egress_rule_id = s.verdict.egress_rule_id;
        entry.ingress_rule_id = s.verdict.ingress_rule_id;
        entry.audit_rule_id = s.verdict.audit_rule_id;
        entry.policy_flags = s.verdict.policy_flags;
        entry.initiator_sender = 0;
        entry.responder_sender = 0;
    }
    if check_sender {
        if forward {
            entry.initiator_sender = s.meta.ifindex;
        } else {
            entry.responder_sender = s.meta.ifindex;
        }
    }
    // Written only when they change: both directions of a flow meet in this entry, often
    // on two CPUs, and every write takes its cache line away from the other.
    if entry.last_seen_ns != now {
        entry.last_seen_ns = now;
    }
    let flags_before = entry.flags;
    let flags = flags_before | conntrack::flags_seen(&s.packet, forward);
    if flags != flags_before {
        entry.flags = flags;
        if let Some(cache) = cache.as_deref_mut() {
            flowcache::forget(cache, &s.key, entry);
        }
    }
    let counts = entry.counted_at(s.meta.ifindex, s.meta.observed, forward);
    if cacheable && let Some(cache) = cache {
        let rules = (entry.egress_rule_id, entry.ingress_rule_id);
        flowcache::fill(cache, slot, &s.key, &s.meta, counts.then_some(rules));
    }
    if counts {
        if forward {
            entry.packets_forward += 1;
            entry.bytes_forward += bytes;
        } else {
            entry.packets_reverse += 1;
            entry.bytes_reverse += bytes;
        }
        count_flow_rules(entry.egress_rule_id, entry.ingress_rule_id, 1, bytes);
    }
    if flags_before & CT_END_REPORTED == 0 && conntrack::ended(entry.flags) {
        entry.flags |= CT_END_REPORTED;
        if s.meta.config_flags & CONFIG_FLAG_EVENTS != 0
            && entry.policy_flags & POLICY_FLAG_LOG_END != 0
        {
            report_end(&s.key, entry, now);
        }
    }
    pass_packet(counter::PASS_ESTABLISHED)
}

/// The first packet of a flow: the policy decides; an allowed flow gets an entry.
#[inline(never)]
fn new_flow(ctx: &TcContext, s: &mut Scratch) -> i32 {
    let (now, bytes) = (s.meta.now, s.meta.bytes);
    if !evaluate(s, false, true) {
        return drop_packet(counter::DROP_NO_VERDICT);
    }
    if s.verdict.policy_flags & POLICY_FLAG_WOULD_DENY != 0 {
        count(counter::AUDIT_WOULD_DENY);
    }
    if s.verdict.action != ACTION_ALLOW {
        count_rule(s.verdict.rule_id, 1, bytes);
        if s.meta.config_flags & CONFIG_FLAG_EVENTS != 0 {
            report_deny(s, false);
        }
        if (s.verdict.action == ACTION_RESET_CLIENT || s.verdict.action == ACTION_RESET_BOTH)
            && reset::applicable(&s.packet)
        {
            count(counter::DROP_POLICY);
            return match reset::send(ctx, &s.packet, s.meta.observed, s.meta.ifindex) {
                0 => count_and(counter::RESET_FAILED, ACT_DROP),
                action => count_and(counter::RESET_SENT, action),
            };
        }
        return drop_packet(counter::DROP_POLICY);
    }
    count_flow_rules(
        s.verdict.egress_rule_id,
        s.verdict.ingress_rule_id,
        1,
        bytes,
    );
    let source_is_a = conntrack::key_of(&s.packet, &mut s.key);
    let entry = &mut s.entry;
    entry.created_ns = now;
    entry.last_seen_ns = now;
    entry.packets_forward = 1;
    entry.bytes_forward = bytes;
    // Volatile: two adjacent zero stores otherwise become a byte-at-a-time `memset` call.
    // SAFETY: plain writes through valid references.
    unsafe {
        core::ptr::write_volatile(&mut entry.packets_reverse, 0);
        core::ptr::write_volatile(&mut entry.bytes_reverse, 0);
    }
    entry.generation = s.meta.generation;
    entry.egress_rule_id = s.verdict.egress_rule_id;
    entry.ingress_rule_id = s.verdict.ingress_rule_id;
    entry.audit_rule_id = s.verdict.audit_rule_id;
    entry.initiator_zone = s.verdict.src_zone;
    entry.responder_zone = s.verdict.dst_zone;
    entry.ifindex = s.meta.ifindex;
    // The caller made the anti-spoofing check of a packet out of a workload.
    entry.initiator_sender = if s.meta.observed == OBSERVED_FROM_WORKLOAD {
        s.meta.ifindex
    } else {
        0
    };
    entry.responder_sender = 0;
    entry.flags = if source_is_a { CT_INITIATOR_A } else { 0 };
    entry.policy_flags = s.verdict.policy_flags;
    entry.observed = s.meta.observed;
    entry._pad = 0;
    // A full table evicts the least recently used entry; the insert itself cannot fail for
    // lack of room. Should it fail anyway, the packet still passes (the policy allowed it)
    // and the next packet is evaluated again.
    let _ = CONNTRACK.insert(&s.key, &s.entry, 0);
    if s.meta.config_flags & CONFIG_FLAG_EVENTS != 0
        && s.verdict.policy_flags & POLICY_FLAG_LOG_START != 0
    {
        report_start(s);
    }
    pass_packet(counter::PASS_NEW)
}

#[inline(always)]
fn emit(event: &FlowEvent) {
    // Reserve the record in the ring, fill it, commit it: one copy, from the per-CPU scratch
    // event straight into the ring. A full ring is counted, never waited for.
    match EVENTS.reserve::<FlowEvent>(0) {
        Some(mut slot) => {
            slot.write(*event);
            slot.submit(0);
        }
        None => count(counter::EVENTS_LOST),
    }
}

#[inline(never)]
fn report_start(s: &mut Scratch) {
    let (packet, verdict, meta) = (&s.packet, &s.verdict, &s.meta);
    s.event = FlowEvent {
        timestamp_ns: meta.now,
        created_ns: meta.now,
        packets_forward: 1,
        bytes_forward: meta.bytes,
        src_addr_be: packet.src,
        dst_addr_be: packet.dst,
        src_port_be: packet.sport_be,
        dst_port_be: packet.dport_be,
        rule_id: verdict.egress_rule_id,
        other_rule_id: verdict.ingress_rule_id,
        audit_rule_id: verdict.audit_rule_id,
        src_zone: verdict.src_zone,
        dst_zone: verdict.dst_zone,
        ifindex: meta.ifindex,
        count: 1,
        kind: EVENT_FLOW_START,
        family: packet.family,
        protocol: packet.protocol,
        action: ACTION_ALLOW,
        direction: meta.observed,
        policy_flags: verdict.policy_flags,
        ..FlowEvent::default()
    };
    emit(&s.event);
}

/// Reports the end of a flow the kernel saw end (RST, or FIN both ways).
#[inline(never)]
fn report_end(key: &CtKey, entry: &CtValue, now: u64) {
    let Some(s) = SCRATCH.get_ptr_mut(0) else {
        return;
    };
    // SAFETY: per-CPU slot owned by this CPU while the program runs; only `event` is
    // written, which no caller holds.
    let event = unsafe { &mut (*s).event };
    let reason = if entry.flags & CT_RST_FROM_RESPONDER != 0 {
        END_REASON_RST_RESPONDER
    } else if entry.flags & CT_RST != 0 {
        END_REASON_RST
    } else {
        END_REASON_FIN
    };
    *event = FlowEvent::flow_end(key, entry, now, reason);
    emit(event);
}

/// Reports a denied attempt of the packet (turned around to its flow's direction when
/// `initiator`; the verdict is `s.verdict`): the first of a kind at once, then at most one
/// record per window with the number of attempts it stands for. Userspace reports what is
/// left at the end of a window that saw no further attempt.
#[inline(never)]
fn report_deny(s: &mut Scratch, initiator: bool) {
    let now = s.meta.now;
    let packet = if initiator { s.initiator } else { s.packet };
    s.deny_key = DenyKey {
        src_addr_be: packet.src,
        dst_addr_be: packet.dst,
        dst_port_be: packet.dport_be,
        protocol: packet.protocol,
        family: packet.family,
        rule_id: s.verdict.rule_id,
    };
    let attempts = match DENIES.get_ptr_mut(&s.deny_key) {
        Some(value) => {
            // SAFETY: pointer from a successful lookup.
            let value = unsafe { &mut *value };
            value.unreported += 1;
            if now.saturating_sub(value.window_start_ns) < timeout::DENY_WINDOW_NS {
                return;
            }
            let attempts = value.unreported;
            value.unreported = 0;
            value.window_start_ns = now;
            attempts
        }
        None => {
            s.deny_value = DenyValue {
                window_start_ns: now,
                unreported: 0,
                src_zone: s.verdict.src_zone,
                dst_zone: s.verdict.dst_zone,
                ifindex: s.meta.ifindex,
                action: s.verdict.action,
                direction: s.meta.observed,
                _pad: [0; 6],
            };
            let _ = DENIES.insert(&s.deny_key, &s.deny_value, 0);
            1
        }
    };
    s.event = FlowEvent {
        timestamp_ns: now,
        created_ns: now,
        src_addr_be: packet.src,
        dst_addr_be: packet.dst,
        src_port_be: packet.sport_be,
        dst_port_be: packet.dport_be,
        rule_id: s.verdict.rule_id,
        audit_rule_id: s.verdict.audit_rule_id,
        src_zone: s.verdict.src_zone,
        dst_zone: s.verdict.dst_zone,
        ifindex: s.meta.ifindex,
        count: attempts,
        kind: EVENT_DENY,
        family: packet.family,
        protocol: packet.protocol,
        action: s.verdict.action,
        direction: s.meta.observed,
        policy_flags: s.verdict.policy_flags,
        ..FlowEvent::default()
    };
    emit(&s.event);
}

/// Counts packets of an allowed flow for the rules that allowed it (`flow_rules`).
#[inline(always)]
fn count_flow_rules(egress_rule_id: u32, ingress_rule_id: u32, packets: u64, bytes: u64) {
    for rule_id in flow_rules(egress_rule_id, ingress_rule_id)
        .into_iter()
        .flatten()
    {
        count_rule(rule_id, packets, bytes);
    }
}

#[inline(always)]
fn count_rule(rule_id: u32, packets: u64, bytes: u64) {
    if let Some(slot) = RULE_STATS.get_ptr_mut(rule_id) {
        // SAFETY: per-CPU slot owned by this CPU while the program runs.
        unsafe {
            (*slot).packets += packets;
            (*slot).bytes += bytes;
        }
    }
}

#[inline(always)]
fn count(index: u32) {
    count_n(index, 1);
}

#[inline(always)]
fn count_n(index: u32, packets: u64) {
    if let Some(slot) = COUNTERS.get_ptr_mut(index) {
        // SAFETY: per-CPU slot owned by this CPU while the program runs; the pointer comes
        // from a successful map lookup.
        unsafe { *slot += packets };
    }
}

#[inline(always)]
fn count_and(index: u32, action: i32) -> i32 {
    count(index);
    action
}

#[inline(always)]
fn pass_packet(index: u32) -> i32 {
    count(index);
    ACT_CONTINUE
}

#[inline(always)]
fn drop_packet(index: u32) -> i32 {
    count(index);
    ACT_DROP
}

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}
