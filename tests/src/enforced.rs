//! A test node with zonewall enforcing a zone policy: the topology, an inventory of its pods,
//! the policy translated from a firewall fixture, and the datapath loaded, applied and
//! attached in the node namespace (in this process, so the test reads the kernel's counters
//! directly), plus the traffic helpers the dataplane tests share.

use std::{
    collections::BTreeMap,
    io::{ErrorKind, Read as _},
    net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpListener, TcpStream, UdpSocket},
    path::{Path, PathBuf},
    process::Command,
    time::{Duration, Instant},
};

use zonewall::{
    datapath::{ApplyReport, Counters, Datapath, Dataplane, DesiredTables, PinLayout},
    node::{self, PolicyInput},
    policy::{datapath_compile::RuleOrigin, resource::Mode},
};
use zonewall_common::counter;

use crate::{Pod, Topology, in_netns};

/// The firewall every dataplane test enforces.
pub fn zones_fixture() -> PathBuf {
    PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/fixtures/zones.xml"))
}

/// The database outside the cluster (an address of the external namespace).
pub const DATABASE_V4: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 20);
pub const DATABASE_V6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 0x20);

/// Somewhere traffic can be sent from and to: a namespace and its addresses.
#[derive(Clone, Debug)]
pub struct Host {
    pub netns: String,
    pub v4: Ipv4Addr,
    pub v6: Ipv6Addr,
}

impl Host {
    pub fn ip(&self, v6: bool) -> IpAddr {
        if v6 { self.v6.into() } else { self.v4.into() }
    }
}

/// How a TCP connection attempt ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Connect {
    Established,
    Refused(Duration),
    TimedOut,
}

/// The node, enforcing. Field order matters: the datapath is dropped (links released) before
/// the namespaces go.
pub struct Enforced {
    pub datapath: Datapath,
    pub topology: Topology,
    pub compiled: zonewall::policy::datapath_compile::Compiled,
    /// What the last apply changed.
    pub last_report: ApplyReport,
    attached: BTreeMap<String, u32>,
    mode: Mode,
    inventory: PathBuf,
}

impl Enforced {
    /// One pod per `(name, zone)`, in order (`pod(i)`); everything else is zone `untrust`.
    pub fn new(pods: &[(&str, &str)], mode: Mode) -> Self {
        let (topology, inventory) = prepared_node(pods);
        let input = PolicyInput::Panos {
            config: zones_fixture(),
            device_group: None,
            mode,
        };
        let layout = PinLayout::new(topology.pin_root.join("zonewall"));
        let mut datapath = Datapath::load(&layout).expect("load eBPF object");
        // Interfaces are found from the pods' host routes, in the node namespace.
        let snapshot = in_netns(&topology.node, || {
            node::snapshot(
                &inventory,
                &input,
                None,
                &mut node::LoadedPolicies::default(),
            )
        })
        .expect("translate and compile the fixture");
        assert_eq!(
            snapshot.workloads.len(),
            pods.len(),
            "every pod's interface found from its route: {:?}",
            snapshot.workloads
        );
        let mut attached = BTreeMap::new();
        let last_report = in_netns(&topology.node, || {
            node::apply(&mut datapath, &mut attached, &snapshot, false)
        })
        .expect("apply and attach");
        Enforced {
            datapath,
            topology,
            compiled: snapshot.compiled,
            last_report,
            attached,
            mode,
            inventory,
        }
    }

    /// What turns this node's kernel events into flow records.
    pub fn enricher(&self) -> zonewall::flows::events::Enricher {
        let inventory =
            zonewall::inventory::Inventory::load_file(&self.inventory).expect("inventory");
        zonewall::flows::events::Enricher::new(
            &self.compiled,
            &inventory,
            std::collections::HashMap::new(),
            "test-node",
        )
    }

    /// The tables `config` (a firewall configuration's XML text) compiles to for this node,
    /// without applying them.
    pub fn desired_for(&self, config: &str) -> DesiredTables {
        let path = std::env::temp_dir().join(format!("{}-variant.xml", self.topology.node));
        std::fs::write(&path, config).expect("write configuration");
        let input = PolicyInput::Panos {
            config: path.clone(),
            device_group: None,
            mode: self.mode,
        };
        let snapshot = in_netns(&self.topology.node, || {
            node::snapshot(
                &self.inventory,
                &input,
                None,
                &mut node::LoadedPolicies::default(),
            )
        })
        .expect("compile the variant");
        let _ = std::fs::remove_file(&path);
        let local: Vec<(u32, IpAddr)> = snapshot
            .workloads
            .iter()
            .flat_map(|w| {
                let ifindex = self.attached[&w.interface];
                w.ips.iter().map(move |ip| (ifindex, *ip))
            })
            .collect();
        DesiredTables::new(&snapshot.compiled, &local, false)
    }

    /// Rewrites the inventory with the first `pods.len()` pods only and applies again.
    pub fn reapply(&mut self, pods: &[(&str, &str)]) -> ApplyReport {
        let entries: Vec<(&str, &str, &Pod)> = pods
            .iter()
            .zip(&self.topology.pods)
            .map(|((name, zone), pod)| (*name, *zone, pod))
            .collect();
        write_inventory(&self.inventory, &entries);
        let input = PolicyInput::Panos {
            config: zones_fixture(),
            device_group: None,
            mode: self.mode,
        };
        let (datapath, attached, inventory) =
            (&mut self.datapath, &mut self.attached, &self.inventory);
        let report = in_netns(&self.topology.node, || {
            let snapshot = node::snapshot(
                inventory,
                &input,
                None,
                &mut node::LoadedPolicies::default(),
            )?;
            node::apply(datapath, attached, &snapshot, false)
        })
        .expect("apply again");
        self.last_report = report;
        report
    }

    pub fn pod(&self, index: usize) -> Host {
        let pod = &self.topology.pods[index];
        Host {
            netns: pod.netns.clone(),
            v4: pod.ipv4,
            v6: pod.ipv6,
        }
    }

    /// The external namespace's own address (zone untrust).
    pub fn internet(&self) -> Host {
        Host {
            netns: self.topology.external.clone(),
            v4: crate::topology::EXTERNAL_V4,
            v6: crate::topology::EXTERNAL_V6,
        }
    }

    /// The database, in the external namespace (zone untrust, address group `database`).
    pub fn database(&self) -> Host {
        Host {
            netns: self.topology.external.clone(),
            v4: DATABASE_V4,
            v6: DATABASE_V6,
        }
    }

    pub fn counters(&self) -> Counters {
        self.datapath.counters().expect("read counters")
    }

    /// Waits until counter `index` has grown by at least `expected` since `before` (packets
    /// can sit in a queue for a moment), then checks it grew by exactly that much.
    pub fn assert_counter_delta(&self, before: &Counters, index: u32, expected: u64) {
        let deadline = Instant::now() + Duration::from_secs(3);
        while self.counters().since(before).get(index) < expected && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        std::thread::sleep(Duration::from_millis(100));
        let delta = self.counters().since(before);
        assert_eq!(
            delta.get(index),
            expected,
            "counter {} moved by {}, expected {expected}; all deltas: {delta}",
            counter::NAMES[index as usize],
            delta.get(index)
        );
    }

    /// Checks the batched reads of the rule statistics against one lookup per index through
    /// aya: the raw batch of every per-CPU value, and the totals the datapath reads from the
    /// counters.
    pub fn check_rule_stats_reads(&self) {
        use aya::maps::{Map, MapData, PerCpuArray};
        use std::os::fd::{AsFd as _, AsRawFd as _};
        use zonewall::datapath::sys;
        use zonewall_common::{RuleStats, map_names};
        let layout = PinLayout::new(self.topology.pin_root.join("zonewall"));
        let map = MapData::from_pin(layout.maps().join(map_names::RULE_STATS))
            .expect("open the pinned rule statistics");
        let used = self.compiled.rules.keys().next_back().expect("rules") + 1;
        let cpus = aya::util::nr_cpus().expect("possible CPUs");
        let slot = sys::per_cpu_slot::<RuleStats>();
        let batched = sys::lookup_array(map.fd().as_fd().as_raw_fd(), used, slot * cpus)
            .expect("a batch lookup of the per-CPU rule statistics");
        assert_eq!(
            batched.len(),
            used as usize * slot * cpus,
            "every index read"
        );
        let array = PerCpuArray::<_, RuleStats>::try_from(Map::PerCpuArray(map)).expect("array");
        let mut totals = BTreeMap::new();
        for index in 0..used {
            let per_cpu = array.get(&index, 0).expect("lookup");
            for (cpu, stats) in per_cpu.iter().enumerate() {
                let at = (index as usize * cpus + cpu) * slot;
                assert_eq!(
                    batched[at..at + slot],
                    sys::bytes_of(std::slice::from_ref(stats)),
                    "rule {index}, CPU {cpu}"
                );
            }
            let packets: u64 = per_cpu.iter().map(|s| s.packets).sum();
            let bytes: u64 = per_cpu.iter().map(|s| s.bytes).sum();
            if packets > 0 {
                totals.insert(index, (packets, bytes));
            }
        }
        assert!(!totals.is_empty(), "traffic counted for some rule");
        let reported: BTreeMap<u32, (u64, u64)> = (0..)
            .zip(self.datapath.rule_counters().expect("read rule counters"))
            .filter(|(_, stats)| stats.packets > 0)
            .map(|(id, stats)| (id, (stats.packets, stats.bytes)))
            .collect();
        assert_eq!(reported, totals);
    }

    /// Packets the kernel counted for the firewall rule `name` (at egress or ingress).
    pub fn rule_packets(&self, name: &str) -> u64 {
        let stats = self.datapath.rule_stats().expect("read rule statistics");
        self.compiled
            .rules
            .values()
            .filter(|rule| match &rule.origin {
                RuleOrigin::Rule {
                    provenance: Some(p),
                    ..
                } => p.rule == name,
                _ => false,
            })
            .filter_map(|rule| stats.get(&rule.id))
            .map(|s| s.packets)
            .sum()
    }
}

/// The topology for `pods` (one per `(name, zone)`), the database address in the external
/// namespace, and the inventory file describing them (removed by the caller).
pub fn prepared_node(pods: &[(&str, &str)]) -> (Topology, PathBuf) {
    let topology = Topology::new(pods.len());
    crate::topology::ip(
        &topology.external,
        &["addr", "add", &format!("{DATABASE_V4}/24"), "dev", "eth0"],
    );
    crate::topology::ip(
        &topology.external,
        &[
            "-6",
            "addr",
            "add",
            &format!("{DATABASE_V6}/64"),
            "dev",
            "eth0",
            "nodad",
        ],
    );
    let inventory = std::env::temp_dir().join(format!("{}-inventory.yaml", topology.node));
    let entries: Vec<(&str, &str, &Pod)> = pods
        .iter()
        .zip(&topology.pods)
        .map(|((name, zone), pod)| (*name, *zone, pod))
        .collect();
    write_inventory(&inventory, &entries);
    (topology, inventory)
}

/// Writes an inventory of `(name, zone, pod)` workloads (namespace `test`, external zone
/// `untrust`) to `path`, through a temporary name and a rename: an agent watching the file
/// never reads half of it.
pub fn write_inventory(path: &Path, workloads: &[(&str, &str, &Pod)]) {
    let mut yaml = String::from("external_zone: untrust\nendpoints:\n");
    for (name, zone, pod) in workloads {
        yaml.push_str(&format!(
            "  - {{name: {name}, namespace: test, zone: {zone}, ips: [\"{}\", \"{}\"]}}\n",
            pod.ipv4, pod.ipv6
        ));
    }
    let temporary = path.with_extension("tmp");
    std::fs::write(&temporary, yaml).expect("write inventory");
    std::fs::rename(&temporary, path).expect("replace inventory");
}

impl Drop for Enforced {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.inventory);
    }
}

/// A TCP connection attempt from `from` to `to:port` (a listener is started there).
pub fn tcp_connect(from: &Host, to: &Host, v6: bool, port: u16, timeout: Duration) -> Connect {
    let destination = SocketAddr::new(to.ip(v6), port);
    let _listener = listen(&to.netns, destination);
    in_netns(&from.netns, || {
        let started = Instant::now();
        match TcpStream::connect_timeout(&destination, timeout) {
            Ok(_) => Connect::Established,
            Err(e) if e.kind() == ErrorKind::ConnectionRefused => {
                Connect::Refused(started.elapsed())
            }
            Err(e) if e.kind() == ErrorKind::TimedOut || e.kind() == ErrorKind::WouldBlock => {
                Connect::TimedOut
            }
            Err(e) => panic!("connect to {destination}: unexpected {e}"),
        }
    })
}

/// A listener on `address` in `netns`. A port a previous probe just used can stay taken for
/// a moment (a connection the closed listener had not accepted yet): retry for up to 2 s.
pub fn listen(netns: &str, address: SocketAddr) -> TcpListener {
    let deadline = Instant::now() + Duration::from_secs(2);
    loop {
        match in_netns(netns, || TcpListener::bind(address)) {
            Ok(listener) => return listener,
            Err(e) if e.kind() == ErrorKind::AddrInUse && Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(20));
            }
            Err(e) => panic!("listen on {address}: {e}"),
        }
    }
}

/// Whether a TCP connection is established and carries data both ways.
pub fn tcp_talks(from: &Host, to: &Host, v6: bool, port: u16) -> bool {
    let destination = SocketAddr::new(to.ip(v6), port);
    let listener = listen(&to.netns, destination);
    let server = std::thread::spawn(move || {
        let (mut stream, _) = listener.accept().ok()?;
        let mut buffer = [0u8; 5];
        stream.read_exact(&mut buffer).ok()?;
        std::io::Write::write_all(&mut stream, &buffer).ok()?;
        Some(())
    });
    let talked = in_netns(&from.netns, || {
        let mut stream =
            TcpStream::connect_timeout(&destination, Duration::from_millis(500)).ok()?;
        stream.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
        std::io::Write::write_all(&mut stream, b"hello").ok()?;
        let mut echo = [0u8; 5];
        stream.read_exact(&mut echo).ok()?;
        Some(&echo == b"hello")
    });
    if talked != Some(true) {
        // Unblock the accept so the server thread ends.
        let _ = in_netns(&to.netns, || {
            TcpStream::connect_timeout(&destination, Duration::from_millis(100))
        });
    }
    let _ = server.join();
    talked == Some(true)
}

/// Sends `count` UDP datagrams from `from` to `to:port`; returns how many arrived.
pub fn udp_delivered(from: &Host, to: &Host, v6: bool, port: u16, count: usize) -> usize {
    let destination = SocketAddr::new(to.ip(v6), port);
    let receiver = in_netns(&to.netns, || UdpSocket::bind(destination)).expect("bind receiver");
    receiver
        .set_read_timeout(Some(Duration::from_millis(300)))
        .expect("set read timeout");
    let sender = in_netns(&from.netns, || {
        UdpSocket::bind(SocketAddr::new(from.ip(v6), 0))
    })
    .expect("bind sender");
    for i in 0..count {
        sender
            .send_to(format!("datagram {i}").as_bytes(), destination)
            .expect("send");
    }
    let mut buffer = [0u8; 64];
    let mut received = 0;
    while received < count && receiver.recv(&mut buffer).is_ok() {
        received += 1;
    }
    received
}

/// Whether a connected UDP socket gets ECONNREFUSED (an ICMP port unreachable) after one
/// datagram to `to:port`, where nothing listens... or where zonewall answers for a reset rule.
pub fn udp_refused(from: &Host, to: &Host, v6: bool, port: u16) -> bool {
    let destination = SocketAddr::new(to.ip(v6), port);
    // A receiver exists: a refusal can only come from zonewall, not from the peer's stack.
    let _receiver = in_netns(&to.netns, || UdpSocket::bind(destination)).expect("bind receiver");
    in_netns(&from.netns, || {
        let socket = UdpSocket::bind(SocketAddr::new(from.ip(v6), 0)).expect("bind sender");
        socket.connect(destination).expect("connect");
        socket
            .set_read_timeout(Some(Duration::from_millis(500)))
            .expect("set read timeout");
        socket.send(b"ping").expect("send");
        let mut buffer = [0u8; 16];
        matches!(socket.recv(&mut buffer), Err(e) if e.kind() == ErrorKind::ConnectionRefused)
    })
}

/// Whether all of three echo requests from `from` to `to` are answered.
pub fn ping(from: &Host, to: IpAddr) -> bool {
    Command::new("ip")
        .args(["netns", "exec", &from.netns, "ping", "-q", "-n", "-c", "3"])
        .args(["-i", "0.2", "-W", "1"])
        .arg(to.to_string())
        .output()
        .expect("run ping; `cargo xtask setup` installs iputils-ping")
        .status
        .success()
}
