//! Medians, the targets of the issue, and `docs/benchmarks.md` with its CSV and plot.

use std::fmt::Write as _;
use std::process::Command;

use anyhow::Context as _;

use super::{CONFIGS, Config, Sample};
use crate::kernel_bench::median;

/// Targets of the issue.
const THROUGHPUT_OF_BASELINE: f64 = 0.90;
const P99_OVER_BASELINE: f64 = 1.05;
const TIMES_IPTABLES: f64 = 8.0;
const FULL_LIVE_SECONDS: f64 = 1.0;
const CHANGE_LIVE_SECONDS: f64 = 0.100;

pub struct Results {
    pub samples: Vec<(Config, usize, Sample)>,
    pub rounds: usize,
    pub load_before: String,
    pub load_after: String,
    pub iptables_lines: usize,
    pub sets: usize,
    pub set_members: usize,
    pub probe_position: usize,
    pub iperf_seconds: u32,
    pub round_trips: usize,
    pub connect_seconds: f64,
}

/// The median of one figure over a configuration's rounds.
struct Medians {
    gigabits_per_second: f64,
    p50: f64,
    p99: f64,
    connections_per_second: f64,
    full: Option<f64>,
    change: Option<f64>,
    full_apply: Option<f64>,
    change_apply: Option<f64>,
    load_attach: Option<f64>,
    unchanged_apply: Option<f64>,
}

impl Results {
    fn of(&self, config: Config, figure: impl Fn(&Sample) -> Option<f64>) -> Option<f64> {
        median(
            self.samples
                .iter()
                .filter(|(c, _, _)| *c == config)
                .filter_map(|(_, _, s)| figure(s))
                .collect(),
        )
    }

    fn medians(&self, config: Config) -> Medians {
        let get = |f: fn(&Sample) -> f64| self.of(config, |s| Some(f(s))).unwrap_or(0.0);
        Medians {
            gigabits_per_second: get(|s| s.gigabits_per_second),
            p50: get(|s| s.p50_microseconds),
            p99: get(|s| s.p99_microseconds),
            connections_per_second: get(|s| s.connections_per_second),
            full: self.of(config, |s| s.full_seconds),
            change: self.of(config, |s| s.change_seconds),
            full_apply: self.of(config, |s| s.full_apply_seconds),
            change_apply: self.of(config, |s| s.change_apply_seconds),
            load_attach: self.of(config, |s| s.load_attach_seconds),
            unchanged_apply: self.of(config, |s| s.unchanged_apply_seconds),
        }
    }

    /// (met, text) per target.
    fn targets(&self) -> Vec<(bool, String)> {
        let baseline = self.medians(Config::Baseline);
        let zonewall = self.medians(Config::Zonewall);
        let iptables = self.medians(Config::Iptables);
        let iptables_first = self.medians(Config::IptablesEstablishedFirst);
        let share = zonewall.gigabits_per_second / baseline.gigabits_per_second;
        let p99 = zonewall.p99 / baseline.p99;
        let times = zonewall.gigabits_per_second / iptables.gigabits_per_second;
        let times_first = zonewall.gigabits_per_second / iptables_first.gigabits_per_second;
        // No filter can beat no filter: the most any configuration can reach here.
        let ceiling = baseline.gigabits_per_second / iptables.gigabits_per_second;
        let full = zonewall.full.unwrap_or(f64::INFINITY);
        let change = zonewall.change.unwrap_or(f64::INFINITY);
        vec![
            (
                share >= THROUGHPUT_OF_BASELINE,
                format!(
                    "throughput >= {:.0}% of no policy: {:.1}%",
                    THROUGHPUT_OF_BASELINE * 100.0,
                    share * 100.0
                ),
            ),
            (
                p99 <= P99_OVER_BASELINE,
                format!(
                    "p99 latency within {:.0}% of no policy: {:+.1}% ({:.1} vs {:.1} us)",
                    (P99_OVER_BASELINE - 1.0) * 100.0,
                    (p99 - 1.0) * 100.0,
                    zonewall.p99,
                    baseline.p99
                ),
            ),
            (
                times >= TIMES_IPTABLES,
                format!(
                    "throughput >= {TIMES_IPTABLES:.0}x iptables at 10,000 rules (every packet walks the rules): {times:.1}x (no policy at all is {ceiling:.1}x on this machine); against iptables with tracked flows accepted first: {times_first:.2}x"
                ),
            ),
            (
                full < FULL_LIVE_SECONDS,
                format!(
                    "full policy live in under {FULL_LIVE_SECONDS:.0} s from receiving it (compile + apply): {full:.2} s"
                ),
            ),
            (
                change < CHANGE_LIVE_SECONDS,
                format!(
                    "one rule change live in under {:.0} ms from receiving it (compile + apply): {:.0} ms",
                    CHANGE_LIVE_SECONDS * 1e3,
                    change * 1e3
                ),
            ),
        ]
    }
}

pub fn seconds(value: Option<f64>) -> String {
    value.map_or("-".to_string(), |v| format!("{v:.2} s"))
}

pub fn milliseconds(value: Option<f64>) -> String {
    value.map_or("-".to_string(), |v| format!("{:.0} ms", v * 1e3))
}

/// The 1-minute load average: other work on the machine shows in the figures.
pub fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|text| text.split_whitespace().next().map(str::to_string))
        .unwrap_or_else(|| "?".to_string())
}

fn machine() -> String {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = cpuinfo
        .lines()
        .find_map(|line| line.strip_prefix("model name"))
        .map(|rest| rest.trim_start_matches([' ', '\t', ':']).trim().to_string())
        .unwrap_or_else(|| "unknown CPU".to_string());
    let cpus = cpuinfo
        .lines()
        .filter(|line| line.starts_with("processor"))
        .count();
    let uname = Command::new("uname")
        .arg("-srvm")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default();
    let iptables = Command::new("iptables")
        .arg("-V")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default();
    let nft = Command::new("nft")
        .arg("-v")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default();
    format!("{model}, {cpus} CPUs; {uname}; {iptables}; {nft}")
}

fn table(results: &Results) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "| configuration | throughput (Gbit/s) | latency p50 (us) | latency p99 (us) | new connections/s | full policy live | one rule change live |"
    );
    let _ = writeln!(out, "|---|---:|---:|---:|---:|---:|---:|");
    for config in CONFIGS {
        let m = results.medians(config);
        let _ = writeln!(
            out,
            "| {} | {:.2} | {:.1} | {:.1} | {:.0} | {} | {} |",
            config.label(),
            m.gigabits_per_second,
            m.p50,
            m.p99,
            m.connections_per_second,
            seconds(m.full),
            milliseconds(m.change)
        );
    }
    out
}

fn zonewall_detail(results: &Results) -> String {
    let m = results.medians(Config::Zonewall);
    format!(
        "zonewall's times include compiling, as the Kubernetes agent does (the objects the change left alone are reused as compiled, the tables compiled again with the live tables' identity numbers); after compiling (DesiredTables handed to apply) the full policy was live in {} and the change in {}. apply compares with what it last wrote to each table slot and writes the difference: applying the live tables again, which writes nothing, took {}. Loading the programs and attaching them to both interfaces, before any policy, took {}.",
        seconds(m.full_apply),
        milliseconds(m.change_apply),
        milliseconds(m.unchanged_apply),
        seconds(m.load_attach)
    )
}

/// Lowest and highest value over the rounds, per configuration: the spread the medians hide.
fn spread(results: &Results) -> String {
    let mut out = String::from(
        "| configuration | throughput (Gbit/s) | latency p50 (us) | latency p99 (us) | new connections/s |\n|---|---:|---:|---:|---:|\n",
    );
    for config in CONFIGS {
        let range = |f: fn(&Sample) -> f64| {
            let values: Vec<f64> = results
                .samples
                .iter()
                .filter(|(c, _, _)| *c == config)
                .map(|(_, _, s)| f(s))
                .collect();
            let low = values.iter().copied().fold(f64::INFINITY, f64::min);
            let high = values.iter().copied().fold(f64::NEG_INFINITY, f64::max);
            (low, high)
        };
        let (t0, t1) = range(|s| s.gigabits_per_second);
        let (a0, a1) = range(|s| s.p50_microseconds);
        let (b0, b1) = range(|s| s.p99_microseconds);
        let (c0, c1) = range(|s| s.connections_per_second);
        let _ = writeln!(
            out,
            "| {} | {t0:.2} - {t1:.2} | {a0:.1} - {a1:.1} | {b0:.0} - {b1:.0} | {c0:.0} - {c1:.0} |",
            config.label()
        );
    }
    out
}

pub fn print(results: &Results) {
    println!();
    println!(
        "bench dataplane: medians of {} interleaved rounds; {}; load average {} before, {} after",
        results.rounds,
        machine(),
        results.load_before,
        results.load_after
    );
    print!("{}", table(results));
    println!("{}", zonewall_detail(results));
    println!("lowest - highest over the rounds:");
    print!("{}", spread(results));
    for (met, text) in results.targets() {
        println!("target {}: {text}", if met { "MET" } else { "NOT MET" });
    }
}

/// Writes docs/benchmarks.csv (every sample) and docs/benchmarks.md, then renders
/// docs/benchmarks.png with docs/plot_benchmarks.py.
pub fn write_docs(results: &Results) -> anyhow::Result<()> {
    let docs = crate::workspace_root().join("docs");
    std::fs::create_dir_all(&docs).context("create docs/")?;
    let mut csv = String::from(
        "configuration,round,throughput_gbit_s,latency_p50_us,latency_p99_us,connections_per_s,full_policy_live_s,rule_change_live_s,full_policy_after_compile_s,rule_change_after_compile_s\n",
    );
    let optional = |v: Option<f64>| v.map_or(String::new(), |v| format!("{v:.6}"));
    for (config, round, s) in &results.samples {
        let _ = writeln!(
            csv,
            "{},{},{:.3},{:.2},{:.2},{:.0},{},{},{},{}",
            config.key(),
            round + 1,
            s.gigabits_per_second,
            s.p50_microseconds,
            s.p99_microseconds,
            s.connections_per_second,
            optional(s.full_seconds),
            optional(s.change_seconds),
            optional(s.full_apply_seconds),
            optional(s.change_apply_seconds)
        );
    }
    let csv_path = docs.join("benchmarks.csv");
    std::fs::write(&csv_path, csv).with_context(|| format!("write {}", csv_path.display()))?;

    let mut md = String::new();
    let _ = writeln!(md, "# Benchmarks\n");
    let _ = writeln!(
        md,
        "Generated by `sudo -E cargo xtask bench dataplane` (about ten minutes), which writes this page, \
         [`benchmarks.csv`](benchmarks.csv) with every sample, and runs \
         [`plot_benchmarks.py`](plot_benchmarks.py) to draw [`benchmarks.png`](benchmarks.png) from the CSV \
         (`python3 docs/plot_benchmarks.py` redraws it alone).\n"
    );
    let _ = writeln!(md, "## Dataplane: zonewall, iptables and nftables\n");
    let _ = writeln!(
        md,
        "Machine: {}. Load average {} before the run, {} after.\n",
        machine(),
        results.load_before,
        results.load_after
    );
    let _ = writeln!(
        md,
        "Medians of {} rounds; each round measures every configuration in turn (starting one further each round), \
         each in fresh namespaces.\n",
        results.rounds
    );
    md.push_str(&table(results));
    let _ = writeln!(md, "\n![dataplane benchmark](benchmarks.png)\n");
    let _ = writeln!(md, "{}\n", zonewall_detail(results));
    let _ = writeln!(
        md,
        "The machine is shared with other work (see the load average): the lowest and highest value of each \
         configuration over the rounds show how far one round can be from another; a difference smaller than \
         this spread is not a difference.\n"
    );
    md.push_str(&spread(results));
    md.push('\n');
    let _ = writeln!(md, "### Targets (issue 6)\n");
    for (met, text) in results.targets() {
        let _ = writeln!(md, "- {}: {text}", if met { "met" } else { "**not met**" });
    }
    let _ = writeln!(md, "\n### Setup\n");
    let _ = writeln!(
        md,
        "- Topology: a node namespace and two pod namespaces, each pod on a routed veth pair (a /32 in the pod, \
         a default route to 169.254.1.1 answered by proxy ARP, a host route per pod on the node), as the \
         project's privileged tests build them. The client pod's processes run on CPU 0, the server pod's on CPU 1 \
         (`taskset` for iperf3, `sched_setaffinity` for the benchmark's own threads).\n\
         - Policy: the generator of `cargo xtask bench kernel` at 10,000 firewall rules and 100,000 external \
         prefixes (240 workloads in four zones, blocklist feeds, partner groups, east-west rules). The measured \
         flow (client `app-0` in dmz to server `app-1` in trusted, tcp/8080) is allowed by the last rule.\n\
         - zonewall: the datapath loaded under its own bpffs root, attached to both host-side veths, the policy \
         compiled and applied with `Datapath::apply` (double-buffered tables, one switch).\n\
         - iptables: each firewall rule becomes one line per (protocol, port range) of its service in FORWARD, \
         its source and destination address groups `hash:net` ipsets ({} lines, {} sets with {} IPv4 members); \
         the measured rule is line {}. In \"iptables\" the line accepting tracked flows \
         (`--ctstate ESTABLISHED,RELATED`) comes last, so every packet walks the rules, as a naive translation \
         of the rulebase does; \"iptables, established first\" puts it first, as most hand-written rulesets do, \
         so only a flow's first packet walks them. Loaded with `ipset restore` and `iptables-restore`.\n\
         - nftables: the same lines; address groups are interval sets, tracked flows are accepted first, and \
         new flows go through one verdict-map lookup on (input interface, output interface) to the chain of \
         their zone pair, which holds that pair's rules in order. Loaded with `nft -f` in one transaction.\n\
         - Only IPv4 is rendered for iptables and nftables (every measured packet is IPv4).\n\
         - Every configuration is measured 1 s after it was installed (the steady state, not the aftermath of \
         loading it). Throughput: one iperf3 TCP stream for {} s. Latency: {} round trips of 64 bytes on one TCP \
         connection (after 10% warm-up). New connections: connect, one 64-byte request and its echo, close (with a reset), one after the other for {} s.\n\
         - Time to live: a probe in the client pod opens a new connection every millisecond, from before the \
         change until one is accepted; the figure is from handing the change over (zonewall: to the compiler; \
         iptables and nftables: starting the restore commands) to the sending of the first SYN that got \
         through. The full policy replaces a closed state (every forwarded packet dropped); the one-rule change \
         adds tcp/50001 to the measured flow's rule (one more line after it for iptables and nftables).",
        results.iptables_lines,
        results.sets,
        results.set_members,
        results.probe_position,
        results.iperf_seconds,
        results.round_trips,
        results.connect_seconds
    );
    let md_path = docs.join("benchmarks.md");
    std::fs::write(&md_path, md).with_context(|| format!("write {}", md_path.display()))?;

    let script = docs.join("plot_benchmarks.py");
    match Command::new("python3").arg(&script).status() {
        Ok(status) if status.success() => {}
        other => eprintln!(
            "bench dataplane: {} did not draw the plot ({other:?}); the table and CSV are written",
            script.display()
        ),
    }
    Ok(())
}
