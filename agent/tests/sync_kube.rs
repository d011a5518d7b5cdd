//! The sync controller against kube's `Client` over a mock service (tower-test) that plays
//! a small API server (`sync_common::fake_api`).

mod sync_common;

use std::path::Path;
use std::time::{Duration, Instant};

use http::Method;
use serde_json::{Value, json};
use sync_common::fake_api::{FakeApi, Seen, query_param};
use sync_common::*;
use tokio_util::sync::CancellationToken;
use zonewall::policy::resource::Mode;
use zonewall::sync::kube::KubeTarget;
use zonewall::sync::{Controller, Options, Source, Target};

fn controller(config: &Path, api: &FakeApi, audit: &AuditBuffer) -> Controller {
    Controller::new(
        Source::file(config.to_path_buf()),
        Target::Kubernetes(Box::new(KubeTarget::new(api.client()))),
        Options {
            device_group: None,
            mode: Mode::Enforce,
        },
        audit.log(),
    )
}

const INTERVAL: Duration = Duration::from_millis(200);

/// Polls `condition` until it holds or `limit` passes.
async fn eventually(limit: Duration, what: &str, mut condition: impl FnMut() -> bool) {
    let started = Instant::now();
    while !condition() {
        assert!(started.elapsed() < limit, "timed out waiting for: {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Starts the controller loop; returns its cancellation token.
fn start(config: &Path, api: &FakeApi, audit: &AuditBuffer) -> CancellationToken {
    let cancel = CancellationToken::new();
    let sync = controller(config, api, audit);
    tokio::spawn(sync.run(INTERVAL, cancel.clone()));
    cancel
}

fn hand_written(name: &str, zone: &str) -> Value {
    json!({
        "apiVersion": "zonewall.io/v1alpha1",
        "kind": "ZonePolicy",
        "metadata": {"name": name},
        "spec": {"tier": "firewall", "order": 1, "mode": "Enforce", "zone": zone,
                 "egress": [{"action": "Allow", "ruleType": "Universal", "peerZones": ["any"],
                             "source": {"any": true}, "destination": {"any": true},
                             "service": {"any": true}, "log": {"start": false, "end": false}}],
                 "ingress": []}
    })
}

const DESIRED_V1: [&str; 4] = ["any", "dmz", "trust", "untrust"];

fn zones_in(api: &FakeApi) -> Vec<String> {
    let mut zones: Vec<String> = api
        .lock()
        .objects
        .values()
        .map(|object| {
            object["spec"]["zone"]
                .as_str()
                .unwrap_or_default()
                .to_string()
        })
        .collect();
    zones.sort();
    zones
}

#[tokio::test]
async fn a_commit_is_applied_with_ownership_and_then_a_rule_deletion() {
    let temp = tempfile::tempdir().expect("temp dir");
    let config = temp.path().join("panos.xml");
    std::fs::write(&config, config_v1()).expect("write config");
    let api = FakeApi::default();
    let audit = AuditBuffer::default();
    let cancel = start(&config, &api, &audit);

    eventually(Duration::from_secs(10), "four objects with status", || {
        zones_in(&api) == DESIRED_V1
            && api
                .lock()
                .objects
                .values()
                .all(|object| object.get("status").is_some())
    })
    .await;
    let applies: Vec<Seen> = api
        .requests()
        .into_iter()
        .filter(|seen| seen.method == Method::PATCH)
        .collect();
    assert!(applies.iter().all(|seen| {
        query_param(&seen.query, "fieldManager").as_deref() == Some("zonewall-sync")
            && query_param(&seen.query, "force").as_deref() == Some("true")
    }));
    assert!(applies.iter().any(|seen| seen.path.ends_with("/status")));
    for name in api.names() {
        let object = api.object(&name).expect("object");
        assert_eq!(
            object["metadata"]["labels"]["zonewall.io/owner"],
            "zonewall-sync"
        );
        assert_eq!(object["metadata"]["labels"]["zonewall.io/tier"], "firewall");
        assert!(
            object["metadata"]["annotations"]["zonewall.io/spec-hash"]
                .as_str()
                .is_some_and(|hash| hash.starts_with("sha256:")),
            "{object}"
        );
        assert!(
            object["status"]["egressRules"].is_number(),
            "status applied: {object}"
        );
    }
    eventually(Duration::from_secs(5), "four create events", || {
        api.lock().events.len() >= 4
    })
    .await;
    assert_eq!(audit.of("create").len(), 4);

    // Steady state: the same desired state produces no write, interval after interval.
    let writes = api.writes();
    tokio::time::sleep(INTERVAL * 4).await;
    assert_eq!(
        api.writes(),
        writes,
        "an unchanged tier must cause no write"
    );

    // The commit that removes zone dmz and its rule.
    std::fs::write(&config, config_v2()).expect("write config");
    eventually(Duration::from_secs(10), "dmz removed", || {
        zones_in(&api) == ["any", "trust", "untrust"]
    })
    .await;
    let deleted = audit.of("delete-stale");
    assert_eq!(deleted.len(), 1);
    assert_eq!(deleted[0]["zone"], "dmz");
    assert!(deleted[0]["rules"].to_string().contains("allow-web"));
    let updated: Vec<Value> = audit.of("update");
    assert!(
        updated.iter().any(|record| record["zone"] == "untrust"
            && record["rules"].to_string().contains("allow-web")),
        "{updated:?}"
    );
    // Only objects whose rules changed are written: the `any` object holds only the default
    // rules, which this commit did not touch; every update names the rules it changes.
    assert!(
        updated.iter().all(|record| record["zone"] != "any"),
        "{updated:?}"
    );
    assert!(
        updated
            .iter()
            .all(|record| record["rules_total"].as_u64() > Some(0))
    );
    cancel.cancel();
}

#[tokio::test]
async fn hand_written_objects_are_removed_and_edits_restored() {
    let temp = tempfile::tempdir().expect("temp dir");
    let config = temp.path().join("panos.xml");
    std::fs::write(&config, config_v1()).expect("write config");
    let api = FakeApi::default();
    let audit = AuditBuffer::default();
    // Present before the controller starts, and at runtime.
    api.user_write(hand_written("backdoor-early", "dmz"));
    let cancel = start(&config, &api, &audit);
    eventually(
        Duration::from_secs(10),
        "desired objects, backdoor gone",
        || zones_in(&api) == DESIRED_V1,
    )
    .await;

    api.user_write(hand_written("backdoor", "trust"));
    eventually(
        Duration::from_secs(2),
        "backdoor removed within an interval",
        || api.object("backdoor").is_none(),
    )
    .await;
    let removed = audit.of("delete-foreign");
    let names: Vec<&str> = removed
        .iter()
        .filter_map(|r| r["object"].as_str())
        .collect();
    assert_eq!(names, ["backdoor-early", "backdoor"]);
    assert!(removed.iter().all(|r| r["remediation"] == true));
    assert!(
        removed[1]["changed_by"]
            .to_string()
            .contains("kubectl-edit")
    );

    // Someone edits the controller's object: widened to allow everything, hash left as is.
    let trust = api
        .names()
        .into_iter()
        .find(|name| name.starts_with("firewall-trust"))
        .expect("trust object");
    let original = api.object(&trust).expect("object");
    let mut edited = original.clone();
    edited["spec"]["egress"] = hand_written("x", "trust")["spec"]["egress"].clone();
    api.user_write(edited);
    eventually(Duration::from_secs(2), "edit restored", || {
        api.object(&trust)
            .is_some_and(|object| object["spec"] == original["spec"])
    })
    .await;
    let restored = audit.of("restore");
    assert_eq!(restored.len(), 1);
    assert_eq!(restored[0]["object"], trust.as_str());
    assert_ne!(restored[0]["previous_hash"], restored[0]["new_hash"]);
    eventually(Duration::from_secs(2), "warning events", || {
        api.lock()
            .events
            .iter()
            .any(|event| event["reason"] == "DriftRestored" && event["type"] == "Warning")
    })
    .await;
    assert!(
        api.lock()
            .events
            .iter()
            .any(|event| event["reason"] == "DriftRemoved"
                && event["regarding"]["name"] == "backdoor")
    );
    cancel.cancel();
}

#[tokio::test]
async fn nothing_is_done_from_a_partial_list_and_a_watch_reset_deletes_nothing() {
    let temp = tempfile::tempdir().expect("temp dir");
    let config = temp.path().join("panos.xml");
    std::fs::write(&config, config_v1()).expect("write config");
    let api = FakeApi::default();
    let audit = AuditBuffer::default();
    api.user_write(hand_written("a-hand-written", "dmz"));
    api.user_write(hand_written("b-hand-written", "dmz"));

    // The initial list stops after its first page: the controller must wait.
    api.hold_pages(true);
    let cancel = start(&config, &api, &audit);
    tokio::time::sleep(INTERVAL * 4).await;
    assert_eq!(api.writes(), 0, "no write before the list is complete");
    api.hold_pages(false);
    eventually(Duration::from_secs(10), "desired state", || {
        zones_in(&api) == DESIRED_V1
    })
    .await;
    let names_before = api.names();
    let deletes_before = api.deletes();
    tokio::time::sleep(INTERVAL * 2).await;
    let writes_before = api.writes();
    assert_eq!(deletes_before, ["a-hand-written", "b-hand-written"]);

    // The watch expires; the re-list delivers one object per page and stalls after the
    // first. Several intervals pass with a partial view.
    api.hold_pages(true);
    api.expire_watches();
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(
        api.deletes(),
        deletes_before,
        "a partial re-list must delete nothing"
    );
    assert_eq!(
        api.writes(),
        writes_before,
        "nothing is done from a partial view"
    );
    api.hold_pages(false);
    tokio::time::sleep(INTERVAL * 5).await;
    assert_eq!(api.names(), names_before);
    assert_eq!(
        api.deletes(),
        deletes_before,
        "a watch reset deleted an object"
    );
    let relists = api
        .requests()
        .iter()
        .filter(|seen| {
            seen.method == Method::GET
                && query_param(&seen.query, "continue").is_none()
                && query_param(&seen.query, "watch").is_none()
        })
        .count();
    assert!(
        relists >= 2,
        "the controller listed again after the reset ({relists})"
    );
    cancel.cancel();
}

#[tokio::test]
async fn an_unreachable_or_invalid_source_keeps_the_cluster_as_it_is() {
    let temp = tempfile::tempdir().expect("temp dir");
    let config = temp.path().join("panos.xml");
    let api = FakeApi::default();
    let audit = AuditBuffer::default();
    api.user_write(hand_written("firewall-left-by-a-previous-run", "dmz"));

    // Source unreadable from the start: nothing is known to be desired, so nothing changes.
    let cancel = start(&config, &api, &audit);
    tokio::time::sleep(INTERVAL * 4).await;
    assert_eq!(api.writes(), 0);

    std::fs::write(&config, config_v1()).expect("write config");
    eventually(Duration::from_secs(10), "applied", || {
        zones_in(&api) == DESIRED_V1
    })
    .await;
    let names = api.names();
    let writes = api.writes();

    // Gone again, then truncated: the cluster keeps the last good policy.
    std::fs::remove_file(&config).expect("remove config");
    tokio::time::sleep(INTERVAL * 4).await;
    let v2 = config_v2();
    std::fs::write(&config, &v2[..v2.len() / 3]).expect("write truncated config");
    tokio::time::sleep(INTERVAL * 4).await;
    assert_eq!(api.names(), names);
    assert_eq!(api.writes(), writes);
    cancel.cancel();
}

/// `cargo xtask bench sync` runs this (release build) with two generated configurations; on
/// its own it has nothing to measure.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a benchmark: run through `cargo xtask bench sync`"]
async fn bench_commit_to_applied() {
    let Some(([a, b], rounds)) = bench_input() else {
        return;
    };
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("ZONEWALL_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .try_init();
    let temp = tempfile::tempdir().expect("temp dir");
    let watched = temp.path().join("watched.xml");
    std::fs::copy(&a, &watched).expect("first commit");
    let api = FakeApi::default();
    let sync = Controller::new(
        Source::file(watched.clone()),
        Target::Kubernetes(Box::new(KubeTarget::new(api.client()))),
        Options {
            device_group: Some("app-1".into()),
            mode: Mode::Enforce,
        },
        std::sync::Arc::new(zonewall::sync::AuditLog::new(Box::new(std::io::sink()))),
    );
    let stats = std::sync::Arc::clone(&sync.stats);
    let cancel = CancellationToken::new();
    let interval = Duration::from_secs(2);
    tokio::spawn(sync.run(interval, cancel.clone()));
    let applied = || zonewall::sync::SyncStats::get(&stats.commits_applied);
    let started = Instant::now();
    while applied() == 0 {
        assert!(
            started.elapsed() < Duration::from_secs(120),
            "first commit never applied"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let objects = api.names().len();
    let mut millis = Vec::new();
    let mut noticed_to_applied = Vec::new();
    for round in 0..rounds {
        let next = if round % 2 == 0 { &b } else { &a };
        // Spread the commits over the poll cycle (see xtask/src/bench_sync.rs).
        tokio::time::sleep(interval.mul_f64(round as f64 / rounds as f64)).await;
        let temporary = temp.path().join("next.tmp");
        std::fs::copy(next, &temporary).expect("copy next commit");
        let applied_before = applied();
        let committed = Instant::now();
        std::fs::rename(&temporary, &watched).expect("commit");
        millis.push(until_applied(&stats, applied_before, committed, round).await);
        noticed_to_applied
            .push(zonewall::sync::SyncStats::get(&stats.last_commit_to_applied_millis) as f64);
    }
    cancel.cancel();
    println!(
        "bench sync (mock API server, {objects} ZonePolicy objects): commit to applied over {rounds} commits: {}; of which change noticed to applied: {}",
        describe(millis),
        describe(noticed_to_applied)
    );
}

#[tokio::test]
async fn the_sync_metrics_families_are_fed() {
    use zonewall::metrics::{ExpositionFormat, Metrics, Readiness, SyncMetrics};
    let temp = tempfile::tempdir().expect("temp dir");
    let config = temp.path().join("panos.xml");
    std::fs::write(&config, config_v1()).expect("write config");
    let api = FakeApi::default();
    let audit = AuditBuffer::default();
    let mut registry = Metrics::new();
    let metrics = SyncMetrics::register(&mut registry);
    let readiness = Readiness::new();
    let cancel = CancellationToken::new();
    let sync = controller(&config, &api, &audit)
        .with_metrics(metrics)
        .with_readiness(readiness.clone());
    tokio::spawn(sync.run(INTERVAL, cancel.clone()));
    eventually(Duration::from_secs(10), "ready", || readiness.is_ready()).await;
    assert_eq!(zones_in(&api), DESIRED_V1);

    api.user_write(hand_written("backdoor", "trust"));
    eventually(Duration::from_secs(2), "backdoor removed", || {
        api.object("backdoor").is_none()
    })
    .await;
    std::fs::write(&config, "<config><devices>").expect("write broken config");
    let text = || {
        registry
            .encode(ExpositionFormat::PrometheusText)
            .expect("encode")
    };
    eventually(Duration::from_secs(5), "config error counted", || {
        text().contains("zonewall_sync_errors_total{kind=\"config\"} 1")
    })
    .await;
    let text = text();
    for line in [
        "zonewall_sync_objects_applied_total 4",
        "zonewall_sync_objects_deleted_total 1",
        "zonewall_sync_drift_remediations_total{action=\"deleted\"} 1",
        "zonewall_sync_drift_remediations_total{action=\"restored\"} 0",
        "zonewall_sync_commit_to_applied_seconds_count 1",
    ] {
        assert!(text.contains(line), "missing {line:?} in\n{text}");
    }
    assert!(!text.contains("zonewall_sync_last_success_timestamp_seconds 0\n"));
    cancel.cancel();
}
