//! `zonewall agent --standalone` end to end: the real binary in the node namespace, the
//! policy translated from `fixtures/zones.xml`, real traffic, and the flow records it writes
//! through a JSON file sink (start, end on FIN, denied attempts aggregated).

use std::time::Duration;

use serde_json::Value;
use zonewall_integration_tests::{
    agent::{Agent, http_get, zonewall_binary},
    enforced::{
        Connect, Host, prepared_node, tcp_connect, tcp_talks, udp_delivered, zones_fixture,
    },
    privileged,
};

/// Opens a connection and closes it with a RST from the client (SO_LINGER 0).
fn reset_connection(from: &Host, to: &Host, port: u16) {
    use std::os::fd::AsRawFd as _;
    let destination = std::net::SocketAddr::new(to.ip(false), port);
    let listener = zonewall_integration_tests::in_netns(&to.netns, || {
        std::net::TcpListener::bind(destination)
    })
    .expect("listen");
    let stream = zonewall_integration_tests::in_netns(&from.netns, || {
        std::net::TcpStream::connect_timeout(&destination, Duration::from_secs(1))
    })
    .expect("connect");
    let _accepted = listener.accept().expect("accept");
    let linger = libc::linger {
        l_onoff: 1,
        l_linger: 0,
    };
    // SAFETY: setsockopt with a valid linger struct on an open socket.
    let result = unsafe {
        libc::setsockopt(
            stream.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_LINGER,
            std::ptr::from_ref(&linger).cast(),
            size_of::<libc::linger>() as u32,
        )
    };
    assert_eq!(result, 0, "SO_LINGER");
    drop(stream);
    std::thread::sleep(Duration::from_millis(100));
}

fn host(pod: &zonewall_integration_tests::Pod) -> Host {
    Host {
        netns: pod.netns.clone(),
        v4: pod.ipv4,
        v6: pod.ipv6,
    }
}

fn text<'a>(record: &'a Value, path: &[&str]) -> &'a str {
    path.iter()
        .fold(record, |value, key| &value[*key])
        .as_str()
        .unwrap_or("")
}

fn number(record: &Value, path: &[&str]) -> u64 {
    path.iter()
        .fold(record, |value, key| &value[*key])
        .as_u64()
        .unwrap_or(0)
}

#[test]
fn agent_command_enforces_and_reports_flows_until_stopped() {
    if !privileged("agent_command_enforces_and_reports_flows_until_stopped") {
        return;
    }
    let binary = zonewall_binary();
    let (topology, inventory) = prepared_node(&[("web", "dmz"), ("app", "trusted")]);
    let flows = std::env::temp_dir().join(format!("{}-flows.jsonl", topology.node));
    let agent = Agent::start(
        &binary,
        &topology.node,
        &topology.pin_root,
        &inventory,
        &[
            "--panos-config".to_owned(),
            zones_fixture().display().to_string(),
            "--sink".to_owned(),
            format!("json+file://{}", flows.display()),
            "--node-name".to_owned(),
            "node-a".to_owned(),
        ],
    );
    let web = host(&topology.pods[0]);
    let app = host(&topology.pods[1]);
    let result = std::panic::catch_unwind(|| {
        assert!(
            tcp_talks(&web, &app, false, 8080),
            "dmz -> trusted tcp/8080"
        );
        reset_connection(&web, &app, 8080);
        assert_eq!(
            tcp_connect(&web, &app, false, 8081, Duration::from_millis(400)),
            Connect::TimedOut
        );
        assert_eq!(udp_delivered(&web, &app, false, 5354, 20), 0);
        // The rest of the deny window is reported when the window closes (5 s) and the
        // agent sweeps (every second).
        std::thread::sleep(Duration::from_millis(7000));
        let (status, _) = http_get(&topology.node, "127.0.0.1:9090", "/readyz");
        assert_eq!(status, 200, "ready once the policy is live");
        let (status, metrics) = http_get(&topology.node, "127.0.0.1:9090", "/metrics");
        assert_eq!(status, 200);
        for expected in [
            "zonewall_policy_generation 1",
            "zonewall_kernel_dropped_packets_total{reason=\"policy\"}",
            "zonewall_rule_hit_packets_total{",
            "rule=\"dmz-to-app\"",
            "zonewall_flows_total{",
            "verdict=\"deny\"",
            "zonewall_sink_records_delivered_total{sink=\"json+file:",
            // Conntrack pressure, counted every 10 s from the start.
            "zonewall_map_entries{map=\"ZW_CT\"}",
            "zonewall_map_max_entries{map=\"ZW_CT\"}",
        ] {
            assert!(metrics.contains(expected), "no `{expected}` in:\n{metrics}");
        }
    });
    let status = agent.stop();
    let _ = std::fs::remove_file(&inventory);
    let written = std::fs::read_to_string(&flows).unwrap_or_default();
    let _ = std::fs::remove_file(&flows);
    if let Err(panic) = result {
        std::panic::resume_unwind(panic);
    }
    assert!(status.success(), "agent exit status {status}");
    let records: Vec<Value> = written
        .lines()
        .map(|line| serde_json::from_str(line).expect("every line is one JSON record"))
        .collect();
    let class = |r: &Value| text(r, &["zonewall", "event_class"]).to_owned();
    let start = records
        .iter()
        .find(|r| class(r) == "start" && number(r, &["destination", "port"]) == 8080)
        .unwrap_or_else(|| panic!("no start record for tcp/8080: {written}"));
    assert_eq!(text(start, &["rule", "name"]), "dmz-to-app");
    assert_eq!(text(start, &["observer", "ingress", "zone"]), "dmz");
    assert_eq!(text(start, &["observer", "egress", "zone"]), "trusted");
    let end = records
        .iter()
        .find(|r| class(r) == "end" && number(r, &["destination", "port"]) == 8080)
        .unwrap_or_else(|| panic!("no end record for tcp/8080: {written}"));
    assert_eq!(text(end, &["event", "reason"]), "tcp-fin");
    assert!(number(end, &["source", "packets"]) >= 3, "{end}");
    assert!(number(end, &["destination", "packets"]) >= 2, "{end}");
    let denied: Vec<&Value> = records
        .iter()
        .filter(|r| number(r, &["destination", "port"]) == 5354)
        .collect();
    assert!(
        !denied.is_empty() && denied.len() <= 3,
        "20 denied datagrams give a bounded number of records: {denied:#?}"
    );
    assert!(denied.iter().all(|r| class(r) == "deny"), "{denied:#?}");
    let attempts: u64 = denied
        .iter()
        .map(|r| number(r, &["zonewall", "repeat_count"]))
        .sum();
    assert_eq!(attempts, 20, "every attempt counted once: {denied:#?}");
    assert!(
        records
            .iter()
            .any(|r| class(r) == "deny" && number(r, &["destination", "port"]) == 8081),
        "the denied tcp/8081 attempt is reported: {written}"
    );
    assert!(
        records
            .iter()
            .any(|r| class(r) == "end" && text(r, &["event", "reason"]) == "tcp-rst-from-client"),
        "the connection the client reset ends with reason tcp-rst-from-client: {written}"
    );
}
