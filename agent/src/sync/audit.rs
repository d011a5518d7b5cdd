//! The audit trail: one record per operation on the `firewall` tier (apply, delete, drift
//! remediation), written as a JSON line. The record is plain data so that it can also go
//! through the flow-record sinks (CEF/syslog) once those accept it.

use std::io::Write;
use std::sync::Mutex;

use serde::Serialize;

use super::desired::CommitInfo;
use super::plan::{Change, ChangeKind};

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
    pub time: String,
    pub controller: String,
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

pub fn now_rfc3339() -> String {
    jiff::Timestamp::now().to_string()
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
            time: now_rfc3339(),
            controller: super::desired::FIELD_MANAGER.to_string(),
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

    pub fn to_json_line(&self) -> String {
        let mut line = serde_json::to_string(self).unwrap_or_else(|error| {
            format!(r#"{{"error":"cannot encode audit record: {error}"}}"#)
        });
        line.push('\n');
        line
    }
}

/// Where audit records go: a JSON line each, flushed per record so a crash loses none.
pub struct AuditLog {
    out: Mutex<Box<dyn Write + Send>>,
}

impl AuditLog {
    pub fn new(out: Box<dyn Write + Send>) -> Self {
        AuditLog {
            out: Mutex::new(out),
        }
    }

    /// Writes one record; false when it could not be written (logged with the record, so it
    /// is not lost: the operation already happened).
    pub fn record(&self, record: &AuditRecord) -> bool {
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
