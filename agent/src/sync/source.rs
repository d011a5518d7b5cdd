//! Where the firewall configuration comes from, and how a change is noticed cheaply.
//!
//! - A file (`--panos-config`): its size and modification time are checked every interval;
//!   only when they move is it read, and only when its content hash differs is it a change.
//! - Panorama (`--panorama-url`): the config audit op command (a short list of committed
//!   versions) is asked every interval; only when the newest version differs from the last one
//!   handled is the running configuration fetched. A Panorama that refuses the audit command
//!   is asked for its job list instead (finished commit jobs), which is just as small.

use std::path::PathBuf;
use std::time::SystemTime;

use sha2::{Digest as _, Sha256};
use tracing::warn;

use super::desired::CommitInfo;
use crate::firewall::panos::client::{ClientError, CommitEntry, PanoramaClient};

/// The xpath of the whole configuration: shared objects, every device group with its
/// hierarchy, and the templates' zones all take part in resolving one device group.
pub const CONFIG_XPATH: &str = "/config";

/// A configuration text to translate.
#[derive(Clone, Debug)]
pub struct Fetched {
    pub text: String,
    /// The file path or the Panorama endpoint, for messages and provenance.
    pub origin: String,
    pub commit: Option<CommitInfo>,
    /// Identifies this version to [`Source::mark_handled`].
    pub marker: Marker,
}

/// What was handled last, so an unchanged source is not fetched again.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Marker {
    File {
        len: u64,
        modified: Option<SystemTime>,
        content: [u8; 32],
    },
    Commit(u64),
    /// Panorama reported no commit at all; the configuration is fetched every time.
    Unknown,
}

#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    #[error("cannot read the firewall configuration {}: {source}; check the path given with --panos-config", path.display())]
    File {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Panorama(#[from] ClientError),
    #[error(
        "Panorama at {endpoint} answered the configuration request with an empty result; check that the API admin's role may read the configuration"
    )]
    EmptyConfig { endpoint: String },
}

pub enum Source {
    File(FileSource),
    Panorama(PanoramaSource),
}

pub struct FileSource {
    pub path: PathBuf,
    handled: Option<Marker>,
}

pub struct PanoramaSource {
    pub client: PanoramaClient,
    handled: Option<Marker>,
    /// The audit command was refused; the job list is used instead.
    use_jobs: bool,
}

impl Source {
    pub fn file(path: PathBuf) -> Self {
        Source::File(FileSource {
            path,
            handled: None,
        })
    }

    pub fn panorama(client: PanoramaClient) -> Self {
        Source::Panorama(PanoramaSource {
            client,
            handled: None,
            use_jobs: false,
        })
    }

    /// Where the configuration comes from, for messages.
    pub fn origin(&self) -> String {
        match self {
            Source::File(file) => file.path.display().to_string(),
            Source::Panorama(panorama) => panorama.client.endpoint().to_string(),
        }
    }

    /// A new configuration, or `None` when nothing changed since the last handled one.
    pub async fn poll(&mut self) -> Result<Option<Fetched>, SourceError> {
        match self {
            Source::File(file) => file.poll(),
            Source::Panorama(panorama) => panorama.poll().await,
        }
    }

    /// The candidate (uncommitted) configuration for `--diff`; a file is its own candidate.
    pub async fn candidate(&mut self) -> Result<Fetched, SourceError> {
        match self {
            Source::File(file) => {
                // Forget what was handled, so the file is read whatever its state.
                file.handled = None;
                file.poll()?.ok_or_else(|| SourceError::File {
                    path: file.path.clone(),
                    source: std::io::Error::other("the file could not be read"),
                })
            }
            Source::Panorama(panorama) => {
                let endpoint = panorama.client.endpoint().to_string();
                let text = panorama
                    .client
                    .candidate_config(CONFIG_XPATH)
                    .await?
                    .ok_or(SourceError::EmptyConfig {
                        endpoint: endpoint.clone(),
                    })?;
                Ok(Fetched {
                    text,
                    origin: format!("{endpoint} (candidate configuration)"),
                    commit: None,
                    marker: Marker::Unknown,
                })
            }
        }
    }

    /// Remembers that this version was handled (applied, or found invalid), so it is not
    /// fetched again until the source changes.
    pub fn mark_handled(&mut self, marker: Marker) {
        match self {
            Source::File(file) => file.handled = Some(marker),
            Source::Panorama(panorama) => panorama.handled = Some(marker),
        }
    }
}

impl FileSource {
    fn poll(&mut self) -> Result<Option<Fetched>, SourceError> {
        let io = |source| SourceError::File {
            path: self.path.clone(),
            source,
        };
        let meta = std::fs::metadata(&self.path).map_err(io)?;
        let (len, modified) = (meta.len(), meta.modified().ok());
        // File times are coarse (a kernel tick): a file rewritten within the same tick with
        // the same length looks unchanged, so recent times are not trusted and the content
        // is compared instead.
        let settled = modified
            .and_then(|time| SystemTime::now().duration_since(time).ok())
            .is_some_and(|age| age > std::time::Duration::from_secs(2));
        if let Some(Marker::File {
            len: handled_len,
            modified: handled_modified,
            ..
        }) = &self.handled
            && *handled_len == len
            && *handled_modified == modified
            && settled
        {
            return Ok(None);
        }
        let bytes = std::fs::read(&self.path).map_err(io)?;
        let content: [u8; 32] = Sha256::digest(&bytes).into();
        let marker = Marker::File {
            len,
            modified,
            content,
        };
        if let Some(Marker::File {
            content: handled, ..
        }) = &self.handled
            && *handled == content
        {
            // Touched but not changed.
            self.handled = Some(marker);
            return Ok(None);
        }
        // Invalid UTF-8 is reported by the parser with the offset; keep the text lossless
        // where it can be.
        let text = String::from_utf8(bytes)
            .unwrap_or_else(|error| String::from_utf8_lossy(error.as_bytes()).into_owned());
        Ok(Some(Fetched {
            text,
            origin: self.path.display().to_string(),
            commit: None,
            marker,
        }))
    }
}

impl PanoramaSource {
    async fn newest_commit(&mut self) -> Result<Option<CommitEntry>, ClientError> {
        if !self.use_jobs {
            match self.client.config_audit_versions().await {
                Ok(versions) => return Ok(versions.into_iter().next()),
                Err(error @ ClientError::Api { .. }) => {
                    warn!(
                        %error,
                        "Panorama refused the config audit command; watching finished commit jobs instead"
                    );
                    self.use_jobs = true;
                }
                Err(error) => return Err(error),
            }
        }
        Ok(self.client.commit_jobs().await?.into_iter().next())
    }

    async fn poll(&mut self) -> Result<Option<Fetched>, SourceError> {
        let newest = self.newest_commit().await?;
        let marker = match &newest {
            Some(entry) => Marker::Commit(entry.id),
            None => Marker::Unknown,
        };
        if marker != Marker::Unknown && self.handled.as_ref() == Some(&marker) {
            return Ok(None);
        }
        let endpoint = self.client.endpoint().to_string();
        let text =
            self.client
                .running_config(CONFIG_XPATH)
                .await?
                .ok_or(SourceError::EmptyConfig {
                    endpoint: endpoint.clone(),
                })?;
        Ok(Some(Fetched {
            text,
            origin: endpoint,
            commit: newest.as_ref().map(CommitInfo::from),
            marker,
        }))
    }
}
