//! ZonePolicy: translation of the Panorama fixture, the evaluator's tier, audit and
//! missing-policy semantics, validation errors, and the CLI (`crd`, `translate`,
//! `explain --policies`).

mod common;

use std::process::{Command, Output};

use common::{fixture, flow, resolve_dg};
use zonewall::firewall::panos::{self, ResolveOptions};
use zonewall::model::{Action, NoLabels};
use zonewall::policy::load::parse_documents;
use zonewall::policy::resource::{Fidelity, Tier};
use zonewall::policy::{DecidedBy, Decision, Direction, PolicySet, PolicySetError, ZonePolicy};
use zonewall::translate::{self, TranslateOptions};

fn policies(yaml: &str) -> Vec<ZonePolicy> {
    parse_documents(yaml, "test.yaml").expect("test YAML parses")
}

fn set(yaml: &str) -> PolicySet {
    PolicySet::new(&policies(yaml)).expect("test policies are valid")
}

/// A ZonePolicy document with one egress rule and no ingress rules.
fn doc(name: &str, tier: &str, zone: &str, mode: &str, order: u32, rule: &str) -> String {
    format!(
        "---\napiVersion: zonewall.io/v1alpha1\nkind: ZonePolicy\nmetadata:\n  name: {name}\nspec:\n  tier: {tier}\n  order: {order}\n  mode: {mode}\n  zone: {zone}\n  egress:\n{rule}  ingress: []\n"
    )
}

/// `- action: <action>` matching every flow to any peer zone.
fn rule(action: &str, name: &str) -> String {
    let reset = if action == "Reject" {
        "    reset: Both\n"
    } else {
        ""
    };
    format!(
        "  - action: {action}\n{reset}    ruleType: Universal\n    peerZones: [any]\n    source: {{any: true}}\n    destination: {{any: true}}\n    service: {{any: true}}\n    log: {{start: false, end: true}}\n    provenance: {{rule: {name}, deviceGroup: dg, rulebase: Pre, position: 1}}\n"
    )
}

fn tcp(src_zone: &str, dst_zone: &str) -> zonewall::model::Flow {
    flow(
        src_zone, dst_zone, "10.0.0.1", "10.0.0.2", "tcp", 40000, 443,
    )
}

#[test]
fn fixture_translates_to_one_object_per_zone_plus_any_deterministically() {
    let resolved = resolve_dg("panorama.xml", "dg-prod");
    let options = TranslateOptions::default();
    let first = translate::translate(&resolved, &options).expect("translate");
    let names: Vec<&str> = first
        .policies
        .iter()
        .map(|p| p.metadata.name.as_deref().expect("named"))
        .collect();
    assert_eq!(
        names,
        [
            "firewall-dmz-d96d25c0",
            "firewall-mgmt-5dee7efc",
            "firewall-trust-e46b4575",
            "firewall-untrust-5c52c1b8",
            "firewall-any"
        ]
    );
    let second = translate::translate(&resolved, &options).expect("translate again");
    assert_eq!(
        translate::to_yaml(&first.policies).expect("yaml"),
        translate::to_yaml(&second.policies).expect("yaml"),
        "the same input must give byte-identical output"
    );
    // The YAML kept from the size check is what serializing the objects gives.
    assert_eq!(
        first.to_yaml(),
        translate::to_yaml(&first.policies).expect("yaml")
    );

    // The application-default allow fails closed, in the object and in its status.
    let trust = &first.policies[2];
    let rule = trust
        .spec
        .egress
        .iter()
        .find(|r| {
            r.provenance
                .as_ref()
                .is_some_and(|p| p.rule == "prod-app-default")
        })
        .expect("prod-app-default is in trust's egress");
    assert_eq!(rule.fidelity, Fidelity::FailClosed);
    let status = trust.status.as_ref().expect("status");
    assert!(
        status
            .warnings
            .iter()
            .any(|w| w.contains("'prod-app-default'") && w.contains("fails closed")),
        "{:?}",
        status.warnings
    );
    assert_eq!(status.warning_count as usize, status.warnings.len());
    assert_eq!(status.egress_rules as usize, trust.spec.egress.len());
}

#[test]
fn fixture_verdicts_match_the_firewall_including_unnamed_zones() {
    let resolved = resolve_dg("panorama.xml", "dg-prod");
    let translation =
        translate::translate(&resolved, &TranslateOptions::default()).expect("translate");
    let set = PolicySet::new(&translation.policies).expect("valid");
    let flows = [
        tcp("trust", "untrust"),
        tcp("trust", "trust"),
        tcp("guest", "guest"),
        tcp("guest", "dmz"),
        tcp("dmz", "guest"),
        flow(
            "untrust",
            "dmz",
            "203.0.113.15",
            "10.1.1.7",
            "tcp",
            40000,
            22,
        ),
        flow("dmz", "dmz", "10.1.9.9", "10.1.77.10", "udp", 5000, 53),
        flow("trust", "untrust", "10.9.9.9", "8.8.8.8", "tcp", 40000, 443),
    ];
    for flow in flows {
        let reference = resolved.policy.evaluate(&flow, &NoLabels);
        for direction in [Direction::Egress, Direction::Ingress] {
            let verdict = set.evaluate(&flow, direction, &NoLabels);
            let hit = verdict.rule().expect("a rule decides");
            let provenance = hit.provenance.as_ref().expect("provenance");
            assert_eq!(
                (verdict.decision.firewall_action(), provenance.rule.as_str()),
                (reference.action, reference.rule.as_str()),
                "{direction:?} {flow:?}"
            );
        }
    }
}

/// Shrunk from the equivalence test: a configuration with many warnings and a small
/// object limit failed to split, because every warning was charged to every part.
#[test]
fn zones_split_into_parts_under_the_limit_and_evaluate_the_same() {
    let resolved = resolve_dg("panorama.xml", "dg-prod");
    let options = TranslateOptions {
        max_object_bytes: 8_000,
        ..TranslateOptions::default()
    };
    let translation =
        translate::translate(&resolved, &options).expect("translate with a small limit");
    let parts: Vec<_> = translation
        .policies
        .iter()
        .filter(|p| p.spec.part.is_some_and(|part| part.count > 1))
        .collect();
    assert!(!parts.is_empty(), "an 8 kB limit splits at least one zone");
    for policy in &translation.policies {
        let bytes = translate::object_yaml(policy).expect("yaml").len();
        assert!(
            bytes <= 8_000,
            "{:?} is {bytes} bytes",
            policy.metadata.name
        );
    }
    assert!(parts.iter().any(|p| {
        p.metadata
            .name
            .as_deref()
            .is_some_and(|n| n.ends_with("-part-2"))
    }));
    let set = PolicySet::new(&translation.policies).expect("valid");
    let whole = PolicySet::new(
        &translate::translate(&resolved, &TranslateOptions::default())
            .expect("translate")
            .policies,
    )
    .expect("valid");
    for flow in [
        tcp("trust", "dmz"),
        tcp("dmz", "trust"),
        tcp("untrust", "untrust"),
    ] {
        for direction in [Direction::Egress, Direction::Ingress] {
            assert_eq!(
                set.evaluate(&flow, direction, &NoLabels).decision,
                whole.evaluate(&flow, direction, &NoLabels).decision
            );
        }
    }

    // Dropping one part must not open anything: the set is refused.
    let mut missing = translation.policies.clone();
    let index = missing
        .iter()
        .position(|p| {
            p.metadata
                .name
                .as_deref()
                .is_some_and(|n| n.ends_with("-part-2"))
        })
        .expect("a second part");
    missing.remove(index);
    assert!(matches!(
        PolicySet::new(&missing),
        Err(PolicySetError::IncompleteParts { .. })
    ));
}

/// Columns with enough prefixes become named sets: each object, split parts included,
/// carries exactly the sets its rules name, equal lists have one name everywhere, and the
/// objects still fit the limit.
#[test]
fn large_columns_become_address_sets_that_each_object_carries() {
    let resolved = resolve_dg("panorama.xml", "dg-prod");
    let written_out = TranslateOptions {
        address_sets_from: usize::MAX,
        ..TranslateOptions::default()
    };
    let none = translate::translate(&resolved, &written_out).expect("translate");
    assert!(none.policies.iter().all(|p| p.spec.address_sets.is_empty()));
    for limit in [translate::DEFAULT_MAX_OBJECT_BYTES, 8_000] {
        let options = TranslateOptions {
            address_sets_from: 1,
            max_object_bytes: limit,
            ..TranslateOptions::default()
        };
        let translation = translate::translate(&resolved, &options).expect("translate");
        let mut contents = std::collections::BTreeMap::new();
        for (policy, document) in translation.policies.iter().zip(&translation.documents) {
            assert!(document.len() <= limit, "{:?}", policy.metadata.name);
            let spec = &policy.spec;
            let columns: Vec<_> = spec
                .egress
                .iter()
                .chain(&spec.ingress)
                .flat_map(|rule| [&rule.source, &rule.destination])
                .collect();
            assert!(
                columns.iter().all(|c| c.prefixes.is_empty()),
                "every column with a prefix names a set"
            );
            let named: std::collections::BTreeSet<&String> =
                columns.iter().flat_map(|c| &c.sets).collect();
            let carried: std::collections::BTreeSet<&String> = spec.address_sets.keys().collect();
            assert_eq!(named, carried, "{:?}", policy.metadata.name);
            for (name, set) in &spec.address_sets {
                assert!(name.starts_with("set-"), "{name}");
                let first = contents.entry(name.clone()).or_insert(&set.prefixes);
                assert_eq!(*first, &set.prefixes, "one name, one list");
            }
        }
        assert!(!contents.is_empty());
        if limit < translate::DEFAULT_MAX_OBJECT_BYTES {
            assert!(
                translation
                    .policies
                    .iter()
                    .any(|p| p.spec.part.is_some_and(|part| part.count > 1)),
                "the small limit splits a zone"
            );
        }
        // Every part is whole on its own: no set it names is missing.
        PolicySet::new(&translation.policies).expect("valid");
    }
}

#[test]
fn audit_reports_would_deny_and_allows() {
    let set = set(&doc(
        "fw-trust",
        "firewall",
        "trust",
        "Audit",
        1,
        &rule("Deny", "block"),
    ));
    let verdict = set.evaluate(&tcp("trust", "dmz"), Direction::Egress, &NoLabels);
    assert_eq!(verdict.decision, Decision::Allow);
    assert!(verdict.would_deny());
    let Some((Decision::Deny, DecidedBy::Rule(hit))) = &verdict.audit else {
        panic!("expected an audited deny, got {:?}", verdict.audit);
    };
    assert_eq!(
        hit.provenance.as_ref().map(|p| p.rule.as_str()),
        Some("block")
    );
}

#[test]
fn pass_hands_over_to_the_next_tier_and_default_allows_after_the_last() {
    let yaml = [
        doc(
            "fw-trust",
            "firewall",
            "trust",
            "Enforce",
            1,
            &rule("Pass", "to-platform"),
        ),
        doc(
            "platform-trust",
            "platform",
            "trust",
            "Enforce",
            1,
            &rule("Reject", "platform-reject"),
        ),
        doc(
            "fw-dmz",
            "firewall",
            "dmz",
            "Enforce",
            1,
            &rule("Pass", "to-platform"),
        ),
    ]
    .concat();
    let set = set(&yaml);
    let verdict = set.evaluate(&tcp("trust", "dmz"), Direction::Egress, &NoLabels);
    assert_eq!(verdict.decision, Decision::ResetBoth);
    assert_eq!(verdict.rule().map(|r| r.tier), Some(Tier::Platform));
    // dmz has no platform policy: the platform tier has no say, the default allows.
    let verdict = set.evaluate(&tcp("dmz", "trust"), Direction::Egress, &NoLabels);
    assert_eq!(verdict.decision, Decision::Allow);
    assert_eq!(verdict.decided_by, DecidedBy::DefaultAllow);
}

#[test]
fn zone_without_policy_uses_any_object_else_fails_closed() {
    let trust = doc(
        "fw-trust",
        "firewall",
        "trust",
        "Enforce",
        1,
        &rule("Allow", "trust-out"),
    );
    let any = doc(
        "fw-any",
        "firewall",
        "any",
        "Enforce",
        1,
        &rule("Drop", "any-drop"),
    );
    let with_any = set(&[trust.clone(), any].concat());
    let verdict = with_any.evaluate(&tcp("guest", "trust"), Direction::Egress, &NoLabels);
    assert_eq!(verdict.decision, Decision::Drop);
    let without_any = set(&trust);
    let verdict = without_any.evaluate(&tcp("guest", "trust"), Direction::Egress, &NoLabels);
    assert_eq!(verdict.decision, Decision::Deny);
    assert!(matches!(verdict.decided_by, DecidedBy::NoZonePolicy { .. }));
    // No firewall tier at all: nothing to be faithful to, the default allows.
    let empty = PolicySet::new::<ZonePolicy>(&[]).expect("empty set");
    assert!(
        empty
            .evaluate(&tcp("guest", "trust"), Direction::Egress, &NoLabels)
            .decision
            .is_allow()
    );
}

#[test]
fn firewall_tier_denies_when_its_rules_run_out() {
    let only_dmz = "  - action: Allow\n    ruleType: Universal\n    peerZones: [dmz]\n    source: {any: true}\n    destination: {any: true}\n    service: {any: true}\n    log: {start: false, end: false}\n";
    let set = set(&doc(
        "fw-trust", "firewall", "trust", "Enforce", 1, only_dmz,
    ));
    assert!(
        set.evaluate(&tcp("trust", "dmz"), Direction::Egress, &NoLabels)
            .decision
            .is_allow()
    );
    let verdict = set.evaluate(&tcp("trust", "untrust"), Direction::Egress, &NoLabels);
    assert_eq!(verdict.decision, Decision::Deny);
    assert!(matches!(verdict.decided_by, DecidedBy::EndOfTier { .. }));
}

#[test]
fn validation_names_object_and_rule() {
    let bad_rule = "  - action: Reject\n    ruleType: Universal\n    peerZones: [any, dmz]\n    source: {prefixes: [10.0.0.1/8, 300.0.0.0/8]}\n    destination: {selectors: [{group: g, filter: \"'a' and (\"}]}\n    service: {entries: [{protocol: TCP, ports: [{port: 90, endPort: 80}]}]}\n    log: {start: false, end: false}\n    provenance: {rule: broken, deviceGroup: dg, rulebase: Pre, position: 3}\n";
    let err = PolicySet::new(&policies(&doc(
        "fw-trust", "firewall", "trust", "Enforce", 1, bad_rule,
    )))
    .expect_err("invalid");
    let text = err.to_string();
    for expected in [
        "ZonePolicy 'fw-trust', egress rule 1 ('broken'): action Reject needs reset",
        "'any' together with other zones",
        "'10.0.0.1/8' has host bits set; write 10.0.0.0/8",
        "'300.0.0.0/8' is not a CIDR prefix",
        "selector of group 'g'",
        "range 90-80 runs backwards",
    ] {
        assert!(text.contains(expected), "missing {expected:?} in:\n{text}");
    }
    // An unknown action is refused when the YAML is read, naming the document.
    let unknown = doc(
        "fw-x",
        "firewall",
        "trust",
        "Enforce",
        1,
        &rule("Permit", "x"),
    );
    let err = parse_documents(&unknown, "x.yaml").expect_err("unknown action");
    assert!(err.to_string().contains("x.yaml: document 1"), "{err}");
}

/// A column that names an address set of its object matches the set's prefixes along with
/// its own; sets are checked like columns, and a name the object does not define is refused.
#[test]
fn address_sets_are_matched_by_name_and_checked() {
    let to = |sets: &str| {
        format!(
            "  - action: Allow\n    ruleType: Universal\n    peerZones: [any]\n    source: {{any: true}}\n    destination: {{prefixes: [192.0.2.0/24], sets: [{sets}]}}\n    service: {{any: true}}\n    log: {{start: false, end: false}}\n    provenance: {{rule: to-web, deviceGroup: dg, rulebase: Pre, position: 1}}\n"
        )
    };
    let sets = |body: &str| format!("  addressSets:\n{body}");
    let web = "    web-servers:\n      prefixes: [10.1.0.0/16, fd00:1::/64]\n";
    let good = doc(
        "fw-trust",
        "firewall",
        "trust",
        "Enforce",
        1,
        &to("web-servers"),
    ) + &sets(web);
    let good = set(&good);
    let verdict = |destination: &str| {
        good.evaluate(
            &flow("trust", "dmz", "10.0.0.1", destination, "tcp", 40000, 443),
            Direction::Egress,
            &NoLabels,
        )
        .decision
    };
    assert!(verdict("10.1.2.3").is_allow(), "in the set");
    assert!(verdict("fd00:1::5").is_allow(), "in the set (IPv6)");
    assert!(verdict("192.0.2.7").is_allow(), "written in the column");
    assert_eq!(verdict("10.2.0.1"), Decision::Deny, "in neither");

    let bad = doc(
        "fw-trust",
        "firewall",
        "trust",
        "Enforce",
        1,
        &to("web-servers, db"),
    ) + &sets(
        "    web-servers:\n      prefixes: [10.1.0.1/16]\n    Web_Set:\n      prefixes: [10.9.0.0/16]\n",
    );
    let text = PolicySet::new(&policies(&bad))
        .expect_err("invalid sets")
        .to_string();
    for expected in [
        "ZonePolicy 'fw-trust', spec.addressSets[web-servers]: address set prefix '10.1.0.1/16' has host bits set; write 10.1.0.0/16",
        "spec.addressSets[Web_Set]: an address set name is 1-63 lowercase letters",
        "egress rule 1 ('to-web'): destination names address set 'db', which spec.addressSets does not define",
    ] {
        assert!(text.contains(expected), "missing {expected:?} in:\n{text}");
    }
}

#[test]
fn overlapping_order_in_a_tier_is_refused() {
    let yaml = [
        doc(
            "fw-trust-a",
            "firewall",
            "trust",
            "Enforce",
            1,
            &rule("Allow", "a"),
        ),
        doc(
            "fw-trust-b",
            "firewall",
            "trust",
            "Enforce",
            1,
            &rule("Deny", "b"),
        ),
    ]
    .concat();
    let err = PolicySet::new(&policies(&yaml)).expect_err("overlap");
    assert!(
        err.to_string()
            .contains("'fw-trust-a' and 'fw-trust-b' both have order 1 for zone 'trust'"),
        "{err}"
    );
}

#[test]
fn intrazone_and_interzone_survive_translation() {
    let xml = r#"<config><devices><entry name="localhost.localdomain"><vsys><entry name="vsys1">
        <zone><entry name="a"/><entry name="b"/></zone>
        <rulebase><security><rules>
          <entry name="intra"><rule-type>intrazone</rule-type><from><member>a</member></from><to><member>b</member></to>
            <source><member>any</member></source><destination><member>any</member></destination>
            <service><member>any</member></service><application><member>any</member></application><action>drop</action></entry>
          <entry name="inter"><rule-type>interzone</rule-type><from><member>any</member></from><to><member>a</member><member>b</member></to>
            <source><member>any</member></source><destination><member>any</member></destination>
            <service><member>any</member></service><application><member>any</member></application><action>allow</action></entry>
        </rules></security></rulebase></entry></vsys></entry></devices></config>"#;
    let resolved =
        panos::load_policy(xml, "inline.xml", &ResolveOptions::default()).expect("loads");
    let translation =
        translate::translate(&resolved, &TranslateOptions::default()).expect("translate");
    let set = PolicySet::new(&translation.policies).expect("valid");
    let cases = [
        (("a", "a"), Action::Drop, "intra"),
        (("b", "b"), Action::Allow, "intrazone-default"),
        (("a", "b"), Action::Allow, "inter"),
        (("guest", "a"), Action::Allow, "inter"),
        (("a", "guest"), Action::Deny, "interzone-default"),
    ];
    for ((src, dst), action, rule) in cases {
        let flow = tcp(src, dst);
        assert_eq!(resolved.policy.evaluate(&flow, &NoLabels).rule, rule);
        for direction in [Direction::Egress, Direction::Ingress] {
            let verdict = set.evaluate(&flow, direction, &NoLabels);
            assert_eq!(
                verdict.decision.firewall_action(),
                action,
                "{src}->{dst} {direction:?}"
            );
            assert_eq!(
                verdict
                    .rule()
                    .and_then(|r| r.provenance.as_ref())
                    .map(|p| p.rule.as_str()),
                Some(rule)
            );
        }
    }
}

fn zonewall(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_zonewall"))
        .args(args)
        .output()
        .expect("run zonewall")
}

#[test]
fn crd_command_prints_the_committed_crd() {
    let output = zonewall(&["crd"]);
    assert!(output.status.success());
    let committed = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../deploy/crds/zonepolicies.zonewall.io.yaml"),
    )
    .expect("committed CRD");
    assert_eq!(
        String::from_utf8_lossy(&output.stdout),
        committed,
        "regenerate with `cargo xtask codegen`"
    );
}

#[test]
fn translate_writes_files_and_explain_policies_agrees_with_the_firewall() {
    let dir = std::env::temp_dir().join(format!("zonewall-translate-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    // What an earlier run left (a zone since removed) goes; files not ours stay.
    std::fs::create_dir_all(&dir).expect("create output directory");
    let stale = dir.join("firewall-removed-zone-00000000.yaml");
    let unrelated = dir.join("README.txt");
    std::fs::write(&stale, "kind: ZonePolicy\n").expect("plant stale object");
    std::fs::write(&unrelated, "operator notes\n").expect("plant unrelated file");
    let config = fixture("panorama.xml");
    let config = config.to_str().expect("utf-8 path");
    let dir_text = dir.to_str().expect("utf-8 path");
    let output = zonewall(&[
        "translate",
        "--panos-config",
        config,
        "--device-group",
        "dg-prod",
        "-o",
        dir_text,
    ]);
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("warning:") && stderr.contains("'prod-app-default'"),
        "{stderr}"
    );
    assert!(
        !stale.exists(),
        "a stale object from an earlier run must be removed"
    );
    assert!(unrelated.exists(), "files zonewall did not write must stay");
    std::fs::remove_file(&unrelated).expect("remove unrelated file");
    // The visible view: one file per object. Hidden entries are the published generation
    // (`.zonewall-current` and the generation directory it names), which readers go through.
    let mut files: Vec<String> = std::fs::read_dir(&dir)
        .expect("output directory")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .filter(|f| !f.starts_with('.'))
        .collect();
    files.sort();
    assert_eq!(files.len(), 5, "{files:?}");
    assert!(files.iter().all(|f| f.ends_with(".yaml")));
    for file in &files {
        let text = std::fs::read_to_string(dir.join(file)).expect("visible file reads");
        assert!(text.contains("kind: ZonePolicy"), "{file}");
    }
    let generation = zonewall::policy::directory::current_generation(&dir)
        .expect("generation link")
        .expect("the output is published as a generation");
    assert_eq!(
        std::fs::read_dir(dir.join(&generation))
            .expect("generation directory")
            .count(),
        5
    );

    let stdout = zonewall(&[
        "translate",
        "--panos-config",
        config,
        "--device-group",
        "dg-prod",
    ]);
    assert!(stdout.status.success());
    assert_eq!(
        String::from_utf8_lossy(&stdout.stdout)
            .matches("kind: ZonePolicy")
            .count(),
        5
    );

    for (src_zone, dst_zone, src, dst, dport) in [
        ("untrust", "dmz", "198.51.100.15", "10.1.1.7", "80"),
        ("trust", "untrust", "10.0.0.5", "10.0.53.1", "53"),
        ("guest", "trust", "10.9.0.1", "10.0.0.9", "443"),
        ("trust", "untrust", "10.9.9.9", "8.8.8.8", "443"),
    ] {
        let base = [
            "--src-zone",
            src_zone,
            "--dst-zone",
            dst_zone,
            "--src",
            src,
            "--dst",
            dst,
            "--proto",
            "udp",
            "--sport",
            "4000",
            "--dport",
            dport,
            "--json",
        ];
        let firewall = zonewall(
            &[
                &[
                    "explain",
                    "--panos-config",
                    config,
                    "--device-group",
                    "dg-prod",
                ][..],
                &base,
            ]
            .concat(),
        );
        let cluster = zonewall(&[&["explain", "--policies", dir_text][..], &base].concat());
        assert!(
            cluster.status.success(),
            "{}",
            String::from_utf8_lossy(&cluster.stderr)
        );
        assert_eq!(
            String::from_utf8_lossy(&firewall.stdout),
            String::from_utf8_lossy(&cluster.stdout),
            "{src_zone}->{dst_zone} {dst}:{dport}"
        );
    }
    std::fs::remove_dir_all(&dir).expect("clean up");
}

#[test]
fn translate_exits_2_on_an_invalid_config() {
    let dir = std::env::temp_dir().join(format!("zonewall-bad-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let bad = dir.join("bad.xml");
    std::fs::write(&bad, "<config><shared>\n<address>\n</config>").expect("write");
    let output = zonewall(&["translate", "--panos-config", bad.to_str().expect("utf-8")]);
    assert_eq!(output.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&output.stderr).contains("bad.xml:"));
    std::fs::remove_dir_all(&dir).expect("clean up");
}

/// `zonewall sync` translates without keeping the YAML (sizes come from a bound of it): the
/// objects, and where zones split into parts, must be the same as with the YAML kept.
#[test]
fn objects_and_splits_are_the_same_without_their_yaml() {
    let resolved = resolve_dg("panorama.xml", "dg-prod");
    for limit in [8_000, 12_000, 20_000, translate::DEFAULT_MAX_OBJECT_BYTES] {
        let options = TranslateOptions {
            max_object_bytes: limit,
            ..TranslateOptions::default()
        };
        let with = translate::translate(&resolved, &options).expect("translate");
        let without = translate::translate(
            &resolved,
            &TranslateOptions {
                documents: false,
                ..options
            },
        )
        .expect("translate without YAML");
        assert!(without.documents.is_empty());
        assert_eq!(with.documents.len(), with.policies.len());
        let json = |policies: &[ZonePolicy]| serde_json::to_value(policies).expect("json");
        assert_eq!(
            json(&with.policies),
            json(&without.policies),
            "limit {limit}"
        );
        for (policy, document) in with.policies.iter().zip(&with.documents) {
            assert_eq!(&translate::object_yaml(policy).expect("yaml"), document);
            assert!(document.len() <= limit, "limit {limit}");
        }
    }
}
