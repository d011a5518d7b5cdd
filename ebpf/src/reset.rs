//! Reset actions: the denied packet itself is rewritten into the answer (a TCP RST, or an ICMP
//! / ICMPv6 port unreachable for UDP) and sent back out of the interface it came from, so the
//! client fails at once instead of waiting for a timeout.
//!
//! Only the common shapes are rewritten: IPv4 without options, IPv6 without extension headers.
//! Anything else is dropped as a plain drop would be (counted as `RESET_FAILED`).

use aya_ebpf::{
    bindings::{BPF_F_INGRESS, TC_ACT_REDIRECT, bpf_adj_room_mode::BPF_ADJ_ROOM_MAC},
    helpers::{bpf_redirect, bpf_skb_change_tail},
    programs::TcContext,
};
use zonewall_common::{FAMILY_V4, MARK_OWN_RESET, OBSERVED_FROM_WORKLOAD};

use crate::parse::{
    ETH_HLEN, IPPROTO_ICMP, IPPROTO_ICMPV6, IPPROTO_TCP, IPPROTO_UDP, Packet, TCP_ACK, TCP_FIN,
    TCP_RST, TCP_SYN,
};

/// Whether a reset can answer this packet: TCP without RST, or UDP.
#[inline(always)]
pub fn applicable(packet: &Packet) -> bool {
    (packet.protocol == IPPROTO_TCP && packet.tcp_flags & TCP_RST == 0)
        || packet.protocol == IPPROTO_UDP
}

/// Ones' complement sum of big-endian 16-bit words.
#[inline(always)]
fn sum_words(bytes: &[u8], mut sum: u32) -> u32 {
    let mut i = 0;
    while i + 1 < bytes.len() {
        sum += u32::from(u16::from_be_bytes([bytes[i], bytes[i + 1]]));
        i += 2;
    }
    sum
}

#[inline(always)]
fn fold(mut sum: u32) -> [u8; 2] {
    sum = (sum & 0xffff) + (sum >> 16);
    sum = (sum & 0xffff) + (sum >> 16);
    (!(sum as u16)).to_be_bytes()
}

/// Sum of the pseudo header's addresses (source and destination swapped: it is the answer).
#[inline(always)]
fn pseudo_addresses(packet: &Packet) -> u32 {
    if packet.family == FAMILY_V4 {
        sum_words(&packet.dst[..4], sum_words(&packet.src[..4], 0))
    } else {
        sum_words(&packet.dst, sum_words(&packet.src, 0))
    }
}

#[inline(always)]
fn swap_macs(ctx: &TcContext) -> Result<(), i64> {
    let macs = ctx.load::<[u8; 12]>(0)?;
    let mut swapped = [0u8; 12];
    swapped[..6].copy_from_slice(&macs[6..]);
    swapped[6..].copy_from_slice(&macs[..6]);
    ctx.store(0, &swapped, 0)
}

/// A fresh IPv4 header from the packet's destination to its source.
#[inline(always)]
fn ipv4_header(packet: &Packet, total_len: u16, protocol: u8) -> [u8; 20] {
    let len = total_len.to_be_bytes();
    let mut header = [
        0x45,
        0,
        len[0],
        len[1],
        0,
        0,
        0x40,
        0,
        64,
        protocol,
        0,
        0,
        packet.dst[0],
        packet.dst[1],
        packet.dst[2],
        packet.dst[3],
        packet.src[0],
        packet.src[1],
        packet.src[2],
        packet.src[3],
    ];
    let checksum = fold(sum_words(&header, 0));
    header[10] = checksum[0];
    header[11] = checksum[1];
    header
}

/// A fresh IPv6 header from the packet's destination to its source.
#[inline(always)]
fn ipv6_header(packet: &Packet, payload_len: u16, next_header: u8) -> [u8; 40] {
    let len = payload_len.to_be_bytes();
    let mut header = [0u8; 40];
    header[0] = 0x60;
    header[4] = len[0];
    header[5] = len[1];
    header[6] = next_header;
    header[7] = 64;
    header[8..24].copy_from_slice(&packet.dst);
    header[24..40].copy_from_slice(&packet.src);
    header
}

/// Sends the reset for `packet` back where it came from; returns the TC action, or 0 when
/// the reset could not be built (the caller then drops the packet). Not inlined: it has its
/// own stack frame, and returns a plain integer (BPF-to-BPF calls cannot return values
/// through the caller's stack).
#[inline(never)]
pub fn send(ctx: &TcContext, packet: &Packet, observed: u8, ifindex: u32) -> i32 {
    build_and_redirect(ctx, packet, observed, ifindex).unwrap_or(0)
}

#[inline(always)]
fn build_and_redirect(
    ctx: &TcContext,
    packet: &Packet,
    observed: u8,
    ifindex: u32,
) -> Result<i32, i64> {
    let shape_ok = if packet.family == FAMILY_V4 {
        packet.ip_header_len == 20
    } else {
        packet.ip_header_len == 40
    };
    if !shape_ok {
        return Err(-1);
    }
    if packet.protocol == IPPROTO_TCP {
        tcp_reset(ctx, packet)?;
    } else {
        port_unreachable(ctx, packet)?;
    }
    swap_macs(ctx)?;
    // SAFETY: the context's socket buffer is valid for the whole program run.
    unsafe { (*ctx.skb.skb).mark = MARK_OWN_RESET };
    // From the workload: back out towards it. Towards the workload: into the node as if the
    // workload had answered, so it is routed back to the client.
    let flags = if observed == OBSERVED_FROM_WORKLOAD {
        0
    } else {
        u64::from(BPF_F_INGRESS)
    };
    // SAFETY: plain helper call with an interface index and flags.
    let action = unsafe { bpf_redirect(ifindex, flags) } as i32;
    if action == TC_ACT_REDIRECT {
        Ok(action)
    } else {
        Err(-1)
    }
}

/// The packet becomes `RST` (or `RST|ACK` when it carried no ACK) with no payload, as RFC 9293
/// section 3.10.7.1 answers a segment for a connection that does not exist.
#[inline(always)]
fn tcp_reset(ctx: &TcContext, packet: &Packet) -> Result<(), i64> {
    let l4 = packet.l4_offset as usize;
    let l3 = ETH_HLEN;
    let original = ctx.load::<[u8; 16]>(l4)?;
    let flags = packet.tcp_flags;
    let data_offset = u32::from(original[12] >> 4) * 4;
    let ip_payload = if packet.family == FAMILY_V4 {
        u32::from(u16::from_be_bytes(ctx.load::<[u8; 2]>(l3 + 2)?)).saturating_sub(20)
    } else {
        u32::from(u16::from_be_bytes(ctx.load::<[u8; 2]>(l3 + 4)?))
    };
    let segment_len = ip_payload.saturating_sub(data_offset)
        + u32::from(flags & TCP_SYN != 0)
        + u32::from(flags & TCP_FIN != 0);
    let (seq, ack, out_flags) = if flags & TCP_ACK != 0 {
        (
            [original[8], original[9], original[10], original[11]],
            [0; 4],
            TCP_RST,
        )
    } else {
        let their_seq = u32::from_be_bytes([original[4], original[5], original[6], original[7]]);
        (
            [0; 4],
            their_seq.wrapping_add(segment_len).to_be_bytes(),
            TCP_RST | TCP_ACK,
        )
    };
    let mut tcp = [
        original[2],
        original[3],
        original[0],
        original[1],
        seq[0],
        seq[1],
        seq[2],
        seq[3],
        ack[0],
        ack[1],
        ack[2],
        ack[3],
        0x50,
        out_flags,
        0,
        0,
        0,
        0,
        0,
        0,
    ];
    let pseudo = pseudo_addresses(packet) + u32::from(IPPROTO_TCP) + 20;
    let checksum = fold(sum_words(&tcp, pseudo));
    tcp[16] = checksum[0];
    tcp[17] = checksum[1];

    let new_len = (l4 + 20) as u32;
    // SAFETY: helper call on the program's own socket buffer.
    if unsafe { bpf_skb_change_tail(ctx.skb.skb, new_len, 0) } != 0 {
        return Err(-1);
    }
    if packet.family == FAMILY_V4 {
        ctx.store(l3, &ipv4_header(packet, 40, IPPROTO_TCP), 0)?;
    } else {
        ctx.store(l3, &ipv6_header(packet, 20, IPPROTO_TCP), 0)?;
    }
    ctx.store(l4, &tcp, 0)
}

/// The packet becomes an ICMP (type 3 code 3) or ICMPv6 (type 1 code 4) port unreachable that
/// quotes its IP header and the UDP header, as RFC 792 and RFC 4443 describe.
#[inline(always)]
fn port_unreachable(ctx: &TcContext, packet: &Packet) -> Result<(), i64> {
    let v4 = packet.family == FAMILY_V4;
    // The quoted part: the original IP header and 8 bytes of UDP.
    let quoted_len: u32 = if v4 { 28 } else { 48 };
    let added: i32 = if v4 { 28 } else { 48 };
    // Keep exactly the quoted part, then open room for the new IP and ICMP headers in front
    // of it (after the Ethernet header).
    // SAFETY: helper call on the program's own socket buffer.
    if unsafe { bpf_skb_change_tail(ctx.skb.skb, ETH_HLEN as u32 + quoted_len, 0) } != 0 {
        return Err(-1);
    }
    ctx.adjust_room(added, BPF_ADJ_ROOM_MAC, 0)?;
    let quoted_at = ETH_HLEN + added as usize;
    let icmp_at = quoted_at - 8;
    let icmp_len = 8 + quoted_len;
    if v4 {
        let quoted = ctx.load::<[u8; 28]>(quoted_at)?;
        let mut icmp = [3u8, 3, 0, 0, 0, 0, 0, 0];
        let checksum = fold(sum_words(&quoted, sum_words(&icmp, 0)));
        icmp[2] = checksum[0];
        icmp[3] = checksum[1];
        ctx.store(
            ETH_HLEN,
            &ipv4_header(packet, (20 + icmp_len) as u16, IPPROTO_ICMP),
            0,
        )?;
        ctx.store(icmp_at, &icmp, 0)
    } else {
        let quoted = ctx.load::<[u8; 48]>(quoted_at)?;
        let mut icmp = [1u8, 4, 0, 0, 0, 0, 0, 0];
        let pseudo = pseudo_addresses(packet) + u32::from(IPPROTO_ICMPV6) + icmp_len;
        let checksum = fold(sum_words(&quoted, sum_words(&icmp, pseudo)));
        icmp[2] = checksum[0];
        icmp[3] = checksum[1];
        ctx.store(
            ETH_HLEN,
            &ipv6_header(packet, icmp_len as u16, IPPROTO_ICMPV6),
            0,
        )?;
        ctx.store(icmp_at, &icmp, 0)
    }
}
