//! Hostile or broken input: DTDs, entity expansion, malformed XML, broken hierarchy, limits.

mod common;

use zonewall::firewall::panos::{Limits, PanosError, load_file, parse_config};

fn parse(text: &str) -> Result<zonewall::firewall::panos::PanosConfig, PanosError> {
    parse_config(text, "input.xml", Limits::default())
}

#[test]
fn dtd_is_refused() {
    let text =
        "<?xml version=\"1.0\"?>\n<!DOCTYPE config [\n  <!ELEMENT config ANY>\n]>\n<config/>";
    match parse(text) {
        Err(PanosError::DtdRefused { line, column, .. }) => assert_eq!((line, column), (2, 1)),
        other => panic!("expected the DTD to be refused, got {other:?}"),
    }
    let err = parse("<!DOCTYPE config><config/>").unwrap_err();
    assert!(
        err.to_string()
            .contains("input.xml:1:1: document type declarations"),
        "{err}"
    );
}

#[test]
fn billion_laughs_is_refused() {
    let mut text =
        String::from("<?xml version=\"1.0\"?>\n<!DOCTYPE lolz [\n <!ENTITY lol \"lol\">\n");
    for i in 1..10 {
        let prev = if i == 1 {
            "lol".to_string()
        } else {
            format!("lol{}", i - 1)
        };
        text.push_str(&format!(
            " <!ENTITY lol{i} \"{}\">\n",
            format!("&{prev};").repeat(10)
        ));
    }
    text.push_str(
        "]>\n<config><shared><address><entry name=\"&lol9;\"/></address></shared></config>",
    );
    assert!(matches!(parse(&text), Err(PanosError::DtdRefused { .. })));
}

#[test]
fn external_entity_is_refused() {
    let text = "<?xml version=\"1.0\"?>\n<!DOCTYPE config [<!ENTITY xxe SYSTEM \"file:///etc/passwd\">]>\n<config><shared><address><entry name=\"a\"><description>&xxe;</description></entry></address></shared></config>";
    assert!(matches!(parse(text), Err(PanosError::DtdRefused { .. })));
}

#[test]
fn undeclared_entity_reference_is_malformed() {
    let err = parse("<config>\n<shared>&boom;</shared></config>").unwrap_err();
    assert!(matches!(err, PanosError::Xml { line: 2, .. }), "{err:?}");
}

#[test]
fn malformed_xml_reports_line_and_column() {
    let text = "<config>\n  <shared>\n    <address>\n  </shared>\n</config>";
    match parse(text) {
        Err(PanosError::Xml {
            line,
            column,
            ref message,
            ..
        }) => {
            assert_eq!((line, column), (4, 3), "{message}");
        }
        other => panic!("expected malformed XML, got {other:?}"),
    }
    let err = parse(text).unwrap_err().to_string();
    assert!(err.starts_with("input.xml:4:3: malformed XML"), "{err}");
    let err = parse("<config><shared></shared>").unwrap_err();
    assert!(matches!(err, PanosError::Xml { .. }), "{err:?}");
}

#[test]
fn root_must_be_config_or_response() {
    let err = parse("<?xml version=\"1.0\"?>\n<html><body/></html>").unwrap_err();
    assert!(
        matches!(&err, PanosError::NotAConfig { root, line: 2, .. } if root == "html"),
        "{err:?}"
    );
}

#[test]
fn limits_apply() {
    let text = format!(
        "<config>{}</config>",
        "<x>".repeat(300) + &"</x>".repeat(300)
    );
    assert!(matches!(parse(&text), Err(PanosError::TooDeep { .. })));
    let small = Limits {
        max_nodes: 100,
        ..Limits::default()
    };
    let text = format!(
        "<config><shared><tag>{}</tag></shared></config>",
        "<entry name=\"t\"/>".repeat(200)
    );
    assert!(matches!(
        parse_config(&text, "input.xml", small),
        Err(PanosError::TooManyNodes { .. })
    ));
    let tiny = Limits {
        max_bytes: 1024,
        ..Limits::default()
    };
    assert!(matches!(
        load_file(&common::fixture("panorama.xml"), tiny),
        Err(PanosError::TooLarge { .. })
    ));
}

#[test]
fn missing_file_names_the_path() {
    let err = load_file(
        std::path::Path::new("/nonexistent/zonewall.xml"),
        Limits::default(),
    )
    .unwrap_err();
    assert!(
        err.to_string().contains("/nonexistent/zonewall.xml"),
        "{err}"
    );
}

#[test]
fn entry_without_name_is_an_error_with_line() {
    let text = "<config>\n<shared>\n<address>\n<entry><ip-netmask>10.0.0.1</ip-netmask></entry>\n</address>\n</shared>\n</config>";
    let err = parse(text).unwrap_err();
    assert!(
        matches!(err, PanosError::Structure { line: 4, .. }),
        "{err:?}"
    );
}

#[test]
fn yes_no_fields_are_checked() {
    let text = "<config><devices><entry name=\"localhost.localdomain\"><vsys><entry name=\"vsys1\"><rulebase><security><rules>\n<entry name=\"r1\"><disabled>maybe</disabled></entry>\n</rules></security></rulebase></entry></vsys></entry></devices></config>";
    let err = parse(text).unwrap_err().to_string();
    assert!(
        err.contains("input.xml:2:") && err.contains("<disabled> must be yes or no"),
        "{err}"
    );
}

fn panorama_with_groups(groups: &str, readonly: &str) -> String {
    format!(
        "<config><shared/><devices><entry name=\"localhost.localdomain\"><device-group>{groups}</device-group></entry></devices><readonly><devices><entry name=\"localhost.localdomain\"><device-group>{readonly}</device-group></entry></devices></readonly></config>"
    )
}

#[test]
fn device_group_hierarchy_errors() {
    let text = panorama_with_groups(
        "<entry name=\"a\"/><entry name=\"b\"/>",
        "<entry name=\"a\"><parent-dg>b</parent-dg></entry><entry name=\"b\"><parent-dg>a</parent-dg></entry>",
    );
    let err = parse(&text).unwrap_err().to_string();
    assert!(err.contains("cycle"), "{err}");
    let text = panorama_with_groups(
        "<entry name=\"a\"><parent-dg>missing</parent-dg></entry>",
        "",
    );
    let err = parse(&text).unwrap_err().to_string();
    assert!(err.contains("names parent 'missing'"), "{err}");
}

#[test]
fn readonly_parent_wins_and_disagreement_is_noted() {
    let text = panorama_with_groups(
        "<entry name=\"a\"/><entry name=\"b\"/><entry name=\"c\"><parent-dg>a</parent-dg></entry>",
        "<entry name=\"c\"><parent-dg>b</parent-dg></entry>",
    );
    let config = parse(&text).unwrap();
    assert_eq!(config.device_groups["c"].parent.as_deref(), Some("b"));
    assert!(
        config
            .notes
            .iter()
            .any(|n| n.message.contains("differs from Panorama's record"))
    );
}

#[test]
fn dtd_inside_comment_is_not_a_false_positive() {
    let text = "<?xml version=\"1.0\"?>\n<!-- exported; no <!DOCTYPE> here -->\n<config><shared/></config>";
    assert!(parse(text).is_ok());
}
