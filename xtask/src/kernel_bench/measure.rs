//! The measurement: each size's policy is generated, compiled and applied to a datapath of
//! its own; then rounds of `BPF_PROG_TEST_RUN` go over every size and case in turn, checking
//! every run's verdict and the packet counters so that no figure belongs to the wrong path.

use std::net::{IpAddr, Ipv4Addr};
use std::time::Instant;

use anyhow::{Context as _, bail, ensure};
use zonewall::datapath::{Counters, Datapath, Dataplane, DesiredTables, PinLayout};
use zonewall::policy::PolicySet;
use zonewall::policy::datapath_compile::{self, Limits, Sizes};
use zonewall_common::{CONFIG_FLAG_NO_LOOKUP_CACHES, counter, program_names};

use super::generate::{self, ALLOWED_PORT, Scale};
use super::test_run::{self, TCP_ACK, TCP_SYN, TcpPacket};
use super::traffic::{self, Traffic};

const RULES: [usize; 3] = [100, 1_000, 10_000];
const PREFIXES: [usize; 2] = [1_000, 100_000];
/// Runs per timed test run; the kernel reports the mean.
const REPEAT: u32 = 1_000_000;
/// Timed runs per case, interleaved with the other cases; the median is reported.
const ROUNDS: usize = 9;

/// TC verdicts as the test run reports them.
const TC_ACT_UNSPEC: i32 = -1;
const TC_ACT_SHOT: i32 = 2;

/// Targets of the issue (ns per packet).
const HIT_OVER_EMPTY_TARGET: f64 = 100.0;
const NEW_FLOW_TARGET: f64 = 600.0;
/// "Flat in the number of rules": the new-flow cost at 10,000 rules is within this factor of
/// the cost at 100 rules, for the same prefixes.
const FLAT_TOLERANCE: f64 = 1.2;

#[derive(Clone, Copy, PartialEq, Eq)]
enum Path {
    /// The empty program: no counter moves.
    Empty,
    /// Not IP: `pass_not_ip` once per run, right after the Ethernet header.
    NotIp,
    /// A tracked flow: `pass_established` once per run.
    Hit,
    /// A new, denied flow: `drop_policy` once per run.
    NewDenied,
}

struct Case {
    label: &'static str,
    program: &'static str,
    path: Path,
    packet: Vec<u8>,
    /// The packet that creates the flow's conntrack entry first (hits only).
    opening: Option<Vec<u8>>,
}

/// Median ns/packet per case, in the order of `cases()`.
struct Measured {
    scale: Scale,
    sizes: Sizes,
    compile_seconds: f64,
    apply_seconds: f64,
    written: usize,
    medians: Vec<f64>,
    spreads: Vec<(f64, f64)>,
    traffic: Option<Traffic>,
}

/// Indices into `cases()`.
const EMPTY: usize = 0;
const NOT_IP: usize = 1;
const TO_HIT: usize = 2;
const TO_NEW: usize = 3;
const FROM_HIT: usize = 4;
const FROM_NEW: usize = 5;

fn cases(generated: &generate::Generated) -> Vec<Case> {
    let tcp = |source: Ipv4Addr, source_port: u16, destination: Ipv4Addr, port: u16, flags| {
        TcpPacket {
            source,
            destination,
            source_port,
            destination_port: port,
            flags,
        }
        .frame()
    };
    let (client, server, blocked) = (generated.client, generated.server, generated.blocked);
    // Each program gets its own allowed flow, so its first run creates the entry it then hits.
    let hit = |source_port| Case {
        label: "",
        program: "",
        path: Path::Hit,
        packet: tcp(client, source_port, server, ALLOWED_PORT, TCP_ACK),
        opening: Some(tcp(client, source_port, server, ALLOWED_PORT, TCP_SYN)),
    };
    vec![
        Case {
            label: "empty",
            program: program_names::EMPTY,
            path: Path::Empty,
            packet: tcp(client, 40_000, server, ALLOWED_PORT, TCP_ACK),
            opening: None,
        },
        Case {
            label: "to_workload non-IP",
            program: program_names::TO_WORKLOAD,
            path: Path::NotIp,
            packet: test_run::arp_frame(server, client),
            opening: None,
        },
        Case {
            label: "to_workload hit",
            program: program_names::TO_WORKLOAD,
            ..hit(40_001)
        },
        // A blocklisted address knocking at a workload: denied by the feed Drop rule.
        Case {
            label: "to_workload new",
            program: program_names::TO_WORKLOAD,
            path: Path::NewDenied,
            packet: tcp(blocked, 40_002, client, 443, TCP_SYN),
            opening: None,
        },
        Case {
            label: "from_workload hit",
            program: program_names::FROM_WORKLOAD,
            ..hit(40_003)
        },
        // A workload reaching for a blocklisted address: denied by the feed Deny rule.
        Case {
            label: "from_workload new",
            program: program_names::FROM_WORKLOAD,
            path: Path::NewDenied,
            packet: tcp(client, 40_004, blocked, 443, TCP_SYN),
            opening: None,
        },
    ]
}

pub fn run() -> anyhow::Result<()> {
    preflight()?;
    let started = Instant::now();
    let load_before = load_average();
    let traffic = traffic::available();
    if let Err(reason) = &traffic {
        eprintln!("bench kernel: skipping the measurement under traffic: {reason}");
    }
    // Every size is loaded at once and the rounds go over all of them, so a change in the
    // machine's load during the run falls on every size alike instead of on the last ones.
    let mut sizes = Vec::new();
    for prefixes in PREFIXES {
        for rules in RULES {
            sizes.push(prepare(Scale { rules, prefixes })?);
        }
    }
    for round in 1..=ROUNDS {
        for size in &mut sizes {
            for (case, samples) in size.cases.iter().zip(&mut size.samples) {
                samples.push(timed(&mut size.datapath, case)?);
            }
        }
        eprintln!("bench kernel: round {round} of {ROUNDS} done");
    }
    let mut results = Vec::new();
    for mut size in sizes {
        // Denied packets never leave a conntrack entry: only the two opened flows are tracked.
        let tracked = size.datapath.conntrack_entries()?.len();
        ensure!(
            tracked == 2,
            "expected the 2 opened flows in conntrack after the runs, found {tracked}"
        );
        let largest = size.scale.rules == RULES[RULES.len() - 1]
            && size.scale.prefixes == PREFIXES[PREFIXES.len() - 1];
        let traffic = if largest && traffic.is_ok() {
            // Under traffic the caches work as in production; the kinds of new flows show
            // their cost with and without them.
            size.desired.config_flags &= !CONFIG_FLAG_NO_LOOKUP_CACHES;
            let measured = traffic::measure(
                &mut size.datapath,
                &mut size.desired,
                size.client,
                size.server,
                size.blocked,
                &size.blocked_hosts,
            )
            .context("measuring under iperf3 traffic")?;
            Some(measured)
        } else {
            None
        };
        results.push(size.finish(traffic));
    }
    print_report(&results, &load_before);
    eprintln!("bench kernel: done in {:.0?}", started.elapsed());
    Ok(())
}

fn preflight() -> anyhow::Result<()> {
    // SAFETY: no arguments, no memory.
    ensure!(
        unsafe { libc::geteuid() } == 0,
        "the kernel benchmark loads BPF programs and needs root (try `sudo -E cargo xtask bench kernel`)"
    );
    let stats = std::fs::read_to_string("/proc/sys/kernel/bpf_stats_enabled").unwrap_or_default();
    if stats.trim() == "1" {
        eprintln!(
            "bench kernel: warning: kernel.bpf_stats_enabled=1 adds two clock reads to every program run; the figures include them"
        );
    }
    Ok(())
}

/// The loopback device's index in this network namespace: the test runs' `__sk_buff.ifindex`.
fn loopback_index() -> anyhow::Result<u32> {
    // SAFETY: a NUL-terminated string literal.
    let index = unsafe { libc::if_nametoindex(c"lo".as_ptr()) };
    ensure!(
        index != 0,
        "no loopback device: {}",
        std::io::Error::last_os_error()
    );
    Ok(index)
}

/// One size, compiled, applied to its own loaded datapath, its flows opened.
struct Prepared {
    scale: Scale,
    sizes: Sizes,
    compile_seconds: f64,
    apply_seconds: f64,
    written: usize,
    datapath: Datapath,
    /// After `datapath`: dropped (pins removed) once the datapath is gone.
    _pins: Pins,
    desired: DesiredTables,
    client: Ipv4Addr,
    server: Ipv4Addr,
    blocked: Ipv4Addr,
    blocked_hosts: Vec<Ipv4Addr>,
    cases: Vec<Case>,
    /// ns/packet of each timed run, per case.
    samples: Vec<Vec<f64>>,
}

impl Prepared {
    fn finish(self, traffic: Option<Traffic>) -> Measured {
        let mut medians = Vec::new();
        let mut spreads = Vec::new();
        for mut list in self.samples {
            list.sort_by(f64::total_cmp);
            medians.push(list[list.len() / 2]);
            spreads.push((list[0], list[list.len() - 1]));
        }
        Measured {
            scale: self.scale,
            sizes: self.sizes,
            compile_seconds: self.compile_seconds,
            apply_seconds: self.apply_seconds,
            written: self.written,
            medians,
            spreads,
            traffic,
        }
    }
}

/// The benchmark's own bpffs pin root for one size, removed (links detached, maps unpinned)
/// on drop, errors included.
pub struct Pins(pub PinLayout);

impl Pins {
    fn new(scale: &Scale) -> Pins {
        Pins::named(&format!("{}-{}", scale.rules, scale.prefixes))
    }

    pub fn named(name: &str) -> Pins {
        Pins(PinLayout::new(format!(
            "/sys/fs/bpf/zwbench{}-{name}",
            std::process::id()
        )))
    }
}

impl Drop for Pins {
    fn drop(&mut self) {
        if let Err(e) = Datapath::cleanup(&self.0) {
            eprintln!("bench kernel: cleanup of {}: {e}", self.0.root.display());
        }
    }
}

fn prepare(scale: Scale) -> anyhow::Result<Prepared> {
    let generated = generate::generate(scale);

    let started = Instant::now();
    let set = PolicySet::new(&generated.policies).context("the generated policies are invalid")?;
    let compiled = datapath_compile::compile(
        &set,
        generate::EXTERNAL_ZONE,
        &generated.endpoints,
        &Limits::default(),
    )
    .with_context(|| {
        format!(
            "compiling {} rules / {} prefixes",
            scale.rules, scale.prefixes
        )
    })?;
    let compile_seconds = started.elapsed().as_secs_f64();
    let sizes = compiled.sizes();
    drop(set);

    // Every workload is local; the probe client sits on loopback, the device the test runs
    // use, so its packets pass the anti-spoofing check. The others' interfaces need not exist:
    // the table is data here.
    let loopback = loopback_index()?;
    let mut local: Vec<(u32, IpAddr)> = Vec::new();
    for (index, endpoint) in generated.endpoints.iter().enumerate() {
        let is_client = endpoint.ips.contains(&IpAddr::V4(generated.client));
        let ifindex = if is_client {
            loopback
        } else {
            10_000 + index as u32
        };
        local.extend(endpoint.ips.iter().map(|ip| (ifindex, *ip)));
    }
    let mut desired = DesiredTables::new(&compiled, &local, false);
    // The test runs repeat one packet: without this every run after the first would find its
    // identities and verdicts in the per-CPU caches and time no table lookup.
    desired.config_flags |= CONFIG_FLAG_NO_LOOKUP_CACHES;
    drop(compiled);

    let pins = Pins::new(&scale);
    let mut datapath = Datapath::load(&pins.0).context("loading the eBPF programs")?;
    let started = Instant::now();
    let report = datapath
        .apply(&desired)
        .context("writing the compiled tables")?;
    let apply_seconds = started.elapsed().as_secs_f64();

    let cases = cases(&generated);
    for case in &cases {
        if let Some(opening) = &case.opening {
            let delta = checked_run(&mut datapath, case, opening, 1, TC_ACT_UNSPEC)?;
            ensure!(
                only(&delta, counter::PASS_NEW, 1),
                "{}: the opening SYN should create a conntrack entry (pass_new=1), counters moved: {delta}",
                case.label
            );
        }
    }
    eprintln!(
        "bench kernel: {} rules / {} prefixes: compile {:.2} s, apply {:.2} s",
        scale.rules, scale.prefixes, compile_seconds, apply_seconds
    );
    Ok(Prepared {
        scale,
        sizes,
        compile_seconds,
        apply_seconds,
        written: report.written,
        datapath,
        _pins: pins,
        desired,
        client: generated.client,
        server: generated.server,
        blocked: generated.blocked,
        blocked_hosts: generated.blocked_hosts,
        samples: vec![Vec::new(); cases.len()],
        cases,
    })
}

/// One timed test run of `REPEAT` packets; returns ns per packet.
fn timed(datapath: &mut Datapath, case: &Case) -> anyhow::Result<f64> {
    let expected = match case.path {
        Path::Empty | Path::NotIp | Path::Hit => TC_ACT_UNSPEC,
        Path::NewDenied => TC_ACT_SHOT,
    };
    let (delta, nanoseconds) = run_once(datapath, case, &case.packet, REPEAT, expected)?;
    let repeat = u64::from(REPEAT);
    let right_path = match case.path {
        Path::Empty => delta == Counters::default(),
        Path::NotIp => only(&delta, counter::PASS_NOT_IP, repeat),
        Path::Hit => only(&delta, counter::PASS_ESTABLISHED, repeat),
        Path::NewDenied => only(&delta, counter::DROP_POLICY, repeat),
    };
    ensure!(
        right_path,
        "{}: the counters show another path than the one measured: {delta}",
        case.label
    );
    Ok(f64::from(nanoseconds))
}

fn checked_run(
    datapath: &mut Datapath,
    case: &Case,
    packet: &[u8],
    repeat: u32,
    expected: i32,
) -> anyhow::Result<Counters> {
    Ok(run_once(datapath, case, packet, repeat, expected)?.0)
}

fn run_once(
    datapath: &mut Datapath,
    case: &Case,
    packet: &[u8],
    repeat: u32,
    expected: i32,
) -> anyhow::Result<(Counters, u32)> {
    let before = datapath.counters()?;
    let fd = datapath.program_fd(case.program)?;
    let outcome = test_run::run(fd, packet, repeat)
        .with_context(|| format!("BPF_PROG_TEST_RUN of {} ({})", case.program, case.label))?;
    if outcome.retval != expected {
        let delta = datapath.counters()?.since(&before);
        bail!(
            "{}: {} returned {} instead of {expected}; counters moved: {delta}; refusing to time the wrong path",
            case.label,
            case.program,
            outcome.retval
        );
    }
    let delta = datapath.counters()?.since(&before);
    Ok((delta, outcome.nanoseconds))
}

/// Whether `index` moved by exactly `by` and no other counter moved.
fn only(delta: &Counters, index: u32, by: u64) -> bool {
    delta
        .0
        .iter()
        .enumerate()
        .all(|(i, &value)| value == if i as u32 == index { by } else { 0 })
}

/// The 1-minute load average: other work on the machine shows in the figures.
fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|text| text.split_whitespace().next().map(str::to_string))
        .unwrap_or_else(|| "?".to_string())
}

fn print_report(results: &[Measured], load_before: &str) {
    let cpus = std::thread::available_parallelism().map_or(0, |n| n.get());
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    println!();
    println!(
        "bench kernel: BPF_PROG_TEST_RUN, {REPEAT} packets per run, median of {ROUNDS} interleaved runs; Linux {}, {cpus} CPUs, load average {load_before} before and {} after",
        kernel.trim(),
        load_average()
    );
    println!(
        "{:>6} {:>8} | {:>5} {:>8} {:>6} {:>7} | {:>7} {:>6} | {:>5} {:>6} | {:>11} {:>11} | {:>11} {:>11}",
        "rules",
        "prefixes",
        "ident",
        "ident_v4",
        "_v6",
        "policy",
        "compile",
        "apply",
        "empty",
        "non-IP",
        "to hit",
        "to new",
        "from hit",
        "from new"
    );
    for r in results {
        let empty = r.medians[EMPTY];
        let cell = |i: usize| format!("{:.0} (+{:.0})", r.medians[i], r.medians[i] - empty);
        println!(
            "{:>6} {:>8} | {:>5} {:>8} {:>6} {:>7} | {:>6.2}s {:>5.2}s | {:>5.0} {:>6.0} | {:>11} {:>11} | {:>11} {:>11}",
            r.scale.rules,
            r.scale.prefixes,
            r.sizes.identities,
            r.sizes.identity_entries_v4,
            r.sizes.identity_entries_v6,
            r.sizes.policy_entries,
            r.compile_seconds,
            r.apply_seconds,
            empty,
            r.medians[NOT_IP],
            cell(TO_HIT),
            cell(TO_NEW),
            cell(FROM_HIT),
            cell(FROM_NEW)
        );
    }
    println!(
        "ns/packet, in parentheses the difference to the empty program. non-IP: zw_to_workload on an ARP frame (entry, Ethernet header, counter). hit: a TCP ACK of an allowed, tracked flow. new: a TCP SYN denied by policy (no conntrack entry, so every run takes the policy path; the per-CPU identity and verdict caches are bypassed, so every run makes the four table lookups). apply: every entry written into fresh maps."
    );
    for r in results {
        let spread = r
            .spreads
            .iter()
            .map(|(low, high)| format!("{low:.0}-{high:.0}"))
            .collect::<Vec<_>>()
            .join(" ");
        println!(
            "  min-max of the {ROUNDS} runs, {} rules / {} prefixes (columns in order): {spread}; {} entries written",
            r.scale.rules, r.scale.prefixes, r.written
        );
    }
    for r in results {
        let Some(traffic) = &r.traffic else { continue };
        println!();
        println!(
            "under traffic ({} rules / {} prefixes): iperf3 TCP from a workload namespace over a veth pair, {:.1} Gbit/s; kernel BPF statistics per program run on the host-side interface, zw_empty attached to the same hooks; medians of {} windows of {} s:",
            r.scale.rules,
            r.scale.prefixes,
            traffic.gigabits_per_second,
            traffic::WINDOWS,
            traffic::SECONDS
        );
        for program in &traffic.programs {
            let (low, high) = program.over_empty_range;
            println!(
                "  {:<17} {:>9} runs {:>7.0} ns/run (+{:.0} over zw_empty, windows +{low:.0} to +{high:.0})",
                program.name, program.runs, program.nanoseconds_per_run, program.over_empty
            );
        }
        println!("  packet counters: {}", traffic.counters);
        println!(
            "  new flows: UDP datagrams from the workload to blocklisted addresses (every one a new flow the policy denies); medians of {} windows of {} s:",
            traffic::NEW_FLOW_WINDOWS,
            traffic::NEW_FLOW_SECONDS
        );
        for (label, new) in new_flow_kinds(traffic) {
            let load = &new.from_workload;
            let (low, high) = load.over_empty_range;
            println!(
                "  {:<17} {:>9} runs {:>7.0} ns/run (+{:.0} over zw_empty, windows +{low:.0} to +{high:.0}), {label}, {:.0} per second",
                load.name,
                load.runs,
                load.nanoseconds_per_run,
                load.over_empty,
                new.packets_per_second
            );
        }
        println!("  packet counters: {}", traffic.new_flow_counters);
    }

    println!();
    let worst_hit = results
        .iter()
        .flat_map(|r| {
            [
                r.medians[TO_HIT] - r.medians[EMPTY],
                r.medians[FROM_HIT] - r.medians[EMPTY],
            ]
        })
        .fold(f64::MIN, f64::max);
    verdict(
        worst_hit <= HIT_OVER_EMPTY_TARGET,
        &format!(
            "conntrack hit within {HIT_OVER_EMPTY_TARGET:.0} ns of the empty program: worst +{worst_hit:.0} ns"
        ),
    );
    if let Some(traffic) = results.iter().find_map(|r| r.traffic.as_ref()) {
        let worst = traffic.programs[1..]
            .iter()
            .map(|program| program.over_empty)
            .fold(f64::MIN, f64::max);
        verdict(
            worst <= HIT_OVER_EMPTY_TARGET,
            &format!(
                "conntrack hit under traffic within {HIT_OVER_EMPTY_TARGET:.0} ns of the empty program (median of {} windows): worst +{worst:.0} ns",
                traffic::WINDOWS
            ),
        );
    }
    if let Some(traffic) = results.iter().find_map(|r| r.traffic.as_ref()) {
        for (label, new) in new_flow_kinds(traffic) {
            let cost = new.from_workload.nanoseconds_per_run;
            verdict(
                cost < NEW_FLOW_TARGET,
                &format!(
                    "new flow under traffic, {label}, under {NEW_FLOW_TARGET:.0} ns at 10,000 rules / 100,000 prefixes (median of {} windows, the statistics' own cost included): {cost:.0} ns",
                    traffic::NEW_FLOW_WINDOWS
                ),
            );
        }
    }
    if let Some(largest) = results
        .iter()
        .find(|r| r.scale.rules == 10_000 && r.scale.prefixes == 100_000)
    {
        let worst_new = largest.medians[TO_NEW].max(largest.medians[FROM_NEW]);
        verdict(
            worst_new < NEW_FLOW_TARGET,
            &format!(
                "new flow under {NEW_FLOW_TARGET:.0} ns at 10,000 rules / 100,000 prefixes: worst {worst_new:.0} ns"
            ),
        );
    }
    let mut flat = true;
    let mut ratios = Vec::new();
    for prefixes in PREFIXES {
        let at = |rules: usize| {
            results
                .iter()
                .find(|r| r.scale.rules == rules && r.scale.prefixes == prefixes)
        };
        if let (Some(small), Some(large)) = (at(RULES[0]), at(RULES[RULES.len() - 1])) {
            for (index, name) in [(TO_NEW, "to"), (FROM_NEW, "from")] {
                let ratio = large.medians[index] / small.medians[index];
                flat &= ratio <= FLAT_TOLERANCE;
                ratios.push(format!("{name} {ratio:.2}x at {prefixes} prefixes"));
            }
        }
    }
    verdict(
        flat,
        &format!(
            "new-flow cost flat in the number of rules (10,000 vs 100 rules within {FLAT_TOLERANCE}x): {}",
            ratios.join(", ")
        ),
    );
}

/// The kinds of new flows measured under traffic, with what sets them apart.
fn new_flow_kinds(traffic: &Traffic) -> [(String, &traffic::NewFlows); 3] {
    [
        (
            "one peer, each to the next port".to_string(),
            &traffic.same_peer,
        ),
        (
            format!("each to the next of {} peers, one port", traffic.peers),
            &traffic.new_peers,
        ),
        (
            format!(
                "each to the next of {} peers and the next port",
                traffic.peers
            ),
            &traffic.new_peers_and_ports,
        ),
    ]
}

fn verdict(met: bool, text: &str) {
    println!("target {}: {text}", if met { "MET" } else { "NOT MET" });
}
