//! Reading ZonePolicy YAML (what `zonewall translate -o DIR` writes, or `kubectl get -o
//! yaml`): multi-document files, one object or a `List` per document.
//!
//! [`parse_documents`] is pure; [`load_dir`] reads a directory's `*.yaml` / `*.yml` files in
//! name order, so the result does not depend on the file system's listing order. A directory
//! that `zonewall translate -o` or `zonewall sync --output-dir` publishes is read one whole
//! generation at a time (see [`super::directory`]), never half of one set and half of the next.

use std::path::{Path, PathBuf};

use serde::Deserialize;

use super::directory::{DirectoryError, ReadFile, read_set};
use super::resource::ZonePolicy;

#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("cannot {op} {}: {source}", path.display())]
    Io {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{origin}: document {document}: {problem}")]
    Document {
        origin: String,
        /// 1-based.
        document: usize,
        problem: String,
    },
    #[error(
        "{}: no ZonePolicy YAML files (*.yaml, *.yml); write some with `zonewall translate -o DIR`",
        path.display()
    )]
    Empty { path: PathBuf },
    #[error(transparent)]
    Directory(DirectoryError),
}

/// The texts [`load_dir`] parses: every YAML file of `dir` as one consistent set, never none.
pub fn read_dir_texts(dir: &Path) -> Result<Vec<ReadFile>, LoadError> {
    let files = read_set(dir).map_err(|error| match error {
        DirectoryError::Io { op, path, source } => LoadError::Io { op, path, source },
        other => LoadError::Directory(other),
    })?;
    if files.is_empty() {
        return Err(LoadError::Empty {
            path: dir.to_path_buf(),
        });
    }
    Ok(files)
}

/// Every ZonePolicy in a multi-document YAML text. `origin` names the text in errors.
pub fn parse_documents(text: &str, origin: &str) -> Result<Vec<ZonePolicy>, LoadError> {
    let mut out = Vec::new();
    for (index, document) in serde_yaml_ng::Deserializer::from_str(text).enumerate() {
        let parsed = Document::deserialize(document).map_err(|e| LoadError::Document {
            origin: origin.to_string(),
            document: index + 1,
            problem: e.to_string(),
        })?;
        out.extend(parsed.0);
    }
    Ok(out)
}

const API_VERSION: &str = "zonewall.io/v1alpha1";

/// The policies of one document: none (an empty document), one ZonePolicy, or the items of
/// a `List`. Read field by field straight into the policy types, without an intermediate
/// tree: a large firewall's objects are tens of MiB of YAML. `kind` is checked as soon as it
/// is read (it comes first in what `kubectl` and zonewall write), so a document of another
/// kind is named as such rather than by the first field its spec lacks.
struct Document(Vec<ZonePolicy>);

impl<'de> Deserialize<'de> for Document {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Document, D::Error> {
        deserializer.deserialize_any(DocumentVisitor)
    }
}

struct DocumentVisitor;

impl<'de> serde::de::Visitor<'de> for DocumentVisitor {
    type Value = Document;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a ZonePolicy object or a List of them")
    }

    fn visit_unit<E: serde::de::Error>(self) -> Result<Document, E> {
        Ok(Document(Vec::new()))
    }

    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<Document, A::Error> {
        use serde::de::Error as _;
        let mut api_version: Option<String> = None;
        let mut kind: Option<String> = None;
        let mut metadata = None;
        let mut spec = None;
        let mut status = None;
        let mut items: Option<Vec<Document>> = None;
        while let Some(key) = map.next_key::<String>()? {
            match key.as_str() {
                "apiVersion" => api_version = Some(map.next_value()?),
                "kind" => {
                    let value: String = map.next_value()?;
                    if !matches!(value.as_str(), "ZonePolicy" | "List" | "ZonePolicyList") {
                        return Err(A::Error::custom(format!(
                            "kind {value:?} is not ZonePolicy; the directory must hold only ZonePolicy objects"
                        )));
                    }
                    kind = Some(value);
                }
                "metadata" => metadata = Some(map.next_value()?),
                "spec" => spec = Some(map.next_value()?),
                "status" => status = map.next_value()?,
                "items" => items = Some(map.next_value()?),
                _ => {
                    map.next_value::<serde::de::IgnoredAny>()?;
                }
            }
        }
        match kind.as_deref() {
            Some("ZonePolicy") => {
                let api_version = api_version.unwrap_or_default();
                if api_version != API_VERSION {
                    return Err(A::Error::custom(format!(
                        "apiVersion {api_version:?} is not {API_VERSION}"
                    )));
                }
                let metadata = metadata.ok_or_else(|| A::Error::missing_field("metadata"))?;
                let spec = spec.ok_or_else(|| A::Error::missing_field("spec"))?;
                Ok(Document(vec![ZonePolicy {
                    metadata,
                    spec,
                    status,
                }]))
            }
            Some(list) => {
                let items =
                    items.ok_or_else(|| A::Error::custom(format!("{list} has no items")))?;
                let mut out = Vec::with_capacity(items.len());
                for item in items {
                    match <[ZonePolicy; 1]>::try_from(item.0) {
                        Ok([policy]) => out.push(policy),
                        Err(_) => {
                            return Err(A::Error::custom(format!(
                                "every item of a {list} must be one ZonePolicy"
                            )));
                        }
                    }
                }
                Ok(Document(out))
            }
            None => Err(A::Error::missing_field("kind")),
        }
    }
}

/// Reads every `*.yaml` / `*.yml` file of `dir`, in file name order, as one consistent set.
pub fn load_dir(dir: &Path) -> Result<Vec<ZonePolicy>, LoadError> {
    let mut out = Vec::new();
    for file in read_dir_texts(dir)? {
        out.extend(parse_documents(
            &file.text,
            &file.path.display().to_string(),
        )?);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    const POLICY: &str = "apiVersion: zonewall.io/v1alpha1\nkind: ZonePolicy\nmetadata:\n  name: fw-dmz\nspec:\n  tier: firewall\n  order: 1\n  mode: Enforce\n  zone: dmz\n  egress: []\n  ingress: []\n";

    fn problem(text: &str) -> String {
        match parse_documents(text, "p.yaml") {
            Err(LoadError::Document {
                document, problem, ..
            }) => format!("document {document}: {problem}"),
            other => panic!("expected a document error, got {other:?}"),
        }
    }

    #[test]
    fn objects_lists_and_empty_documents_are_read() {
        let list = format!(
            "apiVersion: v1\nkind: List\nitems:\n{}",
            POLICY
                .lines()
                .enumerate()
                .map(|(i, line)| format!("{}{line}\n", if i == 0 { "- " } else { "  " }))
                .collect::<String>()
        );
        let text = format!("---\n# nothing here\n---\n{POLICY}---\n{list}");
        let policies = parse_documents(&text, "p.yaml").expect("reads");
        assert_eq!(policies.len(), 2);
        assert!(
            policies
                .iter()
                .all(|p| p.metadata.name.as_deref() == Some("fw-dmz") && p.spec.zone == "dmz")
        );
    }

    #[test]
    fn a_document_that_is_not_a_zone_policy_is_named() {
        let deployment =
            "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: web\nspec:\n  replicas: 2\n";
        let text = format!("{POLICY}---\n{deployment}");
        assert!(
            problem(&text).starts_with("document 2: kind \"Deployment\" is not ZonePolicy"),
            "{}",
            problem(&text)
        );
        let old = POLICY.replace("v1alpha1", "v1alpha0");
        assert!(
            problem(&old)
                .contains("apiVersion \"zonewall.io/v1alpha0\" is not zonewall.io/v1alpha1")
        );
        let bad = POLICY.replace("mode: Enforce", "mode: Sometimes");
        let text = problem(&bad);
        assert!(
            text.contains("unknown variant `Sometimes`") && text.contains("line 8"),
            "{text}"
        );
        assert!(problem("kind: List\n").contains("List has no items"));
    }
}
