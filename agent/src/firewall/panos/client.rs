//! Panorama / PAN-OS XML API client: the I/O edge of the firewall source.
//!
//! What `zonewall sync` needs from Panorama, and nothing more:
//! - configuration by xpath, running (`type=config&action=show`) or candidate
//!   (`type=config&action=get`, for `zonewall sync --diff`), returned as the raw XML inside
//!   `<result>` for the PAN-OS parser;
//! - the list of commits, to notice a new one: the config audit list
//!   (`<show><config><audit><info/></audit></config></show>`) or the job list
//!   (`<show><jobs><all/></jobs></show>`, finished `Commit` jobs);
//! - optionally an API key from a username and password (`type=keygen`).
//!
//! Secrets: the API key travels only in the `X-PAN-KEY` header (marked sensitive), keygen
//! credentials only in a POST form body. Every request is a POST with its parameters in the
//! form body, so no URL carries a secret or a long xpath; redirects are never followed, since
//! a custom header would be forwarded to wherever a redirect points. Keys and passwords are
//! [`Secret`]s, whose `Debug`/`Display` print `<redacted>`.
//!
//! Transport: HTTPS only, verified against the CA bundle the operator gives (`--ca-file`) or
//! the system roots; skipping verification must be asked for and is logged as a warning on
//! every client build. Each attempt has a connect and a total timeout; connect errors,
//! timeouts, a connection dropped mid-body, HTTP 429 and 5xx are retried a bounded number of
//! times with exponential backoff and jitter. Authentication and permission failures, TLS
//! verification failures and PAN-OS errors are never retried.

mod error;
mod response;
mod secret;

#[cfg(test)]
mod stand_in;
#[cfg(test)]
mod tests;

use std::path::PathBuf;
use std::time::Duration;

use reqwest::header::{HeaderMap, HeaderValue};
use reqwest::{StatusCode, Url};
use tracing::{debug, warn};

pub use error::{ClientError, Operation};
pub use response::CommitEntry;
pub use secret::{ApiKey, Secret, SecretFileError};

use response::Envelope;

/// The request header PAN-OS reads the API key from.
const API_KEY_HEADER: &str = "X-PAN-KEY";

/// The op command that lists committed configuration versions.
pub const CONFIG_AUDIT_INFO_CMD: &str =
    "<show><config><audit><info></info></audit></config></show>";

/// The op command that lists jobs, commits included.
pub const SHOW_JOBS_ALL_CMD: &str = "<show><jobs><all></all></jobs></show>";

/// How Panorama's certificate is verified.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TlsVerification {
    /// The operating system's trust store (through rustls-platform-verifier).
    SystemRoots,
    /// Only the CA certificates in this PEM file (`--ca-file`).
    CaBundle(PathBuf),
    /// No verification at all. Anyone on the path can read the API key and feed zonewall a
    /// forged policy; only for lab setups, and logged as a warning.
    InsecureSkipVerify,
}

/// Retry policy for transient failures.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Attempts in total, the first included (1 = no retry).
    pub max_attempts: u32,
    /// Backoff before the second attempt; doubles for each further one.
    pub initial_backoff: Duration,
    /// Cap of one backoff (also caps a server's `Retry-After`).
    pub max_backoff: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            max_attempts: 4,
            initial_backoff: Duration::from_millis(500),
            max_backoff: Duration::from_secs(10),
        }
    }
}

/// Settings of a [`PanoramaClient`].
#[derive(Debug, Clone)]
pub struct ClientConfig {
    /// Base URL of Panorama (or a firewall), `https://host[:port][/prefix]`; the client calls
    /// `<base>/api/`.
    pub base_url: String,
    pub tls: TlsVerification,
    /// Limit for establishing TCP + TLS.
    pub connect_timeout: Duration,
    /// Limit for one whole attempt, body included. A full Panorama running config can take a
    /// while to render, so the default is generous.
    pub request_timeout: Duration,
    pub retry: RetryPolicy,
    /// Largest response body accepted.
    pub max_response_bytes: usize,
    /// Honour `HTTPS_PROXY` / `NO_PROXY` from the environment.
    pub use_env_proxy: bool,
}

impl ClientConfig {
    pub fn new(base_url: impl Into<String>, tls: TlsVerification) -> Self {
        Self {
            base_url: base_url.into(),
            tls,
            connect_timeout: Duration::from_secs(10),
            request_timeout: Duration::from_secs(120),
            retry: RetryPolicy::default(),
            max_response_bytes: 256 * 1024 * 1024,
            use_env_proxy: true,
        }
    }

    /// Checks the settings without touching the network, and returns the API endpoint.
    pub fn validate(&self) -> Result<Url, ClientError> {
        let invalid = |reason: &str| ClientError::InvalidUrl {
            url: redact_url_text(&self.base_url),
            reason: reason.to_owned(),
        };
        let mut url =
            Url::parse(self.base_url.trim()).map_err(|error| invalid(&error.to_string()))?;
        if url.scheme() != "https" {
            return Err(invalid(
                "only https is allowed: the API key must not travel in clear text",
            ));
        }
        if !url.username().is_empty() || url.password().is_some() {
            return Err(invalid(
                "credentials in the URL are refused; give the key with --api-key-file",
            ));
        }
        if url.query().is_some() || url.fragment().is_some() {
            return Err(invalid("the URL must not have a query or fragment"));
        }
        if url.host_str().is_none() {
            return Err(invalid("the URL has no host"));
        }
        let path = url.path().trim_end_matches('/');
        let path = if path.ends_with("/api") {
            format!("{path}/")
        } else {
            format!("{path}/api/")
        };
        url.set_path(&path);

        if self.retry.max_attempts == 0 {
            return Err(ClientError::InvalidSetting {
                reason: "retry.max_attempts must be at least 1".to_owned(),
            });
        }
        if self.connect_timeout.is_zero() || self.request_timeout.is_zero() {
            return Err(ClientError::InvalidSetting {
                reason: "timeouts must be greater than zero".to_owned(),
            });
        }
        if self.max_response_bytes == 0 {
            return Err(ClientError::InvalidSetting {
                reason: "max_response_bytes must be greater than zero".to_owned(),
            });
        }
        Ok(url)
    }
}

/// Which configuration to read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConfigSource {
    /// The committed, running configuration (`action=show`).
    Running,
    /// The candidate configuration, with uncommitted changes (`action=get`).
    Candidate,
}

impl ConfigSource {
    fn action(self) -> &'static str {
        match self {
            Self::Running => "show",
            Self::Candidate => "get",
        }
    }
}

/// A client for one Panorama. Cheap to clone; clones share the connection pool.
#[derive(Debug, Clone)]
pub struct PanoramaClient {
    http: reqwest::Client,
    endpoint: Url,
    key: ApiKey,
    retry: RetryPolicy,
    max_response_bytes: usize,
}

/// One request: its form parameters and how it is described in errors and logs.
struct Request<'a> {
    operation: Operation,
    form: Vec<(&'static str, &'a str)>,
    /// The API key to send, if any (keygen sends none).
    key: Option<&'a ApiKey>,
    is_keygen: bool,
}

/// A failed attempt that may succeed when tried again.
enum Transient {
    Transport(String),
    Status {
        status: u16,
        code: Option<String>,
        message: Option<String>,
        retry_after: Option<Duration>,
    },
}

enum AttemptError {
    Fatal(ClientError),
    Transient(Transient),
}

impl PanoramaClient {
    /// Builds a client that authenticates with `key`.
    pub fn new(config: &ClientConfig, key: ApiKey) -> Result<Self, ClientError> {
        if key.is_empty() {
            return Err(ClientError::InvalidSetting {
                reason: "the API key is empty; check the key file given with --api-key-file"
                    .to_owned(),
            });
        }
        if HeaderValue::from_str(key.expose()).is_err() {
            return Err(invalid_key_characters());
        }
        let endpoint = config.validate()?;
        let http = build_http_client(config, &endpoint)?;
        Ok(Self {
            http,
            endpoint,
            key,
            retry: config.retry.clone(),
            max_response_bytes: config.max_response_bytes,
        })
    }

    /// Asks Panorama for an API key (`type=keygen`), the credentials in a POST form body, and
    /// returns a client that uses it. Note that PAN-OS ends the other API sessions of that
    /// admin when it issues a new key.
    pub async fn with_keygen(
        config: &ClientConfig,
        username: &Secret,
        password: &Secret,
    ) -> Result<Self, ClientError> {
        let endpoint = config.validate()?;
        let http = build_http_client(config, &endpoint)?;
        let mut client = Self {
            http,
            endpoint,
            key: Secret::new(String::new()),
            retry: config.retry.clone(),
            max_response_bytes: config.max_response_bytes,
        };
        let request = Request {
            operation: Operation("keygen".to_owned()),
            form: vec![
                ("type", "keygen"),
                ("user", username.expose()),
                ("password", password.expose()),
            ],
            key: None,
            is_keygen: true,
        };
        let envelope = client.send(&request).await?;
        let key = envelope
            .result
            .as_deref()
            .ok_or_else(|| "the keygen answer has no <result>".to_owned())
            .and_then(response::parse_keygen_key)
            .map_err(|reason| client.malformed(&request.operation, 200, reason))?;
        client.key = Secret::new(key);
        Ok(client)
    }

    /// The API key in use (for example to store one obtained through keygen).
    pub fn api_key(&self) -> &ApiKey {
        &self.key
    }

    /// The API endpoint, `https://host[:port]/api/`.
    pub fn endpoint(&self) -> &Url {
        &self.endpoint
    }

    /// Reads configuration at `xpath` and returns the raw XML inside `<result>`, or `None`
    /// when nothing is at that xpath (PAN-OS answers an empty `<result/>` for `get`, and
    /// `No such node` or code 7 for `show`).
    pub async fn read_config(
        &self,
        source: ConfigSource,
        xpath: &str,
    ) -> Result<Option<String>, ClientError> {
        let action = source.action();
        let request = Request {
            operation: Operation(format!("config {action} of {xpath}")),
            form: vec![("type", "config"), ("action", action), ("xpath", xpath)],
            key: Some(&self.key),
            is_keygen: false,
        };
        match self.send(&request).await {
            Ok(envelope) if envelope.result_is_empty() => Ok(None),
            Ok(envelope) => Ok(envelope.result),
            Err(ClientError::Api { code, message, .. })
                if code.as_deref() == Some("7")
                    || message.as_deref().is_some_and(|message| {
                        message.trim().eq_ignore_ascii_case("No such node")
                    }) =>
            {
                Ok(None)
            }
            Err(error) => Err(error),
        }
    }

    /// The running (committed) configuration at `xpath`.
    pub async fn running_config(&self, xpath: &str) -> Result<Option<String>, ClientError> {
        self.read_config(ConfigSource::Running, xpath).await
    }

    /// The candidate configuration at `xpath`, uncommitted changes included.
    pub async fn candidate_config(&self, xpath: &str) -> Result<Option<String>, ClientError> {
        self.read_config(ConfigSource::Candidate, xpath).await
    }

    /// Runs an operational command (`type=op`) and returns the raw XML inside `<result>`
    /// (empty when the answer has none).
    pub async fn op(&self, cmd: &str) -> Result<String, ClientError> {
        let request = Request {
            operation: Operation(format!("op {cmd}")),
            form: vec![("type", "op"), ("cmd", cmd)],
            key: Some(&self.key),
            is_keygen: false,
        };
        let envelope = self.send(&request).await?;
        Ok(envelope.result.unwrap_or_default())
    }

    /// Committed configuration versions from the config audit list, newest first.
    pub async fn config_audit_versions(&self) -> Result<Vec<CommitEntry>, ClientError> {
        let inner = self.op(CONFIG_AUDIT_INFO_CMD).await?;
        response::parse_config_audit(&inner).map_err(|reason| {
            self.malformed(
                &Operation(format!("op {CONFIG_AUDIT_INFO_CMD}")),
                200,
                reason,
            )
        })
    }

    /// Successfully finished commit jobs from the job list, newest first. The first entry's
    /// `id` changes exactly when someone commits, which is what sync watches.
    pub async fn commit_jobs(&self) -> Result<Vec<CommitEntry>, ClientError> {
        let inner = self.op(SHOW_JOBS_ALL_CMD).await?;
        response::parse_commit_jobs(&inner).map_err(|reason| {
            self.malformed(&Operation(format!("op {SHOW_JOBS_ALL_CMD}")), 200, reason)
        })
    }

    /// Sends a request with bounded retries and returns a `status="success"` envelope.
    async fn send(&self, request: &Request<'_>) -> Result<Envelope, ClientError> {
        let max_attempts = self.retry.max_attempts.max(1);
        let mut attempt = 1;
        loop {
            debug!(
                operation = %request.operation,
                endpoint = %self.endpoint,
                attempt,
                "sending PAN-OS XML API request"
            );
            let transient = match self.attempt(request).await {
                Ok(envelope) => return Ok(envelope),
                Err(AttemptError::Fatal(error)) => return Err(error),
                Err(AttemptError::Transient(transient)) => transient,
            };
            if attempt >= max_attempts {
                return Err(self.exhausted(request, transient, attempt));
            }
            let retry_after = match &transient {
                Transient::Status { retry_after, .. } => *retry_after,
                Transient::Transport(_) => None,
            };
            let delay = backoff_delay(&self.retry, attempt, retry_after, jitter_fraction());
            warn!(
                operation = %request.operation,
                endpoint = %self.endpoint,
                attempt,
                max_attempts,
                reason = %transient_reason(&transient),
                delay_ms = u64::try_from(delay.as_millis()).unwrap_or(u64::MAX),
                "PAN-OS XML API request failed, retrying"
            );
            tokio::time::sleep(delay).await;
            attempt += 1;
        }
    }

    async fn attempt(&self, request: &Request<'_>) -> Result<Envelope, AttemptError> {
        let mut builder = self.http.post(self.endpoint.clone()).form(&request.form);
        if let Some(key) = request.key {
            let mut value = HeaderValue::from_str(key.expose())
                .map_err(|_| AttemptError::Fatal(invalid_key_characters()))?;
            value.set_sensitive(true);
            builder = builder.header(API_KEY_HEADER, value);
        }
        let mut response = builder
            .send()
            .await
            .map_err(|error| self.classify_send_error(request, error))?;
        let status = response.status();
        let retry_after = retry_after(response.headers());
        let body = self.read_body(request, &mut response).await?;

        // Best effort: error pages of proxies are not PAN-OS XML.
        let envelope = std::str::from_utf8(&body)
            .map_err(|_| "the body is not UTF-8".to_owned())
            .and_then(response::parse_envelope);

        if status == StatusCode::TOO_MANY_REQUESTS || status.is_server_error() {
            let (code, message) = codes_of(&envelope);
            return Err(AttemptError::Transient(Transient::Status {
                status: status.as_u16(),
                code,
                message,
                retry_after,
            }));
        }
        let envelope_code = envelope.as_ref().ok().and_then(|env| env.code.clone());
        if status == StatusCode::FORBIDDEN || envelope_code.as_deref() == Some("403") {
            let (code, message) = codes_of(&envelope);
            return Err(AttemptError::Fatal(self.auth_error(
                request,
                status.as_u16(),
                code,
                message,
            )));
        }
        if !status.is_success() {
            let (code, message) = codes_of(&envelope);
            return Err(AttemptError::Fatal(ClientError::HttpStatus {
                endpoint: self.endpoint.to_string(),
                operation: request.operation.clone(),
                status: status.as_u16(),
                code,
                message,
                attempts: 1,
                hint: error::hint_for_status(status.as_u16()),
            }));
        }
        let envelope = envelope.map_err(|reason| {
            AttemptError::Fatal(self.malformed(&request.operation, status.as_u16(), reason))
        })?;
        if envelope.is_success() {
            return Ok(envelope);
        }
        if envelope.status == "unauth" || envelope.code.as_deref() == Some("16") {
            return Err(AttemptError::Fatal(ClientError::Unauthorized {
                endpoint: self.endpoint.to_string(),
                operation: request.operation.clone(),
                status: status.as_u16(),
                code: envelope.code,
                message: envelope.message,
            }));
        }
        Err(AttemptError::Fatal(ClientError::Api {
            endpoint: self.endpoint.to_string(),
            operation: request.operation.clone(),
            status: status.as_u16(),
            hint: error::hint_for_code(envelope.code.as_deref()),
            code: envelope.code,
            message: envelope.message,
        }))
    }

    /// Reads the body up to the size limit. A connection dropped or timing out mid-body is
    /// transient; an oversized body is not.
    async fn read_body(
        &self,
        request: &Request<'_>,
        response: &mut reqwest::Response,
    ) -> Result<Vec<u8>, AttemptError> {
        let too_large = || {
            AttemptError::Fatal(ClientError::ResponseTooLarge {
                endpoint: self.endpoint.to_string(),
                operation: request.operation.clone(),
                limit_bytes: self.max_response_bytes,
            })
        };
        if response
            .content_length()
            .is_some_and(|length| length > self.max_response_bytes as u64)
        {
            return Err(too_large());
        }
        let mut body = Vec::new();
        loop {
            match response.chunk().await {
                Ok(Some(chunk)) => {
                    if body.len() + chunk.len() > self.max_response_bytes {
                        return Err(too_large());
                    }
                    body.extend_from_slice(&chunk);
                }
                Ok(None) => return Ok(body),
                Err(error) => {
                    let reason = if error.is_timeout() {
                        "timed out while reading the response body".to_owned()
                    } else {
                        format!(
                            "the connection ended before the whole response body arrived ({} bytes read; truncated body): {}",
                            body.len(),
                            error_chain_text(&error.without_url())
                        )
                    };
                    return Err(AttemptError::Transient(Transient::Transport(reason)));
                }
            }
        }
    }

    fn classify_send_error(&self, request: &Request<'_>, error: reqwest::Error) -> AttemptError {
        let error = error.without_url();
        if let Some(tls) = tls_failure(&error) {
            return AttemptError::Fatal(ClientError::Tls {
                endpoint: self.endpoint.to_string(),
                operation: request.operation.clone(),
                reason: tls,
            });
        }
        if error.is_builder() {
            return AttemptError::Fatal(ClientError::ClientSetup {
                reason: error_chain_text(&error),
            });
        }
        let reason = if error.is_timeout() {
            format!("timed out: {}", error_chain_text(&error))
        } else {
            error_chain_text(&error)
        };
        AttemptError::Transient(Transient::Transport(reason))
    }

    fn auth_error(
        &self,
        request: &Request<'_>,
        status: u16,
        code: Option<String>,
        message: Option<String>,
    ) -> ClientError {
        if request.is_keygen {
            ClientError::KeygenRejected {
                endpoint: self.endpoint.to_string(),
                status,
                code,
                message,
            }
        } else {
            ClientError::Authentication {
                endpoint: self.endpoint.to_string(),
                operation: request.operation.clone(),
                status,
                code,
                message,
            }
        }
    }

    fn malformed(&self, operation: &Operation, status: u16, reason: String) -> ClientError {
        ClientError::MalformedResponse {
            endpoint: self.endpoint.to_string(),
            operation: operation.clone(),
            status,
            reason,
        }
    }

    fn exhausted(&self, request: &Request<'_>, transient: Transient, attempts: u32) -> ClientError {
        match transient {
            Transient::Transport(reason) => ClientError::Transport {
                endpoint: self.endpoint.to_string(),
                operation: request.operation.clone(),
                attempts,
                reason,
            },
            Transient::Status {
                status,
                code,
                message,
                ..
            } => ClientError::HttpStatus {
                endpoint: self.endpoint.to_string(),
                operation: request.operation.clone(),
                status,
                code,
                message,
                attempts,
                hint: error::hint_for_status(status),
            },
        }
    }
}

fn invalid_key_characters() -> ClientError {
    ClientError::InvalidSetting {
        reason: "the API key holds characters not allowed in an HTTP header; check the key file given with --api-key-file".to_owned(),
    }
}

fn build_http_client(
    config: &ClientConfig,
    endpoint: &Url,
) -> Result<reqwest::Client, ClientError> {
    let mut headers = HeaderMap::new();
    headers.insert(
        reqwest::header::ACCEPT,
        HeaderValue::from_static("application/xml, text/xml"),
    );
    let mut builder = reqwest::Client::builder()
        .https_only(true)
        .redirect(reqwest::redirect::Policy::none())
        .connect_timeout(config.connect_timeout)
        .timeout(config.request_timeout)
        .default_headers(headers)
        .user_agent(concat!("zonewall/", env!("CARGO_PKG_VERSION")));
    if !config.use_env_proxy {
        builder = builder.no_proxy();
    }
    builder = match &config.tls {
        TlsVerification::SystemRoots => builder,
        TlsVerification::CaBundle(path) => {
            let pem = std::fs::read(path).map_err(|source| ClientError::CaFileRead {
                path: path.clone(),
                source,
            })?;
            let certificates = reqwest::Certificate::from_pem_bundle(&pem).map_err(|error| {
                ClientError::CaBundle {
                    path: path.clone(),
                    reason: error_chain_text(&error),
                }
            })?;
            if certificates.is_empty() {
                return Err(ClientError::CaBundle {
                    path: path.clone(),
                    reason: "no PEM certificate found".to_owned(),
                });
            }
            builder.tls_certs_only(certificates)
        }
        TlsVerification::InsecureSkipVerify => {
            warn!(
                endpoint = %endpoint,
                "TLS CERTIFICATE VERIFICATION IS DISABLED for Panorama: anyone on the network path can read the API key and feed zonewall a forged policy; use --ca-file instead"
            );
            builder.tls_danger_accept_invalid_certs(true)
        }
    };
    builder.build().map_err(|error| ClientError::ClientSetup {
        reason: error_chain_text(&error.without_url()),
    })
}

/// PAN-OS code and message of a parsed body, if the body was a PAN-OS response.
fn codes_of(envelope: &Result<Envelope, String>) -> (Option<String>, Option<String>) {
    match envelope {
        Ok(envelope) => (envelope.code.clone(), envelope.message.clone()),
        Err(_) => (None, None),
    }
}

fn transient_reason(transient: &Transient) -> String {
    match transient {
        Transient::Transport(reason) => reason.clone(),
        Transient::Status {
            status,
            code,
            message,
            ..
        } => format!(
            "HTTP {status} (PAN-OS code {}, {})",
            code.as_deref().unwrap_or("none"),
            message.as_deref().unwrap_or("no message")
        ),
    }
}

/// `Retry-After` in seconds (the HTTP-date form is ignored; backoff applies instead).
fn retry_after(headers: &HeaderMap) -> Option<Duration> {
    headers
        .get(reqwest::header::RETRY_AFTER)?
        .to_str()
        .ok()?
        .trim()
        .parse::<u64>()
        .ok()
        .map(Duration::from_secs)
}

/// Backoff before attempt `attempt + 1`: `initial * 2^(attempt-1)` capped at `max`, with
/// "equal jitter" (between half and all of it) so that many agents do not retry in step; a
/// server's `Retry-After` is honoured up to the cap.
fn backoff_delay(
    policy: &RetryPolicy,
    attempt: u32,
    retry_after: Option<Duration>,
    jitter: f64,
) -> Duration {
    let exponent = attempt.saturating_sub(1).min(20);
    let base = policy
        .initial_backoff
        .saturating_mul(1u32 << exponent)
        .min(policy.max_backoff);
    let jittered = base.mul_f64(0.5 + 0.5 * jitter.clamp(0.0, 1.0));
    match retry_after {
        Some(after) => jittered.max(after).min(policy.max_backoff),
        None => jittered,
    }
}

/// A number in [0, 1) that differs between calls and processes, without a `rand` dependency:
/// the standard library's randomly keyed hasher over the current time.
fn jitter_fraction() -> f64 {
    use std::hash::{BuildHasher, Hasher};
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|elapsed| elapsed.as_nanos())
        .unwrap_or_default();
    hasher.write_u128(nanos);
    (hasher.finish() >> 11) as f64 / (1u64 << 53) as f64
}

/// The TLS failure in an error chain, if any (certificate not trusted, name mismatch, ...).
/// The rustls error sits inside `io::Error`s (nested, in hyper-rustls), whose `source()`
/// skips the wrapped error, so those are unwrapped explicitly.
fn tls_failure(error: &(dyn std::error::Error + 'static)) -> Option<String> {
    let mut current = Some(error);
    while let Some(error) = current {
        let mut candidate = error;
        loop {
            if let Some(tls) = candidate.downcast_ref::<rustls::Error>() {
                return Some(tls.to_string());
            }
            match candidate
                .downcast_ref::<std::io::Error>()
                .and_then(std::io::Error::get_ref)
            {
                Some(inner) => candidate = inner,
                None => break,
            }
        }
        current = error.source();
    }
    None
}

/// An error and its causes as one line, skipping causes already contained in the text.
fn error_chain_text(error: &(dyn std::error::Error + 'static)) -> String {
    let mut text = error.to_string();
    let mut current = error.source();
    while let Some(cause) = current {
        let cause_text = cause.to_string();
        if !text.contains(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        current = cause.source();
    }
    text
}

/// The base URL as shown in an error: any `user:password@` is removed.
fn redact_url_text(url: &str) -> String {
    match Url::parse(url.trim()) {
        Ok(mut parsed) => {
            if !parsed.username().is_empty() || parsed.password().is_some() {
                let _ = parsed.set_username("");
                let _ = parsed.set_password(None);
            }
            parsed.set_query(None);
            parsed.to_string()
        }
        Err(_) => match url.rsplit_once('@') {
            Some((_, host)) => format!("<redacted>@{host}"),
            None => url.to_owned(),
        },
    }
}
