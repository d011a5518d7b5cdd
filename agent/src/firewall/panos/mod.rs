//! Palo Alto Networks PAN-OS and Panorama: configuration XML -> raw config -> resolved
//! vendor-neutral [`crate::model::Policy`].
//!
//! ```text
//! text --xml::parse_document (limits, no DTD)--> parse::parse_config --> PanosConfig
//!      --resolve::resolve (device group, fail-closed rules)--> Resolved { policy, warnings }
//! ```
//! Only [`load_file`] touches the file system.

pub mod client;
pub mod config;
pub mod error;
pub mod parse;
pub mod resolve;
pub mod warning;
pub mod xml;

use std::path::Path;

pub use config::{ConfigKind, PanosConfig};
pub use error::PanosError;
pub use parse::parse_config;
pub use resolve::{ApplicationMapping, ResolveOptions, Resolved, resolve, targets};
pub use warning::{Effect, RuleRef, Warning, WarningKind};
pub use xml::Limits;

/// Reads and parses a configuration file (export, or saved XML API response).
pub fn load_file(path: &Path, limits: Limits) -> Result<PanosConfig, PanosError> {
    let origin = path.display().to_string();
    let size = std::fs::metadata(path)
        .map_err(|source| PanosError::Io {
            op: "read",
            path: path.to_path_buf(),
            source,
        })?
        .len();
    if size > limits.max_bytes as u64 {
        return Err(PanosError::TooLarge {
            origin,
            size: usize::try_from(size).unwrap_or(usize::MAX),
            limit: limits.max_bytes,
        });
    }
    let bytes = std::fs::read(path).map_err(|source| PanosError::Io {
        op: "read",
        path: path.to_path_buf(),
        source,
    })?;
    let text = String::from_utf8(bytes).map_err(|e| PanosError::NotUtf8 {
        origin: origin.clone(),
        offset: e.utf8_error().valid_up_to(),
    })?;
    parse_config(&text, &origin, limits)
}

/// Parses and resolves in one step.
pub fn load_policy(
    text: &str,
    origin: &str,
    options: &ResolveOptions,
) -> Result<Resolved, PanosError> {
    let config = parse_config(text, origin, Limits::default())?;
    resolve(&config, options)
}
