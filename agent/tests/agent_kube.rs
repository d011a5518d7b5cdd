//! The agent's Kubernetes mode against a fake API server (kube's own `Client` over a mock
//! service, objects as the API server returns them) and a fake dataplane that records every
//! table it is given: nothing is applied until the agent's own Node is listed; pods,
//! namespaces and ZonePolicies turn into the right verdicts; a zone label change moves a
//! workload; a watch reset with a slow relist and an API outage never
//! make the agent apply tables built from a partial or empty cache.

#[path = "sync_common/fake_api.rs"]
#[allow(dead_code, reason = "shared with the sync tests, which use the rest")]
mod fake_api;

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use fake_api::FakeApi;
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;
use zonewall::datapath::{ApplyReport, Counters, DatapathError, Dataplane, DesiredTables};
use zonewall::inventory::cluster::{ClusterOptions, ZoneLabels};
use zonewall::node::{PolicyInput, Telemetry, kubernetes::run_kubernetes, load_policies};
use zonewall::policy::datapath_compile::LpmKey;
use zonewall::policy::resource::Mode;
use zonewall_common::{self as abi, FlowEvent, RuleStats};

/// Records the tables of every apply.
#[derive(Clone, Default)]
struct Recorder(Arc<Mutex<Vec<DesiredTables>>>);

impl Recorder {
    fn applies(&self) -> Vec<DesiredTables> {
        self.0.lock().expect("recorder").clone()
    }
}

impl Dataplane for Recorder {
    fn attach(&mut self, _interface: &str) -> Result<u32, DatapathError> {
        Ok(1)
    }
    fn apply(&mut self, desired: &DesiredTables) -> Result<ApplyReport, DatapathError> {
        let mut applies = self.0.lock().expect("recorder");
        let changed = applies.last() != Some(desired);
        if changed {
            applies.push(desired.clone());
        }
        Ok(ApplyReport {
            written: usize::from(changed),
            generation: applies.len() as u32,
            ..ApplyReport::default()
        })
    }
    fn counters(&self) -> Result<Counters, DatapathError> {
        Ok(Counters::default())
    }
    fn rule_stats(&self) -> Result<BTreeMap<u32, RuleStats>, DatapathError> {
        Ok(BTreeMap::new())
    }
    fn sweep_conntrack(&mut self, _now_ns: u64) -> Result<Vec<FlowEvent>, DatapathError> {
        Ok(Vec::new())
    }
    fn sweep_denies(&mut self, _now_ns: u64) -> Result<Vec<FlowEvent>, DatapathError> {
        Ok(Vec::new())
    }
    fn map_capacity(&self, _name: &'static str) -> Option<u32> {
        None
    }
    fn retire_old_layouts(&mut self) -> Result<usize, DatapathError> {
        Ok(0)
    }
}

/// The longest-prefix entry of `table` for `data` (what an LPM trie returns).
fn lpm<K: LpmKey, V: Copy>(table: &[(K, V)], data: K::Data) -> Option<V> {
    let data = data.as_ref();
    table
        .iter()
        .filter(|(key, _)| {
            let bytes = key.data();
            (0..key.prefix_len() as usize).all(|bit| {
                let mask = 0x80u8 >> (bit % 8);
                bytes.as_ref()[bit / 8] & mask == data[bit / 8] & mask
            })
        })
        .max_by_key(|(key, _)| key.prefix_len())
        .map(|(_, value)| *value)
}

/// The action the tables give a TCP flow at egress (source's zone) and ingress.
fn verdict(tables: &DesiredTables, source: Ipv4Addr, destination: Ipv4Addr, port: u16) -> (u8, u8) {
    let identity = |ip: Ipv4Addr| {
        tables
            .maps
            .identity_v4
            .lookup(ip.octets())
            .expect("every address has an identity")
            .identity
    };
    let (s, d) = (
        identity(source).to_be_bytes(),
        identity(destination).to_be_bytes(),
    );
    let key = |direction: u8, subject: [u8; 4], peer: [u8; 4]| {
        let p = port.to_be_bytes();
        [
            direction, subject[0], subject[1], subject[2], subject[3], peer[0], peer[1], peer[2],
            peer[3], 6, p[0], p[1],
        ]
    };
    let action = |data| lpm(&tables.maps.policy, data).expect("a verdict").action;
    (
        action(key(abi::DIRECTION_EGRESS, s, d)),
        action(key(abi::DIRECTION_INGRESS, d, s)),
    )
}

const PODS: &str = "/api/v1/pods";
const NAMESPACES: &str = "/api/v1/namespaces";
const NODES: &str = "/api/v1/nodes";
const WEB: Ipv4Addr = Ipv4Addr::new(10, 244, 1, 5);
const API: Ipv4Addr = Ipv4Addr::new(10, 244, 2, 7);

fn namespace(name: &str, zone: &str) -> Value {
    json!({"apiVersion": "v1", "kind": "Namespace",
           "metadata": {"name": name, "labels": {"zonewall.io/zone": zone}}})
}

fn pod(namespace: &str, name: &str, ip: Ipv4Addr) -> Value {
    json!({"apiVersion": "v1", "kind": "Pod",
           "metadata": {"name": name, "namespace": namespace, "labels": {"app": name}},
           "spec": {"nodeName": "node-b", "containers": [{"name": name, "image": "app:1"}]},
           "status": {"phase": "Running", "podIP": ip.to_string(),
                      "podIPs": [{"ip": ip.to_string()}]}})
}

fn fixture() -> PathBuf {
    PathBuf::from(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../tests/fixtures/zones.xml"
    ))
}

async fn eventually(what: &str, mut condition: impl FnMut() -> bool) {
    for _ in 0..200 {
        if condition() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("timed out waiting for: {what}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cluster_state_becomes_tables_and_partial_or_absent_caches_never_do() {
    // The agent loop borrows its dataplane as `&mut dyn Dataplane` (not `Send`): it runs on
    // a local task set, the fake API server on the runtime's threads.
    tokio::task::LocalSet::new().run_until(scenario()).await;
}

async fn scenario() {
    let api = FakeApi::default();
    api.put(NAMESPACES, namespace("shop", "dmz"));
    api.put(NAMESPACES, namespace("payments", "trusted"));
    api.put(PODS, pod("shop", "web", WEB));
    api.put(PODS, pod("payments", "api", API));
    // The firewall tier as `zonewall translate` (and `zonewall sync`) produce it.
    let policies = load_policies(&PolicyInput::Panos {
        config: fixture(),
        device_group: None,
        mode: Mode::Enforce,
    })
    .expect("translate the fixture");
    for policy in &policies {
        api.user_write(serde_json::to_value(policy).expect("ZonePolicy JSON"));
    }

    let recorder = Recorder::default();
    let telemetry = Telemetry::unserved();
    let options = ClusterOptions {
        zone_label: "zonewall.io/zone".to_owned(),
        zone_labels: ZoneLabels::PodThenNamespace,
        default_zone: None,
        external_zone: "untrust".to_owned(),
        node_name: "node-a".to_owned(),
    };
    let stop = CancellationToken::new();
    let task = {
        let (client, mut dataplane, telemetry, stop) = (
            api.client(),
            recorder.clone(),
            telemetry.clone(),
            stop.clone(),
        );
        tokio::task::spawn_local(async move {
            run_kubernetes(
                client,
                &mut dataplane,
                &options,
                None,
                &telemetry,
                stop.cancelled(),
            )
            .await
        })
    };

    // Its Node is not in the cluster yet (as under a wrong --node-name): nothing is applied,
    // and readiness names the flag.
    tokio::time::sleep(Duration::from_millis(1000)).await;
    assert!(
        recorder.applies().is_empty(),
        "nothing applied without its node"
    );
    let reason = telemetry.readiness.status().expect_err("not ready");
    assert!(
        reason.contains("node node-a is not in the cluster") && reason.contains("--node-name"),
        "{reason}"
    );
    assert!(
        api.requests()
            .iter()
            .any(|r| r.path == NODES && r.query.contains("fieldSelector=metadata.name%3Dnode-a")),
        "the agent asks for its own Node only"
    );
    api.put(
        NODES,
        json!({"apiVersion": "v1", "kind": "Node", "metadata": {"name": "node-a"}}),
    );

    // dmz -> trusted on tcp/8080 is the fixture's `dmz-to-app`; tcp/22 is not allowed.
    eventually("the first apply", || !recorder.applies().is_empty()).await;
    let first = recorder.applies().remove(0);
    assert_eq!(
        verdict(&first, WEB, API, 8080),
        (abi::ACTION_ALLOW, abi::ACTION_ALLOW)
    );
    assert_ne!(verdict(&first, WEB, API, 22).0, abi::ACTION_ALLOW);
    assert!(telemetry.readiness.is_ready());

    // The namespace moves to restricted: web loses its dmz rights.
    api.put(NAMESPACES, namespace("shop", "restricted"));
    eventually("an apply after the zone change", || {
        recorder.applies().len() >= 2
    })
    .await;
    let moved = recorder.applies().last().cloned().expect("an apply");
    assert_ne!(verdict(&moved, WEB, API, 8080).0, abi::ACTION_ALLOW);

    // A new pod appears, then a watch reset with a relist that stalls after its first page:
    // nothing is applied from the partial list.
    api.put(PODS, pod("payments", "api-2", Ipv4Addr::new(10, 244, 2, 8)));
    eventually("the new pod applied", || recorder.applies().len() >= 3).await;
    let before_reset = recorder.applies().len();
    api.hold_pages(true);
    api.expire_watches();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(
        recorder.applies().len(),
        before_reset,
        "no tables from a partial relist"
    );
    api.hold_pages(false);
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(
        recorder.applies().len(),
        before_reset,
        "the completed relist is the same state: nothing new to apply"
    );

    // The API server goes away: the last good tables stay; readiness and metrics say so.
    api.set_unavailable(true);
    api.expire_watches();
    tokio::time::sleep(Duration::from_millis(2000)).await;
    assert_eq!(
        recorder.applies().len(),
        before_reset,
        "nothing applied while down"
    );
    assert!(
        !telemetry.readiness.is_ready(),
        "readiness reports the outage"
    );
    api.set_unavailable(false);
    eventually("ready again after the API server is back", || {
        telemetry.readiness.is_ready()
    })
    .await;
    assert_eq!(
        recorder.applies().len(),
        before_reset,
        "and nothing changed"
    );
    stop.cancel();
    task.await.expect("agent task").expect("agent loop");
}
