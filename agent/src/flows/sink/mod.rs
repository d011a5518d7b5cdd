//! Record sinks: where formatted records leave for the SIEM (DESIGN section 7): flow records
//! from the agent, and the sync controller's audit records (`zonewall sync --sink`).
//!
//! A sink takes already-formatted records (one per `String`, no newline) from the flow path
//! or the audit log through [`SinkHandle::try_send`], which never blocks: the record is
//! queued in the sink's
//! bounded queue or counted as dropped. One tokio task per sink drains the queue to its
//! transport, reconnecting with capped, jittered exponential backoff. Every offered record
//! ends up either delivered or counted as dropped with a [`DropReason`].
//!
//! Transports:
//! - `udp`: RFC 5426, one record per datagram, no framing. Records over `max_message`
//!   (default 2048 bytes) are dropped and counted as `oversized`, or with `oversize=truncate`
//!   cut at a UTF-8 boundary, delivered and counted in `truncated`.
//! - `tcp`: RFC 6587 octet counting (`LEN SP MSG`), so a record can never be split in two.
//! - `tls`: RFC 5425 (same framing over TLS 1.2/1.3), server certificate verified against
//!   the `ca` bundle, optional client certificate for mutual TLS.
//! - `file`: newline-terminated records, size-based rotation keeping `keep` old files.
//! - `stdout`: newline-terminated records.

pub mod config;
pub mod counters;
pub mod framing;
mod runtime;
pub mod tls;
mod transport;

pub use config::{
    ClientIdentity, ConfigError, Endpoint, Filter, Format, OversizePolicy, Records, Rotation,
    SinkConfig, TlsFiles, TransportConfig, load_sinks,
};
pub use counters::{CountersSnapshot, DropReason, SinkCounters};
pub use runtime::{BackoffPolicy, RuntimeOptions, Sink, SinkError, SinkHandle};
pub use tls::TlsSetupError;
