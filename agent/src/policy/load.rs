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
        let err = |problem: String| LoadError::Document {
            origin: origin.to_string(),
            document: index + 1,
            problem,
        };
        let value = serde_yaml_ng::Value::deserialize(document)
            .map_err(|e| err(format!("invalid YAML: {e}")))?;
        if value.is_null() {
            continue;
        }
        let kind = value.get("kind").and_then(|k| k.as_str()).unwrap_or("");
        let items = match kind {
            "ZonePolicy" => vec![value],
            "List" | "ZonePolicyList" => match value.get("items") {
                Some(serde_yaml_ng::Value::Sequence(items)) => items.clone(),
                _ => return Err(err(format!("{kind} has no items"))),
            },
            other => {
                return Err(err(format!(
                    "kind {other:?} is not ZonePolicy; the directory must hold only ZonePolicy objects"
                )));
            }
        };
        for item in items {
            let api_version = item
                .get("apiVersion")
                .and_then(|k| k.as_str())
                .unwrap_or("");
            if api_version != "zonewall.io/v1alpha1" {
                return Err(err(format!(
                    "apiVersion {api_version:?} is not zonewall.io/v1alpha1"
                )));
            }
            let policy: ZonePolicy = serde_yaml_ng::from_value(item)
                .map_err(|e| err(format!("not a valid ZonePolicy: {e}")))?;
            out.push(policy);
        }
    }
    Ok(out)
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
