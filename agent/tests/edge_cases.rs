//! Small inline configurations for resolver edge cases.

mod common;

use common::*;
use zonewall::firewall::panos::{
    Effect, Limits, ResolveOptions, Resolved, WarningKind, parse_config, resolve,
};
use zonewall::model::Fidelity;

/// A Panorama with only shared objects and shared pre-rules (no device groups, no templates).
fn shared_only(objects: &str, rules: &str) -> Resolved {
    let text = format!(
        "<config><shared>{objects}<pre-rulebase><security><rules>{rules}</rules></security></pre-rulebase></shared></config>"
    );
    let config = parse_config(&text, "inline.xml", Limits::default()).expect("parse");
    resolve(&config, &ResolveOptions::default()).expect("resolve")
}

fn rule(name: &str, body: &str) -> String {
    format!("<entry name=\"{name}\">{body}</entry>")
}

const ANY_ZONES: &str = "<from><member>any</member></from><to><member>any</member></to>";
const ANY_SERVICE: &str =
    "<application><member>any</member></application><service><member>any</member></service>";

#[test]
fn config_without_zones_skips_zone_checks_and_says_so() {
    let body = format!(
        "<from><member>inside</member></from><to><member>outside</member></to><source><member>any</member></source><destination><member>any</member></destination>{ANY_SERVICE}<action>allow</action>"
    );
    let r = shared_only("", &rule("r1", &body));
    assert_eq!(r.policy.target, "shared");
    assert!(
        r.warnings
            .iter()
            .any(|w| w.kind == WarningKind::NoZonesDefined)
    );
    let v = decide(
        &r,
        &flow("inside", "outside", "10.0.0.1", "10.0.0.2", "udp", 1, 2),
    );
    assert_verdict(&v, "allow", "r1", "pre", "shared");
}

#[test]
fn invalid_dynamic_filter_fails_closed() {
    let objects = "<address-group><entry name=\"bad\"><dynamic><filter>'web' and (</filter></dynamic></entry></address-group>";
    let body = format!(
        "{ANY_ZONES}<source><member>any</member></source><destination><member>bad</member></destination>{ANY_SERVICE}<action>allow</action>"
    );
    let r = shared_only(objects, &rule("r1", &body));
    let w = r.warnings.iter().find(|w| w.rule.is_some()).unwrap();
    assert!(matches!(&w.kind, WarningKind::InvalidFilter { group, .. } if group == "bad"));
    assert_eq!(w.effect, Effect::RuleMatchesNothing);
}

#[test]
fn deep_group_nesting_is_bounded() {
    let mut objects = String::from(
        "<address><entry name=\"leaf\"><ip-netmask>10.0.0.1</ip-netmask></entry></address><address-group>",
    );
    objects.push_str("<entry name=\"g0\"><static><member>leaf</member></static></entry>");
    for i in 1..40 {
        objects.push_str(&format!(
            "<entry name=\"g{i}\"><static><member>g{}</member></static></entry>",
            i - 1
        ));
    }
    objects.push_str("</address-group>");
    let body = format!(
        "{ANY_ZONES}<source><member>any</member></source><destination><member>g39</member></destination>{ANY_SERVICE}<action>allow</action>"
    );
    let near = format!(
        "{ANY_ZONES}<source><member>any</member></source><destination><member>g20</member></destination>{ANY_SERVICE}<action>allow</action>"
    );
    let r = shared_only(&objects, &(rule("deep", &body) + &rule("ok", &near)));
    assert!(
        r.warnings
            .iter()
            .any(|w| matches!(w.kind, WarningKind::GroupTooDeep { .. }))
    );
    let v = decide(&r, &flow("a", "b", "10.9.9.9", "10.0.0.1", "tcp", 1, 2));
    assert_verdict(&v, "allow", "ok", "pre", "shared");
}

#[test]
fn missing_action_is_treated_as_deny() {
    let body = format!(
        "{ANY_ZONES}<source><member>any</member></source><destination><member>any</member></destination>{ANY_SERVICE}"
    );
    let r = shared_only("", &rule("no-action", &body));
    let v = decide(&r, &flow("a", "b", "10.0.0.1", "10.0.0.2", "tcp", 1, 2));
    assert_verdict(&v, "deny", "no-action", "pre", "shared");
    assert!(
        r.warnings
            .iter()
            .any(|w| matches!(w.kind, WarningKind::InvalidAction { action: None }))
    );
}

#[test]
fn literal_members_and_missing_fields() {
    let literal = format!(
        "{ANY_ZONES}<source><member>10.0.0.1-10.0.0.3</member></source><destination><member>fd00::/120</member></destination>{ANY_SERVICE}<action>allow</action>"
    );
    let missing = format!(
        "{ANY_ZONES}<destination><member>any</member></destination>{ANY_SERVICE}<action>allow</action>"
    );
    let r = shared_only(
        "",
        &(rule("literal", &literal) + &rule("no-source", &missing)),
    );
    let v = decide(&r, &flow("a", "b", "10.0.0.3", "fd00::ff", "tcp", 1, 2));
    assert_verdict(&v, "allow", "literal", "pre", "shared");
    let v = decide(&r, &flow("a", "b", "10.0.0.4", "fd00::ff", "tcp", 1, 2));
    assert_verdict(&v, "deny", "interzone-default", "default", "shared");
    let no_source = r
        .policy
        .rules
        .iter()
        .find(|r| r.name() == "no-source")
        .unwrap();
    assert!(matches!(no_source.fidelity, Fidelity::NeverMatches { .. }));
    assert!(
        r.warnings
            .iter()
            .any(|w| w.kind == WarningKind::MissingField { field: "source" })
    );
}

#[test]
fn negated_source_and_universal_any() {
    let body = format!(
        "{ANY_ZONES}<source><member>10.0.0.0/8</member></source><negate-source>yes</negate-source><destination><member>any</member></destination>{ANY_SERVICE}<action>deny</action>"
    );
    let r = shared_only("", &rule("not-internal", &body));
    let v = decide(&r, &flow("a", "a", "192.0.2.1", "10.0.0.2", "tcp", 1, 2));
    assert_verdict(&v, "deny", "not-internal", "pre", "shared");
    let v = decide(&r, &flow("a", "a", "10.1.1.1", "10.0.0.2", "tcp", 1, 2));
    assert_verdict(&v, "allow", "intrazone-default", "default", "shared");
}
