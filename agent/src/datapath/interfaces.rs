//! Which host interface a local workload's traffic crosses: the interface of its route
//! (routed-veth CNIs: a /32 or /128 host route to the veth), or, when that route points at a
//! bridge (bridge CNIs), the bridge port its MAC address was learnt on. Read from the calling
//! thread's network namespace (`/proc/thread-self/net`) and the bridge's sysfs entries.

use std::ffi::CString;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::Path;

#[derive(Debug, thiserror::Error)]
pub enum InterfaceError {
    #[error(
        "interface '{0}' does not exist in the agent's network namespace; check the inventory's `interface` field, or that the agent runs with hostNetwork"
    )]
    NoSuchInterface(String),
    #[error(
        "no route to workload address {0}: the agent finds a workload's interface from its route; give the interface in the inventory (`interface: NAME`) or check the CNI's routes"
    )]
    NoRoute(IpAddr),
    #[error(
        "workload address {ip} is behind bridge {bridge}, but {problem}; give the interface in the inventory (`interface: NAME`)"
    )]
    Bridge {
        ip: IpAddr,
        bridge: String,
        problem: String,
    },
    #[error("cannot read {path}: {source}")]
    Read {
        path: String,
        #[source]
        source: std::io::Error,
    },
}

/// The index of interface `name` in the calling thread's network namespace.
pub fn interface_index(name: &str) -> Result<u32, InterfaceError> {
    let c_name =
        CString::new(name).map_err(|_| InterfaceError::NoSuchInterface(name.to_owned()))?;
    // SAFETY: `c_name` is a valid NUL-terminated string for the duration of the call.
    let index = unsafe { libc::if_nametoindex(c_name.as_ptr()) };
    if index == 0 {
        return Err(InterfaceError::NoSuchInterface(name.to_owned()));
    }
    Ok(index)
}

fn read(path: &str) -> Result<String, InterfaceError> {
    std::fs::read_to_string(path).map_err(|source| InterfaceError::Read {
        path: path.to_owned(),
        source,
    })
}

/// The local interface a workload address is reached through, or `None` when the address is
/// not on this node: its route is neither a host route (routed-veth CNIs) nor a route to a
/// bridge (bridge CNIs).
pub fn discover_interface(ip: IpAddr) -> Result<Option<String>, InterfaceError> {
    let (prefix_len, routed) = match ip {
        IpAddr::V4(v4) => route_v4(&read("/proc/thread-self/net/route")?, v4),
        IpAddr::V6(v6) => route_v6(&read("/proc/thread-self/net/ipv6_route")?, v6),
    }
    .ok_or(InterfaceError::NoRoute(ip))?;
    let bridge_dir = format!("/sys/class/net/{routed}/bridge");
    if Path::new(&bridge_dir).exists() {
        return bridge_port(ip, &routed).map(Some);
    }
    let host_route = match ip {
        IpAddr::V4(_) => 32,
        IpAddr::V6(_) => 128,
    };
    Ok((prefix_len == host_route).then_some(routed))
}

/// Longest-prefix match over `/proc/net/route` (addresses in host byte order, hex): the
/// prefix length and the interface.
pub fn route_v4(table: &str, ip: Ipv4Addr) -> Option<(u32, String)> {
    let target = u32::from(ip);
    let mut best: Option<(u32, String)> = None;
    for line in table.lines().skip(1) {
        let fields: Vec<&str> = line.split_whitespace().collect();
        if fields.len() < 8 {
            continue;
        }
        let (Ok(dest), Ok(mask)) = (
            u32::from_str_radix(fields[1], 16),
            u32::from_str_radix(fields[7], 16),
        ) else {
            continue;
        };
        // The file prints the kernel's network-order words as little-endian hex.
        let (dest, mask) = (u32::from_be(dest.to_le()), u32::from_be(mask.to_le()));
        if target & mask == dest & mask {
            let len = mask.count_ones();
            if best.as_ref().is_none_or(|(l, _)| len > *l) {
                best = Some((len, fields[0].to_owned()));
            }
        }
    }
    best
}

/// Longest-prefix match over `/proc/net/ipv6_route`: the prefix length and the interface.
pub fn route_v6(table: &str, ip: Ipv6Addr) -> Option<(u32, String)> {
    let target = u128::from(ip);
    let mut best: Option<(u32, String)> = None;
    for line in table.lines() {
        let fields: Vec<&str> = line.split_whitespace().collect();
        if fields.len() < 10 {
            continue;
        }
        let (Ok(dest), Ok(len)) = (
            u128::from_str_radix(fields[0], 16),
            u32::from_str_radix(fields[1], 16),
        ) else {
            continue;
        };
        let interface = fields[9];
        if interface == "lo" || len > 128 {
            continue;
        }
        let mask = if len == 0 {
            0
        } else {
            u128::MAX << (128 - len)
        };
        if target & mask == dest & mask && best.as_ref().is_none_or(|(l, _)| len > *l) {
            best = Some((len, interface.to_owned()));
        }
    }
    best
}

/// The MAC address of an IPv4 neighbour from `/proc/net/arp`.
pub fn arp_mac(table: &str, ip: Ipv4Addr, device: &str) -> Option<[u8; 6]> {
    table.lines().skip(1).find_map(|line| {
        let fields: Vec<&str> = line.split_whitespace().collect();
        if fields.len() < 6 || fields[5] != device || fields[0].parse::<Ipv4Addr>().ok()? != ip {
            return None;
        }
        parse_mac(fields[3])
    })
}

fn parse_mac(text: &str) -> Option<[u8; 6]> {
    let mut mac = [0u8; 6];
    let mut parts = text.split(':');
    for byte in &mut mac {
        *byte = u8::from_str_radix(parts.next()?, 16).ok()?;
    }
    (parts.next().is_none() && mac != [0; 6]).then_some(mac)
}

/// The bridge port number a MAC address was learnt on, from the bridge's `brforward` file
/// (records of 16 bytes: MAC, port number, is-local flag, ageing timer, port number high
/// byte, padding).
pub fn fdb_port(brforward: &[u8], mac: [u8; 6]) -> Option<u16> {
    brforward.chunks_exact(16).find_map(|record| {
        (record[..6] == mac && record[7] == 0)
            .then(|| u16::from(record[6]) | (u16::from(record[12]) << 8))
    })
}

fn bridge_port(ip: IpAddr, bridge: &str) -> Result<String, InterfaceError> {
    let problem = |problem: &str| InterfaceError::Bridge {
        ip,
        bridge: bridge.to_owned(),
        problem: problem.to_owned(),
    };
    let IpAddr::V4(v4) = ip else {
        return Err(problem(
            "bridge ports are found through the IPv4 neighbour table only",
        ));
    };
    let mac = arp_mac(&read("/proc/thread-self/net/arp")?, v4, bridge)
        .ok_or_else(|| problem("its MAC address is not in the neighbour table yet"))?;
    let fdb_path = format!("/sys/class/net/{bridge}/brforward");
    let fdb = std::fs::read(&fdb_path).map_err(|source| InterfaceError::Read {
        path: fdb_path,
        source,
    })?;
    let port = fdb_port(&fdb, mac)
        .ok_or_else(|| problem("the bridge has not learnt its MAC address yet"))?;
    let ports_dir = format!("/sys/class/net/{bridge}/brif");
    let entries = std::fs::read_dir(&ports_dir).map_err(|source| InterfaceError::Read {
        path: ports_dir.clone(),
        source,
    })?;
    for entry in entries.flatten() {
        let number = std::fs::read_to_string(entry.path().join("port_no")).unwrap_or_default();
        let number = number.trim().trim_start_matches("0x");
        if u16::from_str_radix(number, 16).ok() == Some(port) {
            return Ok(entry.file_name().to_string_lossy().into_owned());
        }
    }
    Err(problem("no port of the bridge has the learnt port number"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn picks_the_longest_ipv4_route() {
        let table = "Iface\tDestination\tGateway \tFlags\tRefCnt\tUse\tMetric\tMask\t\tMTU\tWindow\tIRTT\n\
            eth0\t00000000\t0100A8C0\t0003\t0\t0\t0\t00000000\t0\t0\t0\n\
            cali1\t0B00F40A\t00000000\t0005\t0\t0\t0\tFFFFFFFF\t0\t0\t0\n\
            cni0\t0000F40A\t00000000\t0001\t0\t0\t0\t00FFFFFF\t0\t0\t0\n";
        assert_eq!(
            route_v4(table, "10.244.0.11".parse().unwrap()),
            Some((32, "cali1".to_string()))
        );
        assert_eq!(
            route_v4(table, "10.244.0.12".parse().unwrap()),
            Some((24, "cni0".to_string()))
        );
        assert_eq!(
            route_v4(table, "192.0.2.1".parse().unwrap()),
            Some((0, "eth0".to_string()))
        );
    }

    #[test]
    fn picks_the_longest_ipv6_route_and_skips_local_entries() {
        let table = "fd000244000000000000000000000011 80 00000000000000000000000000000000 00 00000000000000000000000000000000 00000400 00000001 00000000 00000001    zwp0\n\
            fd000244000000000000000000000011 80 00000000000000000000000000000000 00 00000000000000000000000000000000 00000000 00000001 00000000 80200001       lo\n\
            00000000000000000000000000000000 00 00000000000000000000000000000000 00 20010db8000000000000000000000010 00000400 00000001 00000000 00000003    zwext\n";
        assert_eq!(
            route_v6(table, "fd00:244::11".parse().unwrap()),
            Some((128, "zwp0".to_string()))
        );
        assert_eq!(
            route_v6(table, "2001:db8::99".parse().unwrap()),
            Some((0, "zwext".to_string()))
        );
    }

    #[test]
    fn finds_bridge_ports_from_neighbours_and_the_fdb() {
        let arp = "IP address       HW type     Flags       HW address            Mask     Device\n\
            10.244.0.12      0x1         0x2         0a:58:0a:f4:00:0c     *        cni0\n";
        let mac = arp_mac(arp, "10.244.0.12".parse().unwrap(), "cni0").unwrap();
        assert_eq!(mac, [0x0a, 0x58, 0x0a, 0xf4, 0x00, 0x0c]);
        assert_eq!(arp_mac(arp, "10.244.0.12".parse().unwrap(), "eth0"), None);
        let mut fdb = vec![0u8; 32];
        fdb[..6].copy_from_slice(&[1, 2, 3, 4, 5, 6]);
        fdb[6] = 1;
        fdb[7] = 1; // local entry: the bridge's own address
        fdb[16..22].copy_from_slice(&mac);
        fdb[22] = 3;
        assert_eq!(fdb_port(&fdb, mac), Some(3));
        assert_eq!(fdb_port(&fdb, [1, 2, 3, 4, 5, 6]), None);
    }
}
