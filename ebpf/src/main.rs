//! zonewall's TC programs, attached to the host-side interface of every local workload.
//!
//! Both directions run the same decision: parse the packet, look its (source, destination,
//! protocol, port) up in `ZW_BLOCK`, count the outcome, and drop or pass. The parser and the
//! counters are the stable part; the decision logic is replaced by the zone-policy lookup of
//! the dataplane.
#![no_std]
#![no_main]

mod parse;

use aya_ebpf::{
    macros::{classifier, map},
    maps::{HashMap, PerCpuArray},
    programs::TcContext,
};
use parse::{Packet, ParseError};
use zonewall_common::{BLOCK_MAX_ENTRIES, BlockKey, BlockValue, counter};

/// Pass the packet on: with tcx this is "next" (the CNI's own programs still run), with
/// clsact it is "unspecified" (the default action), so zonewall never short-cuts a chain.
const ACT_CONTINUE: i32 = -1;
const ACT_DROP: i32 = aya_ebpf::bindings::TC_ACT_SHOT;

#[map(name = "ZW_BLOCK")]
static BLOCK: HashMap<BlockKey, BlockValue> = HashMap::with_max_entries(BLOCK_MAX_ENTRIES, 0);

#[map(name = "ZW_COUNTERS")]
static COUNTERS: PerCpuArray<u64> = PerCpuArray::with_max_entries(counter::COUNT, 0);

/// Packets the workload sends (TC ingress of its host-side interface).
#[classifier]
pub fn zw_from_workload(ctx: TcContext) -> i32 {
    decide(&ctx)
}

/// Packets sent to the workload (TC egress of its host-side interface).
#[classifier]
pub fn zw_to_workload(ctx: TcContext) -> i32 {
    decide(&ctx)
}

#[inline(always)]
fn decide(ctx: &TcContext) -> i32 {
    let mut key = BlockKey::default();
    let outcome = match parse::parse(ctx, &mut key) {
        Ok(packet) => classify(&packet, &key),
        Err(ParseError::Malformed) => counter::DROP_MALFORMED,
        Err(ParseError::TooManyExtensionHeaders) => counter::DROP_EXT_HEADERS,
    };
    count(outcome);
    match outcome {
        counter::DROP_BLOCKED | counter::DROP_MALFORMED | counter::DROP_EXT_HEADERS => ACT_DROP,
        _ => ACT_CONTINUE,
    }
}

#[inline(always)]
fn classify(packet: &Packet, key: &BlockKey) -> u32 {
    match packet {
        Packet::NotIp => counter::PASS_NOT_IP,
        // A non-first fragment carries no L4 header, so it can never match a port entry.
        Packet::Fragment => counter::FRAGMENT,
        Packet::Ip => {
            if BLOCK.get_ptr(key).is_some() {
                counter::DROP_BLOCKED
            } else {
                counter::PASS_IP
            }
        }
    }
}

#[inline(always)]
fn count(index: u32) {
    if let Some(slot) = COUNTERS.get_ptr_mut(index) {
        // SAFETY: per-CPU slot owned by this CPU while the program runs; the pointer comes
        // from a successful map lookup.
        unsafe { *slot += 1 };
    }
}

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}
