//! Prometheus metrics (DESIGN.md section 8): what the agent and the sync controller record,
//! and the HTTP endpoints that serve it (`/metrics`, `/healthz`, `/readyz`).
//!
//! One [`Metrics`] owns the registry; each subsystem registers its own families and hands
//! back a cheap, cloneable recording handle:
//!
//! ```no_run
//! # async fn example() -> Result<(), zonewall::metrics::ServerError> {
//! use std::sync::Arc;
//! use std::time::Duration;
//! use tokio_util::sync::CancellationToken;
//! use zonewall::metrics::{AgentMetrics, AgentMetricsOptions, Metrics, MetricsServer,
//!                         Readiness, SinkMetrics, FlowVerdict};
//!
//! let mut metrics = Metrics::new();
//! let agent = AgentMetrics::register(&mut metrics, AgentMetricsOptions::default());
//! let sinks = SinkMetrics::register(&mut metrics);
//! let readiness = Readiness::new();
//! let server = MetricsServer::bind(
//!     "127.0.0.1:9090".parse().expect("address"),
//!     Arc::new(metrics),
//!     readiness.clone(),
//! )
//! .await?;
//! let shutdown = CancellationToken::new();
//! tokio::spawn(server.serve(shutdown.child_token()));
//!
//! agent.record_apply(Duration::from_millis(12), 1);
//! readiness.set_ready();
//! agent.record_flows("dmz", "trusted", FlowVerdict::Allow, 1, 42);
//! # let _ = sinks;
//! # Ok(())
//! # }
//! ```
//!
//! Label values come only from closed sets: zone names (bounded again by
//! [`AgentMetricsOptions::max_zone_pairs`]), verdicts, reasons and kinds (enums), map and
//! kernel counter names (`&'static str`, so they can only be constants), sink descriptions
//! (fixed by the configuration), and ZonePolicy and rule names (bounded by the policy and
//! again by [`AgentMetricsOptions::max_rule_series`]). Never addresses, ports or pod names.

mod agent;
mod kernel;
mod server;
mod sinks;
mod sync;

#[cfg(test)]
mod tests;

use std::fmt;

use prometheus_client::encoding::{prometheus_text, text};
use prometheus_client::metrics::info::Info;
use prometheus_client::registry::Registry;

pub use agent::{
    AgentMetrics, AgentMetricsOptions, FlowVerdict, OVERFLOW_ZONE, ReconcileErrorKind, RuleHit,
};
pub use kernel::KernelCounter;
pub use server::{
    DEFAULT_METRICS_ADDR, MetricsArgs, MetricsServer, NOT_READY_INITIAL, Readiness, ServerError,
};
pub use sinks::SinkMetrics;
pub use sync::{DriftAction, SyncErrorKind, SyncMetrics};

/// Every family name starts with this, followed by `_`.
pub const PREFIX: &str = "zonewall";

/// The two text expositions `/metrics` speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExpositionFormat {
    /// OpenMetrics 1.0 text: what a Prometheus server asks for. Counter families are named
    /// without `_total`, units are declared, the body ends with `# EOF`.
    OpenMetrics,
    /// The Prometheus text format 0.0.4: for clients that do not ask for OpenMetrics, such
    /// as `curl` and `promtool check metrics`, whose parser predates OpenMetrics.
    PrometheusText,
}

impl ExpositionFormat {
    pub fn content_type(self) -> &'static str {
        match self {
            ExpositionFormat::OpenMetrics => {
                "application/openmetrics-text; version=1.0.0; charset=utf-8"
            }
            ExpositionFormat::PrometheusText => prometheus_text::CONTENT_TYPE,
        }
    }

    /// OpenMetrics when the `Accept` header lists `application/openmetrics-text` with a
    /// non-zero quality (as a Prometheus server does), the Prometheus text format otherwise:
    /// the same choice the Go client library makes, so a plain `curl | promtool` works.
    pub fn negotiate(accept: Option<&str>) -> ExpositionFormat {
        let Some(accept) = accept else {
            return ExpositionFormat::PrometheusText;
        };
        let wants_openmetrics = accept.split(',').any(|range| {
            let mut parts = range.split(';').map(str::trim);
            let media_type = parts.next().unwrap_or_default();
            if !media_type.eq_ignore_ascii_case("application/openmetrics-text") {
                return false;
            }
            // A quality of zero means "not acceptable" (RFC 9110 section 12.4.2).
            !parts.any(|parameter| {
                parameter.split_once('=').is_some_and(|(name, value)| {
                    name.trim().eq_ignore_ascii_case("q")
                        && value.trim().parse::<f32>().is_ok_and(|q| q <= 0.0)
                })
            })
        });
        if wants_openmetrics {
            ExpositionFormat::OpenMetrics
        } else {
            ExpositionFormat::PrometheusText
        }
    }
}

/// A registry failed to encode. Encoding into a `String` only fails when a metric rejects
/// its own value, so this is a bug in this module, reported as HTTP 500 on `/metrics`.
#[derive(Debug, thiserror::Error)]
#[error("encoding the metrics failed ({format:?}); this is a zonewall bug, please report it")]
pub struct EncodeError {
    format: ExpositionFormat,
}

/// The registry of one process (agent or sync controller). Subsystems register into it with
/// their own `register` functions; once shared (in an `Arc`) with the server it is read-only,
/// and all recording goes through the subsystem handles.
pub struct Metrics {
    registry: Registry,
}

impl Metrics {
    /// A registry with the `zonewall_` prefix and `zonewall_build_info{version}`.
    pub fn new() -> Metrics {
        let mut registry = Registry::with_prefix(PREFIX);
        registry.register(
            "build",
            "zonewall version of this process",
            Info::new([("version", env!("CARGO_PKG_VERSION"))]),
        );
        Metrics { registry }
    }

    /// For subsystems registering their families; names are given without the prefix.
    pub fn registry_mut(&mut self) -> &mut Registry {
        &mut self.registry
    }

    pub fn encode(&self, format: ExpositionFormat) -> Result<String, EncodeError> {
        let mut body = String::with_capacity(16 * 1024);
        let result = match format {
            ExpositionFormat::OpenMetrics => text::encode(&mut body, &self.registry),
            ExpositionFormat::PrometheusText => prometheus_text::encode(&mut body, &self.registry),
        };
        result.map_err(|fmt::Error| EncodeError { format })?;
        Ok(body)
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

impl fmt::Debug for Metrics {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

/// Seconds since the Unix epoch, for `*_timestamp_seconds` gauges.
fn unix_seconds(at: std::time::SystemTime) -> f64 {
    at.duration_since(std::time::UNIX_EPOCH)
        .map(|since| since.as_secs_f64())
        .unwrap_or(0.0)
}
