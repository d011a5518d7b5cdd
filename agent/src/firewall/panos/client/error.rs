//! Errors of the Panorama XML API client. Each names what was asked (the operation and the
//! endpoint, never a query string or a secret), what Panorama answered (HTTP status, PAN-OS
//! response code and message) and what the operator can do about it.

use std::fmt;
use std::path::PathBuf;

/// What a request asked for, as shown in errors and logs: `config show of /config/...`,
/// `op <show><jobs><all/></jobs></show>`, `keygen`. Holds no secret.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Operation(pub(crate) String);

impl fmt::Display for Operation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Optional PAN-OS response code, printed as `PAN-OS code N` or `no PAN-OS code`.
fn code_text(code: &Option<String>) -> String {
    match code {
        Some(code) => format!("PAN-OS code {code}"),
        None => "no PAN-OS code".to_owned(),
    }
}

fn message_text(message: &Option<String>) -> &str {
    message.as_deref().unwrap_or("no message")
}

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ClientError {
    #[error(
        "invalid Panorama URL {url:?}: {reason}; give the base URL, for example https://panorama.example.com"
    )]
    InvalidUrl { url: String, reason: String },

    #[error("cannot read the CA bundle {path}: {source}; check the file given with --ca-file")]
    CaFileRead {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    #[error(
        "the CA bundle {path} is not usable: {reason}; --ca-file must be a PEM file with one or more CA certificates"
    )]
    CaBundle { path: PathBuf, reason: String },

    #[error("invalid client setting: {reason}")]
    InvalidSetting { reason: String },

    #[error("cannot set up the HTTPS client: {reason}")]
    ClientSetup { reason: String },

    #[error(
        "TLS verification of Panorama at {endpoint} failed for {operation}: {reason}; check that --ca-file holds the CA that signed Panorama's certificate and that the URL's host name is in the certificate"
    )]
    Tls {
        endpoint: String,
        operation: Operation,
        reason: String,
    },

    #[error(
        "cannot reach Panorama at {endpoint} for {operation} after {attempts} attempt(s): {reason}; check --panorama-url and the network path from this pod (DNS, routes, firewalls, proxies); repeated timeouts can also mean an overloaded Panorama management plane"
    )]
    Transport {
        endpoint: String,
        operation: Operation,
        attempts: u32,
        reason: String,
    },

    #[error(
        "Panorama at {endpoint} rejected the API key for {operation} (HTTP {status}, {}: {}); check the key file given with --api-key-file: it must hold a current key of an admin with XML API access (keys end when the admin's password changes or keys are revoked)",
        code_text(.code), message_text(.message)
    )]
    Authentication {
        endpoint: String,
        operation: Operation,
        status: u16,
        code: Option<String>,
        message: Option<String>,
    },

    #[error(
        "Panorama at {endpoint} rejected the username or password for keygen (HTTP {status}, {}: {}); check the credentials and that the admin may use the XML API",
        code_text(.code), message_text(.message)
    )]
    KeygenRejected {
        endpoint: String,
        status: u16,
        code: Option<String>,
        message: Option<String>,
    },

    #[error(
        "the admin role of the API key may not run {operation} at {endpoint} (HTTP {status}, {}: {}); give the role XML API access to configuration and operational requests",
        code_text(.code), message_text(.message)
    )]
    Unauthorized {
        endpoint: String,
        operation: Operation,
        status: u16,
        code: Option<String>,
        message: Option<String>,
    },

    #[error(
        "Panorama at {endpoint} answered HTTP {status} to {operation} after {attempts} attempt(s) ({}: {}); {hint}",
        code_text(.code), message_text(.message)
    )]
    HttpStatus {
        endpoint: String,
        operation: Operation,
        status: u16,
        code: Option<String>,
        message: Option<String>,
        attempts: u32,
        hint: &'static str,
    },

    #[error(
        "Panorama at {endpoint} refused {operation} (HTTP {status}, {}: {}); {hint}",
        code_text(.code), message_text(.message)
    )]
    Api {
        endpoint: String,
        operation: Operation,
        status: u16,
        code: Option<String>,
        message: Option<String>,
        hint: &'static str,
    },

    #[error(
        "Panorama at {endpoint} answered {operation} (HTTP {status}) with something that is not a PAN-OS XML API response: {reason}; check that --panorama-url points at Panorama itself, not at a proxy or login portal"
    )]
    MalformedResponse {
        endpoint: String,
        operation: Operation,
        status: u16,
        reason: String,
    },

    #[error(
        "Panorama's answer to {operation} at {endpoint} exceeds the {limit_bytes}-byte response limit; narrow the xpath or raise the limit"
    )]
    ResponseTooLarge {
        endpoint: String,
        operation: Operation,
        limit_bytes: usize,
    },
}

impl ClientError {
    /// The HTTP status Panorama answered with, when it answered.
    pub fn http_status(&self) -> Option<u16> {
        match self {
            Self::Authentication { status, .. }
            | Self::KeygenRejected { status, .. }
            | Self::Unauthorized { status, .. }
            | Self::HttpStatus { status, .. }
            | Self::Api { status, .. }
            | Self::MalformedResponse { status, .. } => Some(*status),
            _ => None,
        }
    }

    /// The PAN-OS response code (`code` attribute of `<response>`), when there was one.
    pub fn panos_code(&self) -> Option<&str> {
        match self {
            Self::Authentication { code, .. }
            | Self::KeygenRejected { code, .. }
            | Self::Unauthorized { code, .. }
            | Self::HttpStatus { code, .. }
            | Self::Api { code, .. } => code.as_deref(),
            _ => None,
        }
    }

    /// The PAN-OS message (`<msg>` text), when there was one.
    pub fn panos_message(&self) -> Option<&str> {
        match self {
            Self::Authentication { message, .. }
            | Self::KeygenRejected { message, .. }
            | Self::Unauthorized { message, .. }
            | Self::HttpStatus { message, .. }
            | Self::Api { message, .. } => message.as_deref(),
            _ => None,
        }
    }

    /// True for credential and permission failures, which retrying cannot fix.
    pub fn is_auth(&self) -> bool {
        matches!(
            self,
            Self::Authentication { .. } | Self::KeygenRejected { .. } | Self::Unauthorized { .. }
        )
    }
}

/// What to do about a PAN-OS error code (codes from the PAN-OS XML API error code table).
pub(crate) fn hint_for_code(code: Option<&str>) -> &'static str {
    match code {
        Some("400") => {
            "a parameter is missing or invalid; this is a zonewall bug, please report it"
        }
        Some("1") => "this PAN-OS release does not know the command; check the Panorama version",
        Some("6") => "the xpath is invalid; check the device group name given with --device-group",
        Some("7") | Some("13") => {
            "the object is not present; check the device group name given with --device-group"
        }
        Some("16") => "the admin role lacks XML API access for this request",
        Some("17") | Some("18") => {
            "Panorama rejected the command syntax; this is a zonewall bug, please report it"
        }
        Some("22") => "the session timed out; the next sync retries",
        Some("2" | "3" | "4" | "5" | "11" | "21") => {
            "Panorama reported an internal error; check Panorama's system logs"
        }
        _ => "see the PAN-OS XML API error code table",
    }
}

/// What to do about an HTTP status that is not a PAN-OS answer.
pub(crate) fn hint_for_status(status: u16) -> &'static str {
    match status {
        429 => "Panorama is rate limiting API requests; lower the sync frequency (--interval)",
        500..=599 => {
            "Panorama or a proxy in front of it failed; check that the management plane is up and not overloaded"
        }
        300..=399 => {
            "redirects are not followed (they could carry the API key elsewhere); give the final URL with --panorama-url"
        }
        404 => "the API path does not exist; --panorama-url must be the base URL of Panorama",
        _ => "check --panorama-url and Panorama's API settings",
    }
}
