//! `cargo xtask demo`: a small cluster-like node in network namespaces (a web pod in `dmz`,
//! two app pods in `trusted`, a vault in `restricted`, the internet and a database outside),
//! the firewall of `tests/fixtures/zones.xml` enforced by the real agent, traffic that shows
//! allowed and denied flows, the CEF records as the SIEM would receive them, and a summary.
//! Every outcome is checked against `zonewall explain`; the demo fails if the kernel and the
//! firewall ever disagree. Ctrl-C stops it and removes everything it created.

use std::{
    collections::BTreeMap,
    process::ExitCode,
    sync::atomic::{AtomicBool, Ordering},
    time::Duration,
};

use zonewall_integration_tests::{
    agent::http_get,
    agent::{Agent, Output, zonewall_binary},
    enforced::{prepared_node, zones_fixture},
    matrix::{DEMO_PODS, Probe, Seen, expected, explain, named_hosts, probe},
    privileges::is_root,
};

static INTERRUPTED: AtomicBool = AtomicBool::new(false);

extern "C" fn on_interrupt(_: libc::c_int) {
    INTERRUPTED.store(true, Ordering::SeqCst);
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
    let (topology, inventory) = prepared_node(&DEMO_PODS);
    let hosts = named_hosts(&topology, &DEMO_PODS);
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
        let agrees = seen == expected(&action, what);
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
    // What an operator would scrape (the agent listens in the node namespace).
    let (_, metrics) = http_get(&topology.node, "127.0.0.1:9090", "/metrics");
    println!(
        "\n  metrics: http://127.0.0.1:9090/metrics inside the node namespace (ip netns exec {} curl -s 127.0.0.1:9090/metrics):",
        topology.node
    );
    for line in metrics.lines().filter(|l| {
        l.starts_with("zonewall_flows_total") || l.starts_with("zonewall_policy_generation ")
    }) {
        println!("    {line}");
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
