//! Errors that stop reading a PAN-OS configuration. Problems confined to one rule or object
//! are not errors but [`super::Warning`]s: that rule fails closed and the rest is used.

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum PanosError {
    #[error("cannot {op} {}: {source}", path.display())]
    Io {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    #[error(
        "{origin}: the configuration is not valid UTF-8 (at byte {offset}); export it again as XML"
    )]
    NotUtf8 { origin: String, offset: usize },

    #[error(
        "{origin}: the configuration is {size} bytes, over the limit of {limit} bytes; raise the limit if this export is genuine"
    )]
    TooLarge {
        origin: String,
        size: usize,
        limit: usize,
    },

    #[error(
        "{origin}:{line}:{column}: document type declarations (DTD, <!DOCTYPE>, <!ENTITY>) are refused; PAN-OS never writes them, so this input was altered"
    )]
    DtdRefused {
        origin: String,
        line: u32,
        column: u32,
    },

    #[error("{origin}:{line}:{column}: malformed XML: {message}")]
    Xml {
        origin: String,
        line: u32,
        column: u32,
        message: String,
    },

    #[error(
        "{origin}:{line}:{column}: elements nested deeper than {limit} levels; PAN-OS configurations are far shallower, so this input is refused"
    )]
    TooDeep {
        origin: String,
        line: u32,
        column: u32,
        limit: usize,
    },

    #[error(
        "{origin}: more than {limit} XML nodes; raise the node limit if this export is genuine"
    )]
    TooManyNodes { origin: String, limit: u32 },

    #[error(
        "{origin}:{line}: root element <{root}> is neither a PAN-OS <config> nor an XML API <response>; pass a Panorama or firewall configuration export"
    )]
    NotAConfig {
        origin: String,
        line: u32,
        root: String,
    },

    #[error(
        "{origin}: the XML API answered status \"{status}\"{}: {message}",
        code.as_deref().map(|c| format!(" (code {c})")).unwrap_or_default()
    )]
    ApiError {
        origin: String,
        status: String,
        code: Option<String>,
        message: String,
    },

    #[error("{origin}:{line}: {problem}")]
    Structure {
        origin: String,
        line: u32,
        problem: String,
    },

    #[error(
        "{origin}: {kind} '{target}' is not in the configuration; choose one of: {}",
        available.join(", ")
    )]
    UnknownTarget {
        origin: String,
        kind: &'static str,
        target: String,
        available: Vec<String>,
    },

    #[error(
        "{origin}: the configuration has several {kind}s; choose one with --device-group: {}",
        available.join(", ")
    )]
    TargetRequired {
        origin: String,
        kind: &'static str,
        available: Vec<String>,
    },
}
