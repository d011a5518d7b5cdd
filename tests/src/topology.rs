//! The test node: namespaces, veth pairs, routes, and guaranteed cleanup.

use std::{
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
    path::PathBuf,
    process::Command,
    sync::atomic::{AtomicU32, Ordering},
};

/// Gateway address every pod routes through; answered by proxy ARP on the host-side veth.
const POD_GATEWAY_V4: &str = "169.254.1.1";
/// Link-local gateway for IPv6, configured on every host-side veth.
const POD_GATEWAY_V6: &str = "fe80::1";

/// External network behind the node (documentation prefixes: they exist only in the test's
/// own namespaces).
pub const EXTERNAL_V4: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 10);
pub const EXTERNAL_V6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 0x10);
const NODE_EXTERNAL_V4: &str = "203.0.113.1";
const NODE_EXTERNAL_V6: &str = "2001:db8::1";

/// Name of the node's interface towards the external namespace.
pub const EXTERNAL_INTERFACE: &str = "zwext";

static NEXT_ID: AtomicU32 = AtomicU32::new(0);

/// A pod: its own namespace, `eth0` inside it, and a host-side veth in the node namespace.
#[derive(Clone, Debug)]
pub struct Pod {
    pub netns: String,
    /// Host-side interface name, in the node namespace (where zonewall attaches).
    pub host_interface: String,
    pub ipv4: Ipv4Addr,
    pub ipv6: Ipv6Addr,
}

impl Pod {
    pub fn ip(&self, v6: bool) -> IpAddr {
        if v6 {
            self.ipv6.into()
        } else {
            self.ipv4.into()
        }
    }
}

/// A node with pods and an external network. Dropping it removes every namespace (and with
/// them every veth and route) and its bpffs pin root.
pub struct Topology {
    pub node: String,
    pub external: String,
    pub pods: Vec<Pod>,
    pub pin_root: PathBuf,
    namespaces: Vec<String>,
}

impl Topology {
    /// Builds a node with `pod_count` pods. The name prefix `zwt<pid>x<n>` keeps parallel
    /// tests (and parallel test binaries) apart.
    pub fn new(pod_count: usize) -> Self {
        assert!(pod_count < 200, "pod addresses are 10.244.0.(11 + i)");
        let id = format!(
            "zwt{}x{}",
            std::process::id(),
            NEXT_ID.fetch_add(1, Ordering::Relaxed)
        );
        let mut topology = Topology {
            node: format!("{id}-node"),
            external: format!("{id}-ext"),
            pods: Vec::new(),
            pin_root: PathBuf::from(format!("/sys/fs/bpf/{id}")),
            namespaces: Vec::new(),
        };
        // Every namespace is registered before it is configured, so a failure half-way still
        // removes everything in Drop.
        topology.add_netns(&topology.node.clone());
        let node = topology.node.clone();
        ip(&node, &["link", "set", "lo", "up"]);
        sysctl(&node, "net.ipv4.ip_forward", "1");
        sysctl(&node, "net.ipv6.conf.all.forwarding", "1");

        for index in 0..pod_count {
            let pod = Pod {
                netns: format!("{id}-pod{index}"),
                host_interface: format!("zwp{index}"),
                ipv4: Ipv4Addr::new(10, 244, 0, 11 + index as u8),
                ipv6: Ipv6Addr::new(0xfd00, 0x244, 0, 0, 0, 0, 0, 0x11 + index as u16),
            };
            topology.add_netns(&pod.netns);
            no_dad(&pod.netns);
            topology.wire_pod(&pod);
            topology.pods.push(pod);
        }

        let external = topology.external.clone();
        topology.add_netns(&external);
        no_dad(&external);
        ip(
            &node,
            &[
                "link",
                "add",
                EXTERNAL_INTERFACE,
                "type",
                "veth",
                "peer",
                "name",
                "eth0",
                "netns",
                &external,
            ],
        );
        ip(
            &node,
            &[
                "addr",
                "add",
                &format!("{NODE_EXTERNAL_V4}/24"),
                "dev",
                EXTERNAL_INTERFACE,
            ],
        );
        ip(
            &node,
            &[
                "-6",
                "addr",
                "add",
                &format!("{NODE_EXTERNAL_V6}/64"),
                "dev",
                EXTERNAL_INTERFACE,
                "nodad",
            ],
        );
        ip(&node, &["link", "set", EXTERNAL_INTERFACE, "up"]);
        ip(&external, &["link", "set", "lo", "up"]);
        ip(
            &external,
            &["addr", "add", &format!("{EXTERNAL_V4}/24"), "dev", "eth0"],
        );
        ip(
            &external,
            &[
                "-6",
                "addr",
                "add",
                &format!("{EXTERNAL_V6}/64"),
                "dev",
                "eth0",
                "nodad",
            ],
        );
        ip(&external, &["link", "set", "eth0", "up"]);
        ip(
            &external,
            &["route", "add", "default", "via", NODE_EXTERNAL_V4],
        );
        ip(
            &external,
            &["-6", "route", "add", "default", "via", NODE_EXTERNAL_V6],
        );
        // The external network is the node's uplink. Proxy ARP needs this route too: the node
        // answers for the pods' gateway address only when it routes that address elsewhere.
        let external_v4 = EXTERNAL_V4.to_string();
        let external_v6 = EXTERNAL_V6.to_string();
        ip(&node, &["route", "add", "default", "via", &external_v4]);
        ip(
            &node,
            &["-6", "route", "add", "default", "via", &external_v6],
        );

        std::fs::create_dir_all(&topology.pin_root)
            .unwrap_or_else(|e| panic!("create pin root {}: {e}", topology.pin_root.display()));
        topology
    }

    fn add_netns(&mut self, name: &str) {
        run("ip", &["netns", "add", name]);
        self.namespaces.push(name.to_owned());
    }

    /// Routed veth, as Calico does it: the pod has a /32 (/128) and a default route to a
    /// link-local gateway; the node has a host route per pod and answers ARP by proxy.
    fn wire_pod(&self, pod: &Pod) {
        let node = &self.node;
        let host = &pod.host_interface;
        ip(
            node,
            &[
                "link", "add", host, "type", "veth", "peer", "name", "eth0", "netns", &pod.netns,
            ],
        );
        sysctl(node, &format!("net.ipv4.conf.{host}.proxy_arp"), "1");
        sysctl(node, &format!("net.ipv4.neigh.{host}.proxy_delay"), "0");
        ip(
            node,
            &[
                "-6",
                "addr",
                "add",
                &format!("{POD_GATEWAY_V6}/64"),
                "dev",
                host,
                "nodad",
            ],
        );
        ip(node, &["link", "set", host, "up"]);
        ip(
            node,
            &["route", "add", &format!("{}/32", pod.ipv4), "dev", host],
        );
        ip(
            node,
            &[
                "-6",
                "route",
                "add",
                &format!("{}/128", pod.ipv6),
                "dev",
                host,
            ],
        );

        let ns = &pod.netns;
        ip(ns, &["link", "set", "lo", "up"]);
        ip(
            ns,
            &["addr", "add", &format!("{}/32", pod.ipv4), "dev", "eth0"],
        );
        ip(
            ns,
            &[
                "-6",
                "addr",
                "add",
                &format!("{}/128", pod.ipv6),
                "dev",
                "eth0",
                "nodad",
            ],
        );
        ip(ns, &["link", "set", "eth0", "up"]);
        ip(
            ns,
            &[
                "route",
                "add",
                POD_GATEWAY_V4,
                "dev",
                "eth0",
                "scope",
                "link",
            ],
        );
        ip(
            ns,
            &[
                "route",
                "add",
                "default",
                "via",
                POD_GATEWAY_V4,
                "dev",
                "eth0",
            ],
        );
        ip(
            ns,
            &[
                "-6",
                "route",
                "add",
                "default",
                "via",
                POD_GATEWAY_V6,
                "dev",
                "eth0",
            ],
        );
    }
}

impl Drop for Topology {
    fn drop(&mut self) {
        if std::env::var_os("ZONEWALL_TEST_KEEP_TOPOLOGY").is_some() {
            eprintln!(
                "ZONEWALL_TEST_KEEP_TOPOLOGY is set: leaving namespaces {:?} and {} for inspection",
                self.namespaces,
                self.pin_root.display()
            );
            return;
        }
        for name in self.namespaces.iter().rev() {
            // A namespace still being torn down by the kernel can refuse once; try again
            // before reporting.
            let mut last = String::new();
            let deleted = (0..5).any(|attempt| {
                if attempt > 0 {
                    std::thread::sleep(std::time::Duration::from_millis(100));
                }
                match Command::new("ip").args(["netns", "del", name]).output() {
                    Ok(output) if output.status.success() => true,
                    Ok(output) => {
                        last = String::from_utf8_lossy(&output.stderr).trim().to_owned();
                        false
                    }
                    Err(e) => {
                        last = e.to_string();
                        false
                    }
                }
            });
            if !deleted {
                // Straight to stdout: libtest hides a passing test's stderr, and a leftover
                // must be explained.
                let line = format!("CLEANUP FAILED: `ip netns del {name}`: {last}\n");
                let _ = std::io::Write::write_all(&mut std::io::stdout(), line.as_bytes());
            }
        }
        if let Err(e) = std::fs::remove_dir_all(&self.pin_root)
            && e.kind() != std::io::ErrorKind::NotFound
        {
            eprintln!("cleanup: remove {}: {e}", self.pin_root.display());
        }
    }
}

/// Runs `ip -n NETNS ARGS...`, panicking with the command's stderr on failure.
pub fn ip(netns: &str, args: &[&str]) {
    let mut full = vec!["-n", netns];
    full.extend_from_slice(args);
    run("ip", &full);
}

/// Duplicate address detection would hold IPv6 addresses (link-local ones included) for about
/// a second after an interface comes up; the test addresses are unique by construction.
fn no_dad(netns: &str) {
    sysctl(netns, "net.ipv6.conf.all.accept_dad", "0");
    sysctl(netns, "net.ipv6.conf.default.accept_dad", "0");
}

fn sysctl(netns: &str, key: &str, value: &str) {
    run(
        "ip",
        &[
            "netns",
            "exec",
            netns,
            "sysctl",
            "-q",
            "-w",
            &format!("{key}={value}"),
        ],
    );
}

/// Runs a command to completion; a failure is a broken test environment, so it panics with
/// the command line and what it printed.
pub fn run(program: &str, args: &[&str]) -> String {
    let output = Command::new(program)
        .args(args)
        .output()
        .unwrap_or_else(|e| {
            panic!("cannot run {program}: {e}; `cargo xtask setup` installs the test tools")
        });
    assert!(
        output.status.success(),
        "`{program} {}` failed ({}): {}",
        args.join(" "),
        output.status,
        String::from_utf8_lossy(&output.stderr).trim()
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}
