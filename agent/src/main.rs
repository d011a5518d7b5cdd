//! The `zonewall` command. Subcommands arrive with their issues; this binary is kept thin:
//! parse flags, build the parts from the library, run, map errors to an exit code.

use clap::Parser;

#[derive(Parser)]
#[command(
    name = "zonewall",
    version,
    about = "Zone-based firewall policy from Panorama, enforced in Kubernetes with eBPF"
)]
struct Cli {}

fn main() {
    let _cli = Cli::parse();
}
