//! `cargo xtask demo`: a small cluster-like node in network namespaces (a web pod in `dmz`,
//! two app pods in `trusted`, a vault in `restricted`, the internet and a database outside),
//! the firewall of `tests/fixtures/zones.xml` enforced by the real agent, traffic that shows
//! allowed and denied flows, the CEF records as the SIEM would receive them, and a summary.
//! Every outcome is checked against `zonewall explain`; the demo fails if the kernel and the
//! firewall ever disagree. Ctrl-C stops it and removes everything it created.

use std::{
    collections::BTreeMap,
    net::IpAddr,
    path::Path,
    process::{Command, ExitCode},
    sync::atomic::{AtomicBool, Ordering},
    time::Duration,
};

use zonewall_integration_tests::{
    agent::{Agent, Output, zonewall_binary},
    enforced::{Connect, Host, ping, prepared_node, tcp_connect, udp_delivered, zones_fixture},
    privileges::is_root,
};

static INTERRUPTED: AtomicBool = AtomicBool::new(false);

extern "C" fn on_interrupt(_: libc::c_int) {
    INTERRUPTED.store(true, Ordering::SeqCst);
}

#[derive(Clone, Copy)]
enum Probe {
    Tcp(u16),
    Udp(u16),
    Ping,
}

impl Probe {
    fn label(self) -> String {
        match self {
            Probe::Tcp(port) => format!("tcp/{port}"),
            Probe::Udp(port) => format!("udp/{port}"),
            Probe::Ping => "icmp echo".to_owned(),
        }
    }
}

/// What the kernel did with one probe.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Seen {
    Allowed,
    Refused,
    Silent,
}

struct Named {
    name: &'static str,
    zone: &'static str,
    host: Host,
}

fn explain(
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

fn probe(from: &Host, to: &Host, what: Probe) -> Seen {
    match what {
        Probe::Tcp(port) => match tcp_connect(from, to, false, port, Duration::from_millis(600)) {
            Connect::Established => Seen::Allowed,
            Connect::Refused(_) => Seen::Refused,
            Connect::TimedOut => Seen::Silent,
        },
        Probe::Udp(port) => {
            if udp_delivered(from, to, false, port, 3) > 0 {
                Seen::Allowed
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

fn expected(action: &str) -> Seen {
    match action {
        "allow" => Seen::Allowed,
        "reset-client" | "reset-both" => Seen::Refused,
        _ => Seen::Silent,
    }
}

fn print_records(agent: &Agent) {
    while let Ok(line) = agent.output.try_recv() {
        match line {
            Output::Stdout(record) => println!("    SIEM  {record}"),
            Output::Stderr(log) => {
                if log.contains("WARN") || log.contains("ERROR") {
                    println!("    agent {log}");
                }
            }
        }
    }
}

fn main() -> ExitCode {
    if !is_root() {
        eprintln!("zonewall-demo: run as root (it creates network namespaces and loads eBPF)");
        return ExitCode::from(2);
    }
    // SAFETY: installs a handler that only stores to an atomic.
    unsafe {
        libc::signal(
            libc::SIGINT,
            on_interrupt as *const () as libc::sighandler_t,
        );
        libc::signal(
            libc::SIGTERM,
            on_interrupt as *const () as libc::sighandler_t,
        );
    }
    println!("zonewall demo: building the agent ...");
    let binary = zonewall_binary();
    let pods = [
        ("web", "dmz"),
        ("app", "trusted"),
        ("app-2", "trusted"),
        ("vault", "restricted"),
    ];
    let (topology, inventory) = prepared_node(&pods);
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
    let internet = zonewall_integration_tests::topology::EXTERNAL_V4;
    let database = zonewall_integration_tests::enforced::DATABASE_V4;
    for (name, v4) in [("internet", internet), ("database", database)] {
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
    println!(
        "zonewall demo: node namespace {}, pods {}, firewall {}",
        topology.node,
        hosts
            .iter()
            .map(|h| format!("{}/{} {}", h.zone, h.name, h.host.v4))
            .collect::<Vec<_>>()
            .join(", "),
        zones_fixture().display()
    );
    let agent = Agent::start(
        &binary,
        &topology.node,
        &topology.pin_root,
        &inventory,
        &[
            "--panos-config".to_owned(),
            zones_fixture().display().to_string(),
            "--sink".to_owned(),
            "cef+stdout?filter=all".to_owned(),
            "--node-name".to_owned(),
            "demo-node".to_owned(),
        ],
    );
    println!("zonewall demo: the agent enforces the firewall's policy in the kernel\n");
    let find = |name: &str| hosts.iter().position(|h| h.name == name).unwrap_or(0);
    let scenarios: [(&str, &str, Probe); 12] = [
        ("web", "app", Probe::Tcp(8080)),
        ("web", "app", Probe::Udp(5353)),
        ("web", "app", Probe::Tcp(22)),
        ("app", "app-2", Probe::Tcp(9000)),
        ("app", "database", Probe::Tcp(5432)),
        ("app", "database", Probe::Ping),
        ("web", "database", Probe::Tcp(5432)),
        ("internet", "web", Probe::Tcp(80)),
        ("internet", "app", Probe::Tcp(80)),
        ("web", "vault", Probe::Tcp(9000)),
        ("vault", "internet", Probe::Tcp(443)),
        ("vault", "internet", Probe::Ping),
    ];
    let mut summary: BTreeMap<(String, String), (u32, u32)> = BTreeMap::new();
    let mut disagreements = 0;
    for (from, to, what) in scenarios {
        if INTERRUPTED.load(Ordering::SeqCst) {
            break;
        }
        let (from, to) = (&hosts[find(from)], &hosts[find(to)]);
        let (action, rule) = explain(
            &binary,
            &inventory,
            from.host.ip(false),
            to.host.ip(false),
            what,
        );
        let seen = probe(&from.host, &to.host, what);
        let agrees = seen == expected(&action);
        if !agrees {
            disagreements += 1;
        }
        println!(
            "  {:<22} -> {:<24} {:<10} firewall: {:<13} kernel: {:<8} {}",
            format!("{}/{}", from.zone, from.name),
            format!("{}/{}", to.zone, to.name),
            what.label(),
            format!("{action} ({rule})"),
            match seen {
                Seen::Allowed => "passed",
                Seen::Refused => "reset",
                Seen::Silent => "dropped",
            },
            if agrees { "ok" } else { "DISAGREES" }
        );
        let entry = summary
            .entry((from.zone.to_owned(), to.zone.to_owned()))
            .or_default();
        if seen == Seen::Allowed {
            entry.0 += 1;
        } else {
            entry.1 += 1;
        }
        std::thread::sleep(Duration::from_millis(300));
        print_records(&agent);
    }
    if !INTERRUPTED.load(Ordering::SeqCst) {
        // Connections end and denied windows close; their records follow.
        std::thread::sleep(Duration::from_secs(2));
        print_records(&agent);
    }
    let status = agent.stop();
    println!(
        "\n  {:<12} {:<12} {:>8} {:>8}",
        "from zone", "to zone", "allowed", "denied"
    );
    for ((from, to), (allowed, denied)) in &summary {
        println!("  {from:<12} {to:<12} {allowed:>8} {denied:>8}");
    }
    let _ = std::fs::remove_file(&inventory);
    drop(topology);
    println!("\nzonewall demo: removed the namespaces; the agent exited with {status}");
    if INTERRUPTED.load(Ordering::SeqCst) {
        println!("zonewall demo: interrupted");
        return ExitCode::from(130);
    }
    if disagreements > 0 {
        println!(
            "zonewall demo: {disagreements} flow(s) where the kernel and the firewall disagree"
        );
        return ExitCode::FAILURE;
    }
    println!("zonewall demo: every flow got the verdict the firewall gives it");
    ExitCode::SUCCESS
}
