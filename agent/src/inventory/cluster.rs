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

use std::borrow::{Borrow, Cow};
use std::collections::{BTreeSet, HashMap};

use k8s_openapi::api::core::v1::{Namespace, Node, PodIP};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

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

/// A Pod as the agent's watch reads it: only what [`inventory_from_cluster`] uses is
/// deserialized, the rest of the object's JSON (containers, volumes, conditions) is skipped.
/// The agent caches every pod of the cluster, and a whole `Pod` takes over 2 KiB of struct
/// before any of its strings.
#[derive(Clone, Debug, Default, PartialEq, serde::Deserialize, serde::Serialize)]
pub struct ClusterPod {
    pub metadata: ObjectMeta,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub spec: Option<ClusterPodSpec>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<ClusterPodStatus>,
}

#[derive(Clone, Debug, Default, PartialEq, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ClusterPodSpec {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node_name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host_network: Option<bool>,
}

#[derive(Clone, Debug, Default, PartialEq, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ClusterPodStatus {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<String>,
    #[serde(default, rename = "podIP", skip_serializing_if = "Option::is_none")]
    pub pod_ip: Option<String>,
    #[serde(default, rename = "podIPs", skip_serializing_if = "Option::is_none")]
    pub pod_ips: Option<Vec<PodIP>>,
}

/// The core/v1 Pod resource, read as a [`ClusterPod`].
impl kube::Resource for ClusterPod {
    type DynamicType = ();
    type Scope = k8s_openapi::NamespaceResourceScope;

    fn kind(_: &()) -> Cow<'_, str> {
        Cow::Borrowed("Pod")
    }
    fn group(_: &()) -> Cow<'_, str> {
        Cow::Borrowed("")
    }
    fn version(_: &()) -> Cow<'_, str> {
        Cow::Borrowed("v1")
    }
    fn plural(_: &()) -> Cow<'_, str> {
        Cow::Borrowed("pods")
    }
    fn meta(&self) -> &ObjectMeta {
        &self.metadata
    }
    fn meta_mut(&mut self) -> &mut ObjectMeta {
        &mut self.metadata
    }
}

fn pod_ips(pod: &ClusterPod) -> Vec<&str> {
    let Some(status) = &pod.status else {
        return Vec::new();
    };
    let mut ips: Vec<&str> = status
        .pod_ips
        .iter()
        .flatten()
        .map(|p| p.ip.as_str())
        .collect();
    if ips.is_empty()
        && let Some(ip) = &status.pod_ip
    {
        ips.push(ip);
    }
    ips
}

/// Drops from a watched pod's metadata what [`inventory_from_cluster`] does not read, before
/// the watch cache keeps it (managed fields alone are often more than the rest).
pub fn trim_pod(pod: &mut ClusterPod) {
    trim_metadata(&mut pod.metadata);
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
fn trim_metadata(metadata: &mut ObjectMeta) {
    metadata.managed_fields = None;
    metadata.annotations = None;
    metadata.owner_references = None;
}

/// Builds the inventory from the cluster's objects. Deterministic: pods are taken in
/// (namespace, name) order. Owned or shared objects (the watch caches' `Arc`s, not copied on
/// every reconcile).
pub fn inventory_from_cluster<P: Borrow<ClusterPod>, N: Borrow<Namespace>>(
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
    let mut sorted: Vec<&ClusterPod> = pods.iter().map(Borrow::borrow).collect();
    sorted.sort_by(|a, b| {
        (&a.metadata.namespace, &a.metadata.name).cmp(&(&b.metadata.namespace, &b.metadata.name))
    });
    let mut endpoints = Vec::with_capacity(sorted.len());
    let mut local = BTreeSet::new();
    let mut left_out = Vec::new();
    // Address -> the (namespace, name) of the pod that has it.
    let mut claimed: HashMap<&str, (&str, &str)> = HashMap::with_capacity(sorted.len());
    for pod in sorted {
        let namespace = pod.metadata.namespace.as_deref().unwrap_or_default();
        let name = pod.metadata.name.as_deref().unwrap_or_default();
        // Named only for what is left out or local.
        let qualified = || format!("{namespace}/{name}");
        let spec = pod.spec.as_ref();
        if spec.and_then(|s| s.host_network).unwrap_or(false) {
            left_out.push(format!(
                "{}: host network (shares the node's address)",
                qualified()
            ));
            continue;
        }
        let phase = pod.status.as_ref().and_then(|s| s.phase.as_deref());
        if matches!(phase, Some("Succeeded" | "Failed")) {
            left_out.push(format!(
                "{}: finished ({})",
                qualified(),
                phase.unwrap_or("")
            ));
            continue;
        }
        let ips = pod_ips(pod);
        if ips.is_empty() {
            left_out.push(format!("{}: no address yet", qualified()));
            continue;
        }
        let labels = pod.metadata.labels.as_ref();
        let pod_zone = match options.zone_labels {
            ZoneLabels::PodThenNamespace => labels
                .and_then(|l| l.get(&options.zone_label))
                .map(String::as_str),
            ZoneLabels::NamespaceOnly => None,
        };
        let zone = pod_zone
            .or_else(|| namespace_zone.get(namespace).copied())
            .or(options.default_zone.as_deref());
        let Some(zone) = zone else {
            left_out.push(format!(
                "{}: no {} label on the pod or its namespace and no default zone",
                qualified(),
                options.zone_label
            ));
            continue;
        };
        if !valid_zone(zone) {
            left_out.push(format!(
                "{}: zone {zone:?} is not a valid zone name",
                qualified()
            ));
            continue;
        }
        if let Some((owner_namespace, owner)) = ips.iter().find_map(|ip| claimed.get(ip)) {
            left_out.push(format!(
                "{}: its address is also claimed by {owner_namespace}/{owner}",
                qualified()
            ));
            continue;
        }
        for ip in &ips {
            claimed.insert(ip, (namespace, name));
        }
        if spec.and_then(|s| s.node_name.as_deref()) == Some(options.node_name.as_str()) {
            local.insert(qualified());
        }
        endpoints.push(RawEndpoint {
            name: name.to_owned(),
            namespace: Some(namespace.to_owned()),
            zone: zone.to_owned(),
            ips: ips.into_iter().map(str::to_owned).collect(),
            labels: labels.cloned().unwrap_or_default(),
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

    /// A pod's JSON as the watch reads it.
    fn pod(json: serde_json::Value) -> ClusterPod {
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
    fn cluster() -> (Vec<ClusterPod>, Vec<Namespace>) {
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

    /// A whole Pod (everything the API server returns), read and trimmed as the watch cache
    /// keeps it: it becomes the workload the fields that matter say, identified as before,
    /// in a small fraction of a `Pod`'s size.
    #[test]
    fn a_whole_pod_is_read_and_trimmed_to_what_the_inventory_uses() {
        let whole = serde_json::json!({
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
                       "podIPs": [{"ip": "10.244.1.6"}, {"ip": "fd00:244:1::6"}],
                       "conditions": [{"type": "Ready", "status": "True"}],
                       "containerStatuses": [{"name": "web", "image": "web:1", "imageID": "x",
                                              "ready": true, "restartCount": 0}]}
        });
        let (mut pods, mut namespaces) = cluster();
        let mut read = pod(whole);
        trim_pod(&mut read);
        namespaces.iter_mut().for_each(trim_namespace);
        assert_eq!(read.metadata.uid.as_deref(), Some("u-1"));
        assert_eq!(read.metadata.resource_version.as_deref(), Some("42"));
        assert!(read.metadata.managed_fields.is_none() && read.metadata.annotations.is_none());
        pods.push(read);
        let result =
            inventory_from_cluster(&pods, &namespaces, &options(ZoneLabels::PodThenNamespace))
                .unwrap();
        let web = result
            .inventory
            .endpoints
            .iter()
            .find(|e| e.name == "web-full")
            .expect("the whole pod is a workload");
        assert_eq!(web.zone, "dmz");
        assert_eq!(web.labels.get("app").map(String::as_str), Some("web"));
        assert_eq!(
            web.ips,
            [
                "10.244.1.6".parse::<std::net::IpAddr>().unwrap(),
                "fd00:244:1::6".parse().unwrap()
            ]
        );
        assert!(result.local.contains("shop/web-full"));
        assert!(
            size_of::<ClusterPod>() * 3 < size_of::<k8s_openapi::api::core::v1::Pod>(),
            "a cached pod is a fraction of a whole Pod"
        );
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
