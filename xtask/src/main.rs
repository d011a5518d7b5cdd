//! Developer and CI tasks: `cargo xtask setup | test | codegen | demo`.

mod bench;
mod bench_sync;
mod crd;
mod setup;
mod test;

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
    Sync,
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
    /// Run zonewall end to end on this machine (not built yet).
    Demo,
    /// Measurements (release builds) on a generated 10,000-rule Panorama config: `parse`
    /// times `zonewall explain`, `translate` times `zonewall translate`, `sync` times a commit
    /// to its objects written by `zonewall sync` (output directory and mock API server).
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
            BenchKind::Sync => bench_sync::run(),
        },
        Command::Codegen { check: false } => crd::write(&workspace_root()),
        Command::Codegen { check: true } => crd::check(&workspace_root()),
        Command::Demo => anyhow::bail!(
            "`cargo xtask demo` does not exist yet: it arrives with the node agent (see the README status table)"
        ),
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
