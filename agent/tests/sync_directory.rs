//! `zonewall sync` from a watched configuration file into an output directory: commits
//! applied, deletions, invalid configurations kept out, readers never see half a set.

mod sync_common;

use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use sync_common::*;
use zonewall::policy::load::load_dir;
use zonewall::policy::resource::{Mode, RuleAction};
use zonewall::sync::{Controller, Options, Source, SyncError, Target};

fn controller(config: &Path, out: &Path, audit: &AuditBuffer) -> Controller {
    Controller::new(
        Source::file(config.to_path_buf()),
        Target::directory(out.to_path_buf()),
        Options {
            device_group: None,
            mode: Mode::Enforce,
        },
        audit.log(),
    )
}

fn zones(dir: &Path) -> Vec<String> {
    let mut zones: Vec<String> = load_dir(dir)
        .expect("output directory loads")
        .into_iter()
        .map(|policy| policy.spec.zone)
        .collect();
    zones.sort();
    zones
}

#[tokio::test]
async fn a_commit_is_written_and_a_deleted_zone_disappears() {
    let temp = tempfile::tempdir().expect("temp dir");
    let config = temp.path().join("panos.xml");
    let out = temp.path().join("policies");
    std::fs::write(&config, config_v1()).expect("write config");
    let audit = AuditBuffer::default();
    let mut sync = controller(&config, &out, &audit);

    assert!(sync.refresh().await.expect("valid config"));
    let report = sync.reconcile().await;
    assert_eq!((report.applied, report.deleted, report.failed), (4, 0, 0));
    assert_eq!(zones(&out), ["any", "dmz", "trust", "untrust"]);
    assert_eq!(audit.of("create").len(), 4);

    // Nothing changed: no poll result, no operation, no audit record.
    assert!(!sync.refresh().await.expect("unchanged"));
    assert_eq!(sync.reconcile().await.operations(), 0);
    assert_eq!(audit.records().len(), 4);

    std::fs::write(&config, config_v2()).expect("write config");
    assert!(sync.refresh().await.expect("valid config"));
    let report = sync.reconcile().await;
    assert_eq!(report.deleted, 1, "{report:?}");
    assert_eq!(zones(&out), ["any", "trust", "untrust"]);
    let deleted = audit.of("delete-stale");
    assert_eq!(deleted.len(), 1);
    assert_eq!(deleted[0]["zone"], "dmz");
    let rules: Vec<String> = deleted[0]["rules"]
        .as_array()
        .expect("rules")
        .iter()
        .map(|rule| rule.as_str().expect("rule name").to_string())
        .collect();
    assert!(
        rules.iter().any(|rule| rule.ends_with("/allow-web")),
        "{rules:?}"
    );
    // The untrust object lost allow-web's ingress rule: an update naming that rule.
    let updates = audit.of("update");
    let untrust = updates
        .iter()
        .find(|record| record["zone"] == "untrust")
        .expect("untrust updated");
    assert!(
        untrust["rules"].to_string().contains("allow-web"),
        "{untrust}"
    );
    assert!(
        std::fs::read_dir(&out).expect("list").all(|entry| !entry
            .expect("entry")
            .file_name()
            .to_string_lossy()
            .contains("dmz")),
        "no visible file of the removed zone may remain"
    );
}

#[tokio::test]
async fn an_invalid_or_truncated_config_never_replaces_the_last_good_one() {
    let temp = tempfile::tempdir().expect("temp dir");
    let config = temp.path().join("panos.xml");
    let out = temp.path().join("policies");
    std::fs::write(&config, config_v1()).expect("write config");
    let audit = AuditBuffer::default();
    let mut sync = controller(&config, &out, &audit);
    sync.refresh().await.expect("valid config");
    sync.reconcile().await;
    let before = load_dir(&out).expect("loads");

    let v2 = config_v2();
    std::fs::write(&config, &v2[..v2.len() / 2]).expect("write truncated config");
    let error = sync.refresh().await.expect_err("truncated config");
    assert!(matches!(error, SyncError::InvalidConfig(_)), "{error}");
    let message = error.to_string();
    assert!(message.contains("panos.xml"), "names the file: {message}");
    assert!(message.contains("last good policy"), "{message}");
    assert_eq!(sync.reconcile().await.operations(), 0);
    let after = load_dir(&out).expect("loads");
    assert_eq!(after.len(), before.len());
    assert_eq!(zones(&out), ["any", "dmz", "trust", "untrust"]);

    // A configuration that parses but names a zone that cannot exist in Kubernetes.
    std::fs::write(
        &config,
        firewall_config(
            &["trust", "bad/zone"],
            &[("r", "trust", "bad/zone", "allow")],
        ),
    )
    .expect("write config");
    assert!(sync.refresh().await.is_err());
    assert_eq!(sync.reconcile().await.operations(), 0);
    assert_eq!(zones(&out), ["any", "dmz", "trust", "untrust"]);

    // The operator fixes the file: it is applied.
    std::fs::write(&config, &v2).expect("write config");
    assert!(sync.refresh().await.expect("valid again"));
    assert_eq!(sync.reconcile().await.deleted, 1);
    assert_eq!(zones(&out), ["any", "trust", "untrust"]);
    assert_eq!(
        sync.stats
            .errors_config
            .load(std::sync::atomic::Ordering::Relaxed),
        2
    );
}

/// Two configurations that differ in every object: a rule from any zone to any zone whose
/// action flips, and one more zone in the second.
fn flip_config(deny: bool) -> String {
    let mut zones = vec!["trust", "untrust", "dmz"];
    if deny {
        zones.push("guest");
    }
    firewall_config(
        &zones,
        &[(
            "everything",
            "any",
            "any",
            if deny { "deny" } else { "allow" },
        )],
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_concurrent_reader_never_sees_a_partial_set() {
    let temp = tempfile::tempdir().expect("temp dir");
    let config = temp.path().join("panos.xml");
    let out = temp.path().join("policies");
    std::fs::write(&config, flip_config(false)).expect("write config");
    let audit = AuditBuffer::default();
    let mut sync = controller(&config, &out, &audit);
    sync.refresh().await.expect("valid");
    sync.reconcile().await;

    let stop = Arc::new(AtomicBool::new(false));
    let reader = {
        let out = out.clone();
        let stop = Arc::clone(&stop);
        std::thread::spawn(move || {
            let mut reads = 0u32;
            while !stop.load(Ordering::Relaxed) {
                let policies = load_dir(&out).expect("every read succeeds");
                let actions: Vec<RuleAction> = policies
                    .iter()
                    .flat_map(|policy| policy.spec.egress.iter().chain(&policy.spec.ingress))
                    .filter(|rule| {
                        rule.provenance
                            .as_ref()
                            .is_some_and(|p| p.rule == "everything")
                    })
                    .map(|rule| rule.action)
                    .collect();
                let deny = actions[0] == RuleAction::Deny;
                assert!(
                    actions.iter().all(|action| *action == actions[0]),
                    "a mix of two generations was read"
                );
                assert_eq!(
                    policies.len(),
                    if deny { 5 } else { 4 },
                    "a partial set was read"
                );
                reads += 1;
            }
            reads
        })
    };
    for round in 0..40 {
        std::fs::write(&config, flip_config(round % 2 == 0)).expect("write config");
        assert!(sync.refresh().await.expect("valid"));
        let report = sync.reconcile().await;
        assert_eq!(report.failed, 0);
    }
    stop.store(true, Ordering::Relaxed);
    let reads = reader.join().expect("the reader saw only whole sets");
    assert!(reads > 0);
}

fn zonewall(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_zonewall"))
        .args(args)
        .env("ZONEWALL_LOG", "warn")
        .output()
        .expect("run zonewall")
}

#[test]
fn cli_once_writes_and_diff_reports() {
    let temp = tempfile::tempdir().expect("temp dir");
    let config = temp.path().join("panos.xml");
    let out = temp.path().join("policies");
    std::fs::write(&config, config_v1()).expect("write config");
    let config_text = config.to_str().expect("utf-8");
    let out_text = out.to_str().expect("utf-8");

    let once = zonewall(&[
        "sync",
        "--panos-config",
        config_text,
        "--output-dir",
        out_text,
        "--once",
    ]);
    assert!(
        once.status.success(),
        "{}",
        String::from_utf8_lossy(&once.stderr)
    );
    let audit = String::from_utf8_lossy(&once.stdout);
    let records: Vec<serde_json::Value> = audit
        .lines()
        .map(|line| serde_json::from_str(line).expect("JSON audit line"))
        .collect();
    assert_eq!(records.len(), 4, "{audit}");
    assert!(records.iter().all(|r| r["operation"] == "create"));
    assert_eq!(zones(&out), ["any", "dmz", "trust", "untrust"]);

    let same = zonewall(&[
        "sync",
        "--panos-config",
        config_text,
        "--output-dir",
        out_text,
        "--diff",
    ]);
    assert!(same.status.success());
    assert!(String::from_utf8_lossy(&same.stdout).contains("no change"));

    std::fs::write(&config, config_v2()).expect("write config");
    let diff = zonewall(&[
        "sync",
        "--panos-config",
        config_text,
        "--output-dir",
        out_text,
        "--diff",
    ]);
    let text = String::from_utf8_lossy(&diff.stdout);
    assert!(
        text.contains("delete-stale") && text.contains("zone dmz"),
        "{text}"
    );
    assert!(text.contains("allow-web"), "{text}");
    // --diff applies nothing.
    assert_eq!(zones(&out), ["any", "dmz", "trust", "untrust"]);

    std::fs::write(&config, "<config><devices>").expect("write broken config");
    let broken = zonewall(&[
        "sync",
        "--panos-config",
        config_text,
        "--output-dir",
        out_text,
        "--once",
    ]);
    assert_eq!(broken.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&broken.stderr);
    assert!(stderr.contains("panos.xml"), "{stderr}");
    assert_eq!(zones(&out), ["any", "dmz", "trust", "untrust"]);
}
