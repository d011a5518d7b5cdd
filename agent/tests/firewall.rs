//! A single firewall (vsys) configuration, also wrapped in an XML API response; invalid
//! objects and references fail closed with warnings that name the rule.

mod common;

use common::*;
use zonewall::firewall::panos::{
    ConfigKind, Effect, Limits, PanosError, ResolveOptions, Resolved, WarningKind, parse_config,
    resolve,
};
use zonewall::model::{Fidelity, Rulebase};

fn firewall() -> Resolved {
    resolve_with("firewall.xml", ResolveOptions::default())
}

fn warning_for<'a>(r: &'a Resolved, rule: &str) -> Vec<&'a zonewall::firewall::panos::Warning> {
    r.warnings
        .iter()
        .filter(|w| w.rule.as_ref().is_some_and(|x| x.name == rule))
        .collect()
}

#[test]
fn vsys_rules_and_shared_objects() {
    let r = firewall();
    assert_eq!(r.policy.target, "vsys1");
    let v = decide(
        &r,
        &flow(
            "untrust",
            "dmz",
            "192.0.2.1",
            "172.16.5.10",
            "tcp",
            40000,
            8080,
        ),
    );
    assert_verdict(&v, "allow", "fw-allow-web", "local", "vsys1");
    assert!(
        v.reason
            .contains("security rule 'fw-allow-web' (rulebase of vsys 'vsys1', position 1)"),
        "{}",
        v.reason
    );
    let v = decide(
        &r,
        &flow(
            "trust",
            "untrust",
            "10.0.0.5",
            "192.0.2.53",
            "udp",
            5353,
            53,
        ),
    );
    assert_verdict(&v, "allow", "fw-allow-dns", "local", "vsys1");
    assert_eq!(r.policy.rules[0].provenance.rulebase, Rulebase::Local);
}

#[test]
fn default_rule_override_in_vsys() {
    let r = firewall();
    let v = decide(
        &r,
        &flow("trust", "trust", "10.0.0.5", "10.0.0.6", "tcp", 40000, 22),
    );
    assert_verdict(&v, "deny", "intrazone-default", "default", "vsys1");
    assert!(v.log_end);
    let v = decide(
        &r,
        &flow(
            "dmz",
            "untrust",
            "172.16.5.10",
            "192.0.2.1",
            "tcp",
            40000,
            22,
        ),
    );
    assert_verdict(&v, "deny", "interzone-default", "default", "vsys1");
    assert!(!v.log_end, "predefined interzone-default does not log");
}

#[test]
fn invalid_netmask_fails_the_allow_closed() {
    let r = firewall();
    let warnings = warning_for(&r, "fw-allow-bad-netmask");
    assert_eq!(warnings.len(), 1);
    assert!(
        matches!(&warnings[0].kind, WarningKind::InvalidAddress { object, .. } if object == "bad-netmask")
    );
    assert_eq!(warnings[0].effect, Effect::RuleMatchesNothing);
    let text = warnings[0].to_string();
    assert!(
        text.contains("firewall.xml:")
            && text.contains("fw-allow-bad-netmask")
            && text.contains("172.16.300.0/24"),
        "{text}"
    );
}

#[test]
fn backwards_range_widens_the_deny() {
    let r = firewall();
    let warnings = warning_for(&r, "fw-deny-bad-range");
    assert!(
        matches!(&warnings[0].kind, WarningKind::InvalidAddress { object, .. } if object == "bad-range")
    );
    assert_eq!(warnings[0].effect, Effect::DenyWidened { field: "source" });
    let v = decide(
        &r,
        &flow("dmz", "trust", "172.16.5.10", "10.0.0.5", "tcp", 40000, 443),
    );
    assert_verdict(&v, "drop", "fw-deny-bad-range", "local", "vsys1");
}

#[test]
fn service_group_cycle_and_invalid_ports() {
    let r = firewall();
    let warnings = warning_for(&r, "fw-allow-loop");
    assert!(
        matches!(&warnings[0].kind, WarningKind::GroupCycle { cycle } if cycle == &["loop-1", "loop-2", "loop-1"]),
        "{:?}",
        warnings[0]
    );
    let warnings = warning_for(&r, "fw-allow-bad-ports");
    assert!(
        matches!(&warnings[0].kind, WarningKind::InvalidService { object, .. } if object == "bad-ports")
    );
    // Neither allow opens trust -> dmz.
    let v = decide(
        &r,
        &flow("trust", "dmz", "10.0.0.5", "172.16.5.10", "udp", 40000, 53),
    );
    assert_verdict(&v, "deny", "fw-deny-guest", "local", "vsys1");
}

#[test]
fn unknown_zone() {
    let r = firewall();
    let deny = r
        .policy
        .rules
        .iter()
        .find(|r| r.name() == "fw-deny-guest")
        .unwrap();
    assert!(matches!(deny.fidelity, Fidelity::Widened { .. }));
    // from widened to any: every zone's traffic to dmz is denied by it.
    let v = decide(
        &r,
        &flow("trust", "dmz", "10.0.0.5", "172.16.5.99", "tcp", 40000, 80),
    );
    assert_verdict(&v, "deny", "fw-deny-guest", "local", "vsys1");
    let allow = r
        .policy
        .rules
        .iter()
        .find(|r| r.name() == "fw-allow-guest")
        .unwrap();
    assert!(matches!(allow.fidelity, Fidelity::NeverMatches { .. }));
    let w = warning_for(&r, "fw-allow-guest");
    assert!(
        matches!(&w[0].kind, WarningKind::UnknownZone { zone, field: "from" } if zone == "guest")
    );
}

#[test]
fn source_user_allow_fails_closed() {
    let r = firewall();
    let w = warning_for(&r, "fw-allow-user");
    assert!(
        matches!(&w[0].kind, WarningKind::UnsupportedCriterion { field, .. } if field == "source-user")
    );
    let v = decide(
        &r,
        &flow("trust", "untrust", "10.0.0.5", "8.8.8.8", "tcp", 40000, 443),
    );
    assert_verdict(&v, "deny", "interzone-default", "default", "vsys1");
}

#[test]
fn xml_api_response_wrapper_gives_the_same_policy() {
    let text = fixture_text("firewall.xml");
    let body = text.trim_start_matches("<?xml version=\"1.0\"?>");
    let wrapped = format!(
        "<response status=\"success\" code=\"19\"><result total-count=\"1\" count=\"1\">{body}</result></response>"
    );
    let config = parse_config(&wrapped, "https://fw.example/api", Limits::default()).unwrap();
    assert_eq!(config.kind, ConfigKind::Firewall);
    let wrapped_policy = resolve(&config, &ResolveOptions::default()).unwrap().policy;
    let plain = firewall().policy;
    let names = |p: &zonewall::model::Policy| {
        p.rules
            .iter()
            .map(|r| r.name().to_string())
            .collect::<Vec<_>>()
    };
    assert_eq!(names(&wrapped_policy), names(&plain));

    // xpath=/config/devices/entry answers with the device entry itself.
    let start = text.find("<entry name=\"localhost.localdomain\">").unwrap();
    let end = text.rfind("</devices>").unwrap();
    let entry_only = format!(
        "<response status=\"success\"><result total-count=\"1\" count=\"1\">{}</result></response>",
        &text[start..end]
    );
    let config = parse_config(&entry_only, "api", Limits::default()).unwrap();
    assert_eq!(config.vsys["vsys1"].scope.local_rules.len(), 9);
}

#[test]
fn xml_api_error_response_is_an_error() {
    let text = r#"<response status="error" code="403"><result><msg>Invalid Credential</msg></result></response>"#;
    let err = parse_config(text, "https://panorama.example/api", Limits::default()).unwrap_err();
    match &err {
        PanosError::ApiError {
            status,
            code,
            message,
            ..
        } => {
            assert_eq!(status, "error");
            assert_eq!(code.as_deref(), Some("403"));
            assert_eq!(message, "Invalid Credential");
        }
        other => panic!("expected an API error, got {other:?}"),
    }
    assert!(
        err.to_string().contains("(code 403): Invalid Credential"),
        "{err}"
    );
    let text = r#"<response status="error" code="7"><msg><line>Object doesn't exist</line></msg></response>"#;
    let err = parse_config(text, "api", Limits::default()).unwrap_err();
    assert!(err.to_string().contains("Object doesn't exist"), "{err}");
}
