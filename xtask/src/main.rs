//! Developer and CI tasks: `cargo xtask setup | test | codegen | demo | bench`.

mod bench;
mod bench_sync;
mod crd;
mod demo;
mod kernel_bench;
mod setup;
mod test;

/// Counts live heap bytes for `bench agent` (a relaxed atomic add per allocation).
#[cfg(feature = "kernel-bench")]
#[global_allocator]
static HEAP: kernel_bench::heap::Counting = kernel_bench::heap::Counting;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "cargo xtask", about = "zonewall's build, test and demo tasks")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum BenchKind {
    Parse,
    Translate,
    Kernel,
    Flows,
    Agent,
    Sync,
    Dataplane,
    E2e,
}

#[derive(Subcommand)]
enum Command {
    /// Install what a fresh Debian machine lacks (packages, nightly rust-src, bpf-linker) and
    /// mount bpffs. Idempotent: a second run changes nothing.
    Setup,
    /// setup, then formatting, clippy (host crates and the eBPF crate), the committed CRD
    /// against `zonewall crd`, unit tests and the privileged tests. Set ZONEWALL_REQUIRE_PRIVILEGED=1 to fail instead of skipping them.
    Test,
    /// Regenerate committed artifacts (the ZonePolicy CRD); with --check, only compare.
    Codegen {
        #[arg(long)]
        check: bool,
    },
    /// Run zonewall end to end on this machine: a node with pods in four zones in network
    /// namespaces, the real agent enforcing a firewall configuration, traffic, the CEF records
    /// and a summary. Needs root; removes everything it created, also on Ctrl-C.
    Demo,
    /// Measurements (release builds): `parse` times `zonewall explain` and `translate` times
    /// `zonewall translate` on a generated 10,000-rule Panorama config; `kernel` (root) times
    /// the TC programs per packet with BPF_PROG_TEST_RUN on generated policies of 100 to
    /// 10,000 rules and 1,000 to 100,000 prefixes; `flows` (root) sends kernel flow events
    /// through enrichment, CEF and the TCP sink to a loopback receiver; `agent` (root) measures
    /// the agent's memory and one pod change at 10,000 endpoints and 10,000 rules; `sync` times
    /// a commit to its objects written by `zonewall sync` (output directory and mock API
    /// server); `dataplane` (root) compares zonewall with no policy, iptables and nftables on
    /// traffic between two pods and writes docs/benchmarks.md; `e2e` (root) times a firewall
    /// commit to the first packet with its verdict through `zonewall sync --output-dir` and a
    /// standalone agent.
    Bench {
        #[arg(value_enum, default_value = "parse")]
        which: BenchKind,
    },
}

fn main() -> anyhow::Result<()> {
    match Cli::parse().command {
        Command::Setup => setup::run(),
        Command::Test => test::run(),
        Command::Bench { which } => match which {
            BenchKind::Parse => bench::run_parse(),
            BenchKind::Translate => bench::run_translate(),
            BenchKind::Kernel => kernel_bench::run("kernel"),
            BenchKind::Flows => kernel_bench::run("flows"),
            BenchKind::Agent => kernel_bench::run("agent"),
            BenchKind::Sync => bench_sync::run(),
            BenchKind::Dataplane => kernel_bench::run("dataplane"),
            BenchKind::E2e => kernel_bench::run("e2e"),
        },
        Command::Codegen { check: false } => crd::write(&workspace_root()),
        Command::Codegen { check: true } => crd::check(&workspace_root()),
        Command::Demo => demo::run(),
    }
}

/// Runs a command with inherited output, echoing it first; fails on a non-zero exit.
fn run_command(command: &mut std::process::Command) -> anyhow::Result<()> {
    use anyhow::Context as _;
    eprintln!("+ {}", display(command));
    let status = command
        .status()
        .with_context(|| format!("cannot start `{}`", display(command)))?;
    anyhow::ensure!(status.success(), "`{}` failed ({status})", display(command));
    Ok(())
}

fn display(command: &std::process::Command) -> String {
    std::iter::once(command.get_program())
        .chain(command.get_args())
        .map(|part| part.to_string_lossy().into_owned())
        .collect::<Vec<_>>()
        .join(" ")
}

/// The workspace root (xtask lives one level below it).
fn workspace_root() -> std::path::PathBuf {
    let manifest = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    manifest.parent().unwrap_or(manifest).to_path_buf()
}
