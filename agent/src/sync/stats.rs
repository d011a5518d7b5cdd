//! Plain counters and timestamps of the sync controller, for the metrics module to read.

use std::sync::atomic::{AtomicU64, Ordering};

/// Every field only grows, except the timestamps and `last_commit_to_applied_millis`, which
/// hold the latest value (0: not yet).
#[derive(Debug, Default)]
pub struct SyncStats {
    /// Unix milliseconds of the last reconcile that left the target equal to the desired tier.
    pub last_success_unix_millis: AtomicU64,
    /// Milliseconds from noticing a new commit (or file change) to its objects applied.
    pub last_commit_to_applied_millis: AtomicU64,
    pub commits_seen: AtomicU64,
    /// New desired states (commits that changed the tier) fully applied.
    pub commits_applied: AtomicU64,
    pub objects_applied: AtomicU64,
    pub objects_deleted: AtomicU64,
    /// Restores and removals of objects someone else wrote or edited.
    pub drift_remediations: AtomicU64,
    /// Panorama unreachable, rejected the key, or answered garbage.
    pub errors_source: AtomicU64,
    /// The configuration did not parse, resolve or translate.
    pub errors_config: AtomicU64,
    /// Writing to the API server or the output directory failed.
    pub errors_apply: AtomicU64,
}

impl SyncStats {
    pub fn add(counter: &AtomicU64, value: u64) {
        counter.fetch_add(value, Ordering::Relaxed);
    }

    pub fn set(value: &AtomicU64, to: u64) {
        value.store(to, Ordering::Relaxed);
    }

    pub fn get(value: &AtomicU64) -> u64 {
        value.load(Ordering::Relaxed)
    }

    pub fn mark_success(&self) {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|elapsed| u64::try_from(elapsed.as_millis()).unwrap_or(u64::MAX))
            .unwrap_or_default();
        Self::set(&self.last_success_unix_millis, now);
    }
}
