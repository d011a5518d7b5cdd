//! The Kubernetes manifests under `deploy/`: every YAML file parses; every object survives a
//! round trip through the typed Kubernetes API structs (so a misspelled or misplaced field is
//! caught without an API server); the agent's RBAC is read-only; the sync controller writes
//! only ZonePolicy objects and Events; the agent DaemonSet has exactly its capabilities, bpffs,
//! hostNetwork and probes; the Panorama API key is only ever a mounted file; the admission
//! policy names the ServiceAccount the sync Deployment runs as, and its CEL, evaluated here,
//! refuses everyone else on create, update, delete and tier changes. The Helm chart's
//! templates are not YAML until rendered (and helm is not available here), so for them: every
//! `.Values` reference exists in values.yaml, template blocks are balanced, they cover the same
//! kinds of object as the plain manifests, and the admission policy is the plain one.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize, de::DeserializeOwned};
use serde_json::Value;

/// Verbs that change state, or that grant more than they say (`escalate`, `bind`,
/// `impersonate`, `*`).
const WRITE_VERBS: [&str; 9] = [
    "create",
    "update",
    "patch",
    "delete",
    "deletecollection",
    "escalate",
    "bind",
    "impersonate",
    "*",
];

/// The agent's capabilities (DESIGN.md section 8). SYS_ADMIN and SYS_RESOURCE are left out
/// on purpose (see the comments in deploy/agent/daemonset.yaml).
const AGENT_CAPABILITIES: [&str; 3] = ["BPF", "NET_ADMIN", "PERFMON"];

const CHART: &str = "helm/zonewall";

fn deploy_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy")
}

/// One parsed YAML document and the file (relative to deploy/) it came from.
struct Document {
    file: String,
    value: Value,
}

impl Document {
    fn kind(&self) -> &str {
        self.value["kind"].as_str().unwrap_or("")
    }

    fn name(&self) -> &str {
        self.value["metadata"]["name"].as_str().unwrap_or("")
    }

    fn namespace(&self) -> Option<&str> {
        self.value["metadata"]["namespace"].as_str()
    }

    fn describe(&self) -> String {
        format!("{} {} ({})", self.kind(), self.name(), self.file)
    }
}

fn files_under(dir: &Path, out: &mut Vec<PathBuf>) {
    let mut entries: Vec<_> = fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", dir.display()))
        .map(|entry| entry.expect("directory entry").path())
        .collect();
    entries.sort();
    for path in entries {
        if path.is_dir() {
            files_under(&path, out);
        } else {
            out.push(path);
        }
    }
}

fn relative(path: &Path) -> String {
    path.strip_prefix(deploy_dir())
        .expect("under deploy/")
        .to_string_lossy()
        .into_owned()
}

fn is_yaml(path: &Path) -> bool {
    matches!(
        path.extension().and_then(|e| e.to_str()),
        Some("yaml" | "yml")
    )
}

fn is_helm_template(relative: &str) -> bool {
    relative.starts_with(&format!("{CHART}/templates/"))
}

/// Every YAML file under deploy/ that is YAML as it stands (Helm templates are not).
fn plain_yaml_files() -> Vec<PathBuf> {
    let mut files = Vec::new();
    files_under(&deploy_dir(), &mut files);
    files
        .into_iter()
        .filter(|path| is_yaml(path) && !is_helm_template(&relative(path)))
        .collect()
}

fn parse_documents(path: &Path) -> Result<Vec<Value>, String> {
    let text =
        fs::read_to_string(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let mut documents = Vec::new();
    for (index, document) in serde_yaml_ng::Deserializer::from_str(&text).enumerate() {
        let value = Value::deserialize(document)
            .map_err(|e| format!("{} document {}: {e}", path.display(), index + 1))?;
        // A document that is only a comment, or an empty one after `---`.
        if !value.is_null() {
            documents.push(value);
        }
    }
    Ok(documents)
}

/// The objects `kubectl apply -k deploy/` installs: every plain YAML file outside the Helm
/// chart, except the kustomization itself.
fn installed_objects() -> Vec<Document> {
    let mut objects = Vec::new();
    for path in plain_yaml_files() {
        let file = relative(&path);
        if file.starts_with("helm/") || file == "kustomization.yaml" {
            continue;
        }
        for value in parse_documents(&path).unwrap_or_else(|e| panic!("{e}")) {
            objects.push(Document {
                file: file.clone(),
                value,
            });
        }
    }
    objects
}

fn only<'a>(objects: &'a [Document], kind: &str) -> &'a Document {
    let found: Vec<_> = objects.iter().filter(|o| o.kind() == kind).collect();
    assert_eq!(
        found.len(),
        1,
        "expected exactly one {kind} under deploy/, found {}",
        found.len()
    );
    found[0]
}

fn strings(value: &Value) -> Vec<&str> {
    value
        .as_array()
        .map(|items| items.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default()
}

#[test]
fn every_yaml_file_parses_and_every_object_is_named() {
    let files = plain_yaml_files();
    assert!(
        files.len() >= 10,
        "expected the manifests, the chart's values.yaml, Chart.yaml and CRD copy; found {files:?}"
    );
    for path in &files {
        let documents = parse_documents(path).unwrap_or_else(|e| panic!("{e}"));
        assert!(!documents.is_empty(), "{} has no document", path.display());
        for document in &documents {
            assert!(
                document.is_object(),
                "{}: a document is not a mapping",
                path.display()
            );
        }
    }
    for object in installed_objects() {
        assert!(
            object.value["apiVersion"].is_string() && !object.kind().is_empty(),
            "{}: a document without apiVersion or kind",
            object.file
        );
        assert!(
            !object.name().is_empty(),
            "{}: no metadata.name",
            object.describe()
        );
    }
}

/// The first place where `original` has something `typed` lost or changed: a field the typed
/// struct does not know (misspelled, misplaced) or a value of the wrong shape.
fn first_difference(original: &Value, typed: &Value, at: &str) -> Option<String> {
    match (original, typed) {
        (Value::Object(a), Value::Object(b)) => {
            for (key, value) in a {
                let path = format!("{at}.{key}");
                match b.get(key) {
                    None if value.is_null() => {}
                    None => {
                        return Some(format!("{path}: unknown field (dropped by the typed API)"));
                    }
                    Some(other) => {
                        if let Some(difference) = first_difference(value, other, &path) {
                            return Some(difference);
                        }
                    }
                }
            }
            None
        }
        (Value::Array(a), Value::Array(b)) if a.len() == b.len() => a
            .iter()
            .zip(b)
            .enumerate()
            .find_map(|(index, (x, y))| first_difference(x, y, &format!("{at}[{index}]"))),
        _ if original == typed => None,
        _ => Some(format!("{at}: {original} became {typed}")),
    }
}

fn round_trip<T: DeserializeOwned + Serialize>(value: &Value) -> Result<(), String> {
    let typed: T = serde_json::from_value(value.clone()).map_err(|e| e.to_string())?;
    let back = serde_json::to_value(&typed).map_err(|e| e.to_string())?;
    match first_difference(value, &back, "") {
        None => Ok(()),
        Some(difference) => Err(difference),
    }
}

fn check_typed(object: &Document) -> Result<(), String> {
    use k8s_openapi::api::{
        admissionregistration::v1 as admission, apps::v1 as apps, core::v1 as core,
        rbac::v1 as rbac,
    };
    use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1 as apiextensions;
    let value = &object.value;
    match object.kind() {
        "Namespace" => round_trip::<core::Namespace>(value),
        "ServiceAccount" => round_trip::<core::ServiceAccount>(value),
        "ClusterRole" => round_trip::<rbac::ClusterRole>(value),
        "ClusterRoleBinding" => round_trip::<rbac::ClusterRoleBinding>(value),
        "Role" => round_trip::<rbac::Role>(value),
        "RoleBinding" => round_trip::<rbac::RoleBinding>(value),
        "DaemonSet" => round_trip::<apps::DaemonSet>(value),
        "Deployment" => round_trip::<apps::Deployment>(value),
        "ValidatingAdmissionPolicy" => round_trip::<admission::ValidatingAdmissionPolicy>(value),
        "ValidatingAdmissionPolicyBinding" => {
            round_trip::<admission::ValidatingAdmissionPolicyBinding>(value)
        }
        "CustomResourceDefinition" => round_trip::<apiextensions::CustomResourceDefinition>(value),
        other => Err(format!(
            "kind {other} has no typed check here: add it to check_typed"
        )),
    }
}

#[test]
fn every_object_matches_the_kubernetes_api_types() {
    let mut failures = Vec::new();
    for object in installed_objects() {
        if let Err(problem) = check_typed(&object) {
            failures.push(format!("{}: {problem}", object.describe()));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn the_kustomization_lists_every_manifest_once() {
    let kustomization = parse_documents(&deploy_dir().join("kustomization.yaml"))
        .unwrap_or_else(|e| panic!("{e}"))
        .remove(0);
    let listed: Vec<&str> = strings(&kustomization["resources"]);
    let unique: BTreeSet<&str> = listed.iter().copied().collect();
    assert_eq!(unique.len(), listed.len(), "a resource is listed twice");
    let files: BTreeSet<String> = installed_objects().into_iter().map(|o| o.file).collect();
    let listed: BTreeSet<String> = unique.into_iter().map(str::to_owned).collect();
    assert_eq!(
        listed, files,
        "deploy/kustomization.yaml resources differ from the manifests under deploy/"
    );
}

/// Namespace and name of the ServiceAccount a workload's pods run as.
fn service_account_of(workload: &Document) -> (String, String) {
    let namespace = workload
        .namespace()
        .unwrap_or_else(|| panic!("{} has no namespace", workload.describe()));
    let name = workload.value["spec"]["template"]["spec"]["serviceAccountName"]
        .as_str()
        .unwrap_or_else(|| panic!("{} names no serviceAccountName", workload.describe()));
    (namespace.to_owned(), name.to_owned())
}

/// Every rule granted to a ServiceAccount through the (Cluster)RoleBindings under deploy/.
fn rules_granted(objects: &[Document], account: &(String, String)) -> Vec<Value> {
    let (account_namespace, account_name) = account;
    let mut rules = Vec::new();
    for binding in objects
        .iter()
        .filter(|o| matches!(o.kind(), "ClusterRoleBinding" | "RoleBinding"))
    {
        let names_account = binding.value["subjects"]
            .as_array()
            .into_iter()
            .flatten()
            .any(|subject| {
                subject["kind"] == "ServiceAccount"
                    && subject["name"] == account_name.as_str()
                    && subject["namespace"].as_str().or(binding.namespace())
                        == Some(account_namespace)
            });
        if !names_account {
            continue;
        }
        let role_kind = binding.value["roleRef"]["kind"].as_str().unwrap_or("");
        let role_name = binding.value["roleRef"]["name"].as_str().unwrap_or("");
        let role = objects
            .iter()
            .find(|o| {
                o.kind() == role_kind
                    && o.name() == role_name
                    && (role_kind == "ClusterRole" || o.namespace() == binding.namespace())
            })
            .unwrap_or_else(|| {
                panic!(
                    "{} refers to {role_kind} {role_name}, which is not under deploy/",
                    binding.describe()
                )
            });
        rules.extend(
            role.value["rules"]
                .as_array()
                .into_iter()
                .flatten()
                .cloned(),
        );
    }
    rules
}

fn writes(rule: &Value) -> Vec<&str> {
    strings(&rule["verbs"])
        .into_iter()
        .filter(|verb| WRITE_VERBS.contains(verb))
        .collect()
}

/// (apiGroup, resource) pairs a rule covers.
fn resources_of(rule: &Value) -> Vec<(String, String)> {
    let mut pairs = Vec::new();
    for group in strings(&rule["apiGroups"]) {
        for resource in strings(&rule["resources"]) {
            pairs.push((group.to_owned(), resource.to_owned()));
        }
    }
    pairs
}

fn no_wildcards(rule: &Value, who: &str) {
    for field in ["apiGroups", "resources", "verbs"] {
        assert!(
            !strings(&rule[field]).contains(&"*"),
            "{who}: a rule has `*` in {field}: {rule}"
        );
    }
    assert!(
        rule.get("nonResourceURLs").is_none(),
        "{who}: a rule grants nonResourceURLs: {rule}"
    );
}

#[test]
fn the_agent_can_only_read_what_it_watches() {
    let objects = installed_objects();
    let agent = service_account_of(only(&objects, "DaemonSet"));
    let rules = rules_granted(&objects, &agent);
    assert!(!rules.is_empty(), "no role is bound to the agent {agent:?}");
    let mut readable = BTreeSet::new();
    for rule in &rules {
        no_wildcards(rule, "agent");
        assert!(
            writes(rule).is_empty(),
            "the agent's RBAC grants write verbs {:?}: {rule}",
            writes(rule)
        );
        readable.extend(resources_of(rule));
    }
    let expected: BTreeSet<(String, String)> = [
        ("zonewall.io", "zonepolicies"),
        ("", "pods"),
        ("", "namespaces"),
        ("", "nodes"),
    ]
    .into_iter()
    .map(|(g, r)| (g.to_owned(), r.to_owned()))
    .collect();
    assert_eq!(
        readable, expected,
        "the agent reads exactly ZonePolicy, Pod, Namespace and Node"
    );
}

#[test]
fn the_sync_controller_writes_only_zone_policies_and_events() {
    let objects = installed_objects();
    let sync = service_account_of(only(&objects, "Deployment"));
    let rules = rules_granted(&objects, &sync);
    assert!(
        !rules.is_empty(),
        "no role is bound to the sync controller {sync:?}"
    );
    let writable: BTreeSet<(&str, &str)> = [
        ("zonewall.io", "zonepolicies"),
        ("zonewall.io", "zonepolicies/status"),
        ("", "events"),
        ("events.k8s.io", "events"),
    ]
    .into_iter()
    .collect();
    let mut zone_policy_verbs = BTreeSet::new();
    for rule in &rules {
        no_wildcards(rule, "sync");
        for (group, resource) in resources_of(rule) {
            assert_ne!(
                resource, "secrets",
                "the sync controller reads no Secret through the API: the key is a mounted file"
            );
            if !writes(rule).is_empty() {
                assert!(
                    writable.contains(&(group.as_str(), resource.as_str())),
                    "the sync controller may write only ZonePolicy and Events, not {group}/{resource}: {rule}"
                );
            }
            if group == "zonewall.io" && resource == "zonepolicies" {
                zone_policy_verbs.extend(strings(&rule["verbs"]));
            }
        }
    }
    // Server-side apply is a patch; policies Panorama no longer produces are deleted; drift
    // is found by list and watch.
    for verb in ["get", "list", "watch", "patch", "delete"] {
        assert!(
            zone_policy_verbs.contains(verb),
            "the sync controller needs `{verb}` on zonepolicies"
        );
    }
}

fn container<'a>(workload: &'a Document, name: Option<&str>) -> &'a Value {
    let containers = workload.value["spec"]["template"]["spec"]["containers"]
        .as_array()
        .unwrap_or_else(|| panic!("{} has no containers", workload.describe()));
    match name {
        Some(name) => containers
            .iter()
            .find(|c| c["name"] == name)
            .unwrap_or_else(|| panic!("{} has no container {name}", workload.describe())),
        None => {
            assert_eq!(containers.len(), 1, "{}", workload.describe());
            &containers[0]
        }
    }
}

fn env_value<'a>(container: &'a Value, name: &str) -> Option<&'a Value> {
    container["env"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|variable| variable["name"] == name)
}

fn port_number(container: &Value, port: &Value) -> Option<u64> {
    match port {
        Value::Number(number) => number.as_u64(),
        Value::String(name) => container["ports"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|p| p["name"] == name.as_str())
            .and_then(|p| p["containerPort"].as_u64()),
        _ => None,
    }
}

#[test]
fn the_agent_daemonset_has_its_capabilities_and_no_more() {
    let objects = installed_objects();
    let daemonset = only(&objects, "DaemonSet");
    let pod = &daemonset.value["spec"]["template"]["spec"];
    assert_eq!(pod["hostNetwork"], true, "the agent needs hostNetwork");
    assert_eq!(pod["priorityClassName"], "system-node-critical");
    assert!(
        pod["tolerations"]
            .as_array()
            .into_iter()
            .flatten()
            .any(|t| t["operator"] == "Exists" && t.get("key").is_none()),
        "the agent tolerates every taint, so it runs on every node"
    );

    let all_containers = pod["containers"]
        .as_array()
        .into_iter()
        .chain(pod["initContainers"].as_array())
        .flatten();
    for each in all_containers {
        assert_ne!(
            each["securityContext"]["privileged"], true,
            "{}: privileged: true",
            each["name"]
        );
    }

    let agent = container(daemonset, Some("agent"));
    let security = &agent["securityContext"];
    let added: BTreeSet<&str> = strings(&security["capabilities"]["add"])
        .into_iter()
        .collect();
    let expected: BTreeSet<&str> = AGENT_CAPABILITIES.into_iter().collect();
    assert_eq!(
        added, expected,
        "the agent adds exactly BPF, NET_ADMIN and PERFMON"
    );
    assert_eq!(
        strings(&security["capabilities"]["drop"]),
        ["ALL"],
        "every other capability is dropped"
    );
    assert_eq!(security["readOnlyRootFilesystem"], true);
    assert_eq!(security["allowPrivilegeEscalation"], false);

    let bpffs_volume = pod["volumes"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|v| v["hostPath"]["path"] == "/sys/fs/bpf")
        .expect("a hostPath volume for /sys/fs/bpf");
    assert!(
        agent["volumeMounts"]
            .as_array()
            .into_iter()
            .flatten()
            .any(|m| m["name"] == bpffs_volume["name"]
                && m["mountPath"] == "/sys/fs/bpf"
                && m["readOnly"] != true),
        "the agent mounts bpffs read-write at /sys/fs/bpf (it pins maps and links there)"
    );

    let metrics_address = env_value(agent, "ZONEWALL_METRICS_ADDR")
        .and_then(|v| v["value"].as_str())
        .expect("ZONEWALL_METRICS_ADDR");
    let metrics_port: u64 = metrics_address
        .rsplit(':')
        .next()
        .and_then(|p| p.parse().ok())
        .expect("ZONEWALL_METRICS_ADDR ends in a port");
    for (probe, path) in [("livenessProbe", "/healthz"), ("readinessProbe", "/readyz")] {
        let get = &agent[probe]["httpGet"];
        assert_eq!(get["path"], path, "{probe}");
        assert_eq!(
            port_number(agent, &get["port"]),
            Some(metrics_port),
            "{probe} must use the metrics port the agent listens on ({metrics_address})"
        );
    }

    assert_eq!(
        env_value(agent, "ZONEWALL_NODE_NAME").map(|v| &v["valueFrom"]["fieldRef"]["fieldPath"]),
        Some(&Value::from("spec.nodeName")),
        "the node name comes from the downward API"
    );
    for variable in agent["env"].as_array().into_iter().flatten() {
        let name = variable["name"].as_str().unwrap_or("");
        assert!(
            name.starts_with("ZONEWALL_"),
            "agent configuration is ZONEWALL_* only, not {name}"
        );
    }
    for resource in ["cpu", "memory"] {
        assert!(
            agent["resources"]["requests"][resource].is_string(),
            "the agent requests {resource}"
        );
        assert!(
            agent["resources"]["limits"][resource].is_string(),
            "the agent has a {resource} limit"
        );
    }
}

/// The mount and the volume that hold `path` in a workload's container.
fn mount_holding<'a>(
    workload: &'a Document,
    container: &'a Value,
    path: &str,
) -> (&'a Value, &'a Value) {
    let mount = container["volumeMounts"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|m| {
            m["mountPath"]
                .as_str()
                .is_some_and(|dir| path.starts_with(&format!("{}/", dir.trim_end_matches('/'))))
        })
        .unwrap_or_else(|| {
            panic!(
                "{}: no volume is mounted where {path} is",
                workload.describe()
            )
        });
    let volume = workload.value["spec"]["template"]["spec"]["volumes"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|v| v["name"] == mount["name"])
        .unwrap_or_else(|| {
            panic!(
                "{}: volume {} is mounted but not defined",
                workload.describe(),
                mount["name"]
            )
        });
    (mount, volume)
}

#[test]
fn the_sync_controller_is_a_single_writer_with_its_ca_from_a_config_map() {
    let objects = installed_objects();
    let sync = only(&objects, "Deployment");
    let rules = rules_granted(&objects, &service_account_of(sync));
    let elects_a_leader = rules
        .iter()
        .any(|rule| strings(&rule["resources"]).contains(&"leases"));
    if !elects_a_leader {
        // Without leader election, two pods would both write: one replica, and an upgrade
        // that stops the old pod before the new one starts.
        assert_eq!(sync.value["spec"]["replicas"], 1, "one sync replica");
        assert_eq!(
            sync.value["spec"]["strategy"]["type"], "Recreate",
            "a rolling update would run two writers at once"
        );
    }

    let container = container(sync, None);
    let ca_file = env_value(container, "ZONEWALL_CA_FILE")
        .and_then(|v| v["value"].as_str())
        .expect("the sync controller gets ZONEWALL_CA_FILE");
    let (_, volume) = mount_holding(sync, container, ca_file);
    assert!(
        volume["configMap"]["name"].is_string(),
        "{ca_file} must come from a ConfigMap volume, not {volume}"
    );
}

fn text_mentions_the_key(text: &str) -> bool {
    // `--api-key-file PATH` is fine; `--api-key VALUE`, `--api-key=VALUE` are not.
    text.match_indices("api-key")
        .any(|(at, _)| !text[at..].starts_with("api-key-file") && text[..at].ends_with("--"))
}

#[test]
fn the_panorama_api_key_is_only_a_mounted_file() {
    let objects = installed_objects();
    for workload in objects
        .iter()
        .filter(|o| matches!(o.kind(), "DaemonSet" | "Deployment"))
    {
        let pod = &workload.value["spec"]["template"]["spec"];
        let containers = pod["containers"]
            .as_array()
            .into_iter()
            .chain(pod["initContainers"].as_array())
            .flatten();
        for each in containers {
            let who = format!("{} container {}", workload.describe(), each["name"]);
            for variable in each["env"].as_array().into_iter().flatten() {
                assert!(
                    variable["valueFrom"].get("secretKeyRef").is_none(),
                    "{who}: env {} comes from a Secret",
                    variable["name"]
                );
                let name = variable["name"].as_str().unwrap_or("");
                assert!(
                    !name.contains("API_KEY") || name.ends_with("API_KEY_FILE"),
                    "{who}: env {name} looks like it holds the key"
                );
            }
            assert!(
                each["envFrom"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .all(|source| source.get("secretRef").is_none()),
                "{who}: envFrom a Secret"
            );
            for field in ["args", "command"] {
                for argument in strings(&each[field]) {
                    assert!(
                        !text_mentions_the_key(argument),
                        "{who}: {field} passes the key: {argument}"
                    );
                }
            }
        }
    }

    let sync = only(&objects, "Deployment");
    let container = container(sync, None);
    let key_file = env_value(container, "ZONEWALL_API_KEY_FILE")
        .and_then(|v| v["value"].as_str())
        .expect("the sync controller gets ZONEWALL_API_KEY_FILE");
    let (mount, volume) = mount_holding(sync, container, key_file);
    assert!(
        volume["secret"]["secretName"].is_string(),
        "{key_file} must come from a Secret volume, not {volume}"
    );
    assert_eq!(mount["readOnly"], true, "the key is mounted read-only");

    // The chart: a template cannot be parsed, but it can be searched.
    for (file, text) in helm_templates() {
        for forbidden in ["secretKeyRef", "secretRef"] {
            assert!(
                !text.contains(forbidden),
                "{file}: {forbidden}: the API key must only be a mounted file"
            );
        }
        assert!(!text_mentions_the_key(&text), "{file} passes --api-key");
    }
}

/// `system:serviceaccount:NAMESPACE:NAME` strings in a text.
fn service_account_usernames(text: &str) -> BTreeSet<String> {
    const PREFIX: &str = "system:serviceaccount:";
    text.match_indices(PREFIX)
        .map(|(at, _)| {
            text[at + PREFIX.len()..]
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | ':'))
                .collect::<String>()
        })
        .collect()
}

#[test]
fn the_admission_policy_admits_only_the_sync_service_account() {
    let objects = installed_objects();
    let (namespace, name) = service_account_of(only(&objects, "Deployment"));
    assert!(
        objects.iter().any(|o| o.kind() == "ServiceAccount"
            && o.name() == name
            && o.namespace() == Some(&namespace)),
        "the ServiceAccount {namespace}/{name} the sync Deployment uses is not under deploy/"
    );

    let policy = only(&objects, "ValidatingAdmissionPolicy");
    let spec = &policy.value["spec"];
    assert_eq!(spec["failurePolicy"], "Fail", "the policy fails closed");
    let rules = spec["matchConstraints"]["resourceRules"]
        .as_array()
        .expect("resourceRules");
    let rule = rules
        .iter()
        .find(|r| strings(&r["resources"]).contains(&"zonepolicies"))
        .expect("the policy matches zonepolicies");
    assert_eq!(strings(&rule["apiGroups"]), ["zonewall.io"]);
    for operation in ["CREATE", "UPDATE", "DELETE"] {
        assert!(
            strings(&rule["operations"]).contains(&operation),
            "the policy must see {operation}"
        );
    }
    assert!(
        strings(&rule["resources"]).contains(&"zonepolicies/status"),
        "the status subresource is written through its own requests"
    );

    let expressions: String = spec["variables"]
        .as_array()
        .into_iter()
        .flatten()
        .chain(spec["validations"].as_array().into_iter().flatten())
        .filter_map(|v| v["expression"].as_str())
        .collect::<Vec<_>>()
        .join("\n");
    // DELETE has only oldObject; a change of tier shows the old tier only in oldObject.
    for needed in ["object.spec.tier", "oldObject.spec.tier", "'firewall'"] {
        assert!(
            expressions.contains(needed),
            "the policy's expressions never look at {needed}"
        );
    }
    assert_eq!(
        service_account_usernames(&expressions),
        BTreeSet::from([format!("{namespace}:{name}")]),
        "the policy must admit exactly the ServiceAccount the sync Deployment runs as"
    );

    let binding = only(&objects, "ValidatingAdmissionPolicyBinding");
    assert_eq!(binding.value["spec"]["policyName"], policy.name());
    assert!(
        strings(&binding.value["spec"]["validationActions"]).contains(&"Deny"),
        "the binding denies (not only warns or audits)"
    );
}

/// The admission request parts a ValidatingAdmissionPolicy's CEL sees.
struct Request<'a> {
    operation: &'a str,
    object: Value,
    old_object: Value,
    username: &'a str,
}

/// Whether the policy admits the request: its variables in order, then every validation, as
/// the API server evaluates them (an error counts as a refusal, like failurePolicy Fail).
fn admits(policy: &Value, request: &Request<'_>) -> Result<bool, String> {
    let spec = &policy["spec"];
    let name = request
        .object
        .get("metadata")
        .or(request.old_object.get("metadata"))
        .and_then(|m| m["name"].as_str())
        .unwrap_or("");
    let request_value = serde_json::json!({
        "operation": request.operation,
        "name": name,
        "userInfo": {"username": request.username, "groups": ["system:authenticated"]},
    });
    let to_cel = |value: &Value| cel::to_value(value).map_err(|e| e.to_string());
    let evaluate = |expression: &str, variables: &BTreeMap<String, Value>| {
        let program =
            cel::Program::compile(expression).map_err(|e| format!("{expression}: {e}"))?;
        let variables = serde_json::to_value(variables).map_err(|e| e.to_string())?;
        let mut context = cel::Context::default();
        context.add_variable_from_value("object", to_cel(&request.object)?);
        context.add_variable_from_value("oldObject", to_cel(&request.old_object)?);
        context.add_variable_from_value("request", to_cel(&request_value)?);
        context.add_variable_from_value("variables", to_cel(&variables)?);
        match program.execute(&context) {
            Ok(cel::Value::Bool(result)) => Ok(result),
            Ok(other) => Err(format!("{expression}: not a bool: {other:?}")),
            Err(e) => Err(format!("{expression}: {e}")),
        }
    };
    let mut variables = BTreeMap::new();
    for variable in spec["variables"].as_array().into_iter().flatten() {
        let name = variable["name"].as_str().ok_or("a variable without name")?;
        let expression = variable["expression"]
            .as_str()
            .ok_or("a variable without expression")?;
        let value = evaluate(expression, &variables)?;
        variables.insert(name.to_owned(), Value::Bool(value));
    }
    let validations = spec["validations"].as_array().ok_or("no validations")?;
    for validation in validations {
        let expression = validation["expression"]
            .as_str()
            .ok_or("a validation without expression")?;
        if !evaluate(expression, &variables)? {
            return Ok(false);
        }
    }
    Ok(true)
}

fn zone_policy(name: &str, tier: &str, tier_label: Option<&str>) -> Value {
    let mut metadata = serde_json::json!({"name": name});
    if let Some(label) = tier_label {
        metadata["labels"] = serde_json::json!({"zonewall.io/tier": label});
    }
    serde_json::json!({
        "apiVersion": "zonewall.io/v1alpha1",
        "kind": "ZonePolicy",
        "metadata": metadata,
        "spec": {"tier": tier, "order": 0, "mode": "Enforce", "zone": "dmz", "egress": [], "ingress": []},
    })
}

#[test]
fn the_admission_policy_refuses_every_way_around_the_sync_controller() {
    let objects = installed_objects();
    let (namespace, name) = service_account_of(only(&objects, "Deployment"));
    let sync = format!("system:serviceaccount:{namespace}:{name}");
    let policy = &only(&objects, "ValidatingAdmissionPolicy").value;

    let firewall = zone_policy("firewall-dmz", "firewall", Some("firewall"));
    let firewall_unlabelled = zone_policy("firewall-dmz", "firewall", None);
    let platform = zone_policy("platform-dmz", "platform", None);
    let platform_edited = zone_policy("platform-dmz", "platform", Some("platform"));
    // A lower tier object carrying the label the sync controller selects its objects by.
    let platform_claiming_firewall = zone_policy("platform-dmz", "platform", Some("firewall"));
    let none = Value::Null;
    let others = [
        "alice",
        "kubernetes-admin",
        "system:admin",
        "system:serviceaccount:zonewall-system:zonewall-agent",
        "system:serviceaccount:other:zonewall-sync",
    ];

    #[rustfmt::skip]
    let cases: [(&str, &Value, &Value, bool); 12] = [
        // operation, object, oldObject, whether anyone but the sync controller may do it
        ("CREATE", &firewall, &none, false),
        ("CREATE", &firewall_unlabelled, &none, false),
        ("CREATE", &platform_claiming_firewall, &none, false),
        ("CREATE", &platform, &none, true),
        ("UPDATE", &firewall, &firewall_unlabelled, false),
        // Out of the tier and into it, by field or by label.
        ("UPDATE", &platform, &firewall, false),
        ("UPDATE", &firewall, &platform, false),
        ("UPDATE", &platform_claiming_firewall, &platform, false),
        ("UPDATE", &platform_edited, &platform, true),
        // DELETE: `object` is null, only `oldObject` tells the tier.
        ("DELETE", &none, &firewall, false),
        ("DELETE", &none, &firewall_unlabelled, false),
        ("DELETE", &none, &platform, true),
    ];
    let mut wrong = Vec::new();
    for (operation, object, old_object, others_may) in cases {
        let describe = |who: &str| {
            format!(
                "{operation} by {who}: tier {} -> {}",
                old_object["spec"]["tier"], object["spec"]["tier"]
            )
        };
        let request = |username| Request {
            operation,
            object: object.clone(),
            old_object: old_object.clone(),
            username,
        };
        match admits(policy, &request(&sync)) {
            Ok(true) => {}
            outcome => wrong.push(format!("{}: refused ({outcome:?})", describe(&sync))),
        }
        for other in others {
            match admits(policy, &request(other)) {
                Ok(admitted) if admitted == others_may => {}
                outcome => wrong.push(format!(
                    "{}: expected {}, got {outcome:?}",
                    describe(other),
                    if others_may { "admitted" } else { "refused" }
                )),
            }
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
}

/// The policy's `variables:` and `validations:` text, from `  variables:` to the end of the
/// document.
fn policy_rules_text(text: &str) -> String {
    let start = text
        .find("\n  variables:")
        .expect("the policy has variables");
    let rest = &text[start..];
    let end = rest.find("\n---").unwrap_or(rest.len());
    rest[..end].to_owned()
}

#[test]
fn the_chart_admission_policy_is_the_plain_one() {
    let plain = fs::read_to_string(deploy_dir().join("sync/admission-policy.yaml"))
        .expect("the admission policy");
    let (namespace, name) = service_account_of(only(&installed_objects(), "Deployment"));
    let chart = fs::read_to_string(chart_dir().join("templates/sync-admission-policy.yaml"))
        .expect("the chart's admission policy");
    let chart = chart.replace(
        "{{ .Release.Namespace }}:{{ include \"zonewall.syncServiceAccountName\" . }}",
        &format!("{namespace}:{name}"),
    );
    assert_eq!(
        policy_rules_text(&chart),
        policy_rules_text(&plain),
        "the chart's admission policy expressions differ from deploy/sync/admission-policy.yaml"
    );
}

// ----- the Helm chart -----

fn chart_dir() -> PathBuf {
    deploy_dir().join(CHART)
}

/// (file relative to deploy/, text) of every template and helper of the chart.
fn helm_templates() -> Vec<(String, String)> {
    let mut files = Vec::new();
    files_under(&chart_dir().join("templates"), &mut files);
    let templates: Vec<_> = files
        .into_iter()
        .map(|path| {
            let text = fs::read_to_string(&path)
                .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
            (relative(&path), text)
        })
        .collect();
    assert!(templates.len() >= 8, "the chart has its templates");
    templates
}

fn values() -> Value {
    parse_documents(&chart_dir().join("values.yaml"))
        .unwrap_or_else(|e| panic!("{e}"))
        .remove(0)
}

/// Every `.Values.a.b.c` path a text refers to (`$.Values` included).
fn values_references(text: &str) -> BTreeSet<String> {
    text.match_indices(".Values.")
        .map(|(at, found)| {
            text[at + found.len()..]
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.'))
                .collect::<String>()
                .trim_end_matches('.')
                .to_owned()
        })
        .collect()
}

#[test]
fn every_values_reference_in_the_chart_exists_in_values_yaml() {
    let values = values();
    assert!(values.is_object(), "values.yaml is a mapping");
    let mut missing = Vec::new();
    let mut count = 0;
    for (file, text) in helm_templates() {
        for reference in values_references(&text) {
            count += 1;
            let mut at = &values;
            for key in reference.split('.') {
                match at.get(key) {
                    Some(next) => at = next,
                    None => {
                        missing.push(format!("{file}: .Values.{reference}"));
                        break;
                    }
                }
            }
        }
    }
    assert!(
        count > 20,
        "the templates use values.yaml ({count} references)"
    );
    assert!(
        missing.is_empty(),
        "not in values.yaml:\n{}",
        missing.join("\n")
    );
}

/// The keyword that opens or closes a block, for each template action in a text.
fn actions(text: &str) -> Result<Vec<String>, String> {
    let mut found = Vec::new();
    let mut rest = text;
    while let Some(open) = rest.find("{{") {
        let after = &rest[open + 2..];
        let close = after
            .find("}}")
            .ok_or_else(|| "`{{` without `}}`".to_owned())?;
        let inner = &after[..close];
        if inner.contains("{{") {
            return Err(format!("`{{{{` inside an action: {{{{{inner}"));
        }
        let inner = inner.trim_start_matches('-').trim_end_matches('-').trim();
        if !inner.starts_with("/*") {
            found.push(inner.split_whitespace().next().unwrap_or("").to_owned());
        }
        rest = &after[close + 2..];
    }
    if rest.contains("}}") {
        return Err("`}}` without `{{`".to_owned());
    }
    Ok(found)
}

#[test]
fn every_chart_template_has_balanced_actions_and_blocks() {
    for (file, text) in helm_templates() {
        let keywords = actions(&text).unwrap_or_else(|e| panic!("{file}: {e}"));
        let mut depth: usize = 0;
        for keyword in keywords {
            match keyword.as_str() {
                "if" | "range" | "with" | "define" | "block" => depth += 1,
                "end" => {
                    depth = depth
                        .checked_sub(1)
                        .unwrap_or_else(|| panic!("{file}: `end` without a block"));
                }
                _ => {}
            }
        }
        assert_eq!(depth, 0, "{file}: a block is not closed with `end`");
    }
}

#[test]
fn the_chart_covers_the_plain_manifests_and_its_crd_is_the_generated_one() {
    let chart_kinds: BTreeSet<String> = helm_templates()
        .iter()
        .flat_map(|(_, text)| {
            text.lines()
                .filter_map(|line| line.strip_prefix("kind: "))
                .map(|kind| kind.trim().to_owned())
                .collect::<Vec<_>>()
        })
        .collect();
    for object in installed_objects() {
        // The chart installs into the release namespace (`helm install --create-namespace`),
        // and its CRD is in crds/, not templates/.
        if matches!(object.kind(), "Namespace" | "CustomResourceDefinition") {
            continue;
        }
        assert!(
            chart_kinds.contains(object.kind()),
            "the chart has no template for {}",
            object.describe()
        );
    }

    let generated = fs::read_to_string(deploy_dir().join("crds/zonepolicies.zonewall.io.yaml"))
        .expect("the generated CRD");
    let copy = fs::read_to_string(chart_dir().join("crds/zonepolicies.zonewall.io.yaml"))
        .expect("the chart's CRD");
    assert!(
        generated == copy,
        "deploy/{CHART}/crds/ differs from deploy/crds/: copy deploy/crds/zonepolicies.zonewall.io.yaml there"
    );

    let chart = parse_documents(&chart_dir().join("Chart.yaml"))
        .unwrap_or_else(|e| panic!("{e}"))
        .remove(0);
    assert_eq!(chart["apiVersion"], "v2");
    assert_eq!(chart["name"], "zonewall");
    assert_eq!(
        chart["appVersion"],
        env!("CARGO_PKG_VERSION"),
        "the chart's appVersion (the default image tag) is the crate's version"
    );
}

#[test]
fn the_chart_admits_the_same_service_account_its_sync_deployment_uses() {
    let templates: BTreeMap<String, String> = helm_templates().into_iter().collect();
    let find = |kind: &str| {
        templates
            .iter()
            .find(|(_, text)| text.lines().any(|line| line == format!("kind: {kind}")))
            .unwrap_or_else(|| panic!("no template of kind {kind}"))
    };
    let helper = "include \"zonewall.syncServiceAccountName\" .";
    let (deployment_file, deployment) = find("Deployment");
    assert!(
        deployment.contains(&format!("serviceAccountName: {{{{ {helper} }}}}")),
        "{deployment_file}: the sync Deployment runs as the helper's ServiceAccount"
    );
    let (policy_file, policy) = find("ValidatingAdmissionPolicy");
    assert!(
        policy.contains(&format!(
            "system:serviceaccount:{{{{ .Release.Namespace }}}}:{{{{ {helper} }}}}"
        )),
        "{policy_file}: the admission policy admits the helper's ServiceAccount in the release namespace"
    );
}
