//! Verdicts on the Panorama fixture: two-level device-group hierarchy (dg-root -> dg-prod
//! from Panorama's readonly record, dg-root -> dg-dev from an inline parent-dg), shared and
//! device-group objects with shadowing, pre/post rules at every level, default-rule
//! overrides, IPv6, ranges, wildcards, negation, disabled rules, rule types, dynamic groups,
//! service groups and application-default.

mod common;

use std::collections::BTreeMap;
use std::net::IpAddr;

use common::*;
use zonewall::firewall::panos::{
    ApplicationMapping, ConfigKind, Effect, Limits, ResolveOptions, WarningKind, load_file,
};
use zonewall::inventory::Inventory;
use zonewall::model::{Fidelity, LabelSource, Rulebase};

const FILE: &str = "panorama.xml";

fn prod() -> zonewall::firewall::panos::Resolved {
    resolve_dg(FILE, "dg-prod")
}

#[test]
fn reads_hierarchy_from_readonly_and_inline_parent() {
    let config = load_file(&fixture(FILE), Limits::default()).unwrap();
    assert_eq!(config.kind, ConfigKind::Panorama);
    assert_eq!(
        config.device_groups["dg-prod"].parent.as_deref(),
        Some("dg-root")
    );
    assert_eq!(
        config.device_groups["dg-dev"].parent.as_deref(),
        Some("dg-root")
    );
    assert_eq!(config.device_groups["dg-root"].parent, None);
    let zones: Vec<&str> = config.template_zones.iter().map(String::as_str).collect();
    assert_eq!(zones, ["dmz", "mgmt", "trust", "untrust"]);
}

#[test]
fn rule_order_follows_panorama() {
    let resolved = prod();
    let order: Vec<(String, Rulebase, String)> = resolved
        .policy
        .rules
        .iter()
        .map(|r| {
            (
                r.provenance.device_group.clone(),
                r.provenance.rulebase,
                r.name().to_string(),
            )
        })
        .collect();
    let position = |name: &str| order.iter().position(|(_, _, n)| n == name).unwrap();
    // shared pre < root pre < prod pre < prod post < root post < shared post < defaults
    assert!(position("allow-monitoring") < position("root-allow-dns"));
    assert!(position("root-disabled-allow-all") < position("prod-allow-web"));
    assert!(position("prod-cycle") < position("prod-post-allow-ops-net"));
    assert!(position("prod-post-allow-ops-net") < position("root-post-reset-ssh"));
    assert!(position("root-post-reset-ssh") < position("shared-post-deny-untrust"));
    assert!(position("shared-post-deny-untrust") < position("intrazone-default"));
    assert!(position("intrazone-default") < position("interzone-default"));
    assert_eq!(order.last().unwrap().2, "interzone-default");
    let web = &resolved.policy.rules[position("prod-allow-web")];
    assert_eq!(web.provenance.position, 1);
    assert_eq!(
        web.provenance.uuid.as_deref(),
        Some("0b1e2f3a-0000-4000-8000-000000000020")
    );
    assert_eq!(web.provenance.device_group, "dg-prod");
    assert!(web.provenance.line.unwrap() > 1);
}

#[test]
fn device_group_object_shadows_shared_object() {
    let r = prod();
    // dg-prod's web-servers is 10.1.1.0/24; shared's is 10.0.1.0/24.
    let v = decide(
        &r,
        &flow("untrust", "dmz", "192.0.2.1", "10.1.1.5", "tcp", 40000, 80),
    );
    assert_verdict(&v, "allow", "prod-allow-web", "pre", "dg-prod");
    assert!(v.reason.contains(
        "security rule 'prod-allow-web' (pre-rulebase of device group 'dg-prod', position 1) matched"
    ), "{}", v.reason);
    assert!(
        v.reason
            .contains("destination 10.1.1.5 is in destination [web-servers] (prefix 10.1.1.0/24)"),
        "{}",
        v.reason
    );
    assert!(
        v.reason.contains("tcp/80 is in service [web-svcs]"),
        "{}",
        v.reason
    );
    assert!(v.log_end && !v.log_start);

    let v = decide(
        &r,
        &flow("untrust", "dmz", "192.0.2.1", "10.0.1.5", "tcp", 40000, 80),
    );
    assert_verdict(&v, "deny", "shared-post-deny-untrust", "post", "shared");
    assert!(!v.log_end, "log-end no is honoured");

    // dg-prod's web-ports (80,443) shadows shared's (80,443,8000-8080).
    let v = decide(
        &r,
        &flow("trust", "dmz", "10.3.0.1", "10.1.2.10", "tcp", 40000, 443),
    );
    assert_verdict(&v, "allow", "prod-dyn-web", "pre", "dg-prod");
    let v = decide(
        &r,
        &flow("trust", "dmz", "10.3.0.1", "10.1.2.10", "tcp", 40000, 8000),
    );
    assert_verdict(&v, "deny", "interzone-default", "default", "shared");
}

#[test]
fn nested_service_groups_and_predefined_services() {
    let r = prod();
    for port in [80, 8080, 8443] {
        let v = decide(
            &r,
            &flow(
                "untrust",
                "dmz",
                "192.0.2.1",
                "10.1.1.5",
                "tcp",
                40000,
                port,
            ),
        );
        assert_verdict(&v, "allow", "prod-allow-web", "pre", "dg-prod");
    }
    let v = decide(
        &r,
        &flow("untrust", "dmz", "192.0.2.1", "10.1.1.5", "tcp", 40000, 443),
    );
    assert_verdict(&v, "deny", "shared-post-deny-untrust", "post", "shared");
    // app-svcs (dg-root) = web-svcs (shared) + dns-udp (shared, source ports 1024-65535).
    let v = decide(
        &r,
        &flow("trust", "dmz", "10.3.0.1", "10.1.9.9", "udp", 40000, 53),
    );
    assert_verdict(&v, "allow", "prod-interzone-trust", "pre", "dg-prod");
    let v = decide(
        &r,
        &flow("trust", "dmz", "10.3.0.1", "10.1.9.9", "udp", 53, 53),
    );
    assert_verdict(&v, "deny", "interzone-default", "default", "shared");
}

#[test]
fn shared_pre_rules_come_first_and_ranges_are_exact() {
    let r = prod();
    for src in ["198.51.100.10", "198.51.100.15", "198.51.100.20"] {
        let v = decide(
            &r,
            &flow("untrust", "dmz", src, "10.1.1.5", "tcp", 40000, 80),
        );
        assert_verdict(&v, "drop", "block-bad-actors", "pre", "shared");
    }
    for src in ["198.51.100.9", "198.51.100.21"] {
        let v = decide(
            &r,
            &flow("untrust", "dmz", src, "10.1.1.5", "tcp", 40000, 80),
        );
        assert_verdict(&v, "allow", "prod-allow-web", "pre", "dg-prod");
    }
    // dg-root's partner-range with dg-root's ssh service; outside the range, the root's
    // post-rule resets ssh.
    let v = decide(
        &r,
        &flow(
            "untrust",
            "dmz",
            "203.0.113.15",
            "10.1.1.7",
            "tcp",
            40000,
            22,
        ),
    );
    assert_verdict(&v, "allow", "prod-partner", "pre", "dg-prod");
    let v = decide(
        &r,
        &flow(
            "untrust",
            "dmz",
            "203.0.113.21",
            "10.1.1.7",
            "tcp",
            40000,
            22,
        ),
    );
    assert_verdict(&v, "reset-both", "root-post-reset-ssh", "post", "dg-root");
}

#[test]
fn logging_flags_and_ipv6_group_members() {
    let r = prod();
    let v = decide(
        &r,
        &flow("mgmt", "trust", "10.99.0.5", "10.3.3.3", "tcp", 40000, 9100),
    );
    assert_verdict(&v, "allow", "allow-monitoring", "pre", "shared");
    assert!(v.log_start && v.log_end);
    let v = decide(
        &r,
        &flow(
            "mgmt",
            "dmz",
            "fd00:99::5",
            "fd00:10::9",
            "tcp",
            40000,
            9100,
        ),
    );
    assert_verdict(&v, "allow", "allow-monitoring", "pre", "shared");
    let v = decide(
        &r,
        &flow("mgmt", "trust", "10.99.0.6", "10.3.3.3", "tcp", 40000, 9100),
    );
    assert_verdict(&v, "deny", "interzone-default", "default", "shared");
    assert!(
        v.log_end && !v.log_start,
        "shared override sets log-end on interzone-default"
    );
}

#[test]
fn ipv6_destinations() {
    let r = prod();
    let v = decide(
        &r,
        &flow(
            "untrust",
            "dmz",
            "2001:db8::1",
            "fd00:10::1234",
            "tcp",
            40000,
            443,
        ),
    );
    assert_verdict(&v, "allow", "prod-v6-web", "pre", "dg-prod");
    let v = decide(
        &r,
        &flow(
            "untrust",
            "dmz",
            "2001:db8::1",
            "fd00:11::1",
            "tcp",
            40000,
            443,
        ),
    );
    assert_verdict(&v, "deny", "shared-post-deny-untrust", "post", "shared");
}

#[test]
fn intrazone_rule_type_and_wildcard() {
    let r = prod();
    // odd-hosts = 10.1.0.10/0.0.255.0: any third octet, last octet 10.
    for dst in ["10.1.7.10", "10.1.200.10"] {
        let v = decide(&r, &flow("dmz", "dmz", "10.1.1.5", dst, "tcp", 40000, 80));
        assert_verdict(&v, "deny", "prod-intrazone-dmz-odd", "pre", "dg-prod");
        assert!(
            v.reason.contains("wildcard 10.1.0.10/0.0.255.0"),
            "{}",
            v.reason
        );
    }
    let v = decide(
        &r,
        &flow("dmz", "dmz", "10.1.1.5", "10.1.7.11", "tcp", 40000, 80),
    );
    assert_verdict(&v, "allow", "intrazone-default", "default", "dg-prod");
    assert!(
        v.log_end,
        "dg-prod override sets log-end on intrazone-default"
    );
    // Intrazone rules never match across zones.
    let v = decide(
        &r,
        &flow("trust", "dmz", "10.3.0.1", "10.1.7.10", "tcp", 40000, 80),
    );
    assert_verdict(&v, "allow", "prod-interzone-trust", "pre", "dg-prod");
}

#[test]
fn interzone_rule_type_ignores_same_zone() {
    let r = prod();
    let v = decide(
        &r,
        &flow("trust", "trust", "10.3.0.1", "10.3.0.2", "tcp", 40000, 80),
    );
    assert_verdict(&v, "allow", "intrazone-default", "default", "dg-prod");
    let v = decide(
        &r,
        &flow("trust", "dmz", "10.3.0.1", "10.1.9.9", "tcp", 40000, 8080),
    );
    assert_verdict(&v, "allow", "prod-interzone-trust", "pre", "dg-prod");
}

#[test]
fn negated_destination() {
    let r = prod();
    let v = decide(
        &r,
        &flow(
            "trust",
            "untrust",
            "10.3.0.1",
            "93.184.216.34",
            "tcp",
            40000,
            443,
        ),
    );
    assert_verdict(&v, "allow", "prod-negate-internet", "pre", "dg-prod");
    assert!(
        v.reason
            .contains("is not in destination [rfc1918] and the rule has negate-destination"),
        "{}",
        v.reason
    );
    let v = decide(
        &r,
        &flow(
            "trust",
            "untrust",
            "10.3.0.1",
            "172.20.1.1",
            "tcp",
            40000,
            443,
        ),
    );
    assert_verdict(&v, "deny", "interzone-default", "default", "shared");
}

#[test]
fn dynamic_group_matches_tagged_objects_and_workload_labels() {
    let r = prod();
    // 'web' and 'prod' and not 'legacy': web-a only.
    let v = decide(
        &r,
        &flow("trust", "dmz", "10.3.0.1", "10.1.2.10", "tcp", 40000, 80),
    );
    assert_verdict(&v, "allow", "prod-interzone-trust", "pre", "dg-prod");
    let v = decide(
        &r,
        &flow("trust", "dmz", "10.3.0.1", "10.1.2.10", "tcp", 40000, 443),
    );
    assert_verdict(&v, "allow", "prod-dyn-web", "pre", "dg-prod");
    for dst in ["10.1.2.11", "10.1.2.12"] {
        let v = decide(
            &r,
            &flow("trust", "dmz", "10.3.0.1", dst, "tcp", 40000, 443),
        );
        assert_verdict(&v, "deny", "interzone-default", "default", "shared");
    }

    let inventory = Inventory::from_yaml(
        r#"
external_zone: untrust
endpoints:
  - {name: pay-1, namespace: shop, zone: trust, ips: [10.244.5.5], labels: {app: payments}}
  - {name: front-dev, namespace: shop, zone: trust, ips: [10.244.5.6], labels: {tier: frontend, env: dev}}
  - {name: front-prod, namespace: shop, zone: trust, ips: [10.244.5.7], labels: {tier: frontend, env: prod}}
"#,
        "inventory.yaml",
    )
    .unwrap();
    let f = |dst: &str| flow("dmz", "trust", "10.1.1.5", dst, "tcp", 40000, 8443);
    let v = decide_with(&r, &f("10.244.5.5"), &inventory);
    assert_verdict(&v, "allow", "prod-payments", "pre", "dg-prod");
    assert!(
        v.reason.contains("dynamic group payments-pods"),
        "{}",
        v.reason
    );
    let v = decide_with(&r, &f("10.244.5.7"), &inventory);
    assert_verdict(&v, "allow", "prod-payments", "pre", "dg-prod");
    // Labels that fail the filter, and the same address without labels, fall through to the
    // widened deny.
    let v = decide_with(&r, &f("10.244.5.6"), &inventory);
    assert_verdict(&v, "deny", "prod-unknown-deny", "pre", "dg-prod");
    let v = decide(&r, &f("10.244.5.5"));
    assert_verdict(&v, "deny", "prod-unknown-deny", "pre", "dg-prod");
}

#[test]
fn application_default_allow_fails_closed_by_default() {
    let r = prod();
    let rule = r
        .policy
        .rules
        .iter()
        .find(|r| r.name() == "prod-app-default")
        .unwrap();
    assert!(matches!(rule.fidelity, Fidelity::NeverMatches { .. }));
    let v = decide(
        &r,
        &flow(
            "trust", "untrust", "10.3.0.1", "10.5.5.5", "tcp", 40000, 443,
        ),
    );
    assert_verdict(&v, "deny", "interzone-default", "default", "shared");
    assert!(r.warnings.iter().any(|w| {
        w.rule
            .as_ref()
            .is_some_and(|x| x.name == "prod-app-default")
            && matches!(w.kind, WarningKind::Applications { .. })
            && w.effect == Effect::RuleMatchesNothing
    }));
}

#[test]
fn application_default_ports_mapping_is_opt_in() {
    let r = resolve_with(
        FILE,
        ResolveOptions {
            device_group: Some("dg-prod".into()),
            application_mapping: ApplicationMapping::DefaultPorts,
            ..ResolveOptions::default()
        },
    );
    for port in [80, 443] {
        let v = decide(
            &r,
            &flow(
                "trust", "untrust", "10.3.0.1", "10.5.5.5", "tcp", 40000, port,
            ),
        );
        assert_verdict(&v, "allow", "prod-app-default", "pre", "dg-prod");
    }
    let v = decide(
        &r,
        &flow(
            "trust", "untrust", "10.3.0.1", "10.5.5.5", "tcp", 40000, 8443,
        ),
    );
    assert_verdict(&v, "deny", "interzone-default", "default", "shared");
    assert!(
        r.warnings
            .iter()
            .any(|w| w.effect == Effect::AllowApproximated)
    );
}

#[test]
fn application_deny_is_widened_not_dropped() {
    let r = prod();
    let v = decide(
        &r,
        &flow(
            "untrust",
            "trust",
            "192.0.2.1",
            "10.3.0.1",
            "tcp",
            40000,
            6881,
        ),
    );
    assert_verdict(&v, "reset-server", "prod-app-deny", "pre", "dg-prod");
    assert!(v.reason.contains("widened"), "{}", v.reason);
    let rule = r
        .policy
        .rules
        .iter()
        .find(|r| r.name() == "prod-app-deny")
        .unwrap();
    assert!(matches!(rule.fidelity, Fidelity::Widened { .. }));
}

#[test]
fn unknown_reference_fails_closed_with_warning() {
    let r = prod();
    let w = r
        .warnings
        .iter()
        .find(|w| {
            w.rule
                .as_ref()
                .is_some_and(|x| x.name == "prod-unknown-ref")
        })
        .expect("warning for prod-unknown-ref");
    assert!(
        matches!(&w.kind, WarningKind::UnknownAddress { name, field: "destination", .. } if name == "does-not-exist")
    );
    assert_eq!(w.effect, Effect::RuleMatchesNothing);
    let text = w.to_string();
    assert!(
        text.contains("panorama.xml:")
            && text.contains("rule 'prod-unknown-ref'")
            && text.contains("'does-not-exist'"),
        "{text}"
    );

    let w = r
        .warnings
        .iter()
        .find(|w| {
            w.rule
                .as_ref()
                .is_some_and(|x| x.name == "prod-unknown-deny")
        })
        .expect("warning for prod-unknown-deny");
    assert_eq!(
        w.effect,
        Effect::DenyWidened {
            field: "destination"
        }
    );
    let v = decide(
        &r,
        &flow("dmz", "trust", "10.1.1.5", "10.3.3.3", "udp", 40000, 53),
    );
    assert_verdict(&v, "deny", "prod-unknown-deny", "pre", "dg-prod");
}

#[test]
fn address_group_cycle_is_reported_and_fails_closed() {
    let r = prod();
    let w = r
        .warnings
        .iter()
        .find(|w| w.rule.as_ref().is_some_and(|x| x.name == "prod-cycle"))
        .expect("warning for prod-cycle");
    match &w.kind {
        WarningKind::GroupCycle { cycle } => assert_eq!(cycle, &["cycle-a", "cycle-b", "cycle-a"]),
        other => panic!("expected a cycle, got {other:?}"),
    }
    let rule = r
        .policy
        .rules
        .iter()
        .find(|r| r.name() == "prod-cycle")
        .unwrap();
    assert!(matches!(rule.fidelity, Fidelity::NeverMatches { .. }));
    // web-a is a member of the cycle; the rule must not allow it.
    let v = decide(
        &r,
        &flow("trust", "dmz", "10.3.0.1", "10.1.2.10", "tcp", 40000, 9999),
    );
    assert_verdict(&v, "deny", "interzone-default", "default", "shared");
}

#[test]
fn targeted_rules_need_the_device_serial() {
    let f = flow("trust", "dmz", "10.3.0.1", "10.1.9.9", "tcp", 40000, 22);
    let r = prod();
    assert_verdict(
        &decide(&r, &f),
        "reset-both",
        "root-post-reset-ssh",
        "post",
        "dg-root",
    );
    assert!(
        r.warnings
            .iter()
            .any(|w| matches!(w.kind, WarningKind::Targeted { .. }))
    );

    let with_serial = |serial: &str| {
        resolve_with(
            FILE,
            ResolveOptions {
                device_group: Some("dg-prod".into()),
                device_serial: Some(serial.into()),
                ..ResolveOptions::default()
            },
        )
    };
    let r = with_serial("007900000000002");
    assert_verdict(&decide(&r, &f), "allow", "prod-targeted", "pre", "dg-prod");
    let r = with_serial("007900000000001");
    assert!(!r.policy.rules.iter().any(|r| r.name() == "prod-targeted"));
    assert_verdict(
        &decide(&r, &f),
        "reset-both",
        "root-post-reset-ssh",
        "post",
        "dg-root",
    );
}

#[test]
fn disabled_rules_never_match() {
    let r = prod();
    let rule = r
        .policy
        .rules
        .iter()
        .find(|r| r.name() == "root-disabled-allow-all")
        .unwrap();
    assert!(rule.disabled);
    let v = decide(
        &r,
        &flow("dmz", "untrust", "10.1.1.5", "192.0.2.1", "tcp", 40000, 80),
    );
    assert_verdict(&v, "deny", "interzone-default", "default", "shared");
}

#[test]
fn icmp_matches_only_service_any() {
    let r = prod();
    let v = decide(
        &r,
        &flow("trust", "dmz", "10.2.3.4", "10.1.9.9", "icmp", 0, 0),
    );
    assert_verdict(&v, "allow", "prod-post-allow-ops-net", "post", "dg-prod");
    assert!(!v.log_end, "log-end no");
    let v = decide(
        &r,
        &flow("trust", "dmz", "10.3.0.1", "10.1.9.9", "icmp", 0, 0),
    );
    assert_verdict(&v, "deny", "interzone-default", "default", "shared");
    let v = decide(
        &r,
        &flow("trust", "dmz", "fd00:1::1", "fd00:10::1", "icmpv6", 0, 0),
    );
    assert_verdict(&v, "deny", "interzone-default", "default", "shared");
}

#[test]
fn sibling_device_group_sees_only_its_own_chain() {
    let r = resolve_dg(FILE, "dg-dev");
    assert!(
        !r.policy
            .rules
            .iter()
            .any(|r| r.provenance.device_group == "dg-prod")
    );
    let v = decide(
        &r,
        &flow(
            "untrust",
            "dmz",
            "198.51.100.12",
            "10.1.1.5",
            "tcp",
            40000,
            80,
        ),
    );
    assert_verdict(&v, "drop", "block-bad-actors", "pre", "shared");
    let v = decide(
        &r,
        &flow("untrust", "dmz", "1.2.3.4", "10.1.1.5", "tcp", 40000, 22),
    );
    assert_verdict(&v, "allow", "dev-allow-all", "pre", "dg-dev");
    let v = decide(
        &r,
        &flow("dmz", "dmz", "10.1.1.5", "10.1.7.10", "tcp", 40000, 80),
    );
    assert_verdict(&v, "allow", "dev-allow-all", "pre", "dg-dev");

    let root = resolve_dg(FILE, "dg-root");
    let v = decide(
        &root,
        &flow("trust", "dmz", "10.3.0.1", "10.1.9.9", "tcp", 40000, 22),
    );
    assert_verdict(&v, "reset-both", "root-post-reset-ssh", "post", "dg-root");
    // Without dg-prod's override, intrazone-default does not log.
    let v = decide(
        &root,
        &flow("dmz", "dmz", "10.1.1.5", "10.1.7.11", "tcp", 40000, 80),
    );
    assert_verdict(&v, "allow", "intrazone-default", "default", "dg-root");
    assert!(!v.log_end && !v.log_start);
}

#[test]
fn every_non_exact_rule_has_a_warning_naming_it() {
    let r = prod();
    for rule in &r.policy.rules {
        if rule.fidelity != Fidelity::Exact && !rule.disabled {
            assert!(
                r.warnings
                    .iter()
                    .any(|w| w.rule.as_ref().is_some_and(|x| x.name == rule.name())),
                "rule {} is not exact but has no warning",
                rule.name()
            );
        }
    }
}

#[test]
fn device_group_is_required_when_several_exist() {
    let config = load_file(&fixture(FILE), Limits::default()).unwrap();
    let err = zonewall::firewall::panos::resolve(&config, &ResolveOptions::default()).unwrap_err();
    let text = err.to_string();
    assert!(text.contains("dg-dev, dg-prod, dg-root"), "{text}");
    let err = zonewall::firewall::panos::resolve(
        &config,
        &ResolveOptions {
            device_group: Some("dg-nope".into()),
            ..ResolveOptions::default()
        },
    )
    .unwrap_err();
    assert!(
        err.to_string()
            .contains("'dg-nope' is not in the configuration"),
        "{err}"
    );
}

#[test]
fn verdict_serializes_to_the_explain_json_fields() {
    // serde_yaml_ng stands in for a JSON serializer (the field names and values are the same).
    let r = prod();
    let v = decide(
        &r,
        &flow("untrust", "dmz", "192.0.2.1", "10.1.1.5", "tcp", 40000, 80),
    );
    let yaml = serde_yaml_ng::to_string(&v).unwrap();
    for line in [
        "action: allow",
        "rule: prod-allow-web",
        "rulebase: pre",
        "device_group: dg-prod",
        "src_zone: untrust",
        "dst_zone: dmz",
    ] {
        assert!(yaml.contains(line), "{yaml}");
    }
    let v = decide(
        &r,
        &flow(
            "untrust",
            "trust",
            "192.0.2.1",
            "10.3.0.1",
            "tcp",
            40000,
            80,
        ),
    );
    assert!(
        serde_yaml_ng::to_string(&v)
            .unwrap()
            .contains("action: reset-server")
    );
    let summary = serde_yaml_ng::to_string(&v.explain_json()).unwrap();
    assert_eq!(
        summary,
        "action: reset-server\nrule: prod-app-deny\nrulebase: pre\ndevice_group: dg-prod\nsrc_zone: untrust\ndst_zone: trust\n"
    );
}

#[test]
fn empty_label_source_never_matches_selectors() {
    struct Fixed(BTreeMap<String, String>);
    impl LabelSource for Fixed {
        fn labels(&self, _ip: IpAddr) -> Option<&BTreeMap<String, String>> {
            Some(&self.0)
        }
    }
    let r = prod();
    let labels = Fixed(
        [("app".to_string(), "payments".to_string())]
            .into_iter()
            .collect(),
    );
    let v = decide_with(
        &r,
        &flow("dmz", "trust", "10.1.1.5", "192.0.2.99", "tcp", 40000, 8443),
        &labels,
    );
    assert_verdict(&v, "allow", "prod-payments", "pre", "dg-prod");
}

#[test]
fn fqdn_matches_nothing_until_resolved() {
    let mut r = prod();
    let f = flow(
        "trust",
        "untrust",
        "10.3.0.1",
        "172.31.0.8",
        "tcp",
        40000,
        443,
    );
    assert_verdict(
        &decide(&r, &f),
        "deny",
        "interzone-default",
        "default",
        "shared",
    );
    assert_eq!(
        r.policy.fqdn_names().into_iter().collect::<Vec<_>>(),
        ["api.example.com"]
    );
    let answer: Vec<IpAddr> = vec!["172.31.0.8".parse().unwrap()];
    assert_eq!(r.policy.set_fqdn_addresses("api.example.com", &answer), 1);
    let v = decide(&r, &f);
    assert_verdict(&v, "allow", "shared-post-allow-api", "post", "shared");
    assert!(
        v.reason.contains("fqdn api.example.com (resolved)"),
        "{}",
        v.reason
    );
}

#[test]
fn default_rule_explanation_names_the_override() {
    let r = prod();
    let v = decide(
        &r,
        &flow("trust", "dmz", "10.3.0.1", "10.1.9.9", "icmp", 0, 0),
    );
    assert!(v.reason.starts_with(
        "security rule 'interzone-default' (default security rule, overridden in shared) matched: no earlier rule matched, and it covers all traffic from zone 'trust' to a different zone 'dmz'. Action deny; the rule logs at session end."
    ), "{}", v.reason);
    let root = resolve_dg(FILE, "dg-root");
    let v = decide(
        &root,
        &flow("dmz", "dmz", "10.1.1.5", "10.1.7.11", "tcp", 40000, 80),
    );
    assert!(
        v.reason.contains("(predefined default security rule)")
            && v.reason.contains("does not log"),
        "{}",
        v.reason
    );
}

#[test]
fn shared_group_members_resolve_in_shared_despite_shadowing() {
    let r = prod();
    // rfc1918 is a shared group whose member rfc1918-10 is 10.0.0.0/8 in shared; dg-prod's
    // own rfc1918-10 (10.0.0.0/16) must not narrow it, or the negated rule would open
    // 10.200.0.0/16.
    let v = decide(
        &r,
        &flow(
            "trust",
            "untrust",
            "10.3.0.1",
            "10.200.0.1",
            "tcp",
            40000,
            443,
        ),
    );
    assert_verdict(&v, "deny", "interzone-default", "default", "shared");
    let rule = r
        .policy
        .rules
        .iter()
        .find(|r| r.name() == "prod-negate-internet")
        .unwrap();
    assert!(
        rule.destination
            .prefixes
            .contains(&"10.0.0.0/8".parse().unwrap())
    );
}
