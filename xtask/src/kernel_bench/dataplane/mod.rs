//! `cargo xtask bench dataplane`: zonewall against no policy, iptables and nftables on real
//! traffic between two pods, with the same generated policy (10,000 rules, 100,000
//! prefixes) rendered each way.
//!
//! Every configuration gets fresh namespaces (a node and two pods on routed veth pairs, as
//! the project's test topology builds them), so no hook, conntrack entry or table of one
//! configuration is left for the next. The measured flow (client `app-0` to server `app-1`,
//! tcp/8080) is allowed by the last rule of the list. Rounds go over every configuration in
//! turn, each round starting one further, and the medians are reported.

pub(super) mod net;
mod render;
mod report;

use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context as _, ensure};
use zonewall::datapath::{Datapath, Dataplane, DesiredTables};
use zonewall::inventory::Endpoint;
use zonewall::policy::compile::CompiledPolicy;
use zonewall::policy::datapath_compile::{self, Compiled, Limits};
use zonewall::policy::resource::PortRange;
use zonewall::policy::{PolicySet, ZonePolicy};

use super::agent::compiled_objects;
use super::generate::{self, ALLOWED_PORT, Scale};
use super::measure::Pins;
use super::traffic::in_netns;
use net::{CLIENT_HOST, Probe, SERVER_HOST, Server, Topology};
use render::{Established, Rendered};

const SCALE: Scale = Scale {
    rules: 10_000,
    prefixes: 100_000,
};
/// Ten: single rounds of one configuration spread by a quarter or more on a shared 2-core VM
/// (throughput, p99), and with five rounds two runs of the same build disagreed on both targets.
const ROUNDS: usize = 10;
const IPERF_SECONDS: u32 = 3;
/// 20,000 exchanges (about 1.2 s): the p99 is the 200th slowest, not a handful of outliers.
const ROUND_TRIPS: usize = 20_000;
/// Installing a policy leaves work behind (freed map and rule memory, RCU callbacks, kernel
/// workers); every configuration waits this long before it is measured, so the figures
/// describe the steady state.
const SETTLE: std::time::Duration = std::time::Duration::from_secs(1);
const CONNECT_SECONDS: f64 = 2.0;
/// The port the one-rule change opens for the measured client and server (no rule of the
/// generated policy allows it before).
const CHANGE_PORT: u16 = 50_001;
const IPSET_PREFIX: &str = "zw";

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Config {
    Baseline,
    Zonewall,
    /// Linear rules, each packet walks them; replies accepted by the last line.
    Iptables,
    /// The same rules after a first line accepting tracked flows.
    IptablesEstablishedFirst,
    Nftables,
}

const CONFIGS: [Config; 5] = [
    Config::Baseline,
    Config::Zonewall,
    Config::Iptables,
    Config::IptablesEstablishedFirst,
    Config::Nftables,
];

impl Config {
    pub fn label(self) -> &'static str {
        match self {
            Config::Baseline => "no policy",
            Config::Zonewall => "zonewall",
            Config::Iptables => "iptables",
            Config::IptablesEstablishedFirst => "iptables, established first",
            Config::Nftables => "nftables",
        }
    }

    pub fn key(self) -> &'static str {
        match self {
            Config::Baseline => "baseline",
            Config::Zonewall => "zonewall",
            Config::Iptables => "iptables",
            Config::IptablesEstablishedFirst => "iptables-established-first",
            Config::Nftables => "nftables",
        }
    }
}

/// One configuration's figures in one round.
#[derive(Clone, Debug, Default)]
pub struct Sample {
    pub gigabits_per_second: f64,
    pub p50_microseconds: f64,
    pub p99_microseconds: f64,
    pub connections_per_second: f64,
    /// From the policy handed over (zonewall: to the compiler) to the first packet with the
    /// new verdict.
    pub full_seconds: Option<f64>,
    pub change_seconds: Option<f64>,
    /// zonewall only: the part after compiling (DesiredTables handed to `apply`).
    pub full_apply_seconds: Option<f64>,
    pub change_apply_seconds: Option<f64>,
    /// zonewall only: loading the programs and attaching them to both interfaces.
    pub load_attach_seconds: Option<f64>,
    /// zonewall only: `apply` of the tables already live (it compares them with what it
    /// wrote, finds nothing to change and writes nothing).
    pub unchanged_apply_seconds: Option<f64>,
}

/// Everything prepared once: the policy, its change, and its iptables and nftables texts.
struct Bench {
    /// Shared objects, as the Kubernetes agent's watch cache holds them.
    policies: Vec<Arc<ZonePolicy>>,
    /// `policies` after the one-rule change: the objects it changes are new, the others the
    /// same `Arc`s (a watch event replaces only the objects that changed).
    changed: Vec<Arc<ZonePolicy>>,
    endpoints: Vec<Endpoint>,
    client: std::net::Ipv4Addr,
    server: std::net::Ipv4Addr,
    rendered: Rendered,
    probe_line: usize,
    ipset: String,
    nftables: String,
    client_zone: &'static str,
    server_zone: &'static str,
}

pub fn run() -> anyhow::Result<()> {
    // SAFETY: no arguments, no memory.
    ensure!(
        unsafe { libc::geteuid() } == 0,
        "the dataplane benchmark creates namespaces, loads BPF programs and changes iptables and nftables in them: it needs root (try `sudo -E cargo xtask bench dataplane`)"
    );
    for (tool, package) in [
        ("iperf3", "iperf3"),
        ("iptables-restore", "iptables"),
        ("ipset", "ipset"),
        ("nft", "nftables"),
        ("taskset", "util-linux"),
    ] {
        ensure!(
            std::process::Command::new("sh")
                .args(["-c", &format!("command -v {tool}")])
                .output()
                .is_ok_and(|o| o.status.success()),
            "{tool} is missing: `cargo xtask setup` installs the {package} package"
        );
    }
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    ensure!(
        cpus >= 2,
        "client and server are pinned to CPUs 0 and 1; this machine has {cpus}"
    );
    let started = Instant::now();
    let load_before = report::load_average();
    let bench = prepare()?;
    let mut samples: Vec<(Config, usize, Sample)> = Vec::new();
    for round in 0..ROUNDS {
        let mut order = CONFIGS;
        order.rotate_left(round % CONFIGS.len());
        for config in order {
            let sample = run_one(&bench, config, round)
                .with_context(|| format!("round {}, {}", round + 1, config.label()))?;
            eprintln!(
                "bench dataplane: round {} {:<28} {:6.2} Gbit/s  p50 {:6.1} us  p99 {:6.1} us  {:7.0} conn/s  full {}  change {}",
                round + 1,
                config.label(),
                sample.gigabits_per_second,
                sample.p50_microseconds,
                sample.p99_microseconds,
                sample.connections_per_second,
                report::seconds(sample.full_seconds),
                report::milliseconds(sample.change_seconds),
            );
            samples.push((config, round, sample));
        }
    }
    let results = report::Results {
        samples,
        rounds: ROUNDS,
        load_before,
        load_after: report::load_average(),
        iptables_lines: bench.rendered.lines.len(),
        sets: bench.rendered.sets.len(),
        set_members: bench.rendered.sets.iter().map(Vec::len).sum(),
        probe_position: bench.probe_line + 1,
        iperf_seconds: IPERF_SECONDS,
        round_trips: ROUND_TRIPS,
        connect_seconds: CONNECT_SECONDS,
    };
    report::print(&results);
    report::write_docs(&results)?;
    eprintln!("bench dataplane: done in {:.0?}", started.elapsed());
    Ok(())
}

fn prepare() -> anyhow::Result<Bench> {
    let started = Instant::now();
    let generated = generate::generate(SCALE);
    let mut rules = generated.rules.clone();
    // The measured flow's allow rule goes to the end: iptables walks every other rule first.
    let allow = rules.remove(2);
    rules.push(allow);
    let mut changed_rules = rules.clone();
    let last = changed_rules.len() - 1;
    changed_rules[last].service.entries[0]
        .ports
        .push(PortRange {
            port: CHANGE_PORT,
            end_port: None,
        });
    let rendered = render::render(&rules);
    let probe_line = rendered
        .lines
        .iter()
        .position(|line| line.rule == rules.len() - 1)
        .context("the measured flow's rule has no IPv4 line")?;
    ensure!(
        probe_line == rendered.lines.len() - 1,
        "the measured flow's rule renders to more than one line"
    );
    let client_zone = generate::zone_of_app(0);
    let server_zone = generate::zone_of_app(1);
    let nftables = render::nft_ruleset(
        &rendered,
        &[(CLIENT_HOST, client_zone), (SERVER_HOST, server_zone)],
        probe_line,
    );
    let ipset = render::ipset_restore(&rendered, IPSET_PREFIX);
    eprintln!(
        "bench dataplane: {} rules / {} prefixes generated and rendered in {:.1?}: {} iptables lines, {} sets with {} IPv4 members",
        SCALE.rules,
        SCALE.prefixes,
        started.elapsed(),
        rendered.lines.len(),
        rendered.sets.len(),
        rendered.sets.iter().map(Vec::len).sum::<usize>()
    );
    let policies: Vec<Arc<ZonePolicy>> = generate::zone_policies(&rules)
        .into_iter()
        .map(Arc::new)
        .collect();
    Ok(Bench {
        policies: policies.clone(),
        changed: generate::as_watch_delivers(generate::zone_policies(&changed_rules), &policies),
        endpoints: generated.endpoints,
        client: generated.client,
        server: generated.server,
        rendered,
        probe_line,
        ipset,
        nftables,
        client_zone,
        server_zone,
    })
}

/// What enforces in the node namespace; zonewall's pins go (links detached) on drop, before
/// the namespaces.
enum Installed {
    Nothing,
    Zonewall {
        datapath: Box<Datapath>,
        _pins: Pins,
    },
    Netfilter,
}

fn run_one(bench: &Bench, config: Config, round: usize) -> anyhow::Result<Sample> {
    let topology = Topology::create(bench.client, bench.server)?;
    let server = Server::start(&topology, &[ALLOWED_PORT, CHANGE_PORT])?;
    let mut sample = Sample::default();
    let installed = match config {
        Config::Baseline => Installed::Nothing,
        Config::Zonewall => zonewall(bench, &topology, round, &mut sample)?,
        Config::Iptables => iptables(bench, &topology, Established::Last, &mut sample)?,
        Config::IptablesEstablishedFirst => {
            iptables(bench, &topology, Established::First, &mut sample)?
        }
        Config::Nftables => nftables(bench, &topology, &mut sample)?,
    };
    std::thread::sleep(SETTLE);
    let (p50, p99) = net::latency(&topology, ALLOWED_PORT, ROUND_TRIPS)?;
    sample.p50_microseconds = p50;
    sample.p99_microseconds = p99;
    sample.connections_per_second =
        net::connections_per_second(&topology, ALLOWED_PORT, CONNECT_SECONDS)?;
    server.stop()?;
    sample.gigabits_per_second = net::iperf3(&topology, ALLOWED_PORT, IPERF_SECONDS)?;
    verify(bench, config, &topology, &installed)?;
    drop(installed);
    drop(topology);
    Ok(sample)
}

/// Checks that the measured packets went the way the configuration says.
fn verify(
    bench: &Bench,
    config: Config,
    topology: &Topology,
    installed: &Installed,
) -> anyhow::Result<()> {
    match (config, installed) {
        (Config::Zonewall, Installed::Zonewall { datapath, .. }) => {
            let counters = datapath.counters()?;
            ensure!(
                counters.get(zonewall_common::counter::PASS_ESTABLISHED) > 0,
                "zonewall's counters show no tracked-flow packets: {counters}"
            );
        }
        (Config::Iptables | Config::IptablesEstablishedFirst, _) => {
            let established = if config == Config::Iptables {
                Established::Last
            } else {
                Established::First
            };
            let position = render::iptables_position(bench.probe_line, established);
            let listing = net::exec(
                &topology.node,
                "iptables",
                &["-L", "FORWARD", &position.to_string(), "-n", "-v", "-x"],
            )?;
            let packets: u64 = listing
                .split_whitespace()
                .next()
                .and_then(|n| n.parse().ok())
                .unwrap_or(0);
            ensure!(
                packets > 0,
                "the measured flow never reached its rule at position {position}: {listing}"
            );
        }
        _ => {}
    }
    Ok(())
}

/// What the agent keeps from one compile for the next (see `node::kubernetes`): the objects
/// as delivered, their compilation, and the tables.
type Live = (Vec<Arc<ZonePolicy>>, Vec<Arc<CompiledPolicy>>, Compiled);

/// Compiles as the agent does: objects it compiled before are reused, identity numbers kept
/// from the live tables.
fn compile(
    policies: &[Arc<ZonePolicy>],
    endpoints: &[Endpoint],
    local: &[(u32, IpAddr)],
    live: Option<&Live>,
) -> anyhow::Result<(DesiredTables, Live)> {
    let (before, compiled_before) = live.map_or((&[][..], &[][..]), |(before, objects, _)| {
        (before.as_slice(), objects.as_slice())
    });
    let objects = compiled_objects(policies, before, compiled_before, &mut Default::default())
        .context("the generated policies are invalid")?;
    let set = PolicySet::from_compiled(objects.iter().cloned().map(Ok))
        .context("the generated policies are invalid")?;
    let compiled = datapath_compile::compile_after(
        live.map(|(_, _, compiled)| compiled),
        &set,
        generate::EXTERNAL_ZONE,
        endpoints,
        &Limits::default(),
    )
    .context("compiling the generated policy")?;
    Ok((
        DesiredTables::new(&compiled, local, false),
        (policies.to_vec(), objects, compiled),
    ))
}

fn zonewall(
    bench: &Bench,
    topology: &Topology,
    round: usize,
    sample: &mut Sample,
) -> anyhow::Result<Installed> {
    let pins = Pins::named(&format!("dataplane{round}"));
    let started = Instant::now();
    let mut datapath = Box::new(Datapath::load(&pins.0).context("loading the eBPF programs")?);
    // Attached before any policy: the programs drop every IP packet until the first apply.
    let (client_if, server_if) = in_netns(&topology.node, || {
        Ok((datapath.attach(CLIENT_HOST)?, datapath.attach(SERVER_HOST)?))
    })?;
    sample.load_attach_seconds = Some(started.elapsed().as_secs_f64());
    let local = [
        (client_if, IpAddr::V4(bench.client)),
        (server_if, IpAddr::V4(bench.server)),
    ];
    let mut live_tables = None;
    let mut live: Option<Live> = None;
    for (policies, port, total, apply) in [
        (
            &bench.policies,
            ALLOWED_PORT,
            &mut sample.full_seconds,
            &mut sample.full_apply_seconds,
        ),
        (
            &bench.changed,
            CHANGE_PORT,
            &mut sample.change_seconds,
            &mut sample.change_apply_seconds,
        ),
    ] {
        let probe = Probe::start(topology, port)?;
        let received = Instant::now();
        let (desired, kept) = compile(policies, &bench.endpoints, &local, live.as_ref())?;
        let handed_over = Instant::now();
        datapath.apply(&desired)?;
        let after = probe.live_after(received)?;
        live = Some(kept);
        live_tables = Some(desired);
        *total = Some(after.as_secs_f64());
        *apply = Some(
            after
                .saturating_sub(handed_over.duration_since(received))
                .as_secs_f64(),
        );
    }
    let desired = live_tables.context("no tables were applied")?;
    let started = Instant::now();
    let report = datapath.apply(&desired)?;
    sample.unchanged_apply_seconds = Some(started.elapsed().as_secs_f64());
    ensure!(
        report.written == 0 && report.removed == 0,
        "applying the live tables again wrote {} and removed {} entries",
        report.written,
        report.removed
    );
    Ok(Installed::Zonewall {
        datapath,
        _pins: pins,
    })
}

fn timed_until_live(
    topology: &Topology,
    port: u16,
    apply: impl FnOnce() -> anyhow::Result<()>,
) -> anyhow::Result<Duration> {
    let probe = Probe::start(topology, port)?;
    let handed_over = Instant::now();
    apply()?;
    probe.live_after(handed_over)
}

fn iptables(
    bench: &Bench,
    topology: &Topology,
    established: Established,
    sample: &mut Sample,
) -> anyhow::Result<Installed> {
    let node = &topology.node;
    net::exec(node, "iptables", &["-P", "FORWARD", "DROP"])?;
    let rules = render::iptables_restore(&bench.rendered, IPSET_PREFIX, established);
    let full = timed_until_live(topology, ALLOWED_PORT, || {
        net::exec_with_input(node, "ipset", &["restore"], bench.ipset.as_bytes())?;
        net::exec_with_input(node, "iptables-restore", &[], rules.as_bytes())
    })?;
    sample.full_seconds = Some(full.as_secs_f64());
    // One more line right after the measured flow's rule: the same rule for another port.
    let line = &bench.rendered.lines[bench.probe_line];
    let change = format!(
        "*filter\n-I FORWARD {} {}\nCOMMIT\n",
        render::iptables_position(bench.probe_line, established) + 1,
        render::iptables_rule(line, IPSET_PREFIX, Some(CHANGE_PORT))
    );
    let live = timed_until_live(topology, CHANGE_PORT, || {
        net::exec_with_input(node, "iptables-restore", &["--noflush"], change.as_bytes())
    })?;
    sample.change_seconds = Some(live.as_secs_f64());
    Ok(Installed::Netfilter)
}

fn nftables(bench: &Bench, topology: &Topology, sample: &mut Sample) -> anyhow::Result<Installed> {
    let node = &topology.node;
    net::exec_with_input(node, "nft", &["-f", "-"], render::nft_closed().as_bytes())?;
    let full = timed_until_live(topology, ALLOWED_PORT, || {
        net::exec_with_input(node, "nft", &["-f", "-"], bench.nftables.as_bytes())
    })?;
    sample.full_seconds = Some(full.as_secs_f64());
    let chain = render::nft_chain(bench.client_zone, bench.server_zone);
    let listing = net::exec(
        node,
        "nft",
        &["-a", "list", "chain", "ip", render::NFT_TABLE, &chain],
    )?;
    let handle = listing
        .lines()
        .find(|line| line.contains("comment \"probe\""))
        .and_then(|line| line.rsplit("# handle ").next())
        .and_then(|n| n.trim().parse::<u64>().ok())
        .with_context(|| format!("no handle of the probe rule in chain {chain}"))?;
    let line = &bench.rendered.lines[bench.probe_line];
    let change = format!(
        "add rule ip {} {chain} position {handle} {}\n",
        render::NFT_TABLE,
        render::nft_rule(line, Some(CHANGE_PORT), None)
    );
    let live = timed_until_live(topology, CHANGE_PORT, || {
        net::exec_with_input(node, "nft", &["-f", "-"], change.as_bytes())
    })?;
    sample.change_seconds = Some(live.as_secs_f64());
    Ok(Installed::Netfilter)
}
