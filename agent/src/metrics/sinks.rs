//! Per-sink export metrics, read at scrape time from the sinks' own atomic counters
//! ([`SinkCounters`]): the flow path (or the sync controller's audit log) counts once, here
//! nothing is counted again. The same families serve `zonewall agent` (flow records) and
//! `zonewall sync` (audit records).

use std::sync::{Arc, PoisonError, RwLock};

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;

use super::Metrics;
use crate::flows::sink::{CountersSnapshot, DropReason, Sink, SinkCounters};

#[derive(Debug)]
struct RegisteredSink {
    /// `FORMAT+TRANSPORT://ADDRESS` (no options, so never a secret), made unique.
    name: String,
    counters: Arc<SinkCounters>,
    queue_capacity: u64,
}

type SinkList = Arc<RwLock<Vec<RegisteredSink>>>;

/// Handle to add sinks to the exposition once they are spawned. Clones share the list.
#[derive(Debug, Clone)]
pub struct SinkMetrics {
    sinks: SinkList,
}

impl SinkMetrics {
    pub fn register(metrics: &mut Metrics) -> SinkMetrics {
        let sinks = SinkList::default();
        metrics
            .registry_mut()
            .register_collector(Box::new(SinkCollector {
                sinks: Arc::clone(&sinks),
            }));
        SinkMetrics { sinks }
    }

    /// Exports a running sink, labelled with its description.
    pub fn add_sink(&self, sink: &Sink) {
        self.add(
            sink.description(),
            Arc::clone(sink.counters()),
            sink.queue_capacity(),
        );
    }

    /// Exports `counters` under the label `sink="NAME"`. Two sinks with the same
    /// description (say, two stdout sinks with different filters) get `#2`, `#3`, ...
    /// appended, so their series never collide.
    pub fn add(&self, name: &str, counters: Arc<SinkCounters>, queue_capacity: usize) {
        let mut sinks = self.sinks.write().unwrap_or_else(PoisonError::into_inner);
        let mut unique = name.to_owned();
        let mut suffix = 1;
        while sinks.iter().any(|sink| sink.name == unique) {
            suffix += 1;
            unique = format!("{name}#{suffix}");
        }
        sinks.push(RegisteredSink {
            name: unique,
            counters,
            queue_capacity: queue_capacity as u64,
        });
    }
}

#[derive(Debug)]
struct SinkCollector {
    sinks: SinkList,
}

type CounterOf = fn(&CountersSnapshot) -> u64;

/// The per-sink counter families: (name without prefix and `_total`, help, value).
const SINK_COUNTERS: [(&str, &str, CounterOf); 5] = [
    (
        "sink_records_offered",
        "Records offered to a sink after its filter (flow records in the agent, audit records in sync).",
        |snapshot| snapshot.offered,
    ),
    (
        "sink_records_delivered",
        "Records a sink handed to the operating system (socket, file or stdout).",
        |snapshot| snapshot.delivered,
    ),
    (
        "sink_records_truncated",
        "Records cut to the sink's max_message and delivered (oversize=truncate).",
        |snapshot| snapshot.truncated,
    ),
    (
        "sink_connects",
        "Successful connections (files opened) of a sink; more than one means reconnects.",
        |snapshot| snapshot.connects,
    ),
    (
        "sink_connect_failures",
        "Failed connection attempts of a sink.",
        |snapshot| snapshot.connect_failures,
    ),
];

impl Collector for SinkCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let sinks = self.sinks.read().unwrap_or_else(PoisonError::into_inner);
        if sinks.is_empty() {
            return Ok(());
        }
        // One snapshot per sink per scrape, so the families agree with each other.
        let snapshots: Vec<(&str, CountersSnapshot, u64)> = sinks
            .iter()
            .map(|sink| {
                (
                    sink.name.as_str(),
                    sink.counters.snapshot(),
                    sink.queue_capacity,
                )
            })
            .collect();

        for (name, help, value) in SINK_COUNTERS {
            let mut family = encoder.encode_descriptor(name, help, None, MetricType::Counter)?;
            for (sink, snapshot, _) in &snapshots {
                ConstCounter::new(value(snapshot))
                    .encode(family.encode_family(&[("sink", *sink)])?)?;
            }
        }

        let mut dropped = encoder.encode_descriptor(
            "sink_records_dropped",
            "Records a sink did not deliver, by reason (queue_full, oversized, write_error, shutdown).",
            None,
            MetricType::Counter,
        )?;
        for (sink, snapshot, _) in &snapshots {
            for reason in DropReason::ALL {
                let labels = [("sink", *sink), ("reason", reason.as_str())];
                ConstCounter::new(snapshot.dropped(reason))
                    .encode(dropped.encode_family(&labels)?)?;
            }
        }

        let mut depth = encoder.encode_descriptor(
            "sink_queue_depth",
            "Records waiting in a sink's queue.",
            None,
            MetricType::Gauge,
        )?;
        for (sink, snapshot, _) in &snapshots {
            ConstGauge::new(gauge_value(snapshot.queue_depth))
                .encode(depth.encode_family(&[("sink", *sink)])?)?;
        }

        let mut capacity = encoder.encode_descriptor(
            "sink_queue_capacity",
            "Size of a sink's queue; records offered while it is full are dropped (queue_full).",
            None,
            MetricType::Gauge,
        )?;
        for (sink, _, queue_capacity) in &snapshots {
            ConstGauge::new(gauge_value(*queue_capacity))
                .encode(capacity.encode_family(&[("sink", *sink)])?)?;
        }
        Ok(())
    }
}

fn gauge_value(value: u64) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}
