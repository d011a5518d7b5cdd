//! A counter whose value is read from the kernel, not incremented here.
//!
//! The eBPF programs count in per-CPU arrays; userspace sums them and gets a total that
//! only grows (until the map is recreated, which Prometheus sees as a counter reset, as it
//! should). Adding the difference to a normal `Counter` would be double bookkeeping and
//! would go wrong on every reset, so the total is stored as is and encoded as a counter.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use prometheus_client::encoding::{EncodeMetric, MetricEncoder, NoLabelSet};
use prometheus_client::metrics::{MetricType, TypedMetric};

/// A counter set from an absolute value (a sum of kernel per-CPU counters). Clones share
/// the value. Works on its own and inside a `Family`.
#[derive(Debug, Clone, Default)]
pub struct KernelCounter {
    total: Arc<AtomicU64>,
}

impl KernelCounter {
    /// Stores the kernel's current total.
    pub fn set(&self, total: u64) {
        self.total.store(total, Ordering::Relaxed);
    }

    pub fn get(&self) -> u64 {
        self.total.load(Ordering::Relaxed)
    }
}

impl TypedMetric for KernelCounter {
    const TYPE: MetricType = MetricType::Counter;
}

impl EncodeMetric for KernelCounter {
    fn encode(&self, mut encoder: MetricEncoder) -> Result<(), std::fmt::Error> {
        encoder.encode_counter::<NoLabelSet, _, u64>(&self.get(), None)
    }

    fn metric_type(&self) -> MetricType {
        Self::TYPE
    }
}
