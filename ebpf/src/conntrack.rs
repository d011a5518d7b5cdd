//! Connection tracking: the canonical key (one lookup finds a flow from either side), idle
//! timeouts by state, and the TCP flags that end a flow.

use zonewall_common::{
    CT_FIN_INITIATOR, CT_FIN_RESPONDER, CT_REPLIED, CT_RST, CT_RST_FROM_RESPONDER, CtKey, CtValue,
    idle_timeout_ns,
};

use crate::parse::{IPPROTO_TCP, Packet, TCP_FIN, TCP_RST};

#[inline(always)]
fn endpoint(addr: &[u8; 16], port: &[u8; 2]) -> (u64, u64, u16) {
    let mut high = [0u8; 8];
    let mut low = [0u8; 8];
    high.copy_from_slice(&addr[..8]);
    low.copy_from_slice(&addr[8..]);
    (
        u64::from_be_bytes(high),
        u64::from_be_bytes(low),
        u16::from_be_bytes(*port),
    )
}

/// Fills `key` with the packet's flow in canonical order; returns whether the packet's source
/// is endpoint a.
#[inline(always)]
pub fn key_of(packet: &Packet, key: &mut CtKey) -> bool {
    let source = endpoint(&packet.src, &packet.sport_be);
    let destination = endpoint(&packet.dst, &packet.dport_be);
    let source_is_a = source <= destination;
    if source_is_a {
        key.addr_a_be = packet.src;
        key.port_a_be = packet.sport_be;
        key.addr_b_be = packet.dst;
        key.port_b_be = packet.dport_be;
    } else {
        key.addr_a_be = packet.dst;
        key.port_a_be = packet.dport_be;
        key.addr_b_be = packet.src;
        key.port_b_be = packet.sport_be;
    }
    key.protocol = packet.protocol;
    key.family = packet.family;
    source_is_a
}

/// Whether the entry outlived its idle timeout (then it is treated as absent).
#[inline(always)]
pub fn expired(entry: &CtValue, protocol: u8, now: u64) -> bool {
    now.saturating_sub(entry.last_seen_ns) > idle_timeout_ns(protocol, entry.flags)
}

/// The `CT_*` bits a packet adds.
#[inline(always)]
pub fn flags_seen(packet: &Packet, forward: bool) -> u8 {
    let mut flags = if forward { 0 } else { CT_REPLIED };
    if packet.protocol == IPPROTO_TCP {
        if packet.tcp_flags & TCP_RST != 0 {
            flags |= if forward {
                CT_RST
            } else {
                CT_RST | CT_RST_FROM_RESPONDER
            };
        }
        if packet.tcp_flags & TCP_FIN != 0 {
            flags |= if forward {
                CT_FIN_INITIATOR
            } else {
                CT_FIN_RESPONDER
            };
        }
    }
    flags
}

/// Whether the flags mean the flow has ended (RST, or FIN from both sides).
#[inline(always)]
pub fn ended(flags: u8) -> bool {
    let both_fins = CT_FIN_INITIATOR | CT_FIN_RESPONDER;
    flags & CT_RST != 0 || flags & both_fins == both_fins
}
