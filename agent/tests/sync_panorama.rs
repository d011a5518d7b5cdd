//! `zonewall sync` against a Panorama stand-in (HTTPS on 127.0.0.1 serving XML API response
//! shapes): commits noticed through the config audit op command, the running configuration
//! fetched only then, unreachable and truncated answers changing nothing, `--diff` against
//! the candidate configuration.

mod sync_common;

// The client's own HTTPS stand-in, shared rather than written twice.
#[expect(
    dead_code,
    reason = "the client's tests use helpers these tests do not"
)]
#[path = "../src/firewall/panos/client/stand_in.rs"]
mod stand_in;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use stand_in::{Recorded, Reply, StandIn};
use sync_common::*;
use zonewall::firewall::panos::client::{
    ApiKey, ClientConfig, PanoramaClient, RetryPolicy, TlsVerification,
};
use zonewall::policy::load::load_dir;
use zonewall::policy::resource::Mode;
use zonewall::sync::{ChangeKind, Controller, Options, Source, SyncError, Target};

const KEY: &str = "LUFRPT1syncTESTkey0123456789abcdef==";

/// What the stand-in serves.
struct Panorama {
    /// Newest committed config version; 0: none yet.
    version: u64,
    admin: &'static str,
    description: &'static str,
    running: String,
    candidate: String,
    down: bool,
    /// Announce the running configuration's full length, send half, close.
    truncate: bool,
}

fn inner(config: &str) -> String {
    // The document inside <result> has no XML declaration.
    config
        .lines()
        .filter(|line| !line.starts_with("<?xml"))
        .collect::<Vec<_>>()
        .join("\n")
}

fn answer(panorama: &Panorama, request: &Recorded) -> Reply {
    if panorama.down {
        return Reply::xml(503, "<html><body>503 Service Unavailable</body></html>");
    }
    match (
        request.form("type").as_deref(),
        request.form("action").as_deref(),
    ) {
        (Some("op"), _) if request.form("cmd").is_some_and(|cmd| cmd.contains("audit")) => {
            let mut entries = String::new();
            for version in 1..=panorama.version {
                entries.push_str(&format!(
                    "<entry name=\"{version}\"><date>2026/11/28 01:0{}:00</date><admin>{}</admin><description>{}</description></entry>",
                    version % 10,
                    panorama.admin,
                    panorama.description
                ));
            }
            Reply::xml(
                200,
                &format!("<response status=\"success\"><result>{entries}</result></response>"),
            )
        }
        (Some("config"), Some(action)) => {
            let config = if action == "get" {
                &panorama.candidate
            } else {
                &panorama.running
            };
            let body = format!(
                "<response status=\"success\"><result>{}</result></response>",
                inner(config)
            );
            if panorama.truncate && action == "show" {
                Reply::Truncated {
                    body: body[..body.len() / 2].to_string(),
                    declared_len: body.len(),
                }
            } else {
                Reply::xml(200, &body)
            }
        }
        _ => Reply::xml(
            200,
            "<response status=\"error\" code=\"12\"><msg><line>Invalid command</line></msg></response>",
        ),
    }
}

struct Setup {
    panorama: Arc<Mutex<Panorama>>,
    stand_in: StandIn,
    _temp: tempfile::TempDir,
    out: std::path::PathBuf,
    audit: AuditBuffer,
    sync: Controller,
}

async fn setup() -> Setup {
    let panorama = Arc::new(Mutex::new(Panorama {
        version: 1,
        admin: "alice",
        description: "open dmz web",
        running: config_v1(),
        candidate: config_v1(),
        down: false,
        truncate: false,
    }));
    let served = Arc::clone(&panorama);
    let stand_in =
        StandIn::start(move |request, _| answer(&served.lock().expect("panorama state"), request))
            .await;
    let mut config = ClientConfig::new(
        stand_in.url(),
        TlsVerification::CaBundle(stand_in.ca_file()),
    );
    config.connect_timeout = Duration::from_secs(5);
    config.request_timeout = Duration::from_secs(5);
    config.retry = RetryPolicy {
        max_attempts: 2,
        initial_backoff: Duration::from_millis(10),
        max_backoff: Duration::from_millis(20),
    };
    config.use_env_proxy = false;
    let client = PanoramaClient::new(&config, ApiKey::new(KEY)).expect("client");
    let temp = tempfile::tempdir().expect("temp dir");
    let out = temp.path().join("policies");
    let audit = AuditBuffer::default();
    let sync = Controller::new(
        Source::panorama(client),
        Target::directory(out.clone()),
        Options {
            device_group: Some("vsys1".into()),
            mode: Mode::Enforce,
        },
        audit.log(),
    );
    Setup {
        panorama,
        stand_in,
        _temp: temp,
        out,
        audit,
        sync,
    }
}

/// The same Panorama source, writing into the mock API server instead of a directory.
fn into_cluster(
    sync: Controller,
    api: &sync_common::fake_api::FakeApi,
    audit: &AuditBuffer,
    device_group: &str,
) -> Controller {
    let Source::Panorama(source) = sync.source else {
        unreachable!("setup builds a Panorama source")
    };
    Controller::new(
        Source::Panorama(source),
        Target::Kubernetes(Box::new(zonewall::sync::kube::KubeTarget::new(
            api.client(),
        ))),
        Options {
            device_group: Some(device_group.into()),
            mode: Mode::Enforce,
        },
        audit.log(),
    )
}

fn count(stand_in: &StandIn, kind: &str) -> usize {
    stand_in
        .requests()
        .iter()
        .filter(|request| match kind {
            "audit" => request.form("cmd").is_some_and(|cmd| cmd.contains("audit")),
            action => request.form("action").as_deref() == Some(action),
        })
        .count()
}

fn zones(dir: &std::path::Path) -> Vec<String> {
    let mut zones: Vec<String> = load_dir(dir)
        .expect("loads")
        .into_iter()
        .map(|policy| policy.spec.zone)
        .collect();
    zones.sort();
    zones
}

#[tokio::test]
async fn a_commit_is_applied_and_the_config_fetched_only_when_it_changed() {
    let Setup {
        panorama,
        stand_in,
        out,
        audit,
        mut sync,
        ..
    } = setup().await;

    assert!(sync.refresh().await.expect("first commit"));
    assert_eq!(sync.reconcile().await.applied, 4);
    let created = audit.of("create");
    assert_eq!(created.len(), 4);
    assert_eq!(created[0]["commit"]["id"], 1);
    assert_eq!(created[0]["commit"]["admin"], "alice");
    assert_eq!(created[0]["commit"]["description"], "open dmz web");
    assert_eq!(created[0]["device_group"], "vsys1");
    let policies = load_dir(&out).expect("loads");
    assert!(policies.iter().all(|policy| {
        policy
            .spec
            .provenance
            .as_ref()
            .and_then(|p| p.commit.as_deref())
            == Some("1")
    }));

    // No new commit: only the cheap audit command, never the configuration.
    for _ in 0..3 {
        assert!(!sync.refresh().await.expect("unchanged"));
        assert_eq!(sync.reconcile().await.operations(), 0);
    }
    assert_eq!(count(&stand_in, "audit"), 4);
    assert_eq!(count(&stand_in, "show"), 1);

    {
        let mut panorama = panorama.lock().expect("state");
        panorama.version = 2;
        panorama.admin = "bob";
        panorama.description = "SEC-42 close dmz";
        panorama.running = config_v2();
    }
    assert!(sync.refresh().await.expect("second commit"));
    assert_eq!(count(&stand_in, "show"), 2);
    assert_eq!(sync.reconcile().await.deleted, 1);
    assert_eq!(zones(&out), ["any", "trust", "untrust"]);
    let deleted = audit.of("delete-stale");
    assert_eq!(deleted[0]["commit"]["id"], 2);
    assert_eq!(deleted[0]["commit"]["admin"], "bob");
    assert!(deleted[0]["rules"].to_string().contains("allow-web"));

    assert!(
        !audit.text().contains(KEY),
        "the API key must never reach the audit trail"
    );
    for request in stand_in.requests() {
        assert!(
            !request.target.contains(KEY) && !request.body.contains(KEY),
            "the key travels only in the header"
        );
        assert_eq!(request.header("x-pan-key"), Some(KEY));
    }
}

#[tokio::test]
async fn unreachable_truncated_or_invalid_answers_keep_the_last_good_policy() {
    let Setup {
        panorama,
        stand_in,
        out,
        audit,
        mut sync,
        ..
    } = setup().await;
    sync.refresh().await.expect("first commit");
    sync.reconcile().await;
    let records = audit.records().len();

    panorama.lock().expect("state").down = true;
    let error = sync.refresh().await.expect_err("Panorama is down");
    assert!(matches!(error, SyncError::Source(_)), "{error}");
    let message = error.to_string();
    assert!(message.contains("503"), "{message}");
    assert!(!message.contains(KEY), "{message}");
    assert_eq!(sync.reconcile().await.operations(), 0);
    assert_eq!(zones(&out), ["any", "dmz", "trust", "untrust"]);

    // Back, with a new commit whose configuration arrives cut in half.
    {
        let mut panorama = panorama.lock().expect("state");
        panorama.down = false;
        panorama.version = 2;
        panorama.running = config_v2();
        panorama.truncate = true;
    }
    let error = sync.refresh().await.expect_err("truncated answer");
    assert!(error.to_string().contains("truncated"), "{error}");
    assert_eq!(sync.reconcile().await.operations(), 0);
    assert_eq!(zones(&out), ["any", "dmz", "trust", "untrust"]);
    assert_eq!(
        audit.records().len(),
        records,
        "nothing was done, nothing audited"
    );

    // The transfer works again: the same commit is fetched again and applied.
    panorama.lock().expect("state").truncate = false;
    assert!(sync.refresh().await.expect("whole answer"));
    assert_eq!(sync.reconcile().await.deleted, 1);
    assert_eq!(zones(&out), ["any", "trust", "untrust"]);

    // A commit whose configuration cannot be translated is reported once and kept out.
    {
        let mut panorama = panorama.lock().expect("state");
        panorama.version = 3;
        panorama.running = firewall_config(
            &["trust", "bad/zone"],
            &[("r", "trust", "bad/zone", "allow")],
        );
    }
    let shows = count(&stand_in, "show");
    let error = sync.refresh().await.expect_err("invalid zone name");
    assert!(matches!(error, SyncError::Untranslatable(_)), "{error}");
    assert_eq!(error.exit_code(), 2);
    assert!(error.to_string().contains("bad/zone"), "{error}");
    assert!(
        !sync
            .refresh()
            .await
            .expect("same commit, not fetched again")
    );
    assert_eq!(count(&stand_in, "show"), shows + 1);
    assert_eq!(sync.reconcile().await.operations(), 0);
    assert_eq!(zones(&out), ["any", "trust", "untrust"]);
}

#[tokio::test]
async fn diff_shows_what_the_candidate_would_change_and_applies_nothing() {
    let Setup {
        panorama,
        stand_in,
        out,
        mut sync,
        ..
    } = setup().await;
    sync.refresh().await.expect("first commit");
    sync.reconcile().await;
    panorama.lock().expect("state").candidate = config_v2();

    let changes = sync.diff(Duration::from_secs(5)).await.expect("diff");
    let deleted: Vec<_> = changes
        .iter()
        .filter(|change| change.kind == ChangeKind::DeleteStale)
        .collect();
    assert_eq!(deleted.len(), 1);
    assert_eq!(deleted[0].zone, "dmz");
    assert!(
        changes
            .iter()
            .all(|change| change.kind != ChangeKind::Create)
    );
    assert_eq!(count(&stand_in, "get"), 1, "the candidate was read");
    assert_eq!(
        zones(&out),
        ["any", "dmz", "trust", "untrust"],
        "nothing applied"
    );
}

fn zonewall(args: &[&str]) -> std::process::Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_zonewall"))
        .args(args)
        .env("ZONEWALL_LOG", "debug")
        .output()
        .expect("run zonewall")
}

#[test]
fn cli_reads_the_key_only_from_its_file_and_never_prints_it() {
    let temp = tempfile::tempdir().expect("temp dir");
    let out = temp.path().join("policies");
    let out_text = out.to_str().expect("utf-8");
    let missing = temp.path().join("no-such-key");
    let output = zonewall(&[
        "sync",
        "--panorama-url",
        "https://127.0.0.1:1",
        "--api-key-file",
        missing.to_str().expect("utf-8"),
        "--device-group",
        "prod",
        "--output-dir",
        out_text,
        "--once",
    ]);
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("no-such-key"),
        "names the key file: {stderr}"
    );

    // Nothing listens on port 1: unreachable, reported, nothing written, key never shown.
    let key_file = temp.path().join("key");
    std::fs::write(&key_file, format!("{KEY}\n")).expect("write key");
    let output = zonewall(&[
        "sync",
        "--panorama-url",
        "https://127.0.0.1:1",
        "--api-key-file",
        key_file.to_str().expect("utf-8"),
        "--device-group",
        "prod",
        "--output-dir",
        out_text,
        "--once",
    ]);
    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("cannot reach Panorama"), "{stderr}");
    assert!(
        !stderr.contains(KEY),
        "the key leaked into the log: {stderr}"
    );
    assert!(!String::from_utf8_lossy(&output.stdout).contains(KEY));
    assert!(
        !out.exists(),
        "nothing may be written when Panorama is unreachable"
    );

    // The key is not a flag.
    let output = zonewall(&["sync", "--api-key", KEY]);
    assert_eq!(output.status.code(), Some(2));
}

#[tokio::test]
async fn a_panorama_commit_reaches_the_cluster_with_its_commit_in_events_and_audit() {
    let Setup {
        panorama,
        stand_in,
        audit,
        sync,
        ..
    } = setup().await;
    // Same Panorama source, Kubernetes target.
    let api = sync_common::fake_api::FakeApi::default();
    let sync = into_cluster(sync, &api, &audit, "vsys1");
    let cancel = tokio_util::sync::CancellationToken::new();
    tokio::spawn(sync.run(Duration::from_millis(200), cancel.clone()));

    let started = std::time::Instant::now();
    while api.names().len() < 4 || api.lock().events.len() < 4 {
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "commit 1 never applied"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let note = api.lock().events[0]["note"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    assert!(
        note.contains("Panorama commit 1 by alice (open dmz web)"),
        "{note}"
    );

    {
        let mut panorama = panorama.lock().expect("state");
        panorama.version = 2;
        panorama.admin = "bob";
        panorama.running = config_v2();
    }
    while api.names().len() != 3 {
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "commit 2 never applied"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let deleted = audit.of("delete-stale");
    assert_eq!(deleted[0]["commit"]["id"], 2);
    assert_eq!(deleted[0]["commit"]["admin"], "bob");
    assert_eq!(deleted[0]["target"], "kubernetes");
    // Two commits, two configuration fetches; every other poll was the audit command only.
    assert_eq!(count(&stand_in, "show"), 2);
    assert!(count(&stand_in, "audit") >= 2);
    cancel.cancel();
}

/// `cargo xtask bench sync`: the issue's figure as written, from a commit appearing in the
/// config audit op answer to its objects applied to kube's mock API server, through the
/// Panorama client (HTTPS, the 20 MB running configuration fetched on each new version).
/// Commits alternate the two configurations of the bench, spread over the poll cycle.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "benchmark: run by `cargo xtask bench sync`"]
async fn bench_commit_to_applied_through_panorama() {
    let Some((paths, rounds)) = bench_input() else {
        return;
    };
    let configs = paths.map(|path| std::fs::read_to_string(path).expect("configuration"));
    let Setup {
        panorama,
        stand_in: _stand_in,
        audit,
        sync,
        ..
    } = setup().await;
    {
        let mut served = panorama.lock().expect("panorama state");
        served.running = configs[0].clone();
        served.candidate = configs[0].clone();
    }
    let api = sync_common::fake_api::FakeApi::default();
    let sync = into_cluster(sync, &api, &audit, "app-1");
    let stats = Arc::clone(&sync.stats);
    let cancel = tokio_util::sync::CancellationToken::new();
    let interval = Duration::from_secs(2);
    tokio::spawn(sync.run(interval, cancel.clone()));
    let applied = || zonewall::sync::SyncStats::get(&stats.commits_applied);
    let started = std::time::Instant::now();
    while applied() == 0 {
        assert!(
            started.elapsed() < Duration::from_secs(120),
            "first commit never applied"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let mut millis = Vec::new();
    for round in 0..rounds {
        // Spread the commits over the poll cycle (see xtask/src/bench_sync.rs).
        tokio::time::sleep(interval.mul_f64(round as f64 / rounds as f64)).await;
        let applied_before = applied();
        let committed = {
            let mut served = panorama.lock().expect("panorama state");
            served.running = configs[(round + 1) % 2].clone();
            served.version += 1;
            std::time::Instant::now()
        };
        millis.push(until_applied(&stats, applied_before, committed, round).await);
    }
    cancel.cancel();
    println!(
        "bench sync (Panorama stand-in, config audit op -> mock API server, {} objects): commit to applied over {rounds} commits: {}",
        api.names().len(),
        describe(millis)
    );
}
