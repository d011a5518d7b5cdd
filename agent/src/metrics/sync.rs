//! The sync controller's metrics (issue 9, item 6): last successful sync, commit-to-applied
//! latency, objects applied and deleted, drift remediations, errors by kind.

use std::sync::atomic::AtomicU64;
use std::time::{Duration, SystemTime};

use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue, LabelValueEncoder};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Unit;

use super::{Metrics, unix_seconds};

/// From a commit seen in the audit op response to its objects applied: the target is the
/// poll interval (2 s) + 500 ms at p99, so the buckets are dense around a few seconds.
const COMMIT_TO_APPLIED_BUCKETS: [f64; 13] = [
    0.1, 0.25, 0.5, 1.0, 1.5, 2.0, 2.5, 3.0, 5.0, 10.0, 30.0, 60.0, 300.0,
];

/// What drift remediation did to a ZonePolicy in the `firewall` tier.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum DriftAction {
    /// An object the controller did not produce was deleted.
    Deleted,
    /// An object whose spec was edited was put back to what the controller produced.
    Restored,
}

impl DriftAction {
    pub const ALL: [DriftAction; 2] = [DriftAction::Deleted, DriftAction::Restored];

    pub fn as_str(self) -> &'static str {
        match self {
            DriftAction::Deleted => "deleted",
            DriftAction::Restored => "restored",
        }
    }
}

impl EncodeLabelValue for DriftAction {
    fn encode(&self, encoder: &mut LabelValueEncoder) -> Result<(), std::fmt::Error> {
        EncodeLabelValue::encode(&self.as_str(), encoder)
    }
}

/// Why a sync pass failed. The cluster keeps the last applied policy in every case.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum SyncErrorKind {
    /// Panorama did not answer, or answered with an error (including authentication).
    Panorama,
    /// The firewall configuration (from Panorama or a file) is invalid or truncated.
    Config,
    /// Translating the configuration into ZonePolicy objects failed.
    Translate,
    /// Writing to the API server (apply, delete, Events) failed.
    Apply,
    /// Listing or watching ZonePolicy objects failed.
    Watch,
    /// Writing the `--output-dir` directory failed.
    Output,
    /// An audit record could not be written or sent.
    Audit,
}

impl SyncErrorKind {
    pub const ALL: [SyncErrorKind; 7] = [
        SyncErrorKind::Panorama,
        SyncErrorKind::Config,
        SyncErrorKind::Translate,
        SyncErrorKind::Apply,
        SyncErrorKind::Watch,
        SyncErrorKind::Output,
        SyncErrorKind::Audit,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            SyncErrorKind::Panorama => "panorama",
            SyncErrorKind::Config => "config",
            SyncErrorKind::Translate => "translate",
            SyncErrorKind::Apply => "apply",
            SyncErrorKind::Watch => "watch",
            SyncErrorKind::Output => "output",
            SyncErrorKind::Audit => "audit",
        }
    }
}

impl EncodeLabelValue for SyncErrorKind {
    fn encode(&self, encoder: &mut LabelValueEncoder) -> Result<(), std::fmt::Error> {
        EncodeLabelValue::encode(&self.as_str(), encoder)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct DriftLabels {
    action: DriftAction,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct SyncErrorLabels {
    kind: SyncErrorKind,
}

/// The sync controller's recording handle. Clones share everything.
#[derive(Debug, Clone)]
pub struct SyncMetrics {
    last_success: Gauge<f64, AtomicU64>,
    commit_to_applied: Histogram,
    objects_applied: Counter,
    objects_deleted: Counter,
    drift_remediations: Family<DriftLabels, Counter>,
    errors: Family<SyncErrorLabels, Counter>,
}

impl SyncMetrics {
    pub fn register(metrics: &mut Metrics) -> SyncMetrics {
        let sync = SyncMetrics {
            last_success: Gauge::default(),
            commit_to_applied: Histogram::new(COMMIT_TO_APPLIED_BUCKETS),
            objects_applied: Counter::default(),
            objects_deleted: Counter::default(),
            drift_remediations: Family::default(),
            errors: Family::default(),
        };
        for action in DriftAction::ALL {
            drop(
                sync.drift_remediations
                    .get_or_create(&DriftLabels { action }),
            );
        }
        for kind in SyncErrorKind::ALL {
            drop(sync.errors.get_or_create(&SyncErrorLabels { kind }));
        }
        let registry = metrics.registry_mut();
        registry.register_with_unit(
            "sync_last_success_timestamp",
            "When a sync pass last completed without error, in seconds since the Unix epoch",
            Unit::Seconds,
            sync.last_success.clone(),
        );
        registry.register_with_unit(
            "sync_commit_to_applied",
            "From a firewall commit detected to its ZonePolicy objects applied",
            Unit::Seconds,
            sync.commit_to_applied.clone(),
        );
        registry.register(
            "sync_objects_applied",
            "ZonePolicy objects created or updated by the sync controller",
            sync.objects_applied.clone(),
        );
        registry.register(
            "sync_objects_deleted",
            "ZonePolicy objects deleted because the firewall configuration no longer produces them",
            sync.objects_deleted.clone(),
        );
        registry.register(
            "sync_drift_remediations",
            "ZonePolicy objects in the firewall tier changed outside the controller and put right, by action",
            sync.drift_remediations.clone(),
        );
        registry.register(
            "sync_errors",
            "Failed sync passes by kind; the cluster keeps the last applied policy",
            sync.errors.clone(),
        );
        sync
    }

    /// A sync pass completed without error (whether or not anything changed).
    pub fn record_sync_success(&self, at: SystemTime) {
        self.last_success.set(unix_seconds(at));
    }

    /// A commit's objects are applied, `latency` after the commit was detected.
    pub fn record_commit_applied(&self, latency: Duration) {
        self.commit_to_applied.observe(latency.as_secs_f64());
    }

    /// Objects created or updated (`applied`) and deleted (`deleted`) by one pass.
    pub fn record_objects(&self, applied: u64, deleted: u64) {
        self.objects_applied.inc_by(applied);
        self.objects_deleted.inc_by(deleted);
    }

    pub fn record_drift_remediation(&self, action: DriftAction) {
        self.drift_remediations
            .get_or_create(&DriftLabels { action })
            .inc();
    }

    pub fn record_error(&self, kind: SyncErrorKind) {
        self.errors.get_or_create(&SyncErrorLabels { kind }).inc();
    }
}
