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

/// The object file of `zone` in an output directory.
fn object_file(out: &Path, zone: &str) -> std::path::PathBuf {
    let prefix = format!("firewall-{zone}");
    std::fs::read_dir(out)
        .expect("list the output directory")
        .filter_map(|entry| entry.ok())
        .map(|entry| entry.path())
        .find(|path| {
            path.file_name()
                .is_some_and(|name| name.to_string_lossy().starts_with(&prefix))
        })
        .unwrap_or_else(|| panic!("no object file for zone {zone}"))
}

fn inode(path: &Path) -> u64 {
    use std::os::unix::fs::MetadataExt as _;
    std::fs::metadata(path).expect("stat").ino()
}

#[tokio::test]
async fn only_changed_objects_are_written_and_hand_edits_are_put_back() {
    let temp = tempfile::tempdir().expect("temp dir");
    let config = temp.path().join("panos.xml");
    let out = temp.path().join("policies");
    std::fs::write(&config, config_v1()).expect("write config");
    let audit = AuditBuffer::default();
    let mut sync = controller(&config, &out, &audit);
    assert!(sync.refresh().await.expect("valid config"));
    assert_eq!(sync.reconcile().await.applied, 4);
    let trust_text = std::fs::read_to_string(object_file(&out, "trust")).expect("read");
    let (trust_before, dmz_before) = (
        inode(&object_file(&out, "trust")),
        inode(&object_file(&out, "dmz")),
    );

    // allow-web (untrust -> dmz) becomes a deny: the untrust and dmz objects change, trust
    // does not and is carried into the new generation without being written again.
    std::fs::write(&config, config_web_denied()).expect("write config");
    assert!(sync.refresh().await.expect("valid config"));
    let report = sync.reconcile().await;
    assert_eq!((report.applied, report.failed), (2, 0));
    let updated: Vec<String> = audit
        .of("update")
        .iter()
        .filter_map(|record| record["zone"].as_str().map(str::to_string))
        .collect();
    assert_eq!(updated, ["dmz", "untrust"]);
    assert_eq!(inode(&object_file(&out, "trust")), trust_before);
    assert_ne!(inode(&object_file(&out, "dmz")), dmz_before);
    assert!(
        zonewall::policy::load::load_dir(&out)
            .expect("loads")
            .iter()
            .any(|policy| policy.spec.zone == "dmz"
                && policy
                    .spec
                    .ingress
                    .iter()
                    .any(|rule| rule.action == RuleAction::Deny))
    );
    assert_eq!(sync.reconcile().await.operations(), 0, "nothing changed");

    // Someone edits the trust file in place, then deletes it: each time it is put back, as
    // a remediation, without a new commit.
    let trust = object_file(&out, "trust");
    std::fs::write(&trust, trust_text.replace("Allow", "Deny")).expect("edit");
    let report = sync.reconcile().await;
    assert_eq!((report.applied, report.remediated), (1, 1));
    assert_eq!(
        std::fs::read_to_string(object_file(&out, "trust")).expect("read"),
        trust_text
    );
    let restored = audit.of("restore");
    assert_eq!(restored.len(), 1);
    assert_eq!(restored[0]["zone"], "trust");
    assert_eq!(restored[0]["remediation"], true);
    assert_ne!(restored[0]["previous_hash"], restored[0]["new_hash"]);

    std::fs::remove_file(object_file(&out, "trust")).expect("remove");
    let report = sync.reconcile().await;
    assert_eq!(report.remediated, 1);
    assert_eq!(
        std::fs::read_to_string(object_file(&out, "trust")).expect("read"),
        trust_text
    );
    assert_eq!(audit.of("restore").len(), 2);
    assert_eq!(sync.reconcile().await.operations(), 0);

    // A restarted controller recognises its files by the generation's manifest: nothing to
    // do for the same configuration, and on the next commit only the changed objects are
    // written again (the others keep their inode), with the previous rules in the audit.
    drop(sync);
    let trust_before = inode(&object_file(&out, "trust"));
    let restarted_audit = AuditBuffer::default();
    let mut restarted = controller(&config, &out, &restarted_audit);
    assert!(restarted.refresh().await.expect("valid config"));
    assert_eq!(restarted.reconcile().await.operations(), 0);
    assert_eq!(inode(&object_file(&out, "trust")), trust_before);
    std::fs::write(&config, config_v1()).expect("write config");
    assert!(restarted.refresh().await.expect("valid config"));
    let report = restarted.reconcile().await;
    assert_eq!((report.applied, report.failed), (2, 0));
    assert_eq!(inode(&object_file(&out, "trust")), trust_before);
    let updates = restarted_audit.of("update");
    assert_eq!(updates.len(), 2);
    assert!(
        updates
            .iter()
            .all(|record| record["rules"].to_string().contains("allow-web")),
        "{updates:?}"
    );
    assert!(
        updates
            .iter()
            .all(|record| record["previous_hash"].is_string())
    );
}

#[tokio::test]
async fn an_unchanged_file_missing_from_the_generation_is_written_again() {
    let temp = tempfile::tempdir().expect("temp dir");
    let config = temp.path().join("panos.xml");
    let out = temp.path().join("policies");
    std::fs::write(&config, config_v1()).expect("write config");
    let audit = AuditBuffer::default();
    let mut sync = controller(&config, &out, &audit);
    assert!(sync.refresh().await.expect("valid config"));
    assert_eq!(sync.reconcile().await.applied, 4);
    drop(sync);

    // While sync is stopped, the trust file leaves the generation and comes back, same text,
    // as a plain file: still recognised by its hash, but there is nothing to link from.
    let visible = object_file(&out, "trust");
    let text = std::fs::read_to_string(&visible).expect("read");
    let generation = std::fs::read_link(out.join(".zonewall-current")).expect("current");
    let name = visible.file_name().expect("file name").to_owned();
    std::fs::remove_file(out.join(generation).join(&name)).expect("remove from generation");
    std::fs::remove_file(&visible).expect("remove link");
    std::fs::write(&visible, &text).expect("plain copy");

    std::fs::write(&config, config_web_denied()).expect("write config");
    let mut restarted = controller(&config, &out, &audit);
    assert!(restarted.refresh().await.expect("valid config"));
    let report = restarted.reconcile().await;
    assert_eq!((report.applied, report.failed), (2, 0));
    assert_eq!(zones(&out), ["any", "dmz", "trust", "untrust"]);
    assert_eq!(
        std::fs::read_to_string(object_file(&out, "trust")).expect("read"),
        text
    );
    assert!(
        std::fs::symlink_metadata(object_file(&out, "trust"))
            .expect("stat")
            .file_type()
            .is_symlink(),
        "the visible file is the generation's again"
    );
}
