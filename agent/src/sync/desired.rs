//! What the firewall says the `firewall` tier must hold: the translated objects, each marked
//! as the sync controller's own (labels) with the hash of the spec it applied (annotation).
//!
//! Ownership lives on the objects, not in the controller's memory, so a restarted controller
//! tells its own objects from hand-written ones and notices edits the same way.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use sha2::{Digest as _, Sha256};

use crate::firewall::panos::client::CommitEntry;
use crate::policy::resource::{Tier, ZonePolicy, ZonePolicySpec, ZoneRule};
use crate::translate::{Translated, Translation};

/// Field manager of every server-side apply, and the owner label's value.
pub const FIELD_MANAGER: &str = "zonewall-sync";
/// Label naming the controller that owns an object.
pub const OWNER_LABEL: &str = "zonewall.io/owner";
/// Label naming the tier (set by translation too).
pub const TIER_LABEL: &str = "zonewall.io/tier";
/// Annotation holding [`spec_hash`] of the spec the controller applied.
pub const SPEC_HASH_ANNOTATION: &str = "zonewall.io/spec-hash";

/// Feeds serialized JSON straight into the hasher: no buffer of the (megabytes of) text.
struct HashWriter<'a>(&'a mut Sha256);

impl std::io::Write for HashWriter<'_> {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.0.update(bytes);
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn hex_digest(hasher: Sha256) -> String {
    use std::fmt::Write as _;
    let digest = hasher.finalize();
    let mut out = String::with_capacity(7 + 64);
    out.push_str("sha256:");
    for byte in digest {
        let _ = write!(out, "{byte:02x}");
    }
    out
}

/// `sha256:<hex>` of the spec's JSON form. The struct serializes its fields in a fixed order,
/// so equal specs hash equal whether they come from translation or from the API server.
pub fn spec_hash(spec: &ZonePolicySpec) -> String {
    let mut hasher = Sha256::new();
    // Serializing plain data (strings, numbers, vectors, derived structs) cannot fail.
    let _ = serde_json::to_writer(HashWriter(&mut hasher), spec);
    hex_digest(hasher)
}

/// `sha256:<hex>` of a file's text: what an output directory's manifest records, so a file
/// is recognised as the one written without parsing it.
pub fn text_hash(text: &str) -> String {
    let mut hasher = Sha256::new();
    hasher.update(text.as_bytes());
    hex_digest(hasher)
}

/// `sha256:<hex>` identifying the whole object as translated (metadata, spec through its
/// hash, status): equal fingerprints, equal output-directory files, without writing YAML.
fn object_fingerprint(policy: &ZonePolicy, spec_hash: &str) -> String {
    let mut hasher = Sha256::new();
    hasher.update(b"zonewall-object-v1\0");
    hasher.update(spec_hash.as_bytes());
    hasher.update(b"\0");
    let _ = serde_json::to_writer(HashWriter(&mut hasher), &policy.metadata);
    hasher.update(b"\0");
    let _ = serde_json::to_writer(HashWriter(&mut hasher), &policy.status);
    hex_digest(hasher)
}

/// The commit a desired state came from.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct CommitInfo {
    /// Panorama config version (config audit) or commit job id; for a file, none.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub id: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub admin: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub time: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
}

impl From<&CommitEntry> for CommitInfo {
    fn from(entry: &CommitEntry) -> Self {
        CommitInfo {
            id: Some(entry.id),
            admin: entry.admin.clone(),
            time: entry.time.clone(),
            description: entry.description.clone(),
        }
    }
}

/// One object the tier must hold.
#[derive(Clone, Debug)]
pub struct DesiredObject {
    /// Labels and annotations included; `status` is applied separately (status subresource).
    pub policy: ZonePolicy,
    /// [`spec_hash`] of the spec.
    pub hash: String,
    /// Identifies the object as translated, so unchanged objects are recognised without
    /// their YAML.
    pub fingerprint: String,
}

impl DesiredObject {
    /// The translated object marked as the controller's own, with its spec hash.
    fn new(mut policy: ZonePolicy) -> Self {
        let hash = spec_hash(&policy.spec);
        let fingerprint = object_fingerprint(&policy, &hash);
        policy
            .metadata
            .labels
            .get_or_insert_with(BTreeMap::new)
            .insert(OWNER_LABEL.to_string(), FIELD_MANAGER.to_string());
        policy
            .metadata
            .annotations
            .get_or_insert_with(BTreeMap::new)
            .insert(SPEC_HASH_ANNOTATION.to_string(), hash.clone());
        DesiredObject {
            policy,
            hash,
            fingerprint,
        }
    }

    /// The object's file for an output directory: the translation's YAML, without the
    /// ownership label and spec hash annotation (which the API server needs, not a file).
    pub fn document(&self) -> Result<String, crate::translate::TranslateError> {
        let mut policy = self.policy.clone();
        if let Some(labels) = &mut policy.metadata.labels {
            labels.remove(OWNER_LABEL);
        }
        if let Some(annotations) = &mut policy.metadata.annotations {
            annotations.remove(SPEC_HASH_ANNOTATION);
            if annotations.is_empty() {
                policy.metadata.annotations = None;
            }
        }
        crate::translate::object_yaml(&policy)
    }
}

/// The complete desired `firewall` tier.
#[derive(Clone, Debug)]
pub struct Desired {
    pub objects: BTreeMap<String, Arc<DesiredObject>>,
    /// Where the configuration was read from (file path or Panorama endpoint).
    pub origin: String,
    pub device_group: Option<String>,
    pub commit: Option<CommitInfo>,
    /// Warnings of the resolution, for the log.
    pub warnings: usize,
}

fn object_name(policy: &ZonePolicy) -> String {
    policy.metadata.name.clone().unwrap_or_default()
}

impl Desired {
    /// Takes the translation's objects (their YAML, if kept, is not needed).
    pub fn from_translation(
        translation: Translation,
        origin: String,
        device_group: Option<String>,
        commit: Option<CommitInfo>,
        warnings: usize,
    ) -> Self {
        Desired {
            objects: translation
                .policies
                .into_iter()
                .map(|policy| (object_name(&policy), Arc::new(DesiredObject::new(policy))))
                .collect(),
            origin,
            device_group,
            commit,
            warnings,
        }
    }

    /// The objects of a translation through a memo: those it kept are taken from `previous`
    /// (the desired state made from the same memo's last translation) without hashing them
    /// again.
    pub fn from_translated(
        translated: Vec<Translated>,
        previous: &BTreeMap<String, Arc<DesiredObject>>,
        origin: String,
        device_group: Option<String>,
        commit: Option<CommitInfo>,
        warnings: usize,
    ) -> Self {
        let objects = translated
            .into_iter()
            .map(|object| {
                let name = object_name(&object.policy);
                let desired = match previous.get(&name).filter(|_| object.kept) {
                    Some(desired) => Arc::clone(desired),
                    None => Arc::new(DesiredObject::new(
                        Arc::try_unwrap(object.policy).unwrap_or_else(|shared| (*shared).clone()),
                    )),
                };
                (name, desired)
            })
            .collect();
        Desired {
            objects,
            origin,
            device_group,
            commit,
            warnings,
        }
    }

    /// Same objects with the same content (commit metadata aside).
    pub fn same_objects(&self, other: &Desired) -> bool {
        self.objects.len() == other.objects.len()
            && self
                .objects
                .iter()
                .zip(&other.objects)
                .all(|((a, x), (b, y))| {
                    a == b && x.hash == y.hash && x.fingerprint == y.fingerprint
                })
    }
}

/// True when the object belongs to the `firewall` tier by its spec or its labels.
pub fn in_firewall_tier(policy: &ZonePolicy) -> bool {
    policy.spec.tier == Tier::Firewall
        || policy
            .metadata
            .labels
            .as_ref()
            .and_then(|labels| labels.get(TIER_LABEL))
            .is_some_and(|tier| tier == Tier::Firewall.as_str())
}

/// True when the object carries the controller's owner label.
pub fn owned(policy: &ZonePolicy) -> bool {
    policy
        .metadata
        .labels
        .as_ref()
        .and_then(|labels| labels.get(OWNER_LABEL))
        .is_some_and(|owner| owner == FIELD_MANAGER)
}

/// The spec hash the controller recorded on the object, if any.
pub fn recorded_hash(policy: &ZonePolicy) -> Option<&str> {
    policy
        .metadata
        .annotations
        .as_ref()
        .and_then(|annotations| annotations.get(SPEC_HASH_ANNOTATION))
        .map(String::as_str)
}

/// A firewall rule as named in audit records: `dg-prod/pre/allow-web`.
fn rule_key(rule: &ZoneRule) -> String {
    match &rule.provenance {
        Some(p) => format!(
            "{}/{}/{}",
            p.device_group,
            match p.rulebase {
                crate::policy::resource::Rulebase::Pre => "pre",
                crate::policy::resource::Rulebase::Local => "local",
                crate::policy::resource::Rulebase::Post => "post",
                crate::policy::resource::Rulebase::Default => "default",
            },
            p.rule
        ),
        None => "(rule without provenance)".to_string(),
    }
}

fn rules_of(spec: &ZonePolicySpec) -> BTreeMap<String, Vec<&ZoneRule>> {
    let mut out: BTreeMap<String, Vec<&ZoneRule>> = BTreeMap::new();
    for rule in spec.egress.iter().chain(&spec.ingress) {
        out.entry(rule_key(rule)).or_default().push(rule);
    }
    out
}

/// The firewall rules whose translation differs between two specs (added, removed or
/// changed), in name order. `None` on a side means every rule of the other side.
pub fn rules_involved(
    before: Option<&ZonePolicySpec>,
    after: Option<&ZonePolicySpec>,
) -> Vec<String> {
    let empty = BTreeMap::new();
    let before = before.map(rules_of);
    let after = after.map(rules_of);
    let before = before.as_ref().unwrap_or(&empty);
    let after = after.as_ref().unwrap_or(&empty);
    let names: BTreeSet<&String> = before.keys().chain(after.keys()).collect();
    names
        .into_iter()
        .filter(|name| before.get(*name) != after.get(*name))
        .cloned()
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::translate::fixture_translation as translation;

    #[test]
    fn an_objects_file_is_the_translations_yaml() {
        let with_yaml = translation(true);
        let desired =
            Desired::from_translation(translation(false), "panorama.xml".into(), None, None, 0);
        assert_eq!(desired.objects.len(), with_yaml.policies.len());
        for (policy, document) in with_yaml.policies.iter().zip(&with_yaml.documents) {
            let name = policy.metadata.name.clone().expect("named");
            let object = &desired.objects[&name];
            assert_eq!(&object.document().expect("yaml"), document, "{name}");
            assert_eq!(object.hash, spec_hash(&policy.spec));
        }
    }

    #[test]
    fn fingerprints_change_with_the_object_and_only_then() {
        let first = Desired::from_translation(translation(false), "a".into(), None, None, 0);
        let again = Desired::from_translation(translation(false), "b".into(), None, None, 0);
        assert!(
            first.same_objects(&again),
            "origin and commit are not content"
        );
        let mut changed = translation(false);
        let name = changed.policies[0].metadata.name.clone().expect("named");
        let status = changed.policies[0].status.as_mut().expect("status");
        status.warnings.push("one more warning".into());
        let changed = Desired::from_translation(changed, "a".into(), None, None, 0);
        assert!(
            !first.same_objects(&changed),
            "a status change is a change of the file"
        );
        assert_eq!(
            first.objects[&name].hash, changed.objects[&name].hash,
            "same spec"
        );
        assert_ne!(
            first.objects[&name].fingerprint,
            changed.objects[&name].fingerprint
        );
    }
}
