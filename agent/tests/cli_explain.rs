//! `zonewall explain` as an operator runs it: the real binary, real files, exit codes.

use std::process::{Command, Output};

fn fixture(name: &str) -> String {
    format!("{}/tests/fixtures/{name}", env!("CARGO_MANIFEST_DIR"))
}

fn zonewall(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_zonewall"))
        .args(args)
        .env_remove("ZONEWALL_PANOS_CONFIG")
        .env_remove("ZONEWALL_INVENTORY")
        .env_remove("ZONEWALL_DEVICE_GROUP")
        .output()
        .expect("run zonewall")
}

fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

#[test]
fn json_verdict_with_inventory_labels() {
    let panorama = fixture("panorama.xml");
    let inventory = fixture("inventory.yaml");
    let base = [
        "explain",
        "--panos-config",
        &panorama,
        "--device-group",
        "dg-prod",
        "--inventory",
        &inventory,
        "--src",
        "10.1.1.5",
        "--proto",
        "tcp",
        "--dport",
        "8443",
        "--json",
    ];
    // pay-1 carries app=payments, which the dynamic group payments-pods selects.
    let output = zonewall(&[&base[..], &["--dst", "10.244.5.5"]].concat());
    assert!(output.status.success(), "{}", stderr(&output));
    assert_eq!(
        stdout(&output).trim(),
        r#"{"action":"allow","rule":"prod-payments","rulebase":"pre","device_group":"dg-prod","src_zone":"dmz","dst_zone":"trust"}"#
    );
    // front-dev's labels fail the filter: the widened deny decides.
    let output = zonewall(&[&base[..], &["--dst", "10.244.5.6"]].concat());
    assert_eq!(
        stdout(&output).trim(),
        r#"{"action":"deny","rule":"prod-unknown-deny","rulebase":"pre","device_group":"dg-prod","src_zone":"dmz","dst_zone":"trust"}"#
    );
    // An address no workload owns is in the inventory's external zone.
    let output = zonewall(&[&base[..], &["--dst", "192.0.2.7"]].concat());
    assert!(
        stdout(&output).contains(r#""dst_zone":"untrust""#),
        "{}",
        stdout(&output)
    );
}

#[test]
fn text_explanation_names_rule_zones_and_reason() {
    let output = zonewall(&[
        "explain",
        "--panos-config",
        &fixture("panorama.xml"),
        "--device-group",
        "dg-prod",
        "--src-zone",
        "trust",
        "--dst-zone",
        "dmz",
        "--src",
        "10.3.0.1",
        "--dst",
        "10.1.2.10",
        "--proto",
        "tcp",
        "--sport",
        "40000",
        "--dport",
        "443",
    ]);
    assert!(output.status.success(), "{}", stderr(&output));
    let text = stdout(&output);
    assert!(
        text.starts_with("allow by rule 'prod-dyn-web' (pre-rulebase, device group dg-prod"),
        "{text}"
    );
    assert!(
        text.contains("tcp 10.3.0.1:40000 -> 10.1.2.10:443, zone trust -> dmz"),
        "{text}"
    );
    assert!(text.contains("why:"), "{text}");
}

#[test]
fn malformed_xml_exits_2_with_file_line_and_column() {
    let dir = std::env::temp_dir().join(format!("zonewall-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("broken.xml");
    std::fs::write(
        &path,
        "<config>\n  <shared>\n    <address>\n  </shared>\n</config>\n",
    )
    .unwrap();
    let output = zonewall(&[
        "explain",
        "--panos-config",
        path.to_str().unwrap(),
        "--src-zone",
        "a",
        "--dst-zone",
        "b",
        "--src",
        "10.0.0.1",
        "--dst",
        "10.0.0.2",
        "--proto",
        "udp",
    ]);
    std::fs::remove_dir_all(&dir).unwrap();
    assert_eq!(output.status.code(), Some(2), "{}", stderr(&output));
    let message = stderr(&output);
    assert!(message.contains("broken.xml:4:"), "{message}");
}

#[test]
fn unknown_device_group_and_bad_flows_exit_2() {
    let panorama = fixture("panorama.xml");
    let flow = [
        "--src-zone",
        "a",
        "--dst-zone",
        "b",
        "--src",
        "10.0.0.1",
        "--proto",
        "udp",
    ];
    let output = zonewall(
        &[
            &[
                "explain",
                "--panos-config",
                &panorama,
                "--device-group",
                "dg-nope",
                "--dst",
                "10.0.0.2",
            ][..],
            &flow[..],
        ]
        .concat(),
    );
    assert_eq!(output.status.code(), Some(2));
    assert!(stderr(&output).contains("dg-nope"), "{}", stderr(&output));

    let output = zonewall(
        &[
            &[
                "explain",
                "--panos-config",
                &panorama,
                "--device-group",
                "dg-prod",
                "--dst",
                "fd00::2",
            ][..],
            &flow[..],
        ]
        .concat(),
    );
    assert_eq!(output.status.code(), Some(2));
    assert!(
        stderr(&output).contains("same IP version"),
        "{}",
        stderr(&output)
    );

    let output = zonewall(&[
        "explain",
        "--panos-config",
        &panorama,
        "--device-group",
        "dg-prod",
        "--src-zone",
        "a",
        "--dst-zone",
        "b",
        "--src",
        "10.0.0.1",
        "--dst",
        "10.0.0.2",
        "--proto",
        "icmp",
        "--dport",
        "80",
    ]);
    assert_eq!(output.status.code(), Some(2));
    assert!(stderr(&output).contains("--dport"), "{}", stderr(&output));
}

#[test]
fn missing_file_exits_1_naming_it() {
    let output = zonewall(&[
        "explain",
        "--panos-config",
        "/nonexistent/panorama.xml",
        "--src-zone",
        "a",
        "--dst-zone",
        "b",
        "--src",
        "10.0.0.1",
        "--dst",
        "10.0.0.2",
        "--proto",
        "tcp",
    ]);
    assert_eq!(output.status.code(), Some(1));
    assert!(
        stderr(&output).contains("/nonexistent/panorama.xml"),
        "{}",
        stderr(&output)
    );
}
