//! The metrics server over real TCP on loopback: probes, both expositions, graceful
//! shutdown, bind errors, and `promtool check metrics` (Debian's prometheus package) on what
//! a scrape returns.

use std::io::Write as _;
use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;
use tokio_util::sync::CancellationToken;
use zonewall::flows::sink::{RuntimeOptions, Sink, SinkConfig, SinkCounters};
use zonewall::metrics::{
    AgentMetrics, AgentMetricsOptions, DriftAction, FlowVerdict, Metrics, MetricsServer,
    NOT_READY_INITIAL, Readiness, ReconcileErrorKind, RuleHit, ServerError, SinkMetrics,
    SyncErrorKind, SyncMetrics,
};

const OPENMETRICS_ACCEPT: &str = "application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1";

struct HttpResponse {
    status: u16,
    headers: Vec<(String, String)>,
    body: String,
}

impl HttpResponse {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(key, _)| key.eq_ignore_ascii_case(name))
            .map(|(_, value)| value.as_str())
    }
}

async fn get(addr: SocketAddr, path: &str, accept: Option<&str>) -> HttpResponse {
    request(addr, "GET", path, accept).await
}

/// One HTTP/1.1 request on a fresh connection, read until the server closes it.
async fn request(addr: SocketAddr, method: &str, path: &str, accept: Option<&str>) -> HttpResponse {
    let mut stream = TcpStream::connect(addr).await.expect("connect");
    let accept = accept
        .map(|value| format!("Accept: {value}\r\n"))
        .unwrap_or_default();
    let request =
        format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\n{accept}Connection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await.expect("send");
    let mut raw = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut raw))
        .await
        .expect("response within 10 s")
        .expect("read");
    parse_response(&raw)
}

fn parse_response(raw: &[u8]) -> HttpResponse {
    let text = String::from_utf8(raw.to_vec()).expect("UTF-8 response");
    let (head, body) = text.split_once("\r\n\r\n").expect("header end");
    let mut lines = head.split("\r\n");
    let status_line = lines.next().expect("status line");
    let status = status_line
        .split(' ')
        .nth(1)
        .and_then(|code| code.parse().ok())
        .unwrap_or_else(|| panic!("bad status line {status_line:?}"));
    let headers = lines
        .map(|line| {
            let (key, value) = line.split_once(':').expect("header");
            (key.trim().to_owned(), value.trim().to_owned())
        })
        .collect();
    HttpResponse {
        status,
        headers,
        body: body.to_owned(),
    }
}

/// Whether promtool can run; without it the test fails under `ZONEWALL_REQUIRE_PRIVILEGED=1`
/// and is reported as skipped otherwise.
fn promtool_available(test: &str) -> bool {
    let installed = Command::new("promtool")
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|status| status.success());
    if installed {
        return true;
    }
    if std::env::var("ZONEWALL_REQUIRE_PRIVILEGED").as_deref() == Ok("1") {
        panic!(
            "ZONEWALL_REQUIRE_PRIVILEGED=1 but promtool is not installed; run cargo xtask setup"
        );
    }
    // Straight to stdout: libtest captures `println!` of passing tests, and
    // `cargo xtask test` counts these lines as skips.
    let line = format!("SKIPPED {test}: promtool not installed; run cargo xtask setup\n");
    let _ = std::io::stdout().write_all(line.as_bytes());
    false
}

/// The strict OpenMetrics parser of the Python client library (Debian's
/// python3-prometheus-client): what a Prometheus server scrapes is OpenMetrics, which the
/// promtool of Debian 12 does not parse.
const OPENMETRICS_PYTHON: &str = "/usr/bin/python3";
const OPENMETRICS_PARSE: &str = "import sys\nfrom prometheus_client.openmetrics.parser import text_string_to_metric_families\nprint(len(list(text_string_to_metric_families(sys.stdin.read()))))";

fn openmetrics_parser_available(test: &str) -> bool {
    let installed = Command::new(OPENMETRICS_PYTHON)
        .args(["-c", "import prometheus_client.openmetrics.parser"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|status| status.success());
    if installed {
        return true;
    }
    if std::env::var("ZONEWALL_REQUIRE_PRIVILEGED").as_deref() == Ok("1") {
        panic!(
            "ZONEWALL_REQUIRE_PRIVILEGED=1 but python3-prometheus-client is not installed; run cargo xtask setup"
        );
    }
    let line =
        format!("SKIPPED {test}: python3-prometheus-client not installed; run cargo xtask setup\n");
    let _ = std::io::stdout().write_all(line.as_bytes());
    false
}

/// Parses `exposition` as OpenMetrics: the number of families, or the parser's complaint.
fn openmetrics_parse(exposition: &str) -> Result<usize, String> {
    let output = run_with_stdin(
        Command::new(OPENMETRICS_PYTHON).args(["-c", OPENMETRICS_PARSE]),
        exposition,
    );
    let stdout = String::from_utf8_lossy(&output.stdout);
    if output.status.success() {
        stdout
            .trim()
            .parse()
            .map_err(|_| format!("unexpected output {stdout:?}"))
    } else {
        Err(String::from_utf8_lossy(&output.stderr).into_owned())
    }
}

fn run_with_stdin(command: &mut Command, input: &str) -> std::process::Output {
    let mut child = command
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start the checker");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(input.as_bytes())
        .expect("write to the checker");
    child.wait_with_output().expect("checker output")
}

/// `promtool check metrics` on `exposition`: success, and what it printed.
fn promtool_check(exposition: &str) -> (bool, String) {
    let output = run_with_stdin(
        Command::new("promtool").args(["check", "metrics"]),
        exposition,
    );
    let printed = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    (output.status.success(), printed)
}

/// Every subsystem registered and every family fed, including a hostile zone name.
fn populated() -> (Metrics, SinkMetrics) {
    let mut metrics = Metrics::new();
    let agent = AgentMetrics::register(&mut metrics, AgentMetricsOptions::default());
    let sinks = SinkMetrics::register(&mut metrics);
    let sync = SyncMetrics::register(&mut metrics);
    sinks.add(
        "cef+tls://siem.example:6514",
        Arc::new(SinkCounters::default()),
        4096,
    );

    agent.record_flows("dmz", "trusted", FlowVerdict::Allow, 1, 12);
    agent.record_flows("untrust", "dmz", FlowVerdict::Deny, 4, 4);
    agent.record_flows("zone \"x\"\\\n", "dmz", FlowVerdict::Drop, 1, 1);
    agent.set_rule_hits([
        RuleHit {
            policy: "firewall-prod",
            rule: "allow-web",
            packets: 12,
            bytes: 9000,
        },
        RuleHit {
            policy: "firewall-prod",
            rule: "deny-all",
            packets: 4,
            bytes: 240,
        },
    ]);
    agent.record_compile(Duration::from_millis(4));
    agent.record_apply(Duration::from_millis(9), 3);
    agent.set_map_usage("ZW_POLICY", 10, 65_536);
    agent.set_ring_buffer_lost(0);
    agent.set_kernel_dropped("malformed", 2);
    agent.record_reconcile_error(ReconcileErrorKind::Watch);
    agent.set_apiserver_reachable(true);
    sync.record_sync_success(std::time::SystemTime::now());
    sync.record_commit_applied(Duration::from_millis(2100));
    sync.record_objects(5, 1);
    sync.record_drift_remediation(DriftAction::Deleted);
    sync.record_error(SyncErrorKind::Panorama);
    (metrics, sinks)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_server_over_tcp_probes_scrape_and_shutdown() {
    let (metrics, sinks) = populated();
    // A real sink, writing to a file: its own counters are what /metrics shows.
    let directory = tempfile::tempdir().expect("temporary directory");
    let flows_file = directory.path().join("flows.jsonl");
    let config: SinkConfig = format!("json+file://{}?queue=8", flows_file.display())
        .parse()
        .expect("sink URL");
    let sink_shutdown = CancellationToken::new();
    let sink =
        Sink::spawn(&config, RuntimeOptions::default(), sink_shutdown.clone()).expect("file sink");
    sinks.add_sink(&sink);
    let sink_label = format!("sink=\"{}\"", sink.description());
    let readiness = Readiness::new();
    let server = MetricsServer::bind(
        "127.0.0.1:0".parse().expect("address"),
        Arc::new(metrics),
        readiness.clone(),
    )
    .await
    .expect("bind on loopback");
    let addr = server.local_addr();
    assert_ne!(addr.port(), 0);
    let shutdown = CancellationToken::new();
    let serving = tokio::spawn(server.serve(shutdown.child_token()));

    let health = get(addr, "/healthz", None).await;
    assert_eq!(health.status, 200);
    assert_eq!(health.body, "ok\n");

    let not_ready = get(addr, "/readyz", None).await;
    assert_eq!(not_ready.status, 503);
    assert_eq!(not_ready.body, format!("not ready: {NOT_READY_INITIAL}\n"));
    readiness.set_ready();
    let ready = get(addr, "/readyz", None).await;
    assert_eq!(ready.status, 200);
    assert_eq!(ready.body, "ready\n");

    assert_eq!(get(addr, "/nothing", None).await.status, 404);
    let post = request(addr, "POST", "/metrics", None).await;
    assert_eq!(post.status, 405);
    assert_eq!(post.header("allow"), Some("GET, HEAD"));
    let head = request(addr, "HEAD", "/metrics", None).await;
    assert_eq!(head.status, 200);
    assert!(head.body.is_empty(), "HEAD answered with a body");
    assert!(
        head.header("content-length")
            .and_then(|length| length.parse::<usize>().ok())
            .is_some_and(|length| length > 0),
        "{:?}",
        head.headers
    );

    // What a Prometheus server gets.
    let openmetrics = get(addr, "/metrics", Some(OPENMETRICS_ACCEPT)).await;
    assert_eq!(openmetrics.status, 200);
    assert_eq!(
        openmetrics.header("content-type"),
        Some("application/openmetrics-text; version=1.0.0; charset=utf-8")
    );
    assert!(openmetrics.body.ends_with("# EOF\n"));
    assert!(openmetrics.body.contains("# TYPE zonewall_flows counter\n"));
    assert!(openmetrics.body.contains(&format!(
        "zonewall_sink_records_delivered_total{{{sink_label}}} 0\n"
    )));
    assert!(
        openmetrics
            .body
            .contains(&format!("zonewall_sink_queue_capacity{{{sink_label}}} 8\n")),
        "{}",
        openmetrics.body
    );

    if openmetrics_parser_available("metrics_server_over_tcp_probes_scrape_and_shutdown") {
        let declared = openmetrics.body.matches("\n# TYPE ").count()
            + usize::from(openmetrics.body.starts_with("# TYPE "));
        assert_eq!(
            openmetrics_parse(&openmetrics.body),
            Ok(declared),
            "{}",
            openmetrics.body
        );
    }

    // The sink delivers a record; the next scrape reads its counters.
    sink.handle()
        .try_send("{\"event\":\"test\"}".to_owned())
        .expect("queued");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while sink.counters().delivered() < 1 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "record not delivered"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let text = get(addr, "/metrics", None).await;
    assert_eq!(text.status, 200);
    assert_eq!(
        text.header("content-type"),
        Some("text/plain; version=0.0.4; charset=utf-8")
    );
    assert!(
        text.body.contains(&format!(
            "zonewall_sink_records_delivered_total{{{sink_label}}} 1\n"
        )),
        "{}",
        text.body
    );
    assert!(
        text.body
            .contains("zonewall_flows_total{source_zone=\"dmz\",destination_zone=\"trusted\",verdict=\"allow\"} 1\n"),
        "{}",
        text.body
    );

    if promtool_available("metrics_server_over_tcp_probes_scrape_and_shutdown") {
        let (clean, printed) = promtool_check(&text.body);
        assert!(
            clean && printed.trim().is_empty(),
            "promtool check metrics found problems:\n{printed}\nin:\n{}",
            text.body
        );
    }

    // An idle keep-alive connection must not hold the shutdown up to its grace period.
    let mut idle = TcpStream::connect(addr).await.expect("connect");
    idle.write_all(format!("GET /healthz HTTP/1.1\r\nHost: {addr}\r\n\r\n").as_bytes())
        .await
        .expect("send");
    let mut first = [0u8; 12];
    idle.read_exact(&mut first).await.expect("response");
    assert_eq!(&first, b"HTTP/1.1 200");

    shutdown.cancel();
    tokio::time::timeout(Duration::from_secs(3), serving)
        .await
        .expect("server stops within 3 s of cancellation")
        .expect("server task");
    assert!(
        TcpStream::connect(addr).await.is_err(),
        "still accepting after shutdown"
    );
    sink_shutdown.cancel();
    sink.join().await;
}

/// The promtool check above can fail: the same tool rejects a broken exposition.
#[test]
fn metrics_promtool_rejects_a_broken_exposition() {
    if !promtool_available("metrics_promtool_rejects_a_broken_exposition") {
        return;
    }
    let broken = "# HELP zonewall_flows Flows.\n# TYPE zonewall_flows counter\nzonewall_flows 3\n";
    let (clean, printed) = promtool_check(broken);
    assert!(!clean, "promtool accepted a counter without _total");
    assert!(printed.contains("_total"), "{printed}");
    // And a real exposition of the same registry is accepted: the difference is the name.
    let (metrics, _) = populated();
    let text = metrics
        .encode(zonewall::metrics::ExpositionFormat::PrometheusText)
        .expect("encodes");
    let (clean, printed) = promtool_check(&text);
    assert!(clean, "{printed}");
}

#[tokio::test]
async fn metrics_server_bind_error_names_the_address_and_the_flag() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = taken.local_addr().expect("address");
    let error = MetricsServer::bind(addr, Arc::new(Metrics::new()), Readiness::new())
        .await
        .expect_err("the port is taken");
    let ServerError::Bind { addr: reported, .. } = &error;
    assert_eq!(*reported, addr);
    let message = error.to_string();
    assert!(message.contains(&addr.to_string()), "{message}");
    assert!(message.contains("--metrics-addr"), "{message}");
    assert!(message.contains("another process"), "{message}");
}

/// The OpenMetrics check above can fail: the parser rejects an exposition without `# EOF`
/// and a counter sample without `_total`.
#[test]
fn metrics_openmetrics_parser_rejects_broken_expositions() {
    if !openmetrics_parser_available("metrics_openmetrics_parser_rejects_broken_expositions") {
        return;
    }
    let (metrics, _) = populated();
    let text = metrics
        .encode(zonewall::metrics::ExpositionFormat::OpenMetrics)
        .expect("encodes");
    assert!(openmetrics_parse(&text).is_ok());
    let without_eof = text.replace("# EOF\n", "");
    assert!(openmetrics_parse(&without_eof).is_err());
    let broken = "# TYPE zonewall_flows counter\nzonewall_flows 3\n# EOF\n";
    assert!(openmetrics_parse(broken).is_err());
}
