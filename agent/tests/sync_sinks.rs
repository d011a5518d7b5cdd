//! Audit records of `zonewall sync` through the flow-record sinks: a Panorama commit applied
//! and a drift remediation reach an octet-counting TCP receiver on loopback as CEF, with the
//! commit and the rules, never the API key; the command line takes `--sink` and
//! `ZONEWALL_SINK` like the agent and refuses filters that select flows.

mod sync_common;

// The client's own HTTPS stand-in, shared rather than written twice.
#[expect(
    dead_code,
    reason = "the client's tests use helpers these tests do not"
)]
#[path = "../src/firewall/panos/client/stand_in.rs"]
mod stand_in;

use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use stand_in::{Recorded, Reply, StandIn};
use sync_common::fake_api::FakeApi;
use sync_common::*;
use tokio::io::AsyncReadExt as _;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use zonewall::firewall::panos::client::{
    ApiKey, ClientConfig, PanoramaClient, RetryPolicy, TlsVerification,
};
use zonewall::flows::sink::framing::FrameDecoder;
use zonewall::flows::sink::{Records, RuntimeOptions, Sink, SinkConfig};
use zonewall::metrics::{ExpositionFormat, Metrics, SinkMetrics};
use zonewall::policy::resource::Mode;
use zonewall::sync::kube::KubeTarget;
use zonewall::sync::{AuditLog, AuditSink, Controller, Options, Source, Target};

const KEY: &str = "LUFRPT1sinkTESTkey0123456789abcdef==";
/// Panorama text an attacker with commit rights controls: CEF separators, a line break.
const ADMIN: &str = "ali|ce=x\\y";
const DESCRIPTION: &str = "open dmz\nweb | a=b";

type Received = Arc<Mutex<Vec<String>>>;

/// An octet-counting (RFC 6587) receiver on 127.0.0.1: every frame of every connection.
async fn tcp_receiver(stop: CancellationToken) -> (u16, Received) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let port = listener.local_addr().expect("address").port();
    let received: Received = Arc::default();
    let frames = Arc::clone(&received);
    tokio::spawn(async move {
        loop {
            let (mut stream, _) = tokio::select! {
                () = stop.cancelled() => return,
                accepted = listener.accept() => accepted.expect("accept"),
            };
            let frames = Arc::clone(&frames);
            tokio::spawn(async move {
                let mut decoder = FrameDecoder::new(1 << 20);
                let mut buffer = vec![0u8; 16 * 1024];
                loop {
                    let read = match stream.read(&mut buffer).await {
                        Ok(0) | Err(_) => return,
                        Ok(read) => read,
                    };
                    decoder.push(&buffer[..read]);
                    while let Some(frame) = decoder.next_frame().expect("valid framing") {
                        let text = String::from_utf8(frame).expect("UTF-8");
                        frames.lock().expect("frames").push(text);
                    }
                }
            });
        }
    });
    (port, received)
}

/// The CEF extension of a line as (key, unescaped value) pairs: a key is the word before an
/// unescaped `=`, its value runs to the space before the next key.
fn cef_pairs(line: &str) -> Vec<(String, String)> {
    let extension = line.splitn(8, '|').nth(7).unwrap_or_default();
    let bytes = extension.as_bytes();
    let mut separators = Vec::new();
    let mut index = 0;
    while index < bytes.len() {
        match bytes[index] {
            b'\\' => index += 2,
            b'=' => {
                separators.push(index);
                index += 1;
            }
            _ => index += 1,
        }
    }
    let key_start = |equals: usize| extension[..equals].rfind(' ').map_or(0, |space| space + 1);
    let mut pairs = Vec::new();
    for (position, &equals) in separators.iter().enumerate() {
        let key = &extension[key_start(equals)..equals];
        let value_end = separators
            .get(position + 1)
            .map_or(extension.len(), |&next| key_start(next).saturating_sub(1));
        let raw = &extension[equals + 1..value_end];
        let mut value = String::new();
        let mut chars = raw.chars();
        while let Some(c) = chars.next() {
            match (c, c == '\\') {
                (_, true) => match chars.next() {
                    Some('n') => value.push('\n'),
                    Some('r') => value.push('\r'),
                    Some(other) => value.push(other),
                    None => {}
                },
                (c, false) => value.push(c),
            }
        }
        pairs.push((key.to_string(), value));
    }
    pairs
}

/// The value of CEF extension key `key`, unescaped.
fn cef_field(line: &str, key: &str) -> Option<String> {
    cef_pairs(line)
        .into_iter()
        .find_map(|(name, value)| (name == key).then_some(value))
}

/// (signature, name, severity) of a CEF line.
fn cef_header(line: &str) -> (String, String, String) {
    let fields: Vec<&str> = line.splitn(8, '|').collect();
    (
        fields[4].to_string(),
        fields[5].to_string(),
        fields[6].to_string(),
    )
}

struct Panorama {
    version: u64,
    running: String,
}

fn answer(panorama: &Panorama, request: &Recorded) -> Reply {
    match (
        request.form("type").as_deref(),
        request.form("action").as_deref(),
    ) {
        (Some("op"), _) if request.form("cmd").is_some_and(|cmd| cmd.contains("audit")) => {
            let mut entries = String::new();
            let escape = |text: &str| {
                text.replace('&', "&amp;")
                    .replace('<', "&lt;")
                    .replace('>', "&gt;")
            };
            for version in 1..=panorama.version {
                entries.push_str(&format!(
                    "<entry name=\"{version}\"><date>2026/11/28 01:0{version}:00</date><admin>{}</admin><description>{}</description></entry>",
                    escape(ADMIN),
                    escape(DESCRIPTION)
                ));
            }
            Reply::xml(
                200,
                &format!("<response status=\"success\"><result>{entries}</result></response>"),
            )
        }
        (Some("config"), Some("show")) => {
            let inner: Vec<&str> = panorama
                .running
                .lines()
                .filter(|line| !line.starts_with("<?xml"))
                .collect();
            Reply::xml(
                200,
                &format!(
                    "<response status=\"success\"><result>{}</result></response>",
                    inner.join("\n")
                ),
            )
        }
        _ => Reply::xml(
            200,
            "<response status=\"error\" code=\"12\"><msg><line>Invalid command</line></msg></response>",
        ),
    }
}

async fn eventually(limit: Duration, what: &str, mut condition: impl FnMut() -> bool) {
    let started = Instant::now();
    while !condition() {
        assert!(started.elapsed() < limit, "timed out waiting for: {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn an_apply_and_a_remediation_reach_a_tcp_sink_as_cef() {
    let stop = CancellationToken::new();
    let (port, received) = tcp_receiver(stop.clone()).await;

    let panorama = Arc::new(Mutex::new(Panorama {
        version: 1,
        running: config_v1(),
    }));
    let served = Arc::clone(&panorama);
    let stand_in =
        StandIn::start(move |request, _| answer(&served.lock().expect("state"), request)).await;
    let mut client_config = ClientConfig::new(
        stand_in.url(),
        TlsVerification::CaBundle(stand_in.ca_file()),
    );
    client_config.retry = RetryPolicy {
        max_attempts: 2,
        initial_backoff: Duration::from_millis(10),
        max_backoff: Duration::from_millis(20),
    };
    client_config.use_env_proxy = false;
    let client = PanoramaClient::new(&client_config, ApiKey::new(KEY)).expect("client");

    let sink_url = format!("cef+tcp://127.0.0.1:{port}");
    let sink_config = SinkConfig::parse_for(&sink_url, Records::Audit).expect("sink");
    let sink_shutdown = CancellationToken::new();
    let sink = Sink::spawn(
        &sink_config,
        RuntimeOptions::default(),
        sink_shutdown.clone(),
    )
    .expect("sink");
    let mut registry = Metrics::new();
    SinkMetrics::register(&mut registry).add_sink(&sink);
    let lines = AuditBuffer::default();
    let audit = Arc::new(
        AuditLog::new(Box::new(lines.clone()))
            .with_sinks(vec![AuditSink::new(&sink_config, &sink)]),
    );

    let api = FakeApi::default();
    let sync = Controller::new(
        Source::panorama(client),
        Target::Kubernetes(Box::new(KubeTarget::new(api.client()))),
        Options {
            device_group: Some("vsys1".into()),
            mode: Mode::Enforce,
        },
        audit,
    );
    let cancel = CancellationToken::new();
    tokio::spawn(sync.run(Duration::from_millis(200), cancel.clone()));

    let records = || received.lock().expect("frames").clone();
    eventually(Duration::from_secs(10), "four applies at the sink", || {
        records().len() >= 4
    })
    .await;

    // Drift: someone widens the controller's trust object.
    let trust = api
        .names()
        .into_iter()
        .find(|name| name.starts_with("firewall-trust"))
        .expect("trust object");
    let original = api.object(&trust).expect("object");
    let mut edited = original.clone();
    edited["spec"]["egress"] = json!([{"action": "Allow", "ruleType": "Universal",
        "peerZones": ["any"], "source": {"any": true}, "destination": {"any": true},
        "service": {"any": true}, "log": {"start": false, "end": false}}]);
    api.user_write(edited);
    eventually(
        Duration::from_secs(5),
        "the remediation at the sink",
        || records().len() >= 5,
    )
    .await;
    cancel.cancel();

    let records = records();
    let applies: Vec<&String> = records
        .iter()
        .filter(|line| cef_header(line).0 == "config-apply")
        .collect();
    assert_eq!(applies.len(), 4, "{records:#?}");
    for line in &applies {
        assert_eq!(
            cef_header(line),
            ("config-apply".into(), "CONFIG".into(), "3".into())
        );
        assert_eq!(cef_field(line, "act").as_deref(), Some("create"));
        assert_eq!(cef_field(line, "outcome").as_deref(), Some("success"));
        assert_eq!(cef_field(line, "suser").as_deref(), Some(ADMIN));
        assert_eq!(cef_field(line, "cn1").as_deref(), Some("1"));
        assert_eq!(cef_field(line, "cs3").as_deref(), Some(DESCRIPTION));
        assert_eq!(cef_field(line, "cs5").as_deref(), Some("vsys1"));
        assert_eq!(
            cef_field(line, "cs6").as_deref(),
            Some("2026/11/28 01:01:00")
        );
    }
    let dmz = applies
        .iter()
        .find(|line| cef_field(line, "cs4").as_deref() == Some("dmz"))
        .expect("the dmz apply");
    assert!(
        cef_field(dmz, "cs1").is_some_and(|rules| rules.contains("allow-web")),
        "{dmz}"
    );

    let remediation = records
        .iter()
        .find(|line| cef_header(line).0 == "config-remediation")
        .expect("a remediation record");
    assert_eq!(cef_header(remediation).2, "6", "{remediation}");
    assert_eq!(cef_field(remediation, "act").as_deref(), Some("restore"));
    assert_eq!(
        cef_field(remediation, "cs2").as_deref(),
        Some(trust.as_str())
    );
    assert_eq!(cef_field(remediation, "cs4").as_deref(), Some("trust"));
    assert_eq!(
        cef_field(remediation, "ZonewallRemediation").as_deref(),
        Some("true")
    );
    assert!(
        cef_field(remediation, "ZonewallChangedBy").is_some_and(|by| by.contains("kubectl-edit")),
        "{remediation}"
    );
    assert_ne!(
        cef_field(remediation, "ZonewallPreviousSpecHash"),
        cef_field(remediation, "ZonewallSpecHash")
    );

    // One CEF record per JSON line, and no secret anywhere.
    assert_eq!(lines.records().len(), records.len());
    for line in &records {
        assert!(!line.contains(KEY), "the API key reached a record: {line}");
        assert!(!line.contains('\n'), "{line:?}");
    }
    assert!(!lines.text().contains(KEY));

    let text = registry
        .encode(ExpositionFormat::PrometheusText)
        .expect("encode");
    let delivered = format!(
        "zonewall_sink_records_delivered_total{{sink=\"cef+tcp://127.0.0.1:{port}\"}} {}",
        records.len()
    );
    assert!(
        text.contains(&delivered),
        "missing {delivered:?} in\n{text}"
    );
    sink_shutdown.cancel();
    sink.join().await;
    stop.cancel();
}

/// Frames received on a TCP port from another process, until `count` arrived or `limit`.
fn receive_blocking(listener: std::net::TcpListener, count: usize, limit: Duration) -> Vec<String> {
    use std::io::Read as _;
    listener.set_nonblocking(false).expect("blocking");
    let started = Instant::now();
    let (mut stream, _) = listener.accept().expect("the sink connects");
    stream
        .set_read_timeout(Some(Duration::from_millis(200)))
        .expect("timeout");
    let mut decoder = FrameDecoder::new(1 << 20);
    let mut frames = Vec::new();
    let mut buffer = vec![0u8; 16 * 1024];
    while frames.len() < count && started.elapsed() < limit {
        match stream.read(&mut buffer) {
            Ok(0) => break,
            Ok(read) => decoder.push(&buffer[..read]),
            Err(_) => continue,
        }
        while let Some(frame) = decoder.next_frame().expect("framing") {
            frames.push(String::from_utf8(frame).expect("UTF-8"));
        }
    }
    frames
}

#[test]
fn the_command_line_sends_audit_records_to_its_sinks_and_refuses_flow_filters() {
    let temp = tempfile::tempdir().expect("temp dir");
    let config = temp.path().join("panos.xml");
    let out = temp.path().join("policies");
    let copy = temp.path().join("audit.jsonl");
    std::fs::write(&config, config_v1()).expect("write config");
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().expect("address").port();
    let receiver =
        std::thread::spawn(move || receive_blocking(listener, 4, Duration::from_secs(20)));

    // Two sinks through the environment, space separated, as for the agent.
    let output = Command::new(env!("CARGO_BIN_EXE_zonewall"))
        .args(["sync", "--once", "--panos-config"])
        .arg(&config)
        .arg("--output-dir")
        .arg(&out)
        .env(
            "ZONEWALL_SINK",
            format!("cef+tcp://127.0.0.1:{port} json+file://{}", copy.display()),
        )
        .env("ZONEWALL_LOG", "warn")
        .output()
        .expect("run zonewall");
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let frames = receiver.join().expect("receiver");
    assert_eq!(frames.len(), 4, "{frames:#?}");
    assert!(
        frames
            .iter()
            .all(|frame| frame.contains("|config-apply|CONFIG|3|") && frame.contains("act=create")),
        "{frames:#?}"
    );
    // --once waits for its sinks: the file holds exactly the JSON lines of standard output.
    let stdout = String::from_utf8(output.stdout).expect("UTF-8");
    assert_eq!(
        std::fs::read_to_string(&copy).expect("the file sink wrote"),
        stdout
    );
    let lines: Vec<Value> = stdout
        .lines()
        .map(|line| serde_json::from_str(line).expect("JSON"))
        .collect();
    assert_eq!(lines.len(), 4);

    let refused = Command::new(env!("CARGO_BIN_EXE_zonewall"))
        .args(["sync", "--once", "--panos-config"])
        .arg(&config)
        .arg("--output-dir")
        .arg(&out)
        .args(["--sink", "cef+stdout?filter=denies"])
        .env("ZONEWALL_LOG", "warn")
        .output()
        .expect("run zonewall");
    assert_eq!(refused.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(
        stderr.contains("filter") && stderr.contains("selects flow records"),
        "{stderr}"
    );
}
