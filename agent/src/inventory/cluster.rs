//! The inventory of a Kubernetes cluster: every running pod's addresses, labels and zone,
//! read from Pod and Namespace objects. Which labels count for the zone is a deliberate
//! choice, written down here once:
//!
//! - `ZoneLabels::PodThenNamespace` (DESIGN.md section 4): the zone label on the pod, else on
//!   its namespace, else the configured default. Whoever may create pods in a namespace can
//!   choose any zone for them, so use it where pod creation is as trusted as the policy.
//! - `ZoneLabels::NamespaceOnly`: only the namespace's label (and the default) counts; a pod's
//!   own labels never move it to another zone. Namespace labels are changed with `update` on
//!   namespaces, which application teams usually do not have.
//!
//! A running process cannot change its own pod's labels or its namespace's (that takes API
//! access the workload is not given), so a pod never moves itself between zones either way.
//!
//! Pods are left out, with a reason, when they cannot be enforced as a workload: host-network
//! pods (they share the node's address), pods without an address yet, finished pods (their
//! address may already belong to a new pod), pods whose zone label is not a valid zone, and
//! the later of two pods claiming one address. A left-out pod's address falls into the
//! external zone, never into a more trusted one.

use std::borrow::Borrow;
use std::collections::{BTreeMap, BTreeSet, HashMap};

use k8s_openapi::api::core::v1::{Namespace, Node, Pod, PodSpec, PodStatus};

use super::{Inventory, InventoryError, RawEndpoint, RawInventory, valid_zone};

/// Which labels decide a pod's zone (see the module comment).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum ZoneLabels {
    #[default]
    PodThenNamespace,
    NamespaceOnly,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClusterOptions {
    /// The label whose value is a zone, `zonewall.io/zone` by default.
    pub zone_label: String,
    pub zone_labels: ZoneLabels,
    /// Zone of a pod without a zone label; `None` leaves such pods out (external zone).
    pub default_zone: Option<String>,
    pub external_zone: String,
    /// This node's name: its pods are the ones enforced here.
    pub node_name: String,
}

/// The inventory, which of its endpoints run on this node, and what was left out.
#[derive(Clone, Debug)]
pub struct ClusterInventory {
    pub inventory: Inventory,
    /// `namespace/name` of the pods on this node.
    pub local: BTreeSet<String>,
    /// One line per pod left out, with the reason.
    pub left_out: Vec<String>,
}

fn pod_ips(pod: &Pod) -> Vec<String> {
    let Some(status) = &pod.status else {
        return Vec::new();
    };
    let mut ips: Vec<String> = status
        .pod_ips
        .iter()
        .flatten()
        .map(|p| p.ip.clone())
        .collect();
    if ips.is_empty()
        && let Some(ip) = &status.pod_ip
    {
        ips.push(ip.clone());
    }
    ips
}

/// Drops from a watched Pod everything [`inventory_from_cluster`] does not read, before the
/// watch cache keeps it: the agent caches every pod of the cluster, and a whole Pod
/// (containers, volumes, conditions, managed fields) takes several KiB.
pub fn trim_pod(pod: &mut Pod) {
    trim_metadata(&mut pod.metadata);
    if let Some(spec) = pod.spec.take() {
        pod.spec = Some(PodSpec {
            node_name: spec.node_name,
            host_network: spec.host_network,
            ..PodSpec::default()
        });
    }
    if let Some(status) = pod.status.take() {
        pod.status = Some(PodStatus {
            phase: status.phase,
            pod_ip: status.pod_ip,
            pod_ips: status.pod_ips,
            ..PodStatus::default()
        });
    }
}

/// The same for a Namespace: only its name and labels are read.
pub fn trim_namespace(namespace: &mut Namespace) {
    trim_metadata(&mut namespace.metadata);
    namespace.spec = None;
    namespace.status = None;
}

/// The same for a Node: the agent reads only that its own exists.
pub fn trim_node(node: &mut Node) {
    trim_metadata(&mut node.metadata);
    node.metadata.labels = None;
    node.spec = None;
    node.status = None;
}

/// Keeps what identifies the object (name, namespace, uid, resource version) and its labels.
fn trim_metadata(metadata: &mut k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta) {
    metadata.managed_fields = None;
    metadata.annotations = None;
    metadata.owner_references = None;
}

/// Builds the inventory from the cluster's objects. Deterministic: pods are taken in
/// (namespace, name) order. Owned or shared objects (the watch caches' `Arc`s, not copied on
/// every reconcile).
pub fn inventory_from_cluster<P: Borrow<Pod>, N: Borrow<Namespace>>(
    pods: &[P],
    namespaces: &[N],
    options: &ClusterOptions,
) -> Result<ClusterInventory, InventoryError> {
    let namespace_zone: HashMap<&str, &str> = namespaces
        .iter()
        .map(Borrow::borrow)
        .filter_map(|ns: &Namespace| {
            let name = ns.metadata.name.as_deref()?;
            let zone = ns.metadata.labels.as_ref()?.get(&options.zone_label)?;
            Some((name, zone.as_str()))
        })
        .collect();
    let mut sorted: Vec<&Pod> = pods.iter().map(Borrow::borrow).collect();
    sorted.sort_by(|a, b| {
        (&a.metadata.namespace, &a.metadata.name).cmp(&(&b.metadata.namespace, &b.metadata.name))
    });
    let mut endpoints = Vec::new();
    let mut local = BTreeSet::new();
    let mut left_out = Vec::new();
    let mut claimed: BTreeMap<String, String> = BTreeMap::new();
    for pod in sorted {
        let namespace = pod.metadata.namespace.clone().unwrap_or_default();
        let name = pod.metadata.name.clone().unwrap_or_default();
        let qualified = format!("{namespace}/{name}");
        let spec = pod.spec.as_ref();
        if spec.and_then(|s| s.host_network).unwrap_or(false) {
            left_out.push(format!(
                "{qualified}: host network (shares the node's address)"
            ));
            continue;
        }
        let phase = pod.status.as_ref().and_then(|s| s.phase.as_deref());
        if matches!(phase, Some("Succeeded" | "Failed")) {
            left_out.push(format!("{qualified}: finished ({})", phase.unwrap_or("")));
            continue;
        }
        let ips = pod_ips(pod);
        if ips.is_empty() {
            left_out.push(format!("{qualified}: no address yet"));
            continue;
        }
        let labels = pod.metadata.labels.clone().unwrap_or_default();
        let pod_zone = match options.zone_labels {
            ZoneLabels::PodThenNamespace => labels.get(&options.zone_label).map(String::as_str),
            ZoneLabels::NamespaceOnly => None,
        };
        let zone = pod_zone
            .or_else(|| namespace_zone.get(namespace.as_str()).copied())
            .or(options.default_zone.as_deref());
        let Some(zone) = zone else {
            left_out.push(format!(
                "{qualified}: no {} label on the pod or its namespace and no default zone",
                options.zone_label
            ));
            continue;
        };
        if !valid_zone(zone) {
            left_out.push(format!(
                "{qualified}: zone {zone:?} is not a valid zone name"
            ));
            continue;
        }
        if let Some(owner) = ips.iter().find_map(|ip| claimed.get(ip)) {
            left_out.push(format!(
                "{qualified}: its address is also claimed by {owner}"
            ));
            continue;
        }
        for ip in &ips {
            claimed.insert(ip.clone(), qualified.clone());
        }
        if spec.and_then(|s| s.node_name.as_deref()) == Some(options.node_name.as_str()) {
            local.insert(qualified.clone());
        }
        endpoints.push(RawEndpoint {
            name,
            namespace: Some(namespace),
            zone: zone.to_owned(),
            ips,
            labels,
            interface: None,
        });
    }
    let inventory = Inventory::from_raw(
        RawInventory {
            external_zone: options.external_zone.clone(),
            endpoints,
        },
        "the cluster's pods",
    )?;
    Ok(ClusterInventory {
        inventory,
        local,
        left_out,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(json: serde_json::Value) -> Pod {
        serde_json::from_value(json).unwrap()
    }

    fn options(zone_labels: ZoneLabels) -> ClusterOptions {
        ClusterOptions {
            zone_label: "zonewall.io/zone".to_owned(),
            zone_labels,
            default_zone: None,
            external_zone: "untrust".to_owned(),
            node_name: "node-a".to_owned(),
        }
    }

    /// Objects as the API server returns them (trimmed to the fields that matter).
    fn cluster() -> (Vec<Pod>, Vec<Namespace>) {
        let namespaces: Vec<Namespace> = serde_json::from_value(serde_json::json!([
            {"apiVersion": "v1", "kind": "Namespace",
             "metadata": {"name": "shop", "labels": {"zonewall.io/zone": "dmz"}}},
            {"apiVersion": "v1", "kind": "Namespace",
             "metadata": {"name": "payments", "labels": {"zonewall.io/zone": "trusted"}}},
            {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "kube-system"}}
        ]))
        .unwrap();
        let pods = vec![
            pod(serde_json::json!({
                "apiVersion": "v1", "kind": "Pod",
                "metadata": {"name": "web-7d9", "namespace": "shop", "labels": {"app": "web"}},
                "spec": {"nodeName": "node-a", "containers": [{"name": "web", "image": "web:1"}]},
                "status": {"phase": "Running", "podIP": "10.244.1.5",
                           "podIPs": [{"ip": "10.244.1.5"}, {"ip": "fd00:244:1::5"}]}
            })),
            pod(serde_json::json!({
                "apiVersion": "v1", "kind": "Pod",
                "metadata": {"name": "api-0", "namespace": "payments",
                             "labels": {"app": "api", "zonewall.io/zone": "restricted"}},
                "spec": {"nodeName": "node-b", "containers": [{"name": "api", "image": "api:1"}]},
                "status": {"phase": "Running", "podIP": "10.244.2.7", "podIPs": [{"ip": "10.244.2.7"}]}
            })),
            pod(serde_json::json!({
                "apiVersion": "v1", "kind": "Pod",
                "metadata": {"name": "proxy", "namespace": "kube-system"},
                "spec": {"nodeName": "node-a", "hostNetwork": true,
                         "containers": [{"name": "proxy", "image": "proxy:1"}]},
                "status": {"phase": "Running", "podIP": "192.0.2.10"}
            })),
            pod(serde_json::json!({
                "apiVersion": "v1", "kind": "Pod",
                "metadata": {"name": "job-1", "namespace": "shop"},
                "spec": {"nodeName": "node-a", "containers": [{"name": "job", "image": "job:1"}]},
                "status": {"phase": "Succeeded", "podIP": "10.244.1.9"}
            })),
            pod(serde_json::json!({
                "apiVersion": "v1", "kind": "Pod",
                "metadata": {"name": "pending", "namespace": "shop"},
                "spec": {"containers": [{"name": "x", "image": "x:1"}]},
                "status": {"phase": "Pending"}
            })),
            pod(serde_json::json!({
                "apiVersion": "v1", "kind": "Pod",
                "metadata": {"name": "coredns", "namespace": "kube-system"},
                "spec": {"nodeName": "node-a", "containers": [{"name": "dns", "image": "dns:1"}]},
                "status": {"phase": "Running", "podIP": "10.244.1.3"}
            })),
        ];
        (pods, namespaces)
    }

    /// What the watch caches keep of a pod gives the inventory the whole pod gives.
    #[test]
    fn trimmed_objects_give_the_same_inventory() {
        let (mut pods, mut namespaces) = cluster();
        pods.push(pod(serde_json::json!({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {
                "name": "web-full", "namespace": "shop", "uid": "u-1", "resourceVersion": "42",
                "labels": {"app": "web"},
                "annotations": {"kubectl.kubernetes.io/last-applied-configuration": "{}"},
                "ownerReferences": [{"apiVersion": "apps/v1", "kind": "ReplicaSet",
                                     "name": "web", "uid": "u-0"}],
                "managedFields": [{"manager": "kubelet", "operation": "Update"}]
            },
            "spec": {"nodeName": "node-a", "serviceAccountName": "web",
                     "containers": [{"name": "web", "image": "web:1",
                                     "env": [{"name": "A", "value": "b"}]}],
                     "volumes": [{"name": "data", "emptyDir": {}}]},
            "status": {"phase": "Running", "podIP": "10.244.1.6",
                       "podIPs": [{"ip": "10.244.1.6"}],
                       "conditions": [{"type": "Ready", "status": "True"}],
                       "containerStatuses": [{"name": "web", "image": "web:1", "imageID": "x",
                                              "ready": true, "restartCount": 0}]}
        })));
        let options = options(ZoneLabels::PodThenNamespace);
        let whole = inventory_from_cluster(&pods, &namespaces, &options).unwrap();
        let size = |pod: &Pod| serde_json::to_vec(pod).unwrap().len();
        let before = size(pods.last().unwrap());
        pods.iter_mut().for_each(trim_pod);
        namespaces.iter_mut().for_each(trim_namespace);
        assert!(
            size(pods.last().unwrap()) * 2 < before,
            "trimming drops most of a whole pod"
        );
        let trimmed = inventory_from_cluster(&pods, &namespaces, &options).unwrap();
        assert_eq!(trimmed.inventory.endpoints, whole.inventory.endpoints);
        assert_eq!(trimmed.local, whole.local);
        assert_eq!(trimmed.left_out, whole.left_out);
        let full = pods.last().unwrap();
        assert_eq!(full.metadata.uid.as_deref(), Some("u-1"));
        assert_eq!(full.metadata.resource_version.as_deref(), Some("42"));
    }

    #[test]
    fn zones_come_from_the_pod_then_the_namespace_and_unenforceable_pods_are_left_out() {
        let (pods, namespaces) = cluster();
        let result =
            inventory_from_cluster(&pods, &namespaces, &options(ZoneLabels::PodThenNamespace))
                .unwrap();
        let zone_of = |ip: &str| result.inventory.zone_of(ip.parse().unwrap()).to_owned();
        assert_eq!(zone_of("10.244.1.5"), "dmz");
        assert_eq!(zone_of("fd00:244:1::5"), "dmz");
        assert_eq!(zone_of("10.244.2.7"), "restricted", "the pod label wins");
        // Host network, finished, unlabelled: their addresses are external.
        for ip in ["192.0.2.10", "10.244.1.9", "10.244.1.3"] {
            assert_eq!(zone_of(ip), "untrust", "{ip}");
        }
        assert_eq!(
            result.local,
            BTreeSet::from(["shop/web-7d9".to_owned()]),
            "only this node's enforceable pods are local"
        );
        assert_eq!(result.left_out.len(), 4, "{:#?}", result.left_out);
        assert!(
            result
                .left_out
                .iter()
                .any(|l| l.contains("kube-system/proxy: host network"))
        );
        assert!(result.left_out.iter().any(|l| l.contains("no address yet")));
    }

    #[test]
    fn namespace_only_ignores_the_pods_own_zone_label() {
        let (pods, namespaces) = cluster();
        let result =
            inventory_from_cluster(&pods, &namespaces, &options(ZoneLabels::NamespaceOnly))
                .unwrap();
        assert_eq!(
            result.inventory.zone_of("10.244.2.7".parse().unwrap()),
            "trusted",
            "the namespace decides"
        );
    }

    #[test]
    fn a_default_zone_covers_unlabelled_pods_and_bad_labels_are_left_out() {
        let (mut pods, namespaces) = cluster();
        pods.push(pod(serde_json::json!({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": "odd", "namespace": "shop",
                         "labels": {"zonewall.io/zone": "no/slashes"}},
            "spec": {"nodeName": "node-a", "containers": [{"name": "x", "image": "x:1"}]},
            "status": {"phase": "Running", "podIP": "10.244.1.77"}
        })));
        // A second pod claiming web's address (an address reused before the old pod is gone).
        pods.push(pod(serde_json::json!({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": "web-new", "namespace": "shop"},
            "spec": {"nodeName": "node-a", "containers": [{"name": "web", "image": "web:2"}]},
            "status": {"phase": "Running", "podIP": "10.244.1.5"}
        })));
        let mut opts = options(ZoneLabels::PodThenNamespace);
        opts.default_zone = Some("default-zone".to_owned());
        let result = inventory_from_cluster(&pods, &namespaces, &opts).unwrap();
        assert_eq!(
            result.inventory.zone_of("10.244.1.3".parse().unwrap()),
            "default-zone"
        );
        assert_eq!(
            result.inventory.zone_of("10.244.1.77".parse().unwrap()),
            "untrust"
        );
        assert!(result.left_out.iter().any(|l| l.contains("shop/odd: zone")));
        assert!(
            result
                .left_out
                .iter()
                .any(|l| l.contains("shop/web-new: its address is also claimed by shop/web-7d9"))
        );
    }
}
