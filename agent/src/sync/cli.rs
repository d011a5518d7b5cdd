//! `zonewall sync` flags, their validation, and the process around the [`Controller`]:
//! runtime, shutdown on SIGINT/SIGTERM, exit codes (0 success, 1 runtime failure, 2 invalid
//! input).

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use clap::{Args, ValueEnum};
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use super::audit::{AuditLog, AuditSink};
use super::kube::KubeTarget;
use super::source::Source;
use super::{Controller, Options, Target, describe_changes};
use crate::firewall::panos::client::{ApiKey, ClientConfig, PanoramaClient, TlsVerification};
use crate::flows::sink::{Records, RuntimeOptions, Sink, SinkConfig, load_sinks};
use crate::metrics::{Metrics, MetricsArgs, MetricsServer, Readiness, SinkMetrics, SyncMetrics};
use crate::policy::resource::Mode;

/// How long `--once` and `--diff` wait for the first complete list of ZonePolicy objects.
const LIST_LIMIT: Duration = Duration::from_secs(60);

#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum ModeArg {
    Enforce,
    Audit,
}

#[derive(Args, Debug)]
#[command(group(clap::ArgGroup::new("source").required(true).args(["panos_config", "panorama_url"])))]
pub struct SyncArgs {
    /// Exported PAN-OS or Panorama configuration XML, watched for changes (instead of
    /// --panorama-url).
    #[arg(long, env = "ZONEWALL_PANOS_CONFIG", value_name = "FILE")]
    pub panos_config: Option<PathBuf>,
    /// Panorama base URL, https://host[:port].
    #[arg(long, env = "ZONEWALL_PANORAMA_URL", value_name = "URL", requires_all = ["api_key_file", "device_group"])]
    pub panorama_url: Option<String>,
    /// File holding the Panorama API key (mounted from a Secret). The key itself is never
    /// accepted as a flag or an environment variable.
    #[arg(
        long,
        env = "ZONEWALL_API_KEY_FILE",
        value_name = "FILE",
        requires = "panorama_url"
    )]
    pub api_key_file: Option<PathBuf>,
    /// PEM bundle of the CA(s) that sign Panorama's certificate; without it the system roots.
    #[arg(
        long,
        env = "ZONEWALL_CA_FILE",
        value_name = "FILE",
        requires = "panorama_url"
    )]
    pub ca_file: Option<PathBuf>,
    /// Do not verify Panorama's certificate. Anyone on the path can then read the API key
    /// and forge the policy; logged as a warning at every start.
    #[arg(
        long,
        env = "ZONEWALL_INSECURE_SKIP_VERIFY",
        requires = "panorama_url",
        conflicts_with = "ca_file"
    )]
    pub insecure_skip_verify: bool,
    /// Device group (Panorama) or vsys (firewall) whose rules apply.
    #[arg(long, env = "ZONEWALL_DEVICE_GROUP", value_name = "DG")]
    pub device_group: Option<String>,
    /// Apply once and exit (for pipelines).
    #[arg(long, env = "ZONEWALL_ONCE", conflicts_with = "diff")]
    pub once: bool,
    /// How often to look for a new commit (or file change): 2s, 500ms, 1m. Each wait is shortened at random by up to 10 %, never lengthened.
    #[arg(long, env = "ZONEWALL_INTERVAL", value_name = "DUR", default_value = "2s", value_parser = parse_duration)]
    pub interval: Duration,
    /// Write the ZonePolicy YAML into this directory (published as one set) instead of the
    /// API server.
    #[arg(long, env = "ZONEWALL_OUTPUT_DIR", value_name = "DIR")]
    pub output_dir: Option<PathBuf>,
    /// Show what the candidate (uncommitted) configuration would change, apply nothing.
    #[arg(long, env = "ZONEWALL_DIFF")]
    pub diff: bool,
    /// Enforce, or Audit (report what would be denied, drop nothing).
    #[arg(long, env = "ZONEWALL_MODE", value_enum, default_value = "enforce")]
    pub mode: ModeArg,
    /// Where audit records go, one JSON line each: `-` for standard output, or a file
    /// (appended).
    #[arg(
        long,
        env = "ZONEWALL_AUDIT_LOG",
        value_name = "FILE|-",
        default_value = "-"
    )]
    pub audit_log: String,
    /// Where audit records also go, formatted for a SIEM (same syntax as the agent's flow
    /// sinks): FORMAT+TRANSPORT://ADDRESS[?options], repeatable; for example
    /// cef+tls://siem.example:6514?ca=/etc/zonewall/ca.pem. filter=all (the default) or
    /// zones:ZONE[,ZONE...]. Several in the environment are separated by spaces.
    #[arg(
        long = "sink",
        env = "ZONEWALL_SINK",
        value_name = "SINK",
        value_delimiter = ' '
    )]
    pub sinks: Vec<String>,
    /// A file of audit sinks, one per line (`#` comments), in addition to --sink.
    #[arg(long, env = "ZONEWALL_SINK_FILE", value_name = "FILE")]
    pub sink_file: Option<PathBuf>,
    /// /metrics, /healthz and /readyz (not served with --once or --diff).
    #[command(flatten)]
    pub metrics: MetricsArgs,
}

/// `500ms`, `2s`, `1m`, or a plain number of seconds.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let (number, unit) = match text.find(|c: char| !c.is_ascii_digit() && c != '.') {
        Some(index) => text.split_at(index),
        None => (text, "s"),
    };
    let value: f64 = number
        .parse()
        .map_err(|_| format!("invalid duration '{text}': use for example 500ms, 2s or 1m"))?;
    let seconds = match unit {
        "ms" => value / 1000.0,
        "s" => value,
        "m" => value * 60.0,
        _ => {
            return Err(format!("invalid duration unit in '{text}': use ms, s or m"));
        }
    };
    if !(0.05..=3600.0).contains(&seconds) {
        return Err(format!("interval '{text}' must be between 50ms and 1h"));
    }
    Ok(Duration::from_secs_f64(seconds))
}

impl SyncArgs {
    /// Checks what clap cannot.
    pub fn validate(&self) -> Result<(), String> {
        if self.panorama_url.is_some() && self.panos_config.is_some() {
            return Err("give either --panos-config FILE or --panorama-url URL, not both".into());
        }
        if self.panorama_url.is_some() && self.device_group.is_none() {
            return Err("--panorama-url needs --device-group DG".into());
        }
        Ok(())
    }

    fn mode(&self) -> Mode {
        match self.mode {
            ModeArg::Enforce => Mode::Enforce,
            ModeArg::Audit => Mode::Audit,
        }
    }
}

fn build_source(args: &SyncArgs) -> Result<Source, (u8, String)> {
    if let Some(path) = &args.panos_config {
        return Ok(Source::file(path.clone()));
    }
    let (Some(url), Some(key_file)) = (&args.panorama_url, &args.api_key_file) else {
        return Err((
            2,
            "give --panos-config FILE, or --panorama-url URL with --api-key-file FILE".into(),
        ));
    };
    let tls = match (&args.ca_file, args.insecure_skip_verify) {
        (Some(ca), _) => TlsVerification::CaBundle(ca.clone()),
        (None, true) => TlsVerification::InsecureSkipVerify,
        (None, false) => TlsVerification::SystemRoots,
    };
    let key = ApiKey::from_file(key_file).map_err(|e| (2, e.to_string()))?;
    let client = PanoramaClient::new(&ClientConfig::new(url.clone(), tls), key)
        .map_err(|e| (2, e.to_string()))?;
    Ok(Source::panorama(client))
}

fn build_audit(path: &str) -> Result<AuditLog, (u8, String)> {
    if path == "-" {
        return Ok(AuditLog::new(Box::new(std::io::stdout())));
    }
    let file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .map_err(|e| {
            (
                1,
                format!("cannot open the audit log {path}: {e}; check --audit-log"),
            )
        })?;
    Ok(AuditLog::new(Box::new(file)))
}

fn fail(code: u8, message: &str) -> ExitCode {
    eprintln!("zonewall: error: {message}");
    ExitCode::from(code)
}

/// Runs `zonewall sync` to completion.
pub fn run_cli(args: SyncArgs) -> ExitCode {
    if let Err(message) = args.validate() {
        return fail(2, &message);
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => return fail(1, &format!("cannot start the async runtime: {e}")),
    };
    runtime.block_on(run(args))
}

/// Starts the audit sinks; they stop (after flushing) when `shutdown` is cancelled.
fn spawn_sinks(
    configs: &[SinkConfig],
    shutdown: &CancellationToken,
) -> Result<Vec<(SinkConfig, Sink)>, String> {
    let mut sinks = Vec::new();
    for config in configs {
        let sink = Sink::spawn(config, RuntimeOptions::default(), shutdown.clone())
            .map_err(|e| e.to_string())?;
        info!(sink = sink.description(), "audit records go to this sink");
        sinks.push((config.clone(), sink));
    }
    Ok(sinks)
}

/// Lets the sinks deliver what is queued, then stops them. Cancelling a sink in the middle
/// of a write would cut it off and send the batch again on a new connection, so the queues
/// are given the shutdown deadline to empty first; what is still left then is counted as
/// dropped by the sink's own shutdown.
async fn stop_sinks(sinks: Vec<(SinkConfig, Sink)>, shutdown: &CancellationToken) {
    let deadline = tokio::time::Instant::now() + RuntimeOptions::default().shutdown_deadline;
    for (_, sink) in &sinks {
        loop {
            let counts = sink.counters().snapshot();
            let settled = counts.offered == counts.delivered + counts.dropped_total();
            if settled || tokio::time::Instant::now() >= deadline {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
    shutdown.cancel();
    for (_, sink) in sinks {
        let description = sink.description().to_owned();
        let counters = std::sync::Arc::clone(sink.counters());
        sink.join().await;
        let counts = counters.snapshot();
        if counts.dropped_total() > 0 {
            warn!(
                sink = %description,
                delivered = counts.delivered,
                dropped = counts.dropped_total(),
                "audit records were dropped by this sink"
            );
        }
    }
}

async fn run(args: SyncArgs) -> ExitCode {
    let sink_configs = match load_sinks(&args.sinks, args.sink_file.as_deref(), Records::Audit) {
        Ok(configs) => configs,
        Err(message) => return fail(2, &message),
    };
    info!(
        source = %args.panos_config.as_ref().map(|p| p.display().to_string()).or_else(|| args.panorama_url.clone()).unwrap_or_default(),
        api_key_file = ?args.api_key_file,
        ca_file = ?args.ca_file,
        insecure_skip_verify = args.insecure_skip_verify,
        device_group = ?args.device_group,
        interval = ?args.interval,
        target = %args.output_dir.as_ref().map_or_else(|| "kubernetes".to_string(), |d| d.display().to_string()),
        once = args.once,
        diff = args.diff,
        mode = ?args.mode,
        audit_log = %args.audit_log,
        // Descriptions without the options: those may name files, never secrets.
        sinks = ?sink_configs.iter().map(|c| format!("{}+{}", c.format, c.transport.name())).collect::<Vec<_>>(),
        sink_file = ?args.sink_file,
        metrics_addr = %args.metrics.metrics_addr,
        "zonewall sync starting"
    );
    if args.insecure_skip_verify {
        warn!(
            "--insecure-skip-verify: Panorama's certificate is NOT verified; the API key and the policy are exposed to anyone on the network path"
        );
    }
    let source = match build_source(&args) {
        Ok(source) => source,
        Err((code, message)) => return fail(code, &message),
    };
    let audit = match build_audit(&args.audit_log) {
        Ok(audit) => audit,
        Err((code, message)) => return fail(code, &message),
    };
    // --diff applies nothing and records nothing: no sinks to start.
    let sink_shutdown = CancellationToken::new();
    let sinks = if args.diff {
        Vec::new()
    } else {
        match spawn_sinks(&sink_configs, &sink_shutdown) {
            Ok(sinks) => sinks,
            Err(message) => return fail(2, &message),
        }
    };
    let audit = Arc::new(
        audit.with_sinks(
            sinks
                .iter()
                .map(|(config, sink)| AuditSink::new(config, sink))
                .collect(),
        ),
    );
    let cancel = CancellationToken::new();
    let target = match &args.output_dir {
        Some(dir) => Target::directory(dir.clone()),
        None => match kube::Client::try_default().await {
            Ok(client) => Target::Kubernetes(Box::new(KubeTarget::new(client))),
            Err(e) => {
                return fail(
                    1,
                    &format!(
                        "cannot reach the Kubernetes API ({e}); run in a pod with a ServiceAccount, set KUBECONFIG, or give --output-dir DIR"
                    ),
                );
            }
        },
    };
    let options = Options {
        device_group: args.device_group.clone(),
        mode: args.mode(),
    };
    let mut controller = Controller::new(source, target, options, audit);
    let needs_watch =
        matches!(controller.target, Target::Kubernetes(_)) && (args.once || args.diff);
    if needs_watch && let Target::Kubernetes(kube) = &controller.target {
        kube.spawn_watch(cancel.child_token());
    }
    if args.diff {
        let result = controller.diff(LIST_LIMIT).await;
        cancel.cancel();
        return match result {
            Ok(changes) => {
                print!("{}", describe_changes(&changes));
                ExitCode::SUCCESS
            }
            Err(error) => fail(error.exit_code(), &error.to_string()),
        };
    }
    if args.once {
        let result = controller.run_once(LIST_LIMIT).await;
        cancel.cancel();
        stop_sinks(sinks, &sink_shutdown).await;
        return match result {
            Ok(report) => {
                eprintln!(
                    "zonewall: sync: {} applied, {} deleted ({} drift remediations)",
                    report.applied, report.deleted, report.remediated
                );
                ExitCode::SUCCESS
            }
            Err(error) => fail(error.exit_code(), &error.to_string()),
        };
    }
    let mut registry = Metrics::new();
    let sync_metrics = SyncMetrics::register(&mut registry);
    let sink_metrics = SinkMetrics::register(&mut registry);
    for (_, sink) in &sinks {
        sink_metrics.add_sink(sink);
    }
    let readiness = Readiness::new();
    let server = match MetricsServer::bind(
        args.metrics.metrics_addr,
        Arc::new(registry),
        readiness.clone(),
    )
    .await
    {
        Ok(server) => server,
        Err(e) => {
            return fail(
                1,
                &format!("{e}; choose another address with --metrics-addr"),
            );
        }
    };
    tokio::spawn(server.serve(cancel.child_token()));
    let controller = controller
        .with_metrics(sync_metrics)
        .with_readiness(readiness);
    let shutdown = cancel.clone();
    tokio::spawn(async move {
        wait_for_signal().await;
        info!("shutting down");
        shutdown.cancel();
    });
    controller.run(args.interval, cancel).await;
    stop_sinks(sinks, &sink_shutdown).await;
    ExitCode::SUCCESS
}

async fn wait_for_signal() {
    let interrupt = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut terminate) => {
                tokio::select! {
                    _ = interrupt => {}
                    _ = terminate.recv() => {}
                }
            }
            Err(_) => {
                let _ = interrupt.await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = interrupt.await;
    }
}
