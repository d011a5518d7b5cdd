//! Per-sink delivery accounting, shared between the flow path, the sink task and (later)
//! the metrics module. Plain atomics: the flow path only ever does relaxed increments.

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};

/// Why a record did not reach the sink's peer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum DropReason {
    /// The bounded queue was full when the flow path offered the record.
    QueueFull,
    /// Longer than `max_message` with `oversize=drop`.
    Oversized,
    /// Writing failed (connection lost, peer reset, write timeout, disk error); the records
    /// of the failed write are not retried, so the SIEM never sees a record twice.
    WriteError,
    /// Still queued when the shutdown deadline passed, or offered after shutdown began.
    Shutdown,
}

impl DropReason {
    pub const ALL: [DropReason; 4] = [
        DropReason::QueueFull,
        DropReason::Oversized,
        DropReason::WriteError,
        DropReason::Shutdown,
    ];

    /// Metric label value.
    pub fn as_str(self) -> &'static str {
        match self {
            DropReason::QueueFull => "queue_full",
            DropReason::Oversized => "oversized",
            DropReason::WriteError => "write_error",
            DropReason::Shutdown => "shutdown",
        }
    }

    fn index(self) -> usize {
        self as usize
    }
}

impl fmt::Display for DropReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Live counters of one sink. Once the sink task has finished,
/// `offered == delivered + dropped_total()`; while it runs the difference is what is queued
/// or being written.
#[derive(Debug, Default)]
pub struct SinkCounters {
    offered: AtomicU64,
    delivered: AtomicU64,
    dropped: [AtomicU64; DropReason::ALL.len()],
    truncated: AtomicU64,
    queue_depth: AtomicU64,
    connects: AtomicU64,
    connect_failures: AtomicU64,
}

/// A consistent-enough copy of [`SinkCounters`] for reporting and tests.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct CountersSnapshot {
    pub offered: u64,
    pub delivered: u64,
    pub dropped_queue_full: u64,
    pub dropped_oversized: u64,
    pub dropped_write_error: u64,
    pub dropped_shutdown: u64,
    pub truncated: u64,
    pub queue_depth: u64,
    pub connects: u64,
    pub connect_failures: u64,
}

impl CountersSnapshot {
    pub fn dropped_total(&self) -> u64 {
        self.dropped_queue_full
            + self.dropped_oversized
            + self.dropped_write_error
            + self.dropped_shutdown
    }

    pub fn dropped(&self, reason: DropReason) -> u64 {
        match reason {
            DropReason::QueueFull => self.dropped_queue_full,
            DropReason::Oversized => self.dropped_oversized,
            DropReason::WriteError => self.dropped_write_error,
            DropReason::Shutdown => self.dropped_shutdown,
        }
    }
}

impl SinkCounters {
    /// Records offered to the sink by the flow path (after filtering).
    pub fn offered(&self) -> u64 {
        self.offered.load(Ordering::Relaxed)
    }

    /// Records handed to the operating system: written to the socket, the file or stdout.
    /// Syslog transports have no application acknowledgement, so this is the strongest
    /// promise a sender can make.
    pub fn delivered(&self) -> u64 {
        self.delivered.load(Ordering::Relaxed)
    }

    pub fn dropped(&self, reason: DropReason) -> u64 {
        self.dropped[reason.index()].load(Ordering::Relaxed)
    }

    /// Records cut to `max_message` and delivered (`oversize=truncate`).
    pub fn truncated(&self) -> u64 {
        self.truncated.load(Ordering::Relaxed)
    }

    /// Records waiting in the queue now.
    pub fn queue_depth(&self) -> u64 {
        self.queue_depth.load(Ordering::Relaxed)
    }

    /// Successful connections (files opened) so far; more than one means reconnects.
    pub fn connects(&self) -> u64 {
        self.connects.load(Ordering::Relaxed)
    }

    pub fn connect_failures(&self) -> u64 {
        self.connect_failures.load(Ordering::Relaxed)
    }

    pub fn snapshot(&self) -> CountersSnapshot {
        CountersSnapshot {
            offered: self.offered(),
            delivered: self.delivered(),
            dropped_queue_full: self.dropped(DropReason::QueueFull),
            dropped_oversized: self.dropped(DropReason::Oversized),
            dropped_write_error: self.dropped(DropReason::WriteError),
            dropped_shutdown: self.dropped(DropReason::Shutdown),
            truncated: self.truncated(),
            queue_depth: self.queue_depth(),
            connects: self.connects(),
            connect_failures: self.connect_failures(),
        }
    }

    pub(crate) fn record_offered(&self) {
        self.offered.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn record_delivered(&self, count: u64) {
        self.delivered.fetch_add(count, Ordering::Relaxed);
    }

    pub(crate) fn record_dropped(&self, reason: DropReason, count: u64) {
        self.dropped[reason.index()].fetch_add(count, Ordering::Relaxed);
    }

    pub(crate) fn record_truncated(&self) {
        self.truncated.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn record_enqueued(&self) {
        self.queue_depth.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn record_dequeued(&self) {
        self.queue_depth.fetch_sub(1, Ordering::Relaxed);
    }

    pub(crate) fn record_connect(&self, ok: bool) {
        if ok {
            self.connects.fetch_add(1, Ordering::Relaxed);
        } else {
            self.connect_failures.fetch_add(1, Ordering::Relaxed);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_per_reason_and_totals() {
        let counters = SinkCounters::default();
        for _ in 0..5 {
            counters.record_offered();
        }
        counters.record_delivered(2);
        counters.record_dropped(DropReason::QueueFull, 1);
        counters.record_dropped(DropReason::Shutdown, 2);
        counters.record_enqueued();
        counters.record_enqueued();
        counters.record_dequeued();
        let snapshot = counters.snapshot();
        assert_eq!(snapshot.offered, 5);
        assert_eq!(snapshot.delivered, 2);
        assert_eq!(snapshot.dropped(DropReason::QueueFull), 1);
        assert_eq!(snapshot.dropped(DropReason::Oversized), 0);
        assert_eq!(snapshot.dropped(DropReason::Shutdown), 2);
        assert_eq!(snapshot.dropped_total(), 3);
        assert_eq!(
            snapshot.offered,
            snapshot.delivered + snapshot.dropped_total()
        );
        assert_eq!(snapshot.queue_depth, 1);
    }

    #[test]
    fn reason_labels_are_distinct_and_stable() {
        let labels: Vec<&str> = DropReason::ALL.iter().map(|r| r.as_str()).collect();
        assert_eq!(
            labels,
            ["queue_full", "oversized", "write_error", "shutdown"]
        );
        for (index, reason) in DropReason::ALL.iter().enumerate() {
            assert_eq!(reason.index(), index);
        }
    }
}
