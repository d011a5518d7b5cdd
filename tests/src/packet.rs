//! Hand-built frames for the parser's edge cases (IPv4 options, fragments, IPv6 extension
//! header chains, broken headers), sent from inside a pod with an `AF_PACKET` socket.

use std::net::{Ipv4Addr, Ipv6Addr};

use crate::in_netns;

const ETH_P_IP: u16 = 0x0800;
const ETH_P_IPV6: u16 = 0x86dd;
/// The frames are only ever seen by the host-side veth's TC hook, which does not care about
/// the destination MAC; a locally administered address keeps them from being mistaken for
/// real traffic.
const DST_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0x01];
const SRC_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0x02];

fn ethernet(ethertype: u16, payload: &[u8]) -> Vec<u8> {
    let mut frame = Vec::with_capacity(14 + payload.len());
    frame.extend_from_slice(&DST_MAC);
    frame.extend_from_slice(&SRC_MAC);
    frame.extend_from_slice(&ethertype.to_be_bytes());
    frame.extend_from_slice(payload);
    frame
}

fn udp_header(dport: u16, payload_len: usize) -> Vec<u8> {
    let mut udp = Vec::with_capacity(8);
    udp.extend_from_slice(&40000u16.to_be_bytes());
    udp.extend_from_slice(&dport.to_be_bytes());
    udp.extend_from_slice(&((8 + payload_len) as u16).to_be_bytes());
    udp.extend_from_slice(&[0, 0]);
    udp
}

/// IPv4 + UDP to `dport`, with `option_words` 32-bit words of IP options (NOP options) and a
/// fragment offset in 8-byte units (non-zero makes it a non-first fragment).
pub fn ipv4_udp(
    src: Ipv4Addr,
    dst: Ipv4Addr,
    dport: u16,
    option_words: u8,
    fragment_offset: u16,
) -> Vec<u8> {
    let header_len = 20 + usize::from(option_words) * 4;
    let payload = b"zonewall";
    let total_len = header_len + 8 + payload.len();
    let mut ip = Vec::with_capacity(total_len);
    ip.push(0x40 | (5 + option_words));
    ip.push(0);
    ip.extend_from_slice(&(total_len as u16).to_be_bytes());
    ip.extend_from_slice(&0x1234u16.to_be_bytes());
    ip.extend_from_slice(&(fragment_offset & 0x1fff).to_be_bytes());
    ip.push(64);
    ip.push(17);
    ip.extend_from_slice(&[0, 0]);
    ip.extend_from_slice(&src.octets());
    ip.extend_from_slice(&dst.octets());
    ip.resize(header_len, 1); // option 1 = NOP
    let checksum = internet_checksum(&ip);
    ip[10..12].copy_from_slice(&checksum.to_be_bytes());
    ip.extend_from_slice(&udp_header(dport, payload.len()));
    ip.extend_from_slice(payload);
    ethernet(ETH_P_IP, &ip)
}

/// An IPv4 header whose IHL claims fewer than 20 bytes.
pub fn ipv4_bad_ihl(src: Ipv4Addr, dst: Ipv4Addr) -> Vec<u8> {
    let mut frame = ipv4_udp(src, dst, 9, 0, 0);
    frame[14] = 0x44;
    frame
}

/// IPv6 + `ext_headers` destination-options headers + UDP to `dport`.
pub fn ipv6_udp(src: Ipv6Addr, dst: Ipv6Addr, dport: u16, ext_headers: usize) -> Vec<u8> {
    const DSTOPTS: u8 = 60;
    const UDP: u8 = 17;
    let payload = b"zonewall";
    let mut body = Vec::new();
    for i in 0..ext_headers {
        let next = if i + 1 == ext_headers { UDP } else { DSTOPTS };
        // Next header, length 0 (8 bytes), then a PadN option filling the rest.
        body.extend_from_slice(&[next, 0, 1, 4, 0, 0, 0, 0]);
    }
    body.extend_from_slice(&udp_header(dport, payload.len()));
    body.extend_from_slice(payload);
    let mut ip = Vec::with_capacity(40 + body.len());
    ip.extend_from_slice(&[0x60, 0, 0, 0]);
    ip.extend_from_slice(&(body.len() as u16).to_be_bytes());
    ip.push(if ext_headers == 0 { UDP } else { DSTOPTS });
    ip.push(64);
    ip.extend_from_slice(&src.octets());
    ip.extend_from_slice(&dst.octets());
    ip.extend_from_slice(&body);
    ethernet(ETH_P_IPV6, &ip)
}

fn internet_checksum(bytes: &[u8]) -> u16 {
    let mut sum: u32 = bytes
        .chunks(2)
        .map(|pair| u32::from(u16::from_be_bytes([pair[0], *pair.get(1).unwrap_or(&0)])))
        .sum();
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// Sends each frame once out of `interface` inside network namespace `netns`.
pub fn send_frames(netns: &str, interface: &str, frames: &[Vec<u8>]) {
    in_netns(netns, || {
        let name = std::ffi::CString::new(interface).expect("interface name");
        // SAFETY: plain libc calls with valid arguments; the fd is closed below.
        unsafe {
            let ifindex = libc::if_nametoindex(name.as_ptr());
            assert_ne!(ifindex, 0, "no interface {interface} in {netns}");
            let fd = libc::socket(libc::AF_PACKET, libc::SOCK_RAW, 0);
            assert!(
                fd >= 0,
                "AF_PACKET socket: {}",
                std::io::Error::last_os_error()
            );
            let mut address: libc::sockaddr_ll = std::mem::zeroed();
            address.sll_family = libc::AF_PACKET as u16;
            address.sll_ifindex = ifindex as i32;
            address.sll_halen = 6;
            address.sll_addr[..6].copy_from_slice(&DST_MAC);
            for frame in frames {
                let sent = libc::sendto(
                    fd,
                    frame.as_ptr().cast(),
                    frame.len(),
                    0,
                    std::ptr::from_ref(&address).cast(),
                    size_of::<libc::sockaddr_ll>() as u32,
                );
                assert_eq!(
                    sent,
                    frame.len() as isize,
                    "sendto: {}",
                    std::io::Error::last_os_error()
                );
            }
            libc::close(fd);
        }
    });
}
