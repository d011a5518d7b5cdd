//! `cargo xtask bench agent`: the agent's own footprint at scale: 10,000 endpoints and the
//! 10,000-rule / 100,000-prefix policy.
//! - The real agent: a release `zonewall agent` in a network namespace of its own (no
//!   interface there, so every endpoint is a peer and nothing is attached); its resident
//!   memory once ready, and its peak (the kernel maps are reported apart: they are kernel
//!   memory charged to the process's cgroup, not its RSS). Three runs:
//!   - standalone, on the 10,000-rule Panorama configuration of `bench sync` as `zonewall
//!     translate` writes it (objects under the API server's size limit, as the sync
//!     controller publishes them), the endpoints as its inventory file;
//!   - in Kubernetes mode on the same objects, served with a realistic Pod for each endpoint
//!     by a stand-in for the API server on loopback (`api_standin`); then pods move to
//!     another zone by watch events, and the time to the new generation in the kernel (read
//!     from the pinned config map) is taken;
//!   - standalone, on the generated policy below, one whole object per zone (its blocklist
//!     feed alone is more than an API object may hold).
//! - In this process, with a counting allocator: the heap the policy objects take, what the
//!   agent keeps beside them, and the time from one pod changing zone (or one rule changing)
//!   to the new map entries being live (compile of the whole state, diff, write, switch).

use std::{
    fmt::Write as _,
    net::{IpAddr, Ipv4Addr},
    path::Path,
    process::Child,
    sync::Arc,
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail, ensure};
use zonewall::{
    datapath::{Datapath, Dataplane, DesiredTables, PinnedGeneration},
    firewall::panos,
    inventory::{Endpoint, Inventory},
    node,
    policy::{
        PolicySet, PolicySetError, ZonePolicy,
        compile::{AddressCache, AddressPool, CompiledPolicy, compile_with},
        resource::PortRange,
    },
    translate,
};

use super::api_standin::{self, Collection};
use super::end_to_end::{Stopped, agent_command, ready, standalone_agent};
use super::generate::{self, Scale};
use super::heap;
use super::traffic::{Namespaces, ip};
use crate::bench::release_binary;
use crate::workspace_root;

const ENDPOINTS: usize = 10_000;
const POD_CHANGES: usize = 9;
const SCALE: Scale = Scale {
    rules: 10_000,
    prefixes: 100_000,
};

/// A field of `/proc/<process>/status`, in KiB (0 when absent).
fn status_kib(process: &str, field: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{process}/status"))
        .ok()
        .and_then(|status| {
            status.lines().find_map(|line| {
                let rest = line.strip_prefix(field)?.trim_start_matches(':').trim();
                rest.trim_end_matches(" kB").trim().parse().ok()
            })
        })
        .unwrap_or(0)
}

/// Kernel memory of every BPF map a process holds (`memlock` of each map fd).
fn map_memory_bytes(process: &str) -> u64 {
    let Ok(fds) = std::fs::read_dir(format!("/proc/{process}/fd")) else {
        return 0;
    };
    fds.flatten()
        .filter(|fd| {
            std::fs::read_link(fd.path())
                .is_ok_and(|target| target.to_string_lossy() == "anon_inode:bpf-map")
        })
        .filter_map(|fd| {
            let info = std::fs::read_to_string(format!(
                "/proc/{process}/fdinfo/{}",
                fd.file_name().to_string_lossy()
            ))
            .ok()?;
            info.lines()
                .find_map(|l| l.strip_prefix("memlock:"))
                .and_then(|v| v.trim().parse::<u64>().ok())
        })
        .sum()
}

/// The generated workloads, plus copies of them (same labels and zone, new addresses in
/// 10.128.0.0/9, outside every generated prefix) up to `ENDPOINTS`.
fn endpoints(generated: &[Endpoint]) -> Vec<Endpoint> {
    let mut out = generated.to_vec();
    let mut n = 0u32;
    while out.len() < ENDPOINTS {
        let template = &generated[n as usize % generated.len()];
        let address = u32::from(Ipv4Addr::new(10, 128, 0, 0)) + n;
        let mut copy = template.clone();
        copy.name = format!("copy-{n}");
        copy.ips = vec![IpAddr::V4(Ipv4Addr::from(address))];
        out.push(copy);
        n += 1;
    }
    out
}

fn mib(bytes: usize) -> f64 {
    bytes as f64 / (1024.0 * 1024.0)
}

/// What the real agent process used.
struct AgentProcess {
    /// Which mode and policy.
    input: &'static str,
    /// What it read, and how large.
    read: String,
    /// Resident memory once ready, and its peak, in KiB.
    rss: u64,
    peak: u64,
    /// Kernel memory of its maps.
    maps: u64,
    /// From start to ready.
    ready_after: Duration,
}

/// The inventory file: every endpoint on one line.
fn inventory_yaml(endpoints: &[Endpoint]) -> String {
    let mut out = format!("external_zone: {}\nendpoints:\n", generate::EXTERNAL_ZONE);
    for e in endpoints {
        let ips: Vec<String> = e.ips.iter().map(|ip| format!("\"{ip}\"")).collect();
        let labels: Vec<String> = e.labels.iter().map(|(k, v)| format!("{k}: {v}")).collect();
        let _ = writeln!(
            out,
            "  - {{name: {}, namespace: bench, zone: {}, ips: [{}], labels: {{{}}}}}",
            e.name,
            e.zone,
            ips.join(", "),
            labels.join(", ")
        );
    }
    out
}

/// The Panorama configuration of `bench sync` (10,000 rules, 100,000 address objects),
/// translated as `zonewall sync` publishes it.
fn translated_panorama() -> anyhow::Result<Vec<ZonePolicy>> {
    let xml = crate::bench::generate_panorama(&crate::bench::LARGE);
    let options = panos::ResolveOptions {
        device_group: Some("app-1".to_string()),
        ..panos::ResolveOptions::default()
    };
    let resolved = panos::load_policy(&xml, "panorama-large.xml", &options)?;
    let options = translate::TranslateOptions {
        documents: false,
        ..translate::TranslateOptions::default()
    };
    Ok(translate::translate(&resolved, &options)?.policies)
}

/// A fresh network namespace for the agent process, with only `lo` (removed when dropped).
fn agent_netns(name: &str) -> anyhow::Result<(String, Namespaces)> {
    let netns = format!("zwb{}-{name}", std::process::id());
    ip(&["netns", "add", &netns])?;
    let namespaces = Namespaces(vec![netns.clone()]);
    ip(&["-n", &netns, "link", "set", "lo", "up"])?;
    Ok((netns, namespaces))
}

/// Waits until the agent in `netns` answers `/readyz`, then 2 s more (settled: what it holds
/// while enforcing, not a moment of the start); the time from `started` to ready.
fn settled_when_ready(
    netns: &str,
    agent: &mut Child,
    started: Instant,
) -> anyhow::Result<Duration> {
    while !ready(netns) {
        if let Some(status) = agent.try_wait()? {
            bail!("the agent exited ({status}) before it was ready; see its log in target/bench");
        }
        ensure!(
            started.elapsed() < Duration::from_secs(120),
            "the agent was not ready after 120 s; see its log in target/bench"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let ready_after = started.elapsed();
    std::thread::sleep(Duration::from_secs(2));
    Ok(ready_after)
}

/// Runs the release agent in standalone mode on `policies` and `endpoints` until it is
/// ready, and reads its memory; it is stopped (and cleans up what it created) before this
/// returns.
fn standalone_process(
    input: &'static str,
    policies: &[ZonePolicy],
    endpoints: &[Endpoint],
    dir: &Path,
) -> anyhow::Result<AgentProcess> {
    let binary = release_binary()?;
    let policy_dir = dir.join("agent-policies");
    let _ = std::fs::remove_dir_all(&policy_dir);
    std::fs::create_dir_all(&policy_dir).context("create the policy directory")?;
    let mut policy_bytes = 0;
    for policy in policies {
        let yaml = translate::object_yaml(policy)?;
        policy_bytes += yaml.len();
        let name = policy.metadata.name.as_deref().unwrap_or("unnamed");
        std::fs::write(policy_dir.join(format!("{name}.yaml")), yaml)
            .context("write a policy file")?;
    }
    let inventory = dir.join("agent-inventory.yaml");
    let inventory_text = inventory_yaml(endpoints);
    std::fs::write(&inventory, &inventory_text).context("write the inventory")?;

    let (netns, _namespaces) = agent_netns("agent")?;
    let pins = super::measure::Pins::named("agent-process");
    let log = std::fs::File::create(dir.join("agent-process.log")).context("agent log")?;
    let started = Instant::now();
    let mut agent = standalone_agent(&binary, &netns, &inventory, &policy_dir, &pins, log)?;
    let pid = agent.0.id().to_string();
    let ready_after = settled_when_ready(&netns, &mut agent.0, started)?;
    Ok(AgentProcess {
        input,
        read: format!(
            "{} objects, {:.1} MiB of YAML; inventory {:.1} MiB",
            policies.len(),
            mib(policy_bytes),
            mib(inventory_text.len())
        ),
        rss: status_kib(&pid, "VmRSS"),
        peak: status_kib(&pid, "VmHWM"),
        maps: map_memory_bytes(&pid),
        ready_after,
    })
}

/// Namespaces the pods of the Kubernetes-mode run are spread over.
const NAMESPACES: usize = 40;
/// The node the measured agent runs as; every pod runs on one of `NODES` others, so all
/// 10,000 are peers and none is attached (as in the standalone run).
const NODE: &str = "bench-node";
const NODES: usize = 100;

/// A Pod as the API server serves it for a Deployment's replica: managed fields, volumes,
/// probes and statuses included, `zonewall.io/zone` among its labels.
fn pod_json(k: usize, endpoint: &Endpoint, zone: &str, version: u64) -> anyhow::Result<Vec<u8>> {
    use serde_json::json;
    let name = &endpoint.name;
    let namespace = format!("team-{}", k % NAMESPACES);
    let uid = format!("0a1b2c3d-{:04x}-4000-8000-{k:012x}", k % 0x1_0000);
    let owner = format!("5e6f7a8b-{:04x}-4000-8000-{:012x}", k % 97, k / 10);
    let hash = "7d9c5b6f4";
    let node = format!("node-{}", k % NODES);
    let host_ip = format!("192.168.{}.{}", (k % NODES) / 250, (k % NODES) % 250 + 1);
    let ips: Vec<_> = endpoint
        .ips
        .iter()
        .map(|ip| json!({"ip": ip.to_string()}))
        .collect();
    let mut labels: serde_json::Map<String, serde_json::Value> = endpoint
        .labels
        .iter()
        .map(|(k, v)| (k.clone(), json!(v)))
        .collect();
    labels.insert("pod-template-hash".into(), json!(hash));
    labels.insert("zonewall.io/zone".into(), json!(zone));
    let time = "2026-11-01T08:00:00Z";
    let condition = |kind: &str| json!({"type": kind, "status": "True", "lastProbeTime": null, "lastTransitionTime": time});
    let pod = json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": name,
            "generateName": format!("{name}-{hash}-"),
            "namespace": namespace,
            "uid": uid,
            "resourceVersion": version.to_string(),
            "creationTimestamp": time,
            "labels": labels,
            "annotations": {"kubectl.kubernetes.io/restartedAt": time},
            "ownerReferences": [{
                "apiVersion": "apps/v1", "kind": "ReplicaSet", "name": format!("{name}-{hash}"),
                "uid": owner, "controller": true, "blockOwnerDeletion": true
            }],
            "managedFields": [
                {
                    "manager": "kube-controller-manager", "operation": "Update", "apiVersion": "v1",
                    "time": time, "fieldsType": "FieldsV1",
                    "fieldsV1": {
                        "f:metadata": {
                            "f:generateName": {},
                            "f:labels": {".": {}, "f:app": {}, "f:pod-template-hash": {}, "f:zonewall.io/zone": {}},
                            "f:ownerReferences": {".": {}, format!("k:{{\"uid\":\"{owner}\"}}"): {}}
                        },
                        "f:spec": {
                            "f:containers": {"k:{\"name\":\"app\"}": {
                                ".": {}, "f:image": {}, "f:imagePullPolicy": {}, "f:name": {},
                                "f:ports": {".": {}, "k:{\"containerPort\":8080,\"protocol\":\"TCP\"}": {
                                    ".": {}, "f:containerPort": {}, "f:name": {}, "f:protocol": {}}},
                                "f:readinessProbe": {".": {}, "f:failureThreshold": {}, "f:httpGet": {
                                    ".": {}, "f:path": {}, "f:port": {}, "f:scheme": {}},
                                    "f:periodSeconds": {}, "f:successThreshold": {}, "f:timeoutSeconds": {}},
                                "f:resources": {".": {}, "f:limits": {".": {}, "f:cpu": {}, "f:memory": {}},
                                    "f:requests": {".": {}, "f:cpu": {}, "f:memory": {}}},
                                "f:terminationMessagePath": {}, "f:terminationMessagePolicy": {}}},
                            "f:dnsPolicy": {}, "f:enableServiceLinks": {}, "f:restartPolicy": {},
                            "f:schedulerName": {}, "f:securityContext": {},
                            "f:terminationGracePeriodSeconds": {}
                        }
                    }
                },
                {
                    "manager": "kubelet", "operation": "Update", "apiVersion": "v1", "time": time,
                    "fieldsType": "FieldsV1", "subresource": "status",
                    "fieldsV1": {"f:status": {
                        "f:conditions": {
                            "k:{\"type\":\"ContainersReady\"}": {".": {}, "f:lastProbeTime": {}, "f:lastTransitionTime": {}, "f:status": {}, "f:type": {}},
                            "k:{\"type\":\"Initialized\"}": {".": {}, "f:lastProbeTime": {}, "f:lastTransitionTime": {}, "f:status": {}, "f:type": {}},
                            "k:{\"type\":\"Ready\"}": {".": {}, "f:lastProbeTime": {}, "f:lastTransitionTime": {}, "f:status": {}, "f:type": {}}
                        },
                        "f:containerStatuses": {}, "f:hostIP": {}, "f:hostIPs": {}, "f:phase": {},
                        "f:podIP": {}, "f:podIPs": {".": {}}, "f:startTime": {}
                    }}
                }
            ]
        },
        "spec": {
            "volumes": [{"name": "kube-api-access-x7k2p", "projected": {"sources": [
                {"serviceAccountToken": {"expirationSeconds": 3607, "path": "token"}},
                {"configMap": {"name": "kube-root-ca.crt", "items": [{"key": "ca.crt", "path": "ca.crt"}]}},
                {"downwardAPI": {"items": [{"path": "namespace", "fieldRef": {"apiVersion": "v1", "fieldPath": "metadata.namespace"}}]}}
            ], "defaultMode": 420}}],
            "containers": [{
                "name": "app", "image": "registry.example/app:1.4.2",
                "ports": [{"name": "http", "containerPort": 8080, "protocol": "TCP"}],
                "env": [{"name": "LOG_LEVEL", "value": "info"}],
                "resources": {"limits": {"cpu": "500m", "memory": "256Mi"}, "requests": {"cpu": "100m", "memory": "128Mi"}},
                "volumeMounts": [{"name": "kube-api-access-x7k2p", "readOnly": true,
                    "mountPath": "/var/run/secrets/kubernetes.io/serviceaccount"}],
                "readinessProbe": {"httpGet": {"path": "/ready", "port": 8080, "scheme": "HTTP"},
                    "timeoutSeconds": 1, "periodSeconds": 10, "successThreshold": 1, "failureThreshold": 3},
                "terminationMessagePath": "/dev/termination-log", "terminationMessagePolicy": "File",
                "imagePullPolicy": "IfNotPresent"
            }],
            "restartPolicy": "Always", "terminationGracePeriodSeconds": 30, "dnsPolicy": "ClusterFirst",
            "serviceAccountName": "default", "serviceAccount": "default", "nodeName": node,
            "securityContext": {}, "schedulerName": "default-scheduler",
            "tolerations": [
                {"key": "node.kubernetes.io/not-ready", "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": 300},
                {"key": "node.kubernetes.io/unreachable", "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": 300}
            ],
            "priority": 0, "enableServiceLinks": true, "preemptionPolicy": "PreemptLowerPriority"
        },
        "status": {
            "phase": "Running",
            "conditions": [condition("PodReadyToStartContainers"), condition("Initialized"),
                condition("Ready"), condition("ContainersReady"), condition("PodScheduled")],
            "hostIP": host_ip, "hostIPs": [{"ip": host_ip}],
            "podIP": endpoint.ips.first().map(ToString::to_string), "podIPs": ips,
            "startTime": time,
            "containerStatuses": [{
                "name": "app", "state": {"running": {"startedAt": time}}, "lastState": {},
                "ready": true, "restartCount": 0, "image": "registry.example/app:1.4.2",
                "imageID": format!("registry.example/app@sha256:{:064x}", 0xfeed_u64),
                "containerID": format!("containerd://{:064x}", k), "started": true
            }],
            "qosClass": "Burstable"
        }
    });
    Ok(serde_json::to_vec(&pod)?)
}

fn namespace_json(k: usize) -> anyhow::Result<Vec<u8>> {
    let name = format!("team-{k}");
    Ok(serde_json::to_vec(&serde_json::json!({
        "apiVersion": "v1", "kind": "Namespace",
        "metadata": {"name": name, "uid": format!("9c8d7e6f-0000-4000-8000-{k:012x}"),
            "resourceVersion": "10", "creationTimestamp": "2026-10-01T08:00:00Z",
            "labels": {"kubernetes.io/metadata.name": name, "team": name}},
        "spec": {"finalizers": ["kubernetes"]},
        "status": {"phase": "Active"}
    }))?)
}

/// The measured agent's own Node (the stand-in serves no other: the agent selects its own).
fn node_json() -> anyhow::Result<Vec<u8>> {
    Ok(serde_json::to_vec(&serde_json::json!({
        "apiVersion": "v1", "kind": "Node",
        "metadata": {"name": NODE, "uid": "3f2e1d0c-0000-4000-8000-000000000001",
            "resourceVersion": "20", "creationTimestamp": "2026-10-01T08:00:00Z",
            "labels": {"kubernetes.io/hostname": NODE, "kubernetes.io/os": "linux"}},
        "spec": {"podCIDR": "10.250.0.0/24", "podCIDRs": ["10.250.0.0/24"]},
        "status": {
            "addresses": [{"type": "InternalIP", "address": "192.168.250.1"},
                {"type": "Hostname", "address": NODE}],
            "conditions": [{"type": "Ready", "status": "True",
                "lastHeartbeatTime": "2026-11-01T08:00:00Z",
                "lastTransitionTime": "2026-10-01T08:00:00Z",
                "reason": "KubeletReady", "message": "kubelet is posting ready status"}]
        }
    }))?)
}

/// The release agent in Kubernetes mode against the API stand-in serving `policies` as
/// ZonePolicy objects and a Pod for each of `endpoints` (their labels, their zone as the
/// `zonewall.io/zone` label); its memory once ready, then the time from a watch event that
/// moves one pod to another zone to the new generation in the kernel, `POD_CHANGES` times.
fn kubernetes_process(
    policies: &[ZonePolicy],
    endpoints: &[Endpoint],
    dir: &Path,
) -> anyhow::Result<(AgentProcess, Vec<Duration>)> {
    let binary = release_binary()?;
    let pods = endpoints
        .iter()
        .enumerate()
        .map(|(k, e)| pod_json(k, e, &e.zone, 100))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let namespaces = (0..NAMESPACES)
        .map(namespace_json)
        .collect::<anyhow::Result<Vec<_>>>()?;
    let objects = policies
        .iter()
        .map(serde_json::to_vec)
        .collect::<Result<Vec<_>, _>>()?;
    let pods = Arc::new(Collection::new("v1", "PodList", pods));
    let namespaces = Collection::new("v1", "NamespaceList", namespaces);
    let objects = Collection::new("zonewall.io/v1alpha1", "ZonePolicyList", objects);
    let read = format!(
        "{} ZonePolicy objects, {:.1} MiB of JSON; {} Pods, {:.1} MiB, in {NAMESPACES} Namespaces",
        policies.len(),
        mib(objects.bytes()),
        endpoints.len(),
        mib(pods.bytes())
    );

    let (netns, _namespaces) = agent_netns("agent-kube")?;
    let (listener, port) = api_standin::listen_in(&netns)?;
    api_standin::serve(
        listener,
        [
            ("/api/v1/pods", pods.clone()),
            ("/api/v1/namespaces", Arc::new(namespaces)),
            ("/apis/zonewall.io/v1alpha1/zonepolicies", Arc::new(objects)),
            (
                "/api/v1/nodes",
                Arc::new(Collection::new("v1", "NodeList", vec![node_json()?])),
            ),
        ]
        .into_iter()
        .collect(),
    );
    let kubeconfig = dir.join("agent-kubeconfig");
    std::fs::write(&kubeconfig, api_standin::kubeconfig(port)).context("write the kubeconfig")?;
    let pins = super::measure::Pins::named("agent-kube");
    let log = std::fs::File::create(dir.join("agent-kube.log")).context("agent log")?;
    let started = Instant::now();
    let mut agent = Stopped(
        agent_command(&binary, &netns, &pins)
            .args(["--node-name", NODE])
            .env("KUBECONFIG", &kubeconfig)
            .stderr(log)
            .spawn()
            .context("start zonewall agent")?,
    );
    let pid = agent.0.id().to_string();
    let ready_after = settled_when_ready(&netns, &mut agent.0, started)?;
    let process = AgentProcess {
        input: "Kubernetes mode, the Panorama configuration as translated, from an API stand-in",
        read,
        rss: status_kib(&pid, "VmRSS"),
        peak: status_kib(&pid, "VmHWM"),
        maps: map_memory_bytes(&pid),
        ready_after,
    };

    // Pods move from dmz to restricted, one watch event each.
    let generation = PinnedGeneration::open(&pins.0)?;
    let mut changes = Vec::new();
    let moved = endpoints
        .iter()
        .enumerate()
        .filter(|(_, e)| e.zone == "dmz")
        .step_by(97)
        .take(POD_CHANGES);
    for (version, (k, endpoint)) in (101..).zip(moved) {
        let event = pod_json(k, endpoint, "restricted", version)?;
        let before = generation.read()?;
        let sent = Instant::now();
        ensure!(
            pods.send("MODIFIED", &event) > 0,
            "the agent watches no pods"
        );
        while generation.read()? == before {
            ensure!(
                sent.elapsed() < Duration::from_secs(10),
                "no new generation 10 s after a pod changed zone; see target/bench/agent-kube.log"
            );
            std::thread::sleep(Duration::from_micros(200));
        }
        changes.push(sent.elapsed());
        // The agent finishes the apply (the old slot brought up to date) before the next.
        std::thread::sleep(Duration::from_secs(1));
    }
    ensure!(
        changes.len() == POD_CHANGES,
        "not enough dmz workloads to move"
    );
    let process = AgentProcess {
        peak: status_kib(&pid, "VmHWM"),
        ..process
    };
    changes.sort();
    Ok((process, changes))
}

/// Each object compiled, or taken over from `compiled_before` when it is the very same
/// object as in `before` (the objects the previous compile was given), as the agent's caches
/// do; equal address columns are shared through `pool`.
pub(super) fn compiled_objects(
    objects: &[Arc<ZonePolicy>],
    before: &[Arc<ZonePolicy>],
    compiled_before: &[Arc<CompiledPolicy>],
    pool: &mut AddressPool,
) -> anyhow::Result<Vec<Arc<CompiledPolicy>>> {
    let mut addresses = AddressCache::with_pool(std::mem::take(pool));
    let mut out = Vec::with_capacity(objects.len());
    for (k, object) in objects.iter().enumerate() {
        let kept = before
            .get(k)
            .filter(|b| Arc::ptr_eq(b, object))
            .and_then(|_| compiled_before.get(k))
            .cloned();
        let compiled = match kept {
            Some(kept) => kept,
            None => Arc::new(
                compile_with(object, &mut addresses)
                    .map_err(|problems| anyhow::anyhow!("{}", PolicySetError::Invalid(problems)))?,
            ),
        };
        out.push(compiled);
    }
    *pool = addresses.into_pool();
    pool.prune();
    Ok(out)
}

pub fn run() -> anyhow::Result<()> {
    let bench_dir = workspace_root().join("target/bench");
    std::fs::create_dir_all(&bench_dir).context("create target/bench")?;
    let (processes, kube_changes) = {
        let generated = generate::generate(SCALE);
        let endpoints = endpoints(&generated.endpoints);
        let translated = translated_panorama()?;
        let (kubernetes, changes) = kubernetes_process(&translated, &endpoints, &bench_dir)?;
        let processes = [
            standalone_process(
                "standalone, the Panorama configuration as translated",
                &translated,
                &endpoints,
                &bench_dir,
            )?,
            kubernetes,
            standalone_process(
                "standalone, the generated policy, one object per zone",
                &generated.policies,
                &endpoints,
                &bench_dir,
            )?,
        ];
        (processes, changes)
    };
    let rss_start = status_kib("self", "VmRSS");
    let heap_start = heap::live();
    let generated = generate::generate(SCALE);
    let mut endpoints = endpoints(&generated.endpoints);
    // The ZonePolicy objects and endpoints as handed to the agent (the generator's own copy
    // of the firewall rules is not part of it).
    drop(generated.rules);
    // Shared objects, as a watch delivers them.
    let policies: Vec<Arc<ZonePolicy>> = generated.policies.into_iter().map(Arc::new).collect();
    let heap_input = heap::live() - heap_start;
    let inventory = |endpoints: &[Endpoint]| {
        Inventory::from_endpoints(generate::EXTERNAL_ZONE, endpoints.to_vec(), "bench")
    };
    let pins = super::measure::Pins::named("agent");
    let mut datapath = Datapath::load(&pins.0).context("loading the eBPF programs")?;
    heap::reset_peak();
    let before_policy = heap::live();
    let started = Instant::now();
    // Compiled one by one as they arrive, as both agent modes keep them.
    let mut pool = AddressPool::default();
    let objects = compiled_objects(&policies, &[], &[], &mut pool)?;
    let set = PolicySet::from_compiled(objects.iter().cloned().map(Ok))?;
    let compiled = node::compile_set(&inventory(&endpoints)?, &set, None)?;
    let compile_seconds = started.elapsed().as_secs_f64();
    let started = Instant::now();
    let report = datapath.apply(&DesiredTables::new(&compiled, &[], false))?;
    let apply_seconds = started.elapsed().as_secs_f64();
    let sizes = compiled.sizes();
    // What stays while the policy is live: the compiled tables (the agent keeps them for
    // the next compile and for naming rules in flow records) and the datapath's record of
    // its table slots.
    let heap_state = heap::live() - before_policy;
    let heap_peak = heap::peak() - before_policy;
    let rss_live = status_kib("self", "VmRSS");
    let maps = map_memory_bytes("self");

    // Pods change zone, one reconcile each: the policy objects are reused as compiled, the
    // tables compiled again with the live identity numbers, and only the difference is
    // written. Every change moves another dmz workload to restricted.
    let mut compiled = compiled;
    let mut changes = Vec::new();
    for moved in endpoints
        .iter()
        .enumerate()
        .filter(|(_, e)| e.zone == "dmz")
        .map(|(i, _)| i)
        .step_by(97)
        .take(POD_CHANGES)
        .collect::<Vec<_>>()
    {
        endpoints[moved].zone = "restricted".to_owned();
        let started = Instant::now();
        let set = PolicySet::from_compiled(objects.iter().cloned().map(Ok))?;
        compiled = node::compile_set(&inventory(&endpoints)?, &set, Some(&compiled))?;
        let recompile = started.elapsed();
        let report = datapath.apply(&DesiredTables::new(&compiled, &[], false))?;
        let returned = started.elapsed();
        let live = report
            .switched_at
            .context("a pod that changes zone changes the tables")?
            .duration_since(started);
        changes.push((live, recompile, returned, report));
    }
    ensure!(
        changes.len() == POD_CHANGES,
        "not enough dmz workloads to move"
    );
    changes.sort_by_key(|(live, ..)| *live);
    let (change_total, recompile, returned, change) = changes[POD_CHANGES / 2];
    let slowest = changes[POD_CHANGES - 1].0;
    let rss_peak = status_kib("self", "VmHWM");

    // One firewall rule changes (the app-0 -> app-1 allow rule gets a second port): the
    // two objects holding it arrive new, as a watch delivers them, the others stay shared.
    let mut rules = generate::generate(SCALE).rules;
    rules[2].service.entries[0].ports.push(PortRange {
        port: 50_001,
        end_port: None,
    });
    let changed: Vec<Arc<ZonePolicy>> =
        generate::as_watch_delivers(generate::zone_policies(&rules), &policies);
    drop(rules);
    let objects_changed = changed
        .iter()
        .zip(&policies)
        .filter(|(a, b)| !Arc::ptr_eq(a, b))
        .count();
    let started = Instant::now();
    let objects = compiled_objects(&changed, &policies, &objects, &mut pool)?;
    let set = PolicySet::from_compiled(objects.iter().cloned().map(Ok))?;
    let compiled = node::compile_set(&inventory(&endpoints)?, &set, Some(&compiled))?;
    let rule_recompile = started.elapsed();
    let rule_change = datapath.apply(&DesiredTables::new(&compiled, &[], false))?;
    let rule_live = rule_change
        .switched_at
        .context("a rule change changes the tables")?
        .duration_since(started);
    drop(datapath);
    drop(pins);

    println!();
    println!(
        "bench agent: {} endpoints, 10,000 rules, 100,000 prefixes -> {} identities, {} + {} identity entries, {} policy entries",
        endpoints.len(),
        sizes.identities,
        sizes.identity_entries_v4,
        sizes.identity_entries_v6,
        sizes.policy_entries
    );
    println!(
        "  compile {compile_seconds:.2} s, first apply {apply_seconds:.2} s ({} entries written)",
        report.written
    );
    println!(
        "  heap: the ZonePolicy objects and endpoints handed in {:.0} MiB; kept with the policy live (compiled tables, slot record) {:.0} MiB; peak while compiling and applying {:.0} MiB above the input",
        mib(heap_input),
        mib(heap_state),
        mib(heap_peak)
    );
    for process in &processes {
        println!(
            "  the release agent process, {} ({}): ready after {:.1} s; resident memory {:.0} MiB with the policy live, {:.0} MiB peak; its kernel maps {:.0} MiB",
            process.input,
            process.read,
            process.ready_after.as_secs_f64(),
            process.rss as f64 / 1024.0,
            process.peak as f64 / 1024.0,
            process.maps as f64 / (1024.0 * 1024.0)
        );
    }
    let kube_change = kube_changes[POD_CHANGES / 2];
    let kube_slowest = kube_changes[POD_CHANGES - 1];
    println!(
        "  the Kubernetes-mode process, one pod changes zone ({POD_CHANGES} watch events, median): new generation in the kernel after {:.0} ms (slowest {:.0} ms)",
        kube_change.as_secs_f64() * 1000.0,
        kube_slowest.as_secs_f64() * 1000.0,
    );
    println!(
        "  this process: resident memory {:.0} MiB at start, {:.0} MiB with the policy live, {:.0} MiB peak (the generator's garbage included); kernel maps (both table slots) {:.0} MiB",
        rss_start as f64 / 1024.0,
        rss_live as f64 / 1024.0,
        rss_peak as f64 / 1024.0,
        maps as f64 / (1024.0 * 1024.0)
    );
    println!(
        "  one pod changes zone ({POD_CHANGES} changes, median): compile {:.0} ms, new generation live after {:.0} ms (slowest {:.0} ms), apply returned after {:.0} ms (the old slot brought up to date); {} entries written, {} removed",
        recompile.as_secs_f64() * 1000.0,
        change_total.as_secs_f64() * 1000.0,
        slowest.as_secs_f64() * 1000.0,
        returned.as_secs_f64() * 1000.0,
        change.written,
        change.removed
    );
    println!(
        "  one firewall rule changes ({objects_changed} ZonePolicy objects new): compile {:.0} ms, new generation live after {:.0} ms; {} entries written, {} removed",
        rule_recompile.as_secs_f64() * 1000.0,
        rule_live.as_secs_f64() * 1000.0,
        rule_change.written,
        rule_change.removed
    );
    let verdict = |met: bool| if met { "met" } else { "NOT met" };
    println!(
        "  targets: agent resident memory < 100 MiB with the policy live: {} ({}); at its peak while loading: {} ({}); the agent's own state < 100 MiB: {} ({:.0} MiB kept, {:.0} MiB peak); one pod change live < 100 ms: {} in process, {} from a watch event",
        verdict(processes.iter().all(|p| p.rss < 100 * 1024)),
        processes
            .iter()
            .map(|p| format!("{:.0} MiB", p.rss as f64 / 1024.0))
            .collect::<Vec<_>>()
            .join(", "),
        verdict(processes.iter().all(|p| p.peak < 100 * 1024)),
        processes
            .iter()
            .map(|p| format!("{:.0} MiB", p.peak as f64 / 1024.0))
            .collect::<Vec<_>>()
            .join(", "),
        verdict(heap_state < 100 << 20 && heap_peak < 100 << 20),
        mib(heap_state),
        mib(heap_peak),
        verdict(change_total.as_millis() < 100),
        verdict(kube_change.as_millis() < 100)
    );
    Ok(())
}
