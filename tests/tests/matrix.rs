//! The connectivity matrix: for every pair of the demo's hosts (pods in four zones, the
//! internet, a database outside) and several kinds of traffic, what the kernel does under the
//! real agent equals what `zonewall explain` says the firewall does.

use zonewall_integration_tests::{
    agent::{Agent, zonewall_binary},
    enforced::{prepared_node, zones_fixture},
    matrix::{DEMO_PODS, Probe, expected, explain, named_hosts, probe},
    privileged,
};

#[test]
fn every_pair_gets_the_verdict_explain_gives() {
    if !privileged("every_pair_gets_the_verdict_explain_gives") {
        return;
    }
    let binary = zonewall_binary();
    let (topology, inventory) = prepared_node(&DEMO_PODS);
    let hosts = named_hosts(&topology, &DEMO_PODS);
    let agent = Agent::start(
        &binary,
        &topology.node,
        &topology.pin_root,
        &inventory,
        &[
            "--panos-config".to_owned(),
            zones_fixture().display().to_string(),
            "--metrics-addr".to_owned(),
            "127.0.0.1:0".to_owned(),
        ],
    );
    let mut checked = 0;
    let mut disagreements = Vec::new();
    for from in &hosts {
        for to in &hosts {
            // Same host, or both outside the node (their traffic never crosses it).
            if from.host.v4 == to.host.v4 || from.host.netns == to.host.netns {
                continue;
            }
            for what in [
                Probe::Tcp(8080),
                Probe::Tcp(22),
                Probe::Udp(5353),
                Probe::Ping,
            ] {
                let (action, rule) = explain(
                    &binary,
                    &inventory,
                    from.host.ip(false),
                    to.host.ip(false),
                    what,
                );
                let seen = probe(&from.host, &to.host, what);
                checked += 1;
                if seen != expected(&action, what) {
                    disagreements.push(format!(
                        "{}/{} -> {}/{} {}: firewall {action} ({rule}), kernel {seen:?}",
                        from.zone,
                        from.name,
                        to.zone,
                        to.name,
                        what.label()
                    ));
                }
            }
        }
    }
    assert!(agent.stop().success());
    let _ = std::fs::remove_file(&inventory);
    eprintln!("{checked} flows checked");
    assert!(checked >= 100, "{checked}");
    assert!(disagreements.is_empty(), "{disagreements:#?}");
}
