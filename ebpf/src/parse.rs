//! Bounds-checked packet parsing: Ethernet, IPv4 (header length from IHL), IPv6 (the kernel's
//! known extension headers walked, bounded), the TCP/UDP/SCTP ports and TCP flags, ICMP and
//! ICMPv6 (echo identifiers, and the flow an error message is about).
//!
//! The common packets (IPv4 without options, IPv6 without extension headers, TCP, UDP, SCTP,
//! ICMP echo) are read in place, after one bounds check against the end of the linear data;
//! everything else, and a packet whose headers are not all in the linear data, goes through
//! `TcContext::load`, which fails instead of reading past the packet.

use aya_ebpf::programs::TcContext;
use zonewall_common::{CtKey, FAMILY_V4, FAMILY_V6};

pub const ETH_HLEN: usize = 14;
const ETH_P_IP: u16 = 0x0800;
const ETH_P_IPV6: u16 = 0x86dd;

const IPPROTO_HOPOPTS: u8 = 0;
pub const IPPROTO_ICMP: u8 = 1;
pub const IPPROTO_TCP: u8 = 6;
pub const IPPROTO_UDP: u8 = 17;
const IPPROTO_ROUTING: u8 = 43;
const IPPROTO_FRAGMENT: u8 = 44;
const IPPROTO_AH: u8 = 51;
pub const IPPROTO_ICMPV6: u8 = 58;
const IPPROTO_DSTOPTS: u8 = 60;
const IPPROTO_SCTP: u8 = 132;
const IPPROTO_UDPLITE: u8 = 136;

pub const TCP_FIN: u8 = 0x01;
pub const TCP_SYN: u8 = 0x02;
pub const TCP_RST: u8 = 0x04;
pub const TCP_ACK: u8 = 0x10;

/// How many IPv6 extension headers the walk follows before giving up (and dropping).
const MAX_IPV6_EXTENSION_HEADERS: usize = 6;

/// What kind of packet was parsed. The fields go into the caller's `Packet` instead of an
/// enum payload: the BPF verifier rejects the partially initialised copies the compiler makes
/// of large enum payloads.
#[derive(Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Kind {
    /// Not IPv4 or IPv6.
    NotIp = 0,
    /// ICMPv6 that only makes sense on the link (neighbour discovery, MLD).
    LinkControl = 1,
    /// A non-first fragment: no L4 header in this packet; `protocol` is the fragmented one.
    Fragment = 2,
    /// A packet of a flow: the `Packet` is complete.
    Flow = 3,
    /// An ICMP or ICMPv6 error: the `Packet` holds the error itself, the related key the flow
    /// it is about.
    IcmpError = 4,
}

pub enum ParseError {
    /// Truncated or inconsistent header; the caller fails closed.
    Malformed,
    /// More IPv6 extension headers than the bounded walk follows.
    TooManyExtensionHeaders,
}

/// The fields of one packet the programs decide on. IPv4 addresses use the first 4 bytes.
/// `repr(C, align(8))`: 48 bytes that [`Packet::clear`] zeroes with six word stores.
#[derive(Clone, Copy, Default)]
#[repr(C, align(8))]
pub struct Packet {
    pub src: [u8; 16],
    pub dst: [u8; 16],
    /// TCP/UDP/SCTP/UDP-Lite ports; for ICMP echo both hold the identifier; else zero.
    pub sport_be: [u8; 2],
    pub dport_be: [u8; 2],
    pub family: u8,
    /// The upper-layer protocol (after IPv6 extension headers).
    pub protocol: u8,
    pub tcp_flags: u8,
    /// Whether the destination port means something to the policy (TCP, UDP, SCTP).
    pub has_port: bool,
    /// Offset of the IP header and of the upper-layer header.
    pub l4_offset: u32,
    /// IPv4 header length, or 40 plus the IPv6 extension headers.
    pub ip_header_len: u32,
}

const _: () = assert!(size_of::<Packet>() == 48);

impl Packet {
    /// Zeroes every field. Assigning `Packet::default()` instead compiles to a call of the
    /// BPF `memset`, a byte-at-a-time loop: a few hundred instructions on every packet.
    #[inline(always)]
    pub fn clear(&mut self) {
        let words = (self as *mut Packet).cast::<u64>();
        for i in 0..size_of::<Packet>() / 8 {
            // SAFETY: `Packet` is 48 bytes, 8-byte aligned, and every bit pattern of zeroes
            // is a valid value of each field.
            unsafe { core::ptr::write_volatile(words.add(i), 0) };
        }
    }
}

#[inline(always)]
fn load<T>(ctx: &TcContext, offset: usize) -> Result<T, ParseError> {
    ctx.load::<T>(offset).map_err(|_| ParseError::Malformed)
}

/// Parses the packet. Not inlined (its own stack frame); BPF-to-BPF calls cannot return
/// values through the caller's stack, so the outcome comes back as a `u8` for [`outcome`].
#[inline(never)]
pub fn parse(ctx: &TcContext, packet: &mut Packet, related: &mut CtKey) -> u8 {
    packet.clear();
    if let Some(kind) = in_place(ctx, packet) {
        return kind as u8;
    }
    packet.clear();
    match parse_inner(ctx, packet, related) {
        Ok(kind) => kind as u8,
        Err(ParseError::Malformed) => ERR_MALFORMED,
        Err(ParseError::TooManyExtensionHeaders) => ERR_EXT_HEADERS,
    }
}

const ERR_MALFORMED: u8 = 100;
const ERR_EXT_HEADERS: u8 = 101;

/// The value [`parse`] returned, back as a `Result`.
#[inline(always)]
pub fn outcome(code: u8) -> Result<Kind, ParseError> {
    match code {
        0 => Ok(Kind::NotIp),
        1 => Ok(Kind::LinkControl),
        2 => Ok(Kind::Fragment),
        3 => Ok(Kind::Flow),
        4 => Ok(Kind::IcmpError),
        ERR_EXT_HEADERS => Err(ParseError::TooManyExtensionHeaders),
        _ => Err(ParseError::Malformed),
    }
}

/// Reads `T` at `at`, an address the caller checked lies, with `T`, before the end of the
/// linear data.
#[inline(always)]
unsafe fn read<T: Copy>(at: usize) -> T {
    // SAFETY: the caller checked the bounds; packet data has no alignment guarantee.
    unsafe { core::ptr::read_unaligned(at as *const T) }
}

/// The common packets, read in place: Ethernet with IPv4 without options (not a fragment) or
/// IPv6 without extension headers, then TCP, UDP, SCTP, UDP-Lite, ICMP or ICMPv6 that is not
/// an error message. `None` leaves the packet to [`parse_inner`]: any other shape, or headers
/// that are not all in the linear data. Each bounds check compares against the end of the
/// data with a constant offset, the form the verifier follows.
#[inline(always)]
fn in_place(ctx: &TcContext, packet: &mut Packet) -> Option<Kind> {
    const IP: usize = ETH_HLEN;
    const L4_V4: usize = ETH_HLEN + 20;
    const L4_V6: usize = ETH_HLEN + 40;
    let (data, end) = (ctx.data(), ctx.data_end());
    if data + L4_V4 > end {
        return None;
    }
    // SAFETY (every read below): its offset and size lie within the bounds checked before it.
    let ethertype = u16::from_be_bytes(unsafe { read::<[u8; 2]>(data + 12) });
    let l4 = match ethertype {
        ETH_P_IP => {
            let version_ihl = unsafe { read::<u8>(data + IP) };
            let fragment = u16::from_be_bytes(unsafe { read::<[u8; 2]>(data + IP + 6) });
            // Options, or a fragment (first or not): the general parser.
            if version_ihl != 0x45 || fragment & 0x3fff != 0 {
                return None;
            }
            packet.family = FAMILY_V4;
            packet.protocol = unsafe { read::<u8>(data + IP + 9) };
            packet.ip_header_len = 20;
            let addresses = unsafe { read::<[u8; 8]>(data + IP + 12) };
            packet.src[..4].copy_from_slice(&addresses[..4]);
            packet.dst[..4].copy_from_slice(&addresses[4..]);
            L4_V4
        }
        ETH_P_IPV6 => {
            if data + L4_V6 > end {
                return None;
            }
            if unsafe { read::<u8>(data + IP) } >> 4 != 6 {
                return None;
            }
            let next_header = unsafe { read::<u8>(data + IP + 6) };
            if let IPPROTO_HOPOPTS | IPPROTO_ROUTING | IPPROTO_FRAGMENT | IPPROTO_AH
            | IPPROTO_DSTOPTS = next_header
            {
                // Extension headers: the general parser walks them.
                return None;
            }
            packet.family = FAMILY_V6;
            packet.protocol = next_header;
            packet.ip_header_len = 40;
            // Byte by byte: a 16-byte unaligned read compiles to a `memmove` call.
            for i in 0..16 {
                packet.src[i] = unsafe { read::<u8>(data + IP + 8 + i) };
                packet.dst[i] = unsafe { read::<u8>(data + IP + 24 + i) };
            }
            L4_V6
        }
        _ => return Some(Kind::NotIp),
    };
    packet.l4_offset = l4 as u32;
    match packet.protocol {
        IPPROTO_TCP => {
            if data + l4 + 14 > end {
                return None;
            }
            let ports = unsafe { read::<[u8; 4]>(data + l4) };
            packet.sport_be = [ports[0], ports[1]];
            packet.dport_be = [ports[2], ports[3]];
            packet.tcp_flags = unsafe { read::<u8>(data + l4 + 13) };
            packet.has_port = true;
            Some(Kind::Flow)
        }
        IPPROTO_UDP | IPPROTO_SCTP | IPPROTO_UDPLITE => {
            if data + l4 + 4 > end {
                return None;
            }
            let ports = unsafe { read::<[u8; 4]>(data + l4) };
            packet.sport_be = [ports[0], ports[1]];
            packet.dport_be = [ports[2], ports[3]];
            packet.has_port = packet.protocol != IPPROTO_UDPLITE;
            Some(Kind::Flow)
        }
        IPPROTO_ICMP => {
            if data + l4 + 8 > end {
                return None;
            }
            match unsafe { read::<u8>(data + l4) } {
                0 | 8 | 13 | 14 => {
                    let identifier = unsafe { read::<[u8; 2]>(data + l4 + 4) };
                    packet.sport_be = identifier;
                    packet.dport_be = identifier;
                    Some(Kind::Flow)
                }
                // Errors quote the packet they are about: the general parser.
                3 | 11 | 12 => None,
                _ => Some(Kind::Flow),
            }
        }
        IPPROTO_ICMPV6 => {
            if data + l4 + 8 > end {
                return None;
            }
            match unsafe { read::<u8>(data + l4) } {
                128 | 129 => {
                    let identifier = unsafe { read::<[u8; 2]>(data + l4 + 4) };
                    packet.sport_be = identifier;
                    packet.dport_be = identifier;
                    Some(Kind::Flow)
                }
                130..=137 | 143 => Some(Kind::LinkControl),
                1..=4 => None,
                _ => Some(Kind::Flow),
            }
        }
        _ => Some(Kind::Flow),
    }
}

#[inline(always)]
fn parse_inner(
    ctx: &TcContext,
    packet: &mut Packet,
    related: &mut CtKey,
) -> Result<Kind, ParseError> {
    let ethertype = u16::from_be(load::<u16>(ctx, 12)?);
    match ethertype {
        ETH_P_IP => parse_ipv4(ctx, packet, related),
        ETH_P_IPV6 => parse_ipv6(ctx, packet, related),
        _ => Ok(Kind::NotIp),
    }
}

#[inline(always)]
fn parse_ipv4(
    ctx: &TcContext,
    packet: &mut Packet,
    related: &mut CtKey,
) -> Result<Kind, ParseError> {
    let offset = ETH_HLEN;
    let version_ihl = load::<u8>(ctx, offset)?;
    let header_len = usize::from(version_ihl & 0x0f) * 4;
    if version_ihl >> 4 != 4 || header_len < 20 {
        return Err(ParseError::Malformed);
    }
    let fragment = u16::from_be(load::<u16>(ctx, offset + 6)?);
    let protocol = load::<u8>(ctx, offset + 9)?;
    packet.family = FAMILY_V4;
    packet.protocol = protocol;
    packet.ip_header_len = header_len as u32;
    let src = load::<[u8; 4]>(ctx, offset + 12)?;
    let dst = load::<[u8; 4]>(ctx, offset + 16)?;
    packet.src[..4].copy_from_slice(&src);
    packet.dst[..4].copy_from_slice(&dst);
    if fragment & 0x1fff != 0 {
        return Ok(Kind::Fragment);
    }
    let l4 = offset + header_len;
    packet.l4_offset = l4 as u32;
    upper_layer(ctx, packet, l4, protocol, related)
}

#[inline(always)]
fn parse_ipv6(
    ctx: &TcContext,
    packet: &mut Packet,
    related: &mut CtKey,
) -> Result<Kind, ParseError> {
    let offset = ETH_HLEN;
    let version = load::<u8>(ctx, offset)? >> 4;
    if version != 6 {
        return Err(ParseError::Malformed);
    }
    let mut next_header = load::<u8>(ctx, offset + 6)?;
    packet.family = FAMILY_V6;
    packet.src = load::<[u8; 16]>(ctx, offset + 8)?;
    packet.dst = load::<[u8; 16]>(ctx, offset + 24)?;
    let mut l4 = offset + 40;
    let mut walked = 0;
    while walked < MAX_IPV6_EXTENSION_HEADERS {
        match next_header {
            IPPROTO_HOPOPTS | IPPROTO_ROUTING | IPPROTO_DSTOPTS => {
                let header = load::<[u8; 2]>(ctx, l4)?;
                next_header = header[0];
                l4 += (usize::from(header[1]) + 1) * 8;
            }
            IPPROTO_AH => {
                let header = load::<[u8; 2]>(ctx, l4)?;
                next_header = header[0];
                l4 += (usize::from(header[1]) + 2) * 4;
            }
            IPPROTO_FRAGMENT => {
                next_header = load::<u8>(ctx, l4)?;
                let offset_and_flags = u16::from_be(load::<u16>(ctx, l4 + 2)?);
                if offset_and_flags >> 3 != 0 {
                    packet.protocol = next_header;
                    return Ok(Kind::Fragment);
                }
                l4 += 8;
            }
            _ => {
                packet.protocol = next_header;
                packet.l4_offset = l4 as u32;
                packet.ip_header_len = (l4 - offset) as u32;
                return upper_layer(ctx, packet, l4, next_header, related);
            }
        }
        walked += 1;
    }
    Err(ParseError::TooManyExtensionHeaders)
}

#[inline(always)]
fn upper_layer(
    ctx: &TcContext,
    packet: &mut Packet,
    l4: usize,
    protocol: u8,
    related: &mut CtKey,
) -> Result<Kind, ParseError> {
    match protocol {
        IPPROTO_TCP | IPPROTO_UDP | IPPROTO_SCTP | IPPROTO_UDPLITE => {
            let ports = load::<[u8; 4]>(ctx, l4)?;
            packet.sport_be = [ports[0], ports[1]];
            packet.dport_be = [ports[2], ports[3]];
            packet.has_port = protocol != IPPROTO_UDPLITE;
            if protocol == IPPROTO_TCP {
                packet.tcp_flags = load::<u8>(ctx, l4 + 13)?;
            }
            Ok(Kind::Flow)
        }
        IPPROTO_ICMP => {
            let icmp_type = load::<u8>(ctx, l4)?;
            match icmp_type {
                // Echo reply, echo request, timestamp, timestamp reply: the identifier
                // pairs request and reply.
                0 | 8 | 13 | 14 => echo_identifier(ctx, packet, l4),
                // Destination unreachable, time exceeded, parameter problem.
                3 | 11 | 12 => {
                    inner_ipv4(ctx, l4 + 8, related)?;
                    Ok(Kind::IcmpError)
                }
                _ => Ok(Kind::Flow),
            }
        }
        IPPROTO_ICMPV6 => {
            let icmp_type = load::<u8>(ctx, l4)?;
            match icmp_type {
                // Destination unreachable, packet too big, time exceeded, parameter problem.
                1..=4 => {
                    inner_ipv6(ctx, l4 + 8, related)?;
                    Ok(Kind::IcmpError)
                }
                128 | 129 => echo_identifier(ctx, packet, l4),
                // MLD (130-132, 143) and neighbour discovery (133-137).
                130..=137 | 143 => Ok(Kind::LinkControl),
                _ => Ok(Kind::Flow),
            }
        }
        _ => Ok(Kind::Flow),
    }
}

#[inline(always)]
fn echo_identifier(ctx: &TcContext, packet: &mut Packet, l4: usize) -> Result<Kind, ParseError> {
    let identifier = load::<[u8; 2]>(ctx, l4 + 4)?;
    packet.sport_be = identifier;
    packet.dport_be = identifier;
    Ok(Kind::Flow)
}

/// The conntrack key of the IPv4 packet an ICMP error quotes (its header and the first 8
/// bytes after it).
#[inline(always)]
fn inner_ipv4(ctx: &TcContext, offset: usize, key: &mut CtKey) -> Result<(), ParseError> {
    let version_ihl = load::<u8>(ctx, offset)?;
    let header_len = usize::from(version_ihl & 0x0f) * 4;
    if version_ihl >> 4 != 4 || header_len < 20 {
        return Err(ParseError::Malformed);
    }
    let protocol = load::<u8>(ctx, offset + 9)?;
    let mut inner = Packet {
        family: FAMILY_V4,
        protocol,
        ..Packet::default()
    };
    inner.src[..4].copy_from_slice(&load::<[u8; 4]>(ctx, offset + 12)?);
    inner.dst[..4].copy_from_slice(&load::<[u8; 4]>(ctx, offset + 16)?);
    inner_ports(ctx, &mut inner, offset + header_len, protocol)?;
    crate::conntrack::key_of(&inner, key);
    Ok(())
}

/// As [`inner_ipv4`] for ICMPv6: the quoted IPv6 header must be followed directly by the
/// upper-layer header (an error about a packet with extension headers is not related).
#[inline(always)]
fn inner_ipv6(ctx: &TcContext, offset: usize, key: &mut CtKey) -> Result<(), ParseError> {
    let protocol = load::<u8>(ctx, offset + 6)?;
    let mut inner = Packet {
        family: FAMILY_V6,
        protocol,
        ..Packet::default()
    };
    inner.src = load::<[u8; 16]>(ctx, offset + 8)?;
    inner.dst = load::<[u8; 16]>(ctx, offset + 24)?;
    inner_ports(ctx, &mut inner, offset + 40, protocol)?;
    crate::conntrack::key_of(&inner, key);
    Ok(())
}

#[inline(always)]
fn inner_ports(
    ctx: &TcContext,
    inner: &mut Packet,
    l4: usize,
    protocol: u8,
) -> Result<(), ParseError> {
    match protocol {
        IPPROTO_TCP | IPPROTO_UDP | IPPROTO_SCTP | IPPROTO_UDPLITE => {
            let ports = load::<[u8; 4]>(ctx, l4)?;
            inner.sport_be = [ports[0], ports[1]];
            inner.dport_be = [ports[2], ports[3]];
        }
        IPPROTO_ICMP | IPPROTO_ICMPV6 => {
            let identifier = load::<[u8; 2]>(ctx, l4 + 4)?;
            inner.sport_be = identifier;
            inner.dport_be = identifier;
        }
        _ => {}
    }
    Ok(())
}
