//! `cargo xtask bench e2e` (root): from a firewall commit to the first packet that gets its
//! verdict, through the release `zonewall sync --output-dir` and a standalone `zonewall agent
//! --policies` enforcing on two pods, on the generated 10,000-rule configuration.
//!
//! The configuration gets one more rule, first in the shared pre-rulebase (so it decides its
//! flow whatever the generated rules say): dmz client -> trusted server, `service-http`, deny.
//! A commit turns it into allow (the watched file replaced atomically, as `bench sync` does);
//! a probe in the client pod opens a connection to the server every millisecond, and the
//! figure is the time from the commit to the send time of the first SYN that got through. The
//! time the sync published the new generation is taken on the way, so the figure splits into
//! the sync's part (poll wait included) and the agent's (reload, parse, compile, apply).
//! After each round the deny is committed again and waited for. Commits are spread over the
//! poll cycle as in `bench sync`.

use std::io::{Read as _, Write as _};
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail, ensure};

use super::dataplane::net::{CLIENT_CPU, Probe, Server, Topology, join, on_thread};
use super::measure::Pins;
use super::traffic::in_netns;
use crate::bench::{LARGE, generate_panorama, release_binary};
use crate::bench_sync::{INTERVAL, commit, generation, phase_delay};
use crate::workspace_root;

const ROUNDS: usize = 10;
const CLIENT: Ipv4Addr = Ipv4Addr::new(192, 168, 77, 10);
const SERVER: Ipv4Addr = Ipv4Addr::new(192, 168, 78, 10);
/// `service-http` is tcp/80 and tcp/8080.
const PORT: u16 = 80;
const METRICS_PORT: u16 = 19_191;
/// Longest wait for one commit to show.
const DEADLINE: Duration = Duration::from_secs(60);

/// The generated configuration with the probe rule as deny, and as allow.
fn configs(dir: &Path) -> anyhow::Result<(std::path::PathBuf, std::path::PathBuf)> {
    let base = generate_panorama(&LARGE);
    let shared = base.find("<shared>").context("no shared section")?;
    let rules = "<pre-rulebase><security><rules>\n";
    let at = shared
        + base[shared..]
            .find(rules)
            .context("no shared pre-rulebase")?
        + rules.len();
    let with = |action: &str| {
        let rule = format!(
            "<entry name=\"e2e-probe\" uuid=\"00000000-0000-4000-8000-e2e000000001\"><from><member>dmz</member></from><to><member>trusted</member></to><source><member>{CLIENT}</member></source><destination><member>{SERVER}</member></destination><source-user><member>any</member></source-user><category><member>any</member></category><application><member>any</member></application><service><member>service-http</member></service><action>{action}</action><log-end>yes</log-end></entry>\n"
        );
        format!("{}{rule}{}", &base[..at], &base[at..])
    };
    let deny = dir.join("e2e-deny.xml");
    let allow = dir.join("e2e-allow.xml");
    std::fs::write(&deny, with("deny")).context("write the deny configuration")?;
    std::fs::write(&allow, with("allow")).context("write the allow configuration")?;
    Ok((deny, allow))
}

/// A child process stopped with SIGTERM (and waited for) when dropped.
pub(super) struct Stopped(pub(super) Child);

impl Drop for Stopped {
    fn drop(&mut self) {
        // SAFETY: signalling our own child by its pid.
        unsafe { libc::kill(self.0.id() as libc::pid_t, libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.0.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A release `zonewall agent` in network namespace `netns`, pinned under `pins` (removed when
/// it stops), serving metrics on 127.0.0.1:`METRICS_PORT` there; the caller adds where its
/// workloads and policy come from, and its output.
pub(super) fn agent_command(binary: &Path, netns: &str, pins: &Pins) -> Command {
    // nsenter switches only the network namespace (`ip netns exec` would also mount a fresh
    // /sys, hiding the bpffs the agent pins into), and replaces itself with the agent: the
    // child's pid is the agent's.
    let mut command = Command::new("nsenter");
    command
        .arg(format!("--net=/run/netns/{netns}"))
        .arg("--")
        .arg(binary)
        .arg("agent")
        .arg("--bpffs-root")
        .arg(&pins.0.root)
        .args(["--metrics-addr", &format!("127.0.0.1:{METRICS_PORT}")])
        .arg("--cleanup-on-exit")
        .env("ZONEWALL_LOG", "info")
        .stdout(Stdio::null());
    command
}

/// [`agent_command`] in standalone mode, on `inventory` and the policy directory `policies`,
/// logging to `log`.
pub(super) fn standalone_agent(
    binary: &Path,
    netns: &str,
    inventory: &Path,
    policies: &Path,
    pins: &Pins,
    log: std::fs::File,
) -> anyhow::Result<Stopped> {
    let child = agent_command(binary, netns, pins)
        .args(["--standalone", "--inventory"])
        .arg(inventory)
        .arg("--policies")
        .arg(policies)
        .stderr(log)
        .spawn()
        .context("start zonewall agent")?;
    Ok(Stopped(child))
}

/// Whether the agent in namespace `node` answers `/readyz` with 200.
pub(super) fn ready(node: &str) -> bool {
    in_netns(node, || {
        let address = SocketAddr::from((Ipv4Addr::LOCALHOST, METRICS_PORT));
        let mut stream = TcpStream::connect_timeout(&address, Duration::from_millis(200))?;
        stream.set_read_timeout(Some(Duration::from_secs(1)))?;
        stream.write_all(b"GET /readyz HTTP/1.0\r\nHost: localhost\r\n\r\n")?;
        let mut response = String::new();
        stream.read_to_string(&mut response)?;
        Ok(response.split_whitespace().nth(1) == Some("200"))
    })
    .unwrap_or(false)
}

/// Whether a new connection from the client pod to the server gets through in 300 ms.
fn connects(topology: &Topology) -> anyhow::Result<bool> {
    let address = SocketAddr::from((topology.server, PORT));
    join(on_thread(&topology.client_ns, CLIENT_CPU, move || {
        Ok(TcpStream::connect_timeout(&address, Duration::from_millis(300)).is_ok())
    }))
}

struct Round {
    /// Commit to the new generation published by the sync.
    written: Duration,
    /// Commit to the first SYN let through.
    live: Duration,
}

pub fn run() -> anyhow::Result<()> {
    // SAFETY: no arguments, no memory.
    ensure!(
        unsafe { libc::geteuid() } == 0,
        "the end-to-end benchmark creates network namespaces and loads BPF programs: run it as root"
    );
    let root = workspace_root();
    let bench_dir = root.join("target/bench");
    std::fs::create_dir_all(&bench_dir).context("create target/bench")?;
    let binary = release_binary()?;
    let (deny, allow) = configs(&bench_dir)?;
    let watched = bench_dir.join("e2e-watched.xml");
    let output = bench_dir.join("e2e-output");
    let inventory = bench_dir.join("e2e-inventory.yaml");
    let _ = std::fs::remove_dir_all(&output);
    std::fs::copy(&deny, &watched).context("first commit")?;
    std::fs::write(
        &inventory,
        format!(
            "external_zone: untrust\nendpoints:\n  - {{name: client, namespace: bench, zone: dmz, ips: [{CLIENT}]}}\n  - {{name: server, namespace: bench, zone: trusted, ips: [{SERVER}]}}\n"
        ),
    )
    .context("write the inventory")?;

    let topology = Topology::create(CLIENT, SERVER)?;
    let pins = Pins::named("e2e");
    let started = Instant::now();
    let sync = Stopped(
        Command::new(&binary)
            .args(["sync", "--panos-config"])
            .arg(&watched)
            .args(["--device-group", "app-1", "--interval"])
            .arg(format!("{}s", INTERVAL.as_secs()))
            .args(["--audit-log", "/dev/null", "--output-dir"])
            .arg(&output)
            // Every pass warns about the generated rules it cannot translate exactly.
            .env("ZONEWALL_LOG", "error")
            .stdout(Stdio::null())
            .spawn()
            .context("start zonewall sync")?,
    );
    while generation(&output).is_none() {
        ensure!(
            started.elapsed() < DEADLINE,
            "the sync never wrote the first commit"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let agent_log = std::fs::File::create(bench_dir.join("e2e-agent.log"))
        .context("create target/bench/e2e-agent.log")?;
    let agent = standalone_agent(
        &binary,
        &topology.node,
        &inventory,
        &output,
        &pins,
        agent_log,
    )?;
    while !ready(&topology.node) {
        ensure!(
            started.elapsed() < DEADLINE * 2,
            "the agent never became ready"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    eprintln!(
        "bench e2e: sync and agent up in {:.1} s (10,000 rules, 100,000 addresses); {ROUNDS} commits",
        started.elapsed().as_secs_f64()
    );
    let server = Server::start(&topology, &[PORT])?;
    let mut rounds = Vec::new();
    for round in 0..ROUNDS {
        let probe = Probe::start(&topology, PORT)
            .with_context(|| format!("round {}: the deny is not live", round + 1))?;
        std::thread::sleep(phase_delay(round, ROUNDS));
        let before = generation(&output);
        let committed = commit(&allow, &watched)?;
        let mut written = None;
        while !probe.is_finished() {
            if written.is_none() && generation(&output) != before {
                written = Some(committed.elapsed());
            }
            std::thread::sleep(Duration::from_millis(1));
        }
        let live = probe.live_after(committed)?;
        let written = match written {
            Some(written) => written,
            None if generation(&output) != before => live,
            None => bail!(
                "round {}: a probe got through with no new generation",
                round + 1
            ),
        };
        eprintln!(
            "bench e2e: round {:2}: commit to written {:5.0} ms, to first packet allowed {:5.0} ms",
            round + 1,
            written.as_secs_f64() * 1e3,
            live.as_secs_f64() * 1e3
        );
        rounds.push(Round { written, live });
        // Back to deny before the next round.
        commit(&deny, &watched)?;
        let reverted = Instant::now();
        while connects(&topology)? {
            ensure!(
                reverted.elapsed() < DEADLINE,
                "round {}: the deny never came back",
                round + 1
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }
    server.stop()?;
    drop(agent);
    drop(sync);
    drop(pins);
    drop(topology);
    report(&rounds);
    Ok(())
}

fn report(rounds: &[Round]) {
    let millis = |f: &dyn Fn(&Round) -> Duration| {
        let mut values: Vec<f64> = rounds.iter().map(|r| f(r).as_secs_f64() * 1e3).collect();
        values.sort_by(f64::total_cmp);
        values
    };
    let line = |label: &str, values: Vec<f64>| {
        println!(
            "  {label:<42} min {:5.0} ms  median {:5.0} ms  max {:5.0} ms",
            values[0],
            values[values.len() / 2],
            values[values.len() - 1]
        );
    };
    println!(
        "bench e2e: {} commits of one rule (deny -> allow) in the generated 10,000-rule configuration, sync --interval {}s, commits spread over the poll cycle:",
        rounds.len(),
        INTERVAL.as_secs()
    );
    line("commit to objects written (sync)", millis(&|r| r.written));
    line(
        "objects written to first packet (agent)",
        millis(&|r| r.live.saturating_sub(r.written)),
    );
    line(
        "commit to first packet with the new verdict",
        millis(&|r| r.live),
    );
}
