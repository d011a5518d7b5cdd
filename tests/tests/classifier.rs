//! The first classifier on real traffic: pods in their own namespaces, the programs attached
//! to the host-side veths in the node namespace, counters read back from the kernel.

use std::{
    net::{IpAddr, SocketAddr, TcpListener, TcpStream, UdpSocket},
    process::Command,
    time::{Duration, Instant},
};

use zonewall::datapath::{Counters, Datapath, block_key};
use zonewall_common::counter;
use zonewall_integration_tests::{Pod, Topology, in_netns, packet, privileged};

const IPPROTO_ICMP: u8 = 1;
const IPPROTO_TCP: u8 = 6;
const IPPROTO_UDP: u8 = 17;
const IPPROTO_ICMPV6: u8 = 58;

/// A topology with the programs attached to every pod's host-side interface.
/// Field order matters: the datapath is dropped (links released) before the namespaces go.
struct Node {
    datapath: Datapath,
    topology: Topology,
}

impl Node {
    fn new(pods: usize) -> Self {
        let topology = Topology::new(pods);
        let mut datapath = Datapath::load().expect("load eBPF object");
        in_netns(&topology.node, || {
            for pod in &topology.pods {
                datapath.attach(&pod.host_interface).expect("attach");
            }
        });
        Node { datapath, topology }
    }

    fn pod(&self, index: usize) -> &Pod {
        &self.topology.pods[index]
    }

    fn counters(&self) -> Counters {
        self.datapath.counters().expect("read counters")
    }

    /// Waits until counter `index` has grown by `expected` since `before` (packets can sit in
    /// a neighbour queue for a moment), then checks it grew by exactly that much.
    fn assert_counter_delta(&self, before: &Counters, index: u32, expected: u64) {
        let deadline = Instant::now() + Duration::from_secs(3);
        let mut delta = self.counters().since(before);
        while delta.get(index) < expected && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
            delta = self.counters().since(before);
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
}

/// Sends `count` UDP datagrams from `from` to `to:port`; returns how many arrived.
fn udp_delivered(from: &Pod, to: &Pod, v6: bool, port: u16, count: usize) -> usize {
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

/// Whether a TCP connection from `from` to `to:port` is established within one second.
fn tcp_connects(from: &Pod, to: &Pod, v6: bool, port: u16) -> bool {
    let destination = SocketAddr::new(to.ip(v6), port);
    let _listener = in_netns(&to.netns, || TcpListener::bind(destination)).expect("listen");
    in_netns(&from.netns, || {
        TcpStream::connect_timeout(&destination, Duration::from_secs(1))
    })
    .is_ok()
}

/// Whether all of three echo requests from `from` to `to` are answered.
fn ping(from: &Pod, to: IpAddr) -> bool {
    let status = Command::new("ip")
        .args([
            "netns",
            "exec",
            &from.netns,
            "ping",
            "-q",
            "-n",
            "-c",
            "3",
            "-i",
            "0.2",
            "-W",
            "1",
        ])
        .arg(to.to_string())
        .output()
        .expect("run ping; `cargo xtask setup` installs iputils-ping");
    status.status.success()
}

#[test]
fn empty_map_passes_tcp_udp_and_icmp() {
    if !privileged("empty_map_passes_tcp_udp_and_icmp") {
        return;
    }
    let node = Node::new(2);
    let (a, b) = (node.pod(0), node.pod(1));
    for v6 in [false, true] {
        let before = node.counters();
        assert!(
            tcp_connects(a, b, v6, 8080),
            "TCP a->b (v6={v6}) must pass with an empty map"
        );
        assert_eq!(udp_delivered(a, b, v6, 5000, 20), 20, "UDP a->b (v6={v6})");
        assert!(ping(a, b.ip(v6)), "ICMP echo a->b (v6={v6})");
        let delta = node.counters().since(&before);
        assert_eq!(delta.get(counter::DROP_BLOCKED), 0, "{delta}");
        // Each datagram crosses a's interface (ingress) and b's (egress); the TCP handshake
        // and pings add more.
        assert!(delta.get(counter::PASS_IP) >= 40, "{delta}");
    }
}

#[test]
fn blocked_flows_are_dropped_and_the_rest_pass() {
    if !privileged("blocked_flows_are_dropped_and_the_rest_pass") {
        return;
    }
    let mut node = Node::new(3);
    let (a, b, c) = (
        node.pod(0).clone(),
        node.pod(1).clone(),
        node.pod(2).clone(),
    );
    for v6 in [false, true] {
        let icmp = if v6 {
            (IPPROTO_ICMPV6, 128)
        } else {
            (IPPROTO_ICMP, 8)
        };
        let keys = [
            block_key(a.ip(v6), b.ip(v6), IPPROTO_UDP, 5001),
            block_key(a.ip(v6), b.ip(v6), IPPROTO_TCP, 8081),
            block_key(a.ip(v6), b.ip(v6), icmp.0, icmp.1),
        ];
        for key in &keys {
            node.datapath.block(key).expect("block");
        }

        let before = node.counters();
        assert_eq!(
            udp_delivered(&a, &b, v6, 5001, 20),
            0,
            "blocked UDP a->b:5001 (v6={v6})"
        );
        node.assert_counter_delta(&before, counter::DROP_BLOCKED, 20);

        assert_eq!(
            udp_delivered(&a, &b, v6, 5002, 20),
            20,
            "other port a->b:5002 (v6={v6})"
        );
        assert_eq!(
            udp_delivered(&c, &b, v6, 5001, 20),
            20,
            "other source c->b:5001 (v6={v6})"
        );
        assert_eq!(
            udp_delivered(&b, &a, v6, 5001, 20),
            20,
            "reverse direction b->a:5001 (v6={v6})"
        );

        assert!(
            !tcp_connects(&a, &b, v6, 8081),
            "blocked TCP a->b:8081 (v6={v6})"
        );
        assert!(tcp_connects(&a, &b, v6, 8082), "TCP a->b:8082 (v6={v6})");

        let before = node.counters();
        assert!(!ping(&a, b.ip(v6)), "blocked echo a->b (v6={v6})");
        node.assert_counter_delta(&before, counter::DROP_BLOCKED, 3);
        assert!(ping(&c, b.ip(v6)), "echo c->b (v6={v6})");

        for key in &keys {
            node.datapath.unblock(key).expect("unblock");
        }
        assert_eq!(
            udp_delivered(&a, &b, v6, 5001, 20),
            20,
            "unblocked UDP a->b:5001 (v6={v6})"
        );
    }
}

#[test]
fn parser_reads_ihl_fragments_and_extension_headers() {
    if !privileged("parser_reads_ihl_fragments_and_extension_headers") {
        return;
    }
    let mut node = Node::new(2);
    let (a, b) = (node.pod(0).clone(), node.pod(1).clone());
    node.datapath
        .block(&block_key(a.ipv4.into(), b.ipv4.into(), IPPROTO_UDP, 7000))
        .unwrap();
    node.datapath
        .block(&block_key(a.ipv6.into(), b.ipv6.into(), IPPROTO_UDP, 7000))
        .unwrap();

    // The port sits after the options: only a parser that honours IHL finds it.
    let before = node.counters();
    packet::send_frames(
        &a.netns,
        "eth0",
        &[packet::ipv4_udp(a.ipv4, b.ipv4, 7000, 3, 0)],
    );
    node.assert_counter_delta(&before, counter::DROP_BLOCKED, 1);

    // A non-first fragment has no L4 header: it never matches a port entry.
    let before = node.counters();
    packet::send_frames(
        &a.netns,
        "eth0",
        &[packet::ipv4_udp(a.ipv4, b.ipv4, 7000, 0, 185)],
    );
    node.assert_counter_delta(&before, counter::FRAGMENT, 1);
    node.assert_counter_delta(&before, counter::DROP_BLOCKED, 0);

    let before = node.counters();
    packet::send_frames(&a.netns, "eth0", &[packet::ipv4_bad_ihl(a.ipv4, b.ipv4)]);
    node.assert_counter_delta(&before, counter::DROP_MALFORMED, 1);

    // Two destination-options headers are walked to reach UDP.
    let before = node.counters();
    packet::send_frames(
        &a.netns,
        "eth0",
        &[packet::ipv6_udp(a.ipv6, b.ipv6, 7000, 2)],
    );
    node.assert_counter_delta(&before, counter::DROP_BLOCKED, 1);

    // A chain longer than the bounded walk is dropped, not passed unparsed.
    let before = node.counters();
    packet::send_frames(
        &a.netns,
        "eth0",
        &[packet::ipv6_udp(a.ipv6, b.ipv6, 7001, 7)],
    );
    node.assert_counter_delta(&before, counter::DROP_EXT_HEADERS, 1);
}
