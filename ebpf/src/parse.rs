//! Bounds-checked packet parsing: Ethernet, IPv4 (header length from IHL), IPv6 (known
//! extension headers walked, bounded), and the TCP/UDP destination port or ICMP type.
//!
//! Every read goes through `TcContext::load`, which fails instead of reading past the packet.

use aya_ebpf::programs::TcContext;
use zonewall_common::{BlockKey, FAMILY_V4, FAMILY_V6};

const ETH_HLEN: usize = 14;
const ETH_P_IP: u16 = 0x0800;
const ETH_P_IPV6: u16 = 0x86dd;

const IPPROTO_HOPOPTS: u8 = 0;
const IPPROTO_ICMP: u8 = 1;
const IPPROTO_TCP: u8 = 6;
const IPPROTO_UDP: u8 = 17;
const IPPROTO_ROUTING: u8 = 43;
const IPPROTO_FRAGMENT: u8 = 44;
const IPPROTO_AH: u8 = 51;
const IPPROTO_ICMPV6: u8 = 58;
const IPPROTO_DSTOPTS: u8 = 60;
const IPPROTO_SCTP: u8 = 132;
const IPPROTO_UDPLITE: u8 = 136;

/// How many IPv6 extension headers the walk follows before giving up (and dropping).
const MAX_IPV6_EXTENSION_HEADERS: usize = 6;

/// What kind of packet was parsed. The addresses, protocol and port go into the caller's
/// key instead of an enum payload: the BPF verifier rejects the partially initialised
/// copies the compiler makes of large enum payloads.
pub enum Packet {
    NotIp,
    /// A non-first fragment: no L4 header in this packet.
    Fragment,
    /// An IP packet; the key is complete.
    Ip,
}

pub enum ParseError {
    /// Truncated or inconsistent header; the caller fails closed.
    Malformed,
    /// More IPv6 extension headers than the bounded walk follows.
    TooManyExtensionHeaders,
}

#[inline(always)]
fn load<T>(ctx: &TcContext, offset: usize) -> Result<T, ParseError> {
    ctx.load::<T>(offset).map_err(|_| ParseError::Malformed)
}

#[inline(always)]
pub fn parse(ctx: &TcContext, key: &mut BlockKey) -> Result<Packet, ParseError> {
    let ethertype = u16::from_be(load::<u16>(ctx, 12)?);
    match ethertype {
        ETH_P_IP => parse_ipv4(ctx, ETH_HLEN, key),
        ETH_P_IPV6 => parse_ipv6(ctx, ETH_HLEN, key),
        _ => Ok(Packet::NotIp),
    }
}

#[inline(always)]
fn parse_ipv4(ctx: &TcContext, offset: usize, key: &mut BlockKey) -> Result<Packet, ParseError> {
    let version_ihl = load::<u8>(ctx, offset)?;
    let header_len = usize::from(version_ihl & 0x0f) * 4;
    if version_ihl >> 4 != 4 || header_len < 20 {
        return Err(ParseError::Malformed);
    }
    let fragment = u16::from_be(load::<u16>(ctx, offset + 6)?);
    let protocol = load::<u8>(ctx, offset + 9)?;
    key.family = FAMILY_V4;
    key.protocol = protocol;
    let src = load::<[u8; 4]>(ctx, offset + 12)?;
    let dst = load::<[u8; 4]>(ctx, offset + 16)?;
    key.src_addr_be[..4].copy_from_slice(&src);
    key.dst_addr_be[..4].copy_from_slice(&dst);
    if fragment & 0x1fff != 0 {
        return Ok(Packet::Fragment);
    }
    key.dport_be = l4_port(ctx, offset + header_len, protocol)?;
    Ok(Packet::Ip)
}

#[inline(always)]
fn parse_ipv6(ctx: &TcContext, offset: usize, key: &mut BlockKey) -> Result<Packet, ParseError> {
    let version = load::<u8>(ctx, offset)? >> 4;
    if version != 6 {
        return Err(ParseError::Malformed);
    }
    let mut next_header = load::<u8>(ctx, offset + 6)?;
    key.family = FAMILY_V6;
    key.src_addr_be = load::<[u8; 16]>(ctx, offset + 8)?;
    key.dst_addr_be = load::<[u8; 16]>(ctx, offset + 24)?;
    let mut l4_offset = offset + 40;
    let mut walked = 0;
    while walked < MAX_IPV6_EXTENSION_HEADERS {
        match next_header {
            IPPROTO_HOPOPTS | IPPROTO_ROUTING | IPPROTO_DSTOPTS => {
                let header = load::<[u8; 2]>(ctx, l4_offset)?;
                next_header = header[0];
                l4_offset += (usize::from(header[1]) + 1) * 8;
            }
            IPPROTO_AH => {
                let header = load::<[u8; 2]>(ctx, l4_offset)?;
                next_header = header[0];
                l4_offset += (usize::from(header[1]) + 2) * 4;
            }
            IPPROTO_FRAGMENT => {
                next_header = load::<u8>(ctx, l4_offset)?;
                let offset_and_flags = u16::from_be(load::<u16>(ctx, l4_offset + 2)?);
                if offset_and_flags >> 3 != 0 {
                    return Ok(Packet::Fragment);
                }
                l4_offset += 8;
            }
            _ => {
                key.protocol = next_header;
                key.dport_be = l4_port(ctx, l4_offset, next_header)?;
                return Ok(Packet::Ip);
            }
        }
        walked += 1;
    }
    Err(ParseError::TooManyExtensionHeaders)
}

/// The destination port (network byte order) for port protocols, `[type, 0]` for ICMP, zero
/// for anything else.
#[inline(always)]
fn l4_port(ctx: &TcContext, offset: usize, protocol: u8) -> Result<u16, ParseError> {
    match protocol {
        IPPROTO_TCP | IPPROTO_UDP | IPPROTO_SCTP | IPPROTO_UDPLITE => load::<u16>(ctx, offset + 2),
        IPPROTO_ICMP | IPPROTO_ICMPV6 => Ok(u16::from_ne_bytes([load::<u8>(ctx, offset)?, 0])),
        _ => Ok(0),
    }
}
