//! Secrets (API key, keygen credentials) that must never reach a log line, an error message,
//! a URL or a `Debug` dump.

use std::fmt;
use std::path::{Path, PathBuf};

/// A secret string. `Debug` and `Display` print `<redacted>`; the value is only reachable
/// through [`Secret::expose`], which the client calls when it builds a request header or body.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

/// The Panorama API key, sent only in the `X-PAN-KEY` header.
pub type ApiKey = Secret;

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    /// Reads a secret from a file (for example the one given with `--api-key-file`), trimming
    /// surrounding whitespace and the trailing newline editors and `kubectl create secret` add.
    pub fn from_file(path: &Path) -> Result<Self, SecretFileError> {
        let raw = std::fs::read_to_string(path).map_err(|source| SecretFileError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        let value = raw.trim();
        if value.is_empty() {
            return Err(SecretFileError::Empty {
                path: path.to_path_buf(),
            });
        }
        Ok(Self(value.to_owned()))
    }

    /// The secret value. Call only where it is handed to the wire.
    pub fn expose(&self) -> &str {
        &self.0
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

/// Reading a secret file failed. The message names the file, never its content.
#[derive(Debug, thiserror::Error)]
pub enum SecretFileError {
    #[error(
        "cannot read secret file {path}: {source}; check the path and that this process may read it"
    )]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("secret file {path} is empty; it must hold the Panorama API key (see `type=keygen`)")]
    Empty { path: PathBuf },
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_and_display_never_show_the_value() {
        let key = Secret::new("LUFRPT1-very-secret");
        assert_eq!(format!("{key:?}"), "<redacted>");
        assert_eq!(format!("{key}"), "<redacted>");
        assert_eq!(format!("{:?}", Some(&key)), "Some(<redacted>)");
        assert_eq!(key.expose(), "LUFRPT1-very-secret");
    }

    #[test]
    fn from_file_trims_and_rejects_empty() {
        let dir = std::env::temp_dir().join(format!("zw-secret-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("key");
        std::fs::write(&path, "  abc123==\n").unwrap();
        assert_eq!(Secret::from_file(&path).unwrap().expose(), "abc123==");
        std::fs::write(&path, "\n\n").unwrap();
        let err = Secret::from_file(&path).unwrap_err();
        assert!(matches!(err, SecretFileError::Empty { .. }), "{err}");
        let missing = Secret::from_file(&dir.join("missing")).unwrap_err();
        assert!(missing.to_string().contains("missing"), "{missing}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
