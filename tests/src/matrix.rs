//! Probing a node's connectivity and asking `zonewall explain` what the firewall says about
//! the same flow: shared by the demo and the connectivity-matrix test.

use std::{net::IpAddr, path::Path, process::Command, time::Duration};

use crate::Topology;
use crate::enforced::{
    Connect, DATABASE_V4, Host, ping, tcp_connect, udp_delivered, udp_refused, zones_fixture,
};
use crate::topology::EXTERNAL_V4;

/// The demo's workloads: one per zone of the fixture, two in trusted.
pub const DEMO_PODS: [(&str, &str); 4] = [
    ("web", "dmz"),
    ("app", "trusted"),
    ("app-2", "trusted"),
    ("vault", "restricted"),
];

/// The topology's pods under their names and zones, then the internet and the database
/// (both in the external namespace, zone untrust; IPv4 only).
pub fn named_hosts(topology: &Topology, pods: &[(&'static str, &'static str)]) -> Vec<Named> {
    let mut hosts: Vec<Named> = pods
        .iter()
        .zip(&topology.pods)
        .map(|((name, zone), pod)| Named {
            name,
            zone,
            host: Host {
                netns: pod.netns.clone(),
                v4: pod.ipv4,
                v6: pod.ipv6,
            },
        })
        .collect();
    for (name, v4) in [("internet", EXTERNAL_V4), ("database", DATABASE_V4)] {
        hosts.push(Named {
            name,
            zone: "untrust",
            host: Host {
                netns: topology.external.clone(),
                v4,
                v6: std::net::Ipv6Addr::UNSPECIFIED,
            },
        });
    }
    hosts
}

/// One kind of traffic.
#[derive(Clone, Copy, Debug)]
pub enum Probe {
    Tcp(u16),
    Udp(u16),
    Ping,
}

impl Probe {
    pub fn label(self) -> String {
        match self {
            Probe::Tcp(port) => format!("tcp/{port}"),
            Probe::Udp(port) => format!("udp/{port}"),
            Probe::Ping => "icmp echo".to_owned(),
        }
    }
}

/// What the kernel did with one probe.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Seen {
    Allowed,
    Refused,
    Silent,
}

/// A host with the name and zone the demo shows.
pub struct Named {
    pub name: &'static str,
    pub zone: &'static str,
    pub host: Host,
}

/// What `zonewall explain --json` says about the flow: (action, rule).
pub fn explain(
    binary: &Path,
    inventory: &Path,
    from: IpAddr,
    to: IpAddr,
    probe: Probe,
) -> (String, String) {
    let (proto, port) = match (probe, from) {
        (Probe::Tcp(port), _) => ("tcp", Some(port)),
        (Probe::Udp(port), _) => ("udp", Some(port)),
        (Probe::Ping, IpAddr::V4(_)) => ("icmp", None),
        (Probe::Ping, IpAddr::V6(_)) => ("icmpv6", None),
    };
    let mut command = Command::new(binary);
    command
        .args(["explain", "--json", "--panos-config"])
        .arg(zones_fixture())
        .arg("--inventory")
        .arg(inventory)
        .args([
            "--src",
            &from.to_string(),
            "--dst",
            &to.to_string(),
            "--proto",
            proto,
        ]);
    if let Some(port) = port {
        command.args(["--dport", &port.to_string()]);
    }
    let output = command.output().expect("run zonewall explain");
    let json: serde_json::Value =
        serde_json::from_slice(&output.stdout).unwrap_or(serde_json::Value::Null);
    (
        json["action"].as_str().unwrap_or("?").to_owned(),
        json["rule"].as_str().unwrap_or("?").to_owned(),
    )
}

/// What the kernel does with the flow (IPv4).
pub fn probe(from: &Host, to: &Host, what: Probe) -> Seen {
    match what {
        Probe::Tcp(port) => match tcp_connect(from, to, false, port, Duration::from_millis(600)) {
            Connect::Established => Seen::Allowed,
            Connect::Refused(_) => Seen::Refused,
            Connect::TimedOut => Seen::Silent,
        },
        Probe::Udp(port) => {
            if udp_delivered(from, to, false, port, 3) > 0 {
                Seen::Allowed
            } else if udp_refused(from, to, false, port) {
                Seen::Refused
            } else {
                Seen::Silent
            }
        }
        Probe::Ping => {
            if ping(from, to.ip(false)) {
                Seen::Allowed
            } else {
                Seen::Silent
            }
        }
    }
}

/// What the kernel should do with `probe` for a firewall action: resets answer TCP (RST) and
/// UDP (port unreachable); anything else denied is silent.
pub fn expected(action: &str, probe: Probe) -> Seen {
    match (action, probe) {
        ("allow", _) => Seen::Allowed,
        ("reset-client" | "reset-both", Probe::Tcp(_) | Probe::Udp(_)) => Seen::Refused,
        _ => Seen::Silent,
    }
}
