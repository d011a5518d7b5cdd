//! The audit trail: one record per operation on the `firewall` tier (apply, delete, drift
//! remediation), written as a JSON line and, through the flow-record sinks (`--sink`), as
//! CEF, RFC 5424, LEEF or JSON for the SIEM (the formats are in [`super::audit_format`]).
//!
//! Nothing is lost silently: a line that cannot be written is logged with its content, and a
//! record a sink cannot queue is counted by that sink (`zonewall_sink_records_dropped_total`)
//! and as an audit error of the controller.

use std::io::Write;
use std::sync::Mutex;

use serde::Serialize;

use super::desired::CommitInfo;
use super::plan::{Change, ChangeKind};
use crate::flows::format::{Format, FormatOptions, json};
use crate::flows::sink::{Filter, Sink, SinkConfig, SinkHandle};

/// Most rule names listed in one record; `rules_total` gives the full count.
pub const MAX_RULES_LISTED: usize = 100;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Outcome {
    Success,
    Failed,
}

/// One operation on the tier, and why.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct AuditRecord {
    /// RFC 3339, UTC.
    #[serde(serialize_with = "serialize_display")]
    pub time: jiff::Timestamp,
    pub controller: String,
    /// The host (in a cluster: the pod) the controller runs on.
    pub host: String,
    pub operation: ChangeKind,
    /// True for drift remediation (restoring or removing what someone else wrote).
    pub remediation: bool,
    /// `kubernetes`, or `directory:<path>`.
    pub target: String,
    pub object: String,
    pub zone: String,
    pub outcome: Outcome,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// Where the firewall configuration came from (file or Panorama endpoint).
    pub source: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub device_group: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub commit: Option<CommitInfo>,
    /// Firewall rules whose translation the operation adds, removes or changes
    /// (`device-group/rulebase/rule`), at most [`MAX_RULES_LISTED`].
    pub rules: Vec<String>,
    pub rules_total: usize,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub previous_hash: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub new_hash: Option<String>,
    /// Field managers other than the controller that had written to the object (who drifted it).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub changed_by: Vec<String>,
}

fn serialize_display<S: serde::Serializer>(
    value: &jiff::Timestamp,
    serializer: S,
) -> Result<S::Ok, S::Error> {
    serializer.collect_str(value)
}

/// This host's name (the pod name in a cluster), read once.
pub fn host_name() -> &'static str {
    static HOST: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    HOST.get_or_init(|| {
        std::fs::read_to_string("/proc/sys/kernel/hostname")
            .map(|name| name.trim().to_owned())
            .ok()
            .filter(|name| !name.is_empty())
            .unwrap_or_else(|| "localhost".to_owned())
    })
}

impl AuditRecord {
    pub fn for_change(
        change: &Change,
        target: &str,
        source: &str,
        device_group: Option<&str>,
        commit: Option<&CommitInfo>,
        result: Result<(), String>,
    ) -> Self {
        let (outcome, error) = match result {
            Ok(()) => (Outcome::Success, None),
            Err(error) => (Outcome::Failed, Some(error)),
        };
        AuditRecord {
            time: jiff::Timestamp::now(),
            controller: super::desired::FIELD_MANAGER.to_string(),
            host: host_name().to_string(),
            operation: change.kind,
            remediation: change.kind.is_remediation(),
            target: target.to_string(),
            object: change.name.clone(),
            zone: change.zone.clone(),
            outcome,
            error,
            source: source.to_string(),
            device_group: device_group.map(str::to_string),
            commit: commit.cloned(),
            rules: change
                .rules
                .iter()
                .take(MAX_RULES_LISTED)
                .cloned()
                .collect(),
            rules_total: change.rules.len(),
            previous_hash: change.live_hash.clone(),
            new_hash: change.desired_hash.clone(),
            changed_by: if change.kind.is_remediation() {
                change
                    .live
                    .as_ref()
                    .map(|live| live.other_managers.clone())
                    .unwrap_or_default()
            } else {
                Vec::new()
            },
        }
    }

    /// The record as one line of JSON without a terminator; control characters and the
    /// Unicode line separators are escaped, so it stays one line for any input.
    pub fn to_json(&self) -> String {
        match serde_json::to_string(self) {
            Ok(text) => json::escape_line_breakers(&text),
            Err(error) => {
                serde_json::json!({ "error": format!("cannot encode audit record: {error}") })
                    .to_string()
            }
        }
    }

    pub fn to_json_line(&self) -> String {
        let mut line = self.to_json();
        line.push('\n');
        line
    }
}

/// One `--sink` of the controller: records in its format, those its filter accepts.
#[derive(Debug, Clone)]
pub struct AuditSink {
    format: Format,
    filter: Filter,
    handle: SinkHandle,
    /// `FORMAT+TRANSPORT://ADDRESS`, for messages.
    description: String,
}

impl AuditSink {
    pub fn new(config: &SinkConfig, sink: &Sink) -> Self {
        AuditSink {
            format: config.format,
            filter: config.filter.clone(),
            handle: sink.handle(),
            description: sink.description().to_owned(),
        }
    }
}

/// Where audit records go: a JSON line each, flushed per record so a crash loses none, and
/// every sink.
pub struct AuditLog {
    out: Mutex<Box<dyn Write + Send>>,
    sinks: Vec<AuditSink>,
    format_options: FormatOptions,
}

impl AuditLog {
    pub fn new(out: Box<dyn Write + Send>) -> Self {
        AuditLog {
            out: Mutex::new(out),
            sinks: Vec::new(),
            format_options: FormatOptions::default(),
        }
    }

    /// Also offers every record to these sinks.
    pub fn with_sinks(mut self, sinks: Vec<AuditSink>) -> Self {
        self.sinks = sinks;
        self
    }

    /// Writes one record and offers it to every sink whose filter accepts it; false when the
    /// line could not be written or a sink could not queue it (logged, and counted by the
    /// sink: the operation already happened, the record must not vanish unnoticed).
    pub fn record(&self, record: &AuditRecord) -> bool {
        let mut complete = true;
        for sink in &self.sinks {
            if !sink.filter.accepts_audit(&record.zone) {
                continue;
            }
            let text = sink.format.render(record, &self.format_options);
            if let Err(reason) = sink.handle.try_send(text) {
                complete = false;
                tracing::error!(
                    sink = %sink.description,
                    %reason,
                    record = %record.to_json(),
                    "an audit sink dropped the record"
                );
            }
        }
        self.write_line(record) && complete
    }

    fn write_line(&self, record: &AuditRecord) -> bool {
        let line = record.to_json_line();
        let Ok(mut out) = self.out.lock() else {
            tracing::error!(
                "audit log writer poisoned; record lost: {}",
                line.trim_end()
            );
            return false;
        };
        match out.write_all(line.as_bytes()).and_then(|()| out.flush()) {
            Ok(()) => true,
            Err(error) => {
                tracing::error!(%error, record = %line.trim_end(), "cannot write the audit record");
                false
            }
        }
    }
}
