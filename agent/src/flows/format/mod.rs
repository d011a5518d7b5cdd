//! Formatters: [`FlowRecord`] to one line of text for a SIEM. Pure code, no I/O.
//!
//! The sync controller's audit records go through the same sinks; they implement [`Render`]
//! with the building blocks each format module exposes (`cef::line`, `rfc5424::message`,
//! `leef::line`), so escaping and header rules live in one place.
//!
//! Every output is exactly one line with no line terminator: framing (newline, RFC 6587
//! octet counting, one datagram) is the sink's job. Escaping follows each format's own
//! rules; where a format has no escape for a character that could end a line or confuse a
//! parser, the character is replaced with U+FFFD (see [`replace_unsafe`]). JSON needs no
//! replacement: its string escaping covers everything.

pub mod cef;
pub mod json;
pub mod leef;
pub mod rfc5424;
pub mod time;

use std::fmt;
use std::str::FromStr;

use super::record::FlowRecord;

pub use rfc5424::{Facility, Severity, SyslogOptions};

/// The character that stands in for anything a format cannot carry safely.
pub const REPLACEMENT: char = '\u{FFFD}';

/// The crate version, the default product version in headers.
pub const ZONEWALL_VERSION: &str = env!("CARGO_PKG_VERSION");

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum FormatError {
    #[error("unknown flow record format {name:?}: expected one of cef, rfc5424, leef, json")]
    UnknownFormat { name: String },
    #[error("unknown syslog facility {name:?}: expected kern, user, ..., local0 to local7")]
    UnknownFacility { name: String },
    #[error(
        "unknown syslog severity {name:?}: expected emerg, alert, crit, err, warning, notice, info, debug"
    )]
    UnknownSeverity { name: String },
    #[error(
        "LEEF delimiter {delimiter:?} cannot separate attributes: use a single character other than '=', a letter, a digit, a space or a line break"
    )]
    InvalidLeefDelimiter { delimiter: char },
}

/// The output format of a sink: the `FORMAT` in `--sink FORMAT+TRANSPORT://...`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Format {
    /// ArcSight Common Event Format, keyed like PAN-OS traffic logs.
    Cef,
    /// RFC 5424 syslog with structured data.
    Rfc5424,
    /// IBM QRadar LEEF 2.0.
    Leef,
    /// One JSON object per line with Elastic Common Schema field names.
    Json,
}

impl Format {
    pub const ALL: [Format; 4] = [Format::Cef, Format::Rfc5424, Format::Leef, Format::Json];

    pub fn as_str(self) -> &'static str {
        match self {
            Format::Cef => "cef",
            Format::Rfc5424 => "rfc5424",
            Format::Leef => "leef",
            Format::Json => "json",
        }
    }

    /// Formats one record with default options. No trailing newline.
    pub fn format(&self, record: &FlowRecord) -> String {
        self.format_with(record, &FormatOptions::default())
    }

    /// Formats one record. No trailing newline.
    pub fn format_with(&self, record: &FlowRecord, options: &FormatOptions) -> String {
        self.render(record, options)
    }

    /// Formats any record the formatters know how to render. No trailing newline.
    pub fn render<R: Render + ?Sized>(&self, record: &R, options: &FormatOptions) -> String {
        match self {
            Format::Cef => record.cef(options),
            Format::Rfc5424 => record.rfc5424(options),
            Format::Leef => record.leef(options),
            Format::Json => record.json(options),
        }
    }
}

/// A record that every sink format can carry: one line each, no terminator, escaped by the
/// format's own rules.
pub trait Render {
    fn cef(&self, options: &FormatOptions) -> String;
    fn rfc5424(&self, options: &FormatOptions) -> String;
    fn leef(&self, options: &FormatOptions) -> String;
    fn json(&self, options: &FormatOptions) -> String;
}

impl Render for FlowRecord {
    fn cef(&self, options: &FormatOptions) -> String {
        cef::format(self, options)
    }

    fn rfc5424(&self, options: &FormatOptions) -> String {
        rfc5424::format(self, options)
    }

    fn leef(&self, options: &FormatOptions) -> String {
        leef::format(self, options)
    }

    fn json(&self, options: &FormatOptions) -> String {
        json::format(self, options)
    }
}

impl fmt::Display for Format {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Format {
    type Err = FormatError;

    /// Accepts the canonical names, case-insensitively, and `syslog` for RFC 5424.
    fn from_str(name: &str) -> Result<Self, Self::Err> {
        match name.to_ascii_lowercase().as_str() {
            "cef" => Ok(Format::Cef),
            "rfc5424" | "syslog" => Ok(Format::Rfc5424),
            "leef" => Ok(Format::Leef),
            "json" | "jsonl" | "ecs" => Ok(Format::Json),
            _ => Err(FormatError::UnknownFormat {
                name: name.to_owned(),
            }),
        }
    }
}

/// Per-sink formatting options. The defaults are what `--sink FORMAT+...` uses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FormatOptions {
    /// Product version in CEF/LEEF headers and JSON `observer.version`.
    pub product_version: String,
    pub syslog: SyslogOptions,
    pub leef_delimiter: LeefDelimiter,
}

impl Default for FormatOptions {
    fn default() -> Self {
        FormatOptions {
            product_version: ZONEWALL_VERSION.to_owned(),
            syslog: SyslogOptions::default(),
            leef_delimiter: LeefDelimiter::default(),
        }
    }
}

/// The LEEF 2.0 attribute delimiter. Tab by default (LEEF 1.0's fixed delimiter, written
/// `x09` in the header), which can never appear in a value because control characters
/// are replaced.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LeefDelimiter(char);

impl LeefDelimiter {
    pub fn new(delimiter: char) -> Result<Self, FormatError> {
        let unusable = delimiter == '='
            || delimiter == ' '
            || delimiter == '\n'
            || delimiter == '\r'
            || delimiter.is_alphanumeric()
            || !delimiter.is_ascii();
        if unusable {
            return Err(FormatError::InvalidLeefDelimiter { delimiter });
        }
        Ok(LeefDelimiter(delimiter))
    }

    pub fn as_char(self) -> char {
        self.0
    }
}

impl Default for LeefDelimiter {
    fn default() -> Self {
        LeefDelimiter('\t')
    }
}

/// Characters that can end a line or hide text in a log viewer: every Unicode control
/// character (C0 including NUL and tab, DEL, C1 including NEL) and the Unicode line and
/// paragraph separators.
pub fn is_unsafe_char(c: char) -> bool {
    c.is_control() || c == '\u{2028}' || c == '\u{2029}'
}

/// Replaces [`is_unsafe_char`] characters, except those in `keep` (which the caller
/// escapes itself), with U+FFFD.
pub fn replace_unsafe(value: &str, keep: &[char]) -> String {
    value
        .chars()
        .map(|c| {
            if is_unsafe_char(c) && !keep.contains(&c) {
                REPLACEMENT
            } else {
                c
            }
        })
        .collect()
}

#[cfg(test)]
mod tests;
