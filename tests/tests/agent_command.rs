//! `zonewall agent --standalone` end to end: the real binary in the node namespace, the
//! policy translated from `fixtures/zones.xml`, real traffic, and the flow records it writes
//! through a JSON file sink (start, end on FIN, denied attempts aggregated).

use std::{
    io::{BufRead as _, BufReader},
    path::PathBuf,
    process::{Command, Stdio},
    sync::mpsc,
    time::Duration,
};

use serde_json::Value;
use zonewall_integration_tests::{
    enforced::{
        Connect, Host, prepared_node, tcp_connect, tcp_talks, udp_delivered, zones_fixture,
    },
    privileged,
};

/// Builds the `zonewall` binary (the test crate does not build it) and returns its path.
fn zonewall_binary() -> PathBuf {
    let workspace = PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/.."));
    let status = Command::new(env!("CARGO"))
        .args(["build", "-q", "-p", "zonewall", "--bin", "zonewall"])
        .current_dir(&workspace)
        .status()
        .expect("run cargo build");
    assert!(status.success(), "cargo build -p zonewall failed");
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace.join("target"));
    target.join("debug/zonewall")
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
    let mut agent = Command::new("ip")
        .args(["netns", "exec", &topology.node])
        .arg(&binary)
        .args(["agent", "--standalone", "--inventory"])
        .arg(&inventory)
        .arg("--panos-config")
        .arg(zones_fixture())
        .arg("--sink")
        .arg(format!("json+file://{}", flows.display()))
        .args(["--sink", "cef+stdout", "--node-name", "node-a"])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start the agent");
    let (lines, received) = mpsc::channel();
    let stderr = agent.stderr.take().expect("agent stderr");
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            let _ = lines.send(line);
        }
    });
    let mut log = Vec::new();
    let live = loop {
        match received.recv_timeout(Duration::from_secs(30)) {
            Ok(line) => {
                let done = line.contains("policy live");
                log.push(line);
                if done {
                    break true;
                }
            }
            Err(_) => break false,
        }
    };
    let web = host(&topology.pods[0]);
    let app = host(&topology.pods[1]);
    let result = std::panic::catch_unwind(|| {
        assert!(live, "the agent never said `policy live`: {log:#?}");
        assert!(
            tcp_talks(&web, &app, false, 8080),
            "dmz -> trusted tcp/8080"
        );
        assert_eq!(
            tcp_connect(&web, &app, false, 8081, Duration::from_millis(400)),
            Connect::TimedOut
        );
        assert_eq!(udp_delivered(&web, &app, false, 5354, 20), 0);
        // The rest of the deny window is reported when the window closes (5 s) and the
        // agent sweeps (every second).
        std::thread::sleep(Duration::from_millis(7000));
    });
    // SAFETY: plain kill(2) on the child we started (`ip netns exec` execs the agent).
    unsafe { libc::kill(agent.id() as i32, libc::SIGTERM) };
    let status = agent.wait().expect("wait for the agent");
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
}
