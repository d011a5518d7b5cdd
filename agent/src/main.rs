//! The `zonewall` command: parse flags, build the parts from the library, run, map errors to
//! an exit code (0 success, 1 runtime failure, 2 invalid input).

use std::{
    io::Write as _,
    net::IpAddr,
    path::{Path, PathBuf},
    process::ExitCode,
};

use clap::{Args, Parser, Subcommand, ValueEnum};
use kube::CustomResourceExt as _;
use zonewall::{
    explain::{ExplainRequest, PolicySource, Zones, explain},
    firewall::panos::{self, Limits, PanosError, ResolveOptions},
    model::parse_protocol,
    policy::{ZonePolicy, directory, resource::Mode},
    translate::{self, TranslateOptions},
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
    /// Firewall configuration -> ZonePolicy YAML (one object per zone, multi-document).
    Translate(TranslateArgs),
    /// Print the ZonePolicy CustomResourceDefinition YAML (what deploy/crds/ commits).
    Crd,
    /// The sync controller: firewall commits -> the firewall tier of ZonePolicy objects, in
    /// the cluster (server-side apply, drift remediation, audit trail) or in a directory.
    Sync(zonewall::sync::SyncArgs),
}

#[derive(Clone, Copy, ValueEnum)]
enum ModeArg {
    Enforce,
    Audit,
}

#[derive(Args)]
struct TranslateArgs {
    /// PAN-OS or Panorama configuration XML (export, or a saved XML API response).
    #[arg(long, env = "ZONEWALL_PANOS_CONFIG", value_name = "FILE")]
    panos_config: PathBuf,
    /// Device group (Panorama) or vsys (firewall) whose rules apply; required when the
    /// configuration has several.
    #[arg(long, env = "ZONEWALL_DEVICE_GROUP", value_name = "DG")]
    device_group: Option<String>,
    /// `-` for standard output, or a directory that gets one file per object, published as one
    /// set (readers never see half of it); firewall-*.yaml files an earlier run left there and
    /// this run did not produce are removed.
    #[arg(
        short = 'o',
        long = "output",
        env = "ZONEWALL_TRANSLATE_OUTPUT",
        value_name = "DIR|-",
        default_value = "-"
    )]
    output: String,
    /// Enforce, or Audit (report what would be denied, drop nothing).
    #[arg(long, env = "ZONEWALL_MODE", value_enum, default_value = "enforce")]
    mode: ModeArg,
    /// Firewall commit the configuration is from, recorded in every object's provenance.
    #[arg(long, env = "ZONEWALL_COMMIT", value_name = "ID")]
    commit: Option<String>,
}

#[derive(Args)]
#[command(group(clap::ArgGroup::new("zones").required(true).args(["inventory", "src_zone"])))]
#[command(group(clap::ArgGroup::new("policy").required(true).args(["panos_config", "policies"])))]
struct ExplainArgs {
    /// PAN-OS or Panorama configuration XML (export, or a saved XML API response).
    #[arg(long, env = "ZONEWALL_PANOS_CONFIG", value_name = "FILE")]
    panos_config: Option<PathBuf>,
    /// Directory of ZonePolicy YAML (from `zonewall translate -o DIR`), instead of
    /// --panos-config: ask the cluster form of the policy the same question.
    #[arg(long, env = "ZONEWALL_POLICIES", value_name = "DIR", conflicts_with_all = ["panos_config", "device_group"])]
    policies: Option<PathBuf>,
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
        Command::Translate(args) => run_translate(args),
        Command::Crd => run_crd(),
        Command::Sync(args) => zonewall::sync::run_cli(args),
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
    let policy = match (args.policies, args.panos_config) {
        (Some(dir), _) => PolicySource::ZonePolicies(dir),
        (None, Some(config)) => PolicySource::Panos {
            config,
            device_group: args.device_group,
        },
        // clap enforces one of the two.
        (None, None) => return fail(2, "give --panos-config FILE or --policies DIR"),
    };
    let request = ExplainRequest {
        policy,
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

fn run_crd() -> ExitCode {
    match serde_yaml_ng::to_string(&ZonePolicy::crd()) {
        Ok(yaml) => {
            print!("{yaml}");
            ExitCode::SUCCESS
        }
        Err(e) => fail(1, &format!("cannot encode the CRD as YAML: {e}")),
    }
}

fn run_translate(args: TranslateArgs) -> ExitCode {
    let exit_code = |e: &PanosError| {
        if matches!(e, PanosError::Io { .. }) {
            1
        } else {
            2
        }
    };
    let config = match panos::load_file(&args.panos_config, Limits::default()) {
        Ok(config) => config,
        Err(e) => return fail(exit_code(&e), &e.to_string()),
    };
    let options = ResolveOptions {
        device_group: args.device_group,
        ..ResolveOptions::default()
    };
    let resolved = match panos::resolve(&config, &options) {
        Ok(resolved) => resolved,
        Err(e) => return fail(exit_code(&e), &e.to_string()),
    };
    for warning in &resolved.warnings {
        eprintln!("zonewall: warning: {warning}");
    }
    let options = TranslateOptions {
        mode: match args.mode {
            ModeArg::Enforce => Mode::Enforce,
            ModeArg::Audit => Mode::Audit,
        },
        commit: args.commit,
        ..TranslateOptions::default()
    };
    let translation = match translate::translate(&resolved, &options) {
        Ok(translation) => translation,
        Err(e) => return fail(2, &e.to_string()),
    };
    let written = if args.output == "-" {
        std::io::stdout()
            .lock()
            .write_all(translation.to_yaml().as_bytes())
            .map_err(|e| format!("cannot write to standard output: {e}"))
    } else {
        directory::publish(
            Path::new(&args.output),
            &translation.object_files(),
            translate::FIREWALL_FILE_PREFIX,
        )
        .map(|_| ())
        .map_err(|e| e.to_string())
    };
    match written {
        Ok(()) => {
            eprintln!(
                "zonewall: {} ZonePolicy objects, {} warnings",
                translation.policies.len(),
                resolved.warnings.len()
            );
            ExitCode::SUCCESS
        }
        Err(message) => fail(1, &message),
    }
}

fn fail(code: u8, message: &str) -> ExitCode {
    eprintln!("zonewall: error: {message}");
    ExitCode::from(code)
}
