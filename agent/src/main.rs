//! The `zonewall` command: parse flags, build the parts from the library, run, map errors to
//! an exit code (0 success, 1 runtime failure, 2 invalid input).

use std::{net::IpAddr, path::PathBuf, process::ExitCode};

use clap::{Args, Parser, Subcommand};
use zonewall::{
    explain::{ExplainRequest, Zones, explain},
    model::parse_protocol,
};

#[derive(Parser)]
#[command(
    name = "zonewall",
    version,
    about = "Zone-based firewall policy from Panorama, enforced in Kubernetes with eBPF"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Which firewall rule decides a flow, and why, in the firewall's own words.
    Explain(ExplainArgs),
}

#[derive(Args)]
#[command(group(clap::ArgGroup::new("zones").required(true).args(["inventory", "src_zone"])))]
struct ExplainArgs {
    /// PAN-OS or Panorama configuration XML (export, or a saved XML API response).
    #[arg(long, env = "ZONEWALL_PANOS_CONFIG", value_name = "FILE")]
    panos_config: PathBuf,
    /// Device group (Panorama) or vsys (firewall) whose rules apply; required when the
    /// configuration has several.
    #[arg(long, env = "ZONEWALL_DEVICE_GROUP", value_name = "DG")]
    device_group: Option<String>,
    /// Inventory YAML: the zone of each address (addresses not listed are in its external zone).
    #[arg(long, env = "ZONEWALL_INVENTORY", value_name = "FILE", conflicts_with_all = ["src_zone", "dst_zone"])]
    inventory: Option<PathBuf>,
    /// Source zone, instead of --inventory.
    #[arg(long, value_name = "ZONE", requires = "dst_zone")]
    src_zone: Option<String>,
    /// Destination zone, instead of --inventory.
    #[arg(long, value_name = "ZONE", requires = "src_zone")]
    dst_zone: Option<String>,
    #[arg(long, value_name = "IP")]
    src: IpAddr,
    #[arg(long, value_name = "IP")]
    dst: IpAddr,
    /// tcp, udp, sctp, icmp, icmpv6 or an IP protocol number.
    #[arg(long, value_name = "PROTO", value_parser = protocol)]
    proto: u8,
    #[arg(long, value_name = "PORT")]
    sport: Option<u16>,
    #[arg(long, value_name = "PORT")]
    dport: Option<u16>,
    /// Print one JSON object: action, rule, rulebase, device_group, src_zone, dst_zone.
    #[arg(long)]
    json: bool,
    /// Also list the warnings about rules other than the deciding one.
    #[arg(long, conflicts_with = "json")]
    all_warnings: bool,
}

fn protocol(text: &str) -> Result<u8, String> {
    parse_protocol(text).ok_or_else(|| {
        format!("unknown protocol '{text}': use tcp, udp, sctp, icmp, icmpv6 or a number 0-255")
    })
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("ZONEWALL_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    match Cli::parse().command {
        Command::Explain(args) => run_explain(args),
    }
}

fn run_explain(args: ExplainArgs) -> ExitCode {
    let zones = match (args.inventory, args.src_zone, args.dst_zone) {
        (Some(inventory), _, _) => Zones::Inventory(inventory),
        (None, Some(source), Some(destination)) => Zones::Given {
            source,
            destination,
        },
        // clap enforces one of the two forms.
        _ => {
            return fail(
                2,
                "give --inventory FILE, or both --src-zone and --dst-zone",
            );
        }
    };
    let request = ExplainRequest {
        panos_config: args.panos_config,
        device_group: args.device_group,
        zones,
        source: args.src,
        destination: args.dst,
        protocol: args.proto,
        source_port: args.sport,
        destination_port: args.dport,
    };
    match explain(&request) {
        Ok(explanation) if args.json => match explanation.to_json() {
            Ok(json) => {
                println!("{json}");
                ExitCode::SUCCESS
            }
            Err(e) => fail(1, &format!("cannot encode the verdict as JSON: {e}")),
        },
        Ok(explanation) => {
            print!("{}", explanation.to_text(args.all_warnings));
            ExitCode::SUCCESS
        }
        Err(e) => fail(e.exit_code(), &e.to_string()),
    }
}

fn fail(code: u8, message: &str) -> ExitCode {
    eprintln!("zonewall: error: {message}");
    ExitCode::from(code)
}
