//! The `zonewall` command: parse flags, build the parts from the library, run, map errors to
//! an exit code (0 success, 1 runtime failure, 2 invalid input).

use std::{
    io::Write as _,
    net::IpAddr,
    path::{Path, PathBuf},
    process::ExitCode,
    sync::Arc,
};

use clap::{Args, Parser, Subcommand, ValueEnum};
use kube::CustomResourceExt as _;
use tokio_util::sync::CancellationToken;
use zonewall::{
    datapath::{Capacities, Datapath, PinLayout},
    explain::{ExplainRequest, PolicySource, Zones, explain},
    firewall::panos::{self, Limits, PanosError, ResolveOptions},
    flows::{
        FlowRecord,
        sink::{RuntimeOptions, Sink, SinkConfig, config::parse_sink_file},
    },
    inventory::cluster::{ClusterOptions, ZoneLabels},
    metrics::{
        AgentMetrics, AgentMetricsOptions, Metrics, MetricsArgs, MetricsServer, Readiness,
        SinkMetrics,
    },
    model::parse_protocol,
    node::{self, FlowOutput, PolicyInput, Telemetry},
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
    /// The node agent: enforces the zone policy in the kernel on this node's workloads.
    Agent(AgentArgs),
}

#[derive(Args)]
#[command(group(clap::ArgGroup::new("policy").args(["panos_config", "policies"])))]
struct AgentArgs {
    /// Run without Kubernetes: workloads from --inventory, policy from --panos-config or
    /// --policies. Without it the agent watches the cluster (ZonePolicies, Pods, Namespaces).
    #[arg(long, env = "ZONEWALL_STANDALONE")]
    standalone: bool,
    /// Inventory YAML: every workload's zone, addresses, labels and (optionally) interface.
    #[arg(
        long,
        env = "ZONEWALL_INVENTORY",
        value_name = "FILE",
        requires = "standalone"
    )]
    inventory: Option<PathBuf>,
    /// PAN-OS or Panorama configuration XML, translated as `zonewall translate` does.
    #[arg(long, env = "ZONEWALL_PANOS_CONFIG", value_name = "FILE")]
    panos_config: Option<PathBuf>,
    /// Device group (Panorama) or vsys (firewall) whose rules apply.
    #[arg(
        long,
        env = "ZONEWALL_DEVICE_GROUP",
        value_name = "DG",
        requires = "panos_config"
    )]
    device_group: Option<String>,
    /// Directory of ZonePolicy YAML (from `zonewall translate -o DIR` or `zonewall sync
    /// --output-dir DIR`), instead of --panos-config.
    #[arg(long, env = "ZONEWALL_POLICIES", value_name = "DIR")]
    policies: Option<PathBuf>,
    /// With --panos-config: Enforce, or Audit (report what would be denied, drop nothing).
    #[arg(
        long,
        env = "ZONEWALL_MODE",
        value_enum,
        default_value = "enforce",
        requires = "panos_config"
    )]
    mode: ModeArg,
    /// Where flow records go: FORMAT+TRANSPORT://ADDRESS[?options], repeatable; for example
    /// cef+tls://siem.example:6514?ca=/etc/zonewall/ca.pem, json+file:///var/log/zonewall/flows.jsonl,
    /// cef+stdout. Several in the environment are separated by spaces.
    #[arg(
        long = "sink",
        env = "ZONEWALL_SINK",
        value_name = "SINK",
        value_delimiter = ' '
    )]
    sinks: Vec<String>,
    /// A file of sinks, one per line (`#` comments), in addition to --sink.
    #[arg(long, env = "ZONEWALL_SINK_FILE", value_name = "FILE")]
    sink_file: Option<PathBuf>,
    /// This node's name in flow records (CEF dvchost, syslog HOSTNAME); default: the host name.
    #[arg(long, env = "ZONEWALL_NODE_NAME", value_name = "NAME")]
    node_name: Option<String>,
    /// bpffs directory for the pinned maps and links (under a layout version), so enforcement
    /// continues while the agent restarts or upgrades.
    #[arg(
        long,
        env = "ZONEWALL_BPFFS_ROOT",
        value_name = "DIR",
        default_value = PinLayout::DEFAULT_ROOT
    )]
    bpffs_root: PathBuf,
    /// Remove everything the agent pinned and attached (enforcement stops), then exit.
    #[arg(long, env = "ZONEWALL_CLEANUP", conflicts_with = "standalone")]
    cleanup: bool,
    /// On SIGTERM/SIGINT, remove everything the agent pinned and attached. Without it,
    /// enforcement keeps running after the agent exits, until an agent takes over again.
    #[arg(long, env = "ZONEWALL_CLEANUP_ON_EXIT")]
    cleanup_on_exit: bool,
    /// Entries of each identity table (each of two slots): the IPv6 prefixes, and the IPv4
    /// prefixes longer than /16 (shorter ones fold into a fixed array of /16 blocks). Sizes
    /// apply when the maps are created; pinned maps keep theirs (`--cleanup` to recreate).
    #[arg(long, env = "ZONEWALL_MAP_IDENTITY_ENTRIES", value_name = "N", default_value_t = Capacities::default().identity)]
    map_identity_entries: u32,
    /// Entries of the policy table (each of two slots).
    #[arg(long, env = "ZONEWALL_MAP_POLICY_ENTRIES", value_name = "N", default_value_t = Capacities::default().policy)]
    map_policy_entries: u32,
    /// Entries of the connection-tracking table (least recently used entries are evicted).
    #[arg(long, env = "ZONEWALL_MAP_CONNTRACK_ENTRIES", value_name = "N", default_value_t = Capacities::default().conntrack)]
    map_conntrack_entries: u32,
    /// Kubernetes mode: the label whose value is a workload's zone.
    #[arg(
        long,
        env = "ZONEWALL_ZONE_LABEL",
        value_name = "LABEL",
        default_value = "zonewall.io/zone"
    )]
    zone_label: String,
    /// Kubernetes mode: which objects' zone label counts: the pod's, else its namespace's
    /// (pod-then-namespace), or only the namespace's (namespace-only).
    #[arg(
        long,
        env = "ZONEWALL_ZONE_LABELS",
        value_enum,
        default_value = "pod-then-namespace"
    )]
    zone_labels: ZoneLabelsArg,
    /// Kubernetes mode: the zone of every address that is not a workload's.
    #[arg(
        long,
        env = "ZONEWALL_EXTERNAL_ZONE",
        value_name = "ZONE",
        default_value = "untrust"
    )]
    external_zone: String,
    /// Kubernetes mode: the zone of a pod whose pod and namespace have no zone label (without
    /// it, such pods count as external).
    #[arg(long, env = "ZONEWALL_DEFAULT_ZONE", value_name = "ZONE")]
    default_zone: Option<String>,
    #[command(flatten)]
    metrics: MetricsArgs,
}

#[derive(Clone, Copy, ValueEnum)]
enum ZoneLabelsArg {
    PodThenNamespace,
    NamespaceOnly,
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

/// `ZONEWALL_LOG_FORMAT`: `json` (one object per line, for log collectors in a cluster) or
/// `text` (the default for a terminal).
fn init_logging() -> Result<(), String> {
    let filter = tracing_subscriber::EnvFilter::try_from_env("ZONEWALL_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    // Colour only on a terminal: escape codes in a log file or a collector are noise.
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr);
    match std::env::var("ZONEWALL_LOG_FORMAT").as_deref() {
        Ok("json") => builder.json().init(),
        Ok("text") | Err(_) => builder.init(),
        Ok(other) => {
            builder.init();
            return Err(format!(
                "ZONEWALL_LOG_FORMAT={other} is not a log format: use json or text"
            ));
        }
    }
    Ok(())
}

fn main() -> ExitCode {
    if let Err(problem) = init_logging() {
        return fail(2, &problem);
    }
    match Cli::parse().command {
        Command::Explain(args) => run_explain(args),
        Command::Translate(args) => run_translate(args),
        Command::Crd => run_crd(),
        Command::Sync(args) => zonewall::sync::run_cli(args),
        Command::Agent(args) => run_agent(args),
    }
}

/// The agent runs for months and its memory is budgeted (a DaemonSet on every node), but a
/// policy load makes large short-lived buffers: file text, parser events, tables being built.
/// glibc serves blocks above its mmap threshold from their own mappings, which go back to the
/// kernel when freed, but raises that threshold (up to 32 MiB) each time such a block is
/// freed, after which the buffers land in the heap and fragment it for good. A fixed
/// threshold keeps them out of the heap.
fn keep_large_buffers_out_of_the_heap() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only sets a tunable of glibc's allocator, under its own lock.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 256 * 1024);
    }
}

fn run_agent(args: AgentArgs) -> ExitCode {
    keep_large_buffers_out_of_the_heap();
    let layout = PinLayout::new(&args.bpffs_root);
    if args.cleanup {
        return match Datapath::cleanup(&layout) {
            Ok(removed) => {
                eprintln!(
                    "zonewall: removed {removed} pinned maps and links under {}; zonewall no longer enforces on this node",
                    layout.root.display()
                );
                ExitCode::SUCCESS
            }
            Err(e) => fail(1, &e.to_string()),
        };
    }
    // Where workloads and policy come from: files (standalone) or the cluster.
    enum Source {
        Files {
            inventory: PathBuf,
            input: PolicyInput,
        },
        Cluster(ClusterOptions),
    }
    let node_name = args.node_name.clone().unwrap_or_else(host_name);
    let source = if args.standalone {
        let Some(inventory) = args.inventory.clone() else {
            return fail(2, "--standalone needs --inventory FILE");
        };
        let input = match (args.panos_config.clone(), args.policies.clone()) {
            (Some(config), None) => PolicyInput::Panos {
                config,
                device_group: args.device_group.clone(),
                mode: match args.mode {
                    ModeArg::Enforce => Mode::Enforce,
                    ModeArg::Audit => Mode::Audit,
                },
            },
            (None, Some(dir)) => PolicyInput::Policies(dir),
            _ => {
                return fail(
                    2,
                    "--standalone needs --panos-config FILE or --policies DIR",
                );
            }
        };
        Source::Files { inventory, input }
    } else {
        if args.panos_config.is_some() || args.policies.is_some() {
            return fail(
                2,
                "--panos-config and --policies are for --standalone; in Kubernetes the policy is the cluster's ZonePolicy objects",
            );
        }
        if args.node_name.is_none() {
            return fail(
                2,
                "Kubernetes mode needs this node's name: set --node-name or ZONEWALL_NODE_NAME (the DaemonSet sets it from spec.nodeName)",
            );
        }
        Source::Cluster(ClusterOptions {
            zone_label: args.zone_label.clone(),
            zone_labels: match args.zone_labels {
                ZoneLabelsArg::PodThenNamespace => ZoneLabels::PodThenNamespace,
                ZoneLabelsArg::NamespaceOnly => ZoneLabels::NamespaceOnly,
            },
            default_zone: args.default_zone.clone(),
            external_zone: args.external_zone.clone(),
            node_name: node_name.clone(),
        })
    };
    let mut sink_configs = Vec::new();
    for text in args.sinks.iter().filter(|s| !s.is_empty()) {
        match text.parse::<SinkConfig>() {
            Ok(config) => sink_configs.push(config),
            Err(e) => return fail(2, &e.to_string()),
        }
    }
    if let Some(path) = &args.sink_file {
        let origin = path.display().to_string();
        let parsed = std::fs::read_to_string(path)
            .map_err(|e| format!("cannot read {origin}: {e}"))
            .and_then(|text| parse_sink_file(&text, &origin));
        match parsed {
            Ok(sinks) => sink_configs.extend(sinks),
            Err(e) => return fail(2, &e),
        }
    }
    // The effective configuration, once (sink options may name files, never secrets: the
    // descriptions exclude the query string).
    let (mode, workloads, policy) = match &source {
        Source::Files { inventory, input } => (
            "standalone",
            inventory.display().to_string(),
            format!("{input:?}"),
        ),
        Source::Cluster(options) => (
            "kubernetes",
            format!("{options:?}"),
            "ZonePolicy objects".to_owned(),
        ),
    };
    tracing::info!(
        mode,
        workloads,
        policy,
        node = %node_name,
        bpffs_root = %layout.root.display(),
        metrics_addr = %args.metrics.metrics_addr,
        sinks = ?sink_configs.iter().map(|c| format!("{}+{}", c.format, c.transport.name())).collect::<Vec<_>>(),
        map_identity_entries = args.map_identity_entries,
        map_policy_entries = args.map_policy_entries,
        map_conntrack_entries = args.map_conntrack_entries,
        cleanup_on_exit = args.cleanup_on_exit,
        "zonewall agent starting"
    );
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => return fail(1, &format!("cannot start the async runtime: {e}")),
    };
    let capacities = Capacities {
        identity: args.map_identity_entries,
        policy: args.map_policy_entries,
        conntrack: args.map_conntrack_entries,
    };
    if let Err(problem) = capacities.validate() {
        return fail(2, &problem);
    }
    let mut datapath = match Datapath::load_with(&layout, &capacities) {
        Ok(datapath) => datapath,
        Err(e) => return fail(1, &e.to_string()),
    };
    let result = runtime.block_on(async {
        let shutdown = CancellationToken::new();
        let mut registry = Metrics::new();
        let telemetry = Telemetry {
            metrics: AgentMetrics::register(&mut registry, AgentMetricsOptions::default()),
            readiness: Readiness::new(),
        };
        let sink_metrics = SinkMetrics::register(&mut registry);
        let mut sinks = Vec::new();
        for config in &sink_configs {
            let sink = Sink::spawn(config, RuntimeOptions::default(), shutdown.clone())
                .map_err(|e| e.to_string())?;
            tracing::info!(sink = sink.description(), "flow records go to this sink");
            sink_metrics.add_sink(&sink);
            sinks.push((config.clone(), sink));
        }
        let server = MetricsServer::bind(
            args.metrics.metrics_addr,
            Arc::new(registry),
            telemetry.readiness.clone(),
        )
        .await
        .map_err(|e| e.to_string())?;
        let server = tokio::spawn(server.serve(shutdown.child_token()));
        let handles: Vec<_> = sinks.iter().map(|(c, s)| (c.clone(), s.handle())).collect();
        let mut deliver = move |record: FlowRecord| {
            for (config, handle) in &handles {
                let denied = record.class.is_denial();
                if config
                    .filter
                    .accepts(&record.source_zone, &record.destination_zone, denied)
                {
                    // A full queue or an oversize record is counted by the sink itself.
                    let _ = handle.try_send(config.format.format(&record));
                }
            }
        };
        let flows = if sinks.is_empty() {
            None
        } else {
            let reader = datapath.take_events().map_err(|e| e.to_string())?;
            Some(FlowOutput {
                reader,
                node: node_name.clone(),
                consumer: &mut deliver,
            })
        };
        let stop = shutdown_signal();
        let result = match &source {
            Source::Files { inventory, input } => {
                node::run_standalone(&mut datapath, inventory, input, flows, &telemetry, stop)
                    .await
                    .map_err(|e| e.to_string())
            }
            Source::Cluster(options) => match kube::Client::try_default().await {
                Ok(client) => node::kubernetes::run_kubernetes(
                    client,
                    &mut datapath,
                    options,
                    flows,
                    &telemetry,
                    stop,
                )
                .await
                .map_err(|e| e.to_string()),
                Err(e) => Err(format!(
                    "cannot reach the Kubernetes API: {e}; in a pod the service account is used, elsewhere KUBECONFIG"
                )),
            },
        };
        shutdown.cancel();
        let _ = server.await;
        for (_, sink) in sinks {
            sink.join().await;
        }
        result
    });
    let result = result.and_then(|()| {
        if args.cleanup_on_exit {
            let removed = Datapath::cleanup(&layout).map_err(|e| e.to_string())?;
            tracing::info!(removed, "removed the pinned maps and links (--cleanup-on-exit)");
        } else {
            tracing::info!(
                "enforcement continues without the agent (pinned under {}); `zonewall agent --cleanup` removes it",
                layout.root.display()
            );
        }
        Ok(())
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => fail(1, &e),
    }
}

fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|name| name.trim().to_owned())
        .unwrap_or_else(|_| "localhost".to_owned())
}

/// Resolves on SIGINT or SIGTERM. The handlers are installed when this is called (inside the
/// runtime), not when the future is first polled: a signal that arrives while the first
/// policy is being applied must not kill the process half-way.
fn shutdown_signal() -> impl std::future::Future<Output = ()> {
    use tokio::signal::unix::{SignalKind, signal};
    let terminate = signal(SignalKind::terminate());
    let interrupt = signal(SignalKind::interrupt());
    async move {
        match (terminate, interrupt) {
            (Ok(mut terminate), Ok(mut interrupt)) => {
                tokio::select! {
                    _ = terminate.recv() => {}
                    _ = interrupt.recv() => {}
                }
            }
            (Err(e), _) | (_, Err(e)) => {
                tracing::warn!("cannot listen for SIGTERM/SIGINT ({e}); stopping only with Ctrl-C");
                let _ = tokio::signal::ctrl_c().await;
            }
        }
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
