//! The sink task: one tokio task per sink, fed by a bounded queue that the flow path fills
//! with `try_send` and never waits on.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio::sync::mpsc::error::TrySendError;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::config::{OversizePolicy, SinkConfig, TransportConfig};
use super::counters::{DropReason, SinkCounters};
use super::tls::{TlsClient, TlsSetupError};
use super::transport::{Connection, Transport};

/// Most records written in one batch (one syscall for stream transports).
const MAX_BATCH_RECORDS: usize = 512;
/// Most bytes gathered into one batch.
const MAX_BATCH_BYTES: usize = 256 * 1024;

/// Reconnect delays: exponential from `initial` to `max`, each randomised to between half and
/// all of its value so that many agents reconnecting to one SIEM spread out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BackoffPolicy {
    pub initial: Duration,
    pub max: Duration,
}

impl Default for BackoffPolicy {
    fn default() -> Self {
        BackoffPolicy {
            initial: Duration::from_millis(200),
            max: Duration::from_secs(30),
        }
    }
}

#[derive(Debug, Clone)]
pub(crate) struct Backoff {
    policy: BackoffPolicy,
    next: Duration,
}

impl Backoff {
    pub(crate) fn new(policy: BackoffPolicy) -> Self {
        Backoff {
            policy,
            next: policy.initial,
        }
    }

    /// The delay before the next attempt, with jitter; doubles the base up to the cap.
    pub(crate) fn next_delay(&mut self) -> Duration {
        let base = self.next.min(self.policy.max);
        self.next = (base * 2).min(self.policy.max);
        let half = base / 2;
        let jitter_nanos = fastrand::u64(0..=half.as_nanos().min(u64::MAX as u128) as u64);
        half + Duration::from_nanos(jitter_nanos)
    }

    pub(crate) fn reset(&mut self) {
        self.next = self.policy.initial;
    }
}

/// Tuning that is not part of the `--sink` string.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RuntimeOptions {
    pub backoff: BackoffPolicy,
    /// After cancellation, how long queued records may still be delivered.
    pub shutdown_deadline: Duration,
    /// A write that makes no progress for this long (a receiver that stopped reading) counts
    /// as failed: its records are dropped as `write_error` and the sink reconnects.
    pub write_timeout: Duration,
}

impl Default for RuntimeOptions {
    fn default() -> Self {
        RuntimeOptions {
            backoff: BackoffPolicy::default(),
            shutdown_deadline: Duration::from_secs(5),
            write_timeout: Duration::from_secs(30),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum SinkError {
    #[error("sink {sink}: {source}")]
    Tls {
        sink: String,
        #[source]
        source: Box<TlsSetupError>,
    },
}

/// The flow path's side of a sink: cheap to clone, never blocks.
#[derive(Debug, Clone)]
pub struct SinkHandle {
    sender: mpsc::Sender<String>,
    counters: Arc<SinkCounters>,
    max_message: usize,
    oversize: OversizePolicy,
}

impl SinkHandle {
    /// Offers one formatted record (no trailing newline). Returns at once; if the record
    /// cannot be queued it is counted as dropped and the reason is returned.
    pub fn try_send(&self, mut record: String) -> Result<(), DropReason> {
        self.counters.record_offered();
        if record.len() > self.max_message {
            match self.oversize {
                OversizePolicy::Drop => {
                    self.counters.record_dropped(DropReason::Oversized, 1);
                    return Err(DropReason::Oversized);
                }
                OversizePolicy::Truncate => {
                    record.truncate(floor_char_boundary(&record, self.max_message));
                    self.counters.record_truncated();
                }
            }
        }
        // Count before sending so the task never sees a depth below zero.
        self.counters.record_enqueued();
        match self.sender.try_send(record) {
            Ok(()) => Ok(()),
            Err(error) => {
                self.counters.record_dequeued();
                let reason = match error {
                    TrySendError::Full(_) => DropReason::QueueFull,
                    TrySendError::Closed(_) => DropReason::Shutdown,
                };
                self.counters.record_dropped(reason, 1);
                Err(reason)
            }
        }
    }

    pub fn counters(&self) -> &Arc<SinkCounters> {
        &self.counters
    }
}

/// Largest index `<= limit` that is a char boundary of `text`.
pub(crate) fn floor_char_boundary(text: &str, limit: usize) -> usize {
    if limit >= text.len() {
        return text.len();
    }
    (0..=limit)
        .rev()
        .find(|&index| text.is_char_boundary(index))
        .unwrap_or(0)
}

/// A running sink: its handle and its task.
#[derive(Debug)]
pub struct Sink {
    handle: SinkHandle,
    task: tokio::task::JoinHandle<()>,
    description: String,
}

impl Sink {
    /// Loads certificates (failing fast on a bad file) and starts the sink task. The task
    /// stops when `shutdown` is cancelled, after flushing within the deadline. Must be called
    /// inside a tokio runtime.
    pub fn spawn(
        config: &SinkConfig,
        options: RuntimeOptions,
        shutdown: CancellationToken,
    ) -> Result<Sink, SinkError> {
        let transport = match &config.transport {
            TransportConfig::Udp(endpoint) => Transport::Udp(endpoint.clone()),
            TransportConfig::Tcp(endpoint) => Transport::Tcp(endpoint.clone()),
            TransportConfig::Tls(endpoint, files) => {
                let client = TlsClient::load(endpoint, files).map_err(|source| SinkError::Tls {
                    sink: format!("{}+tls://{endpoint}", config.format),
                    source: Box::new(source),
                })?;
                Transport::Tls(endpoint.clone(), client)
            }
            TransportConfig::File(path, rotation) => Transport::File(path.clone(), *rotation),
            TransportConfig::Stdout => Transport::Stdout,
        };
        let description = format!("{}+{}", config.format, transport.describe());
        let (sender, receiver) = mpsc::channel(config.queue_capacity);
        let counters = Arc::new(SinkCounters::default());
        let worker = Worker {
            transport,
            connection: None,
            receiver,
            counters: Arc::clone(&counters),
            backoff: Backoff::new(options.backoff),
            options,
            batch: Vec::new(),
            description: description.clone(),
        };
        let task = tokio::spawn(worker.run(shutdown));
        Ok(Sink {
            handle: SinkHandle {
                sender,
                counters,
                max_message: config.max_message,
                oversize: config.oversize,
            },
            task,
            description,
        })
    }

    pub fn handle(&self) -> SinkHandle {
        self.handle.clone()
    }

    pub fn counters(&self) -> &Arc<SinkCounters> {
        &self.handle.counters
    }

    /// How many records the queue holds (the `queue` option); for the metrics.
    pub fn queue_capacity(&self) -> usize {
        self.handle.sender.max_capacity()
    }

    /// `FORMAT+TRANSPORT://ADDRESS`, without options (never holds secrets).
    pub fn description(&self) -> &str {
        &self.description
    }

    /// Waits for the task to end (after the shutdown token was cancelled).
    pub async fn join(self) {
        if let Err(error) = self.task.await {
            tracing::error!(sink = %self.description, %error, "sink task failed");
        }
    }
}

struct Worker {
    transport: Transport,
    connection: Option<Connection>,
    receiver: mpsc::Receiver<String>,
    counters: Arc<SinkCounters>,
    backoff: Backoff,
    options: RuntimeOptions,
    /// Records taken from the queue and not yet delivered or counted.
    batch: Vec<String>,
    description: String,
}

enum Step {
    Done,
    Cancelled,
}

impl Worker {
    async fn run(mut self, shutdown: CancellationToken) {
        loop {
            if self.batch.is_empty() {
                let received = tokio::select! {
                    biased;
                    () = shutdown.cancelled() => break,
                    received = self.receiver.recv() => received,
                };
                let Some(record) = received else { break };
                self.take(record);
                self.fill_batch();
            }
            if let Step::Cancelled = self.deliver(Some(&shutdown)).await {
                break;
            }
        }
        self.drain_on_shutdown().await;
    }

    fn take(&mut self, record: String) {
        self.counters.record_dequeued();
        self.batch.push(record);
    }

    fn fill_batch(&mut self) {
        let mut bytes: usize = self.batch.iter().map(String::len).sum();
        while self.batch.len() < MAX_BATCH_RECORDS && bytes < MAX_BATCH_BYTES {
            match self.receiver.try_recv() {
                Ok(record) => {
                    bytes += record.len();
                    self.take(record);
                }
                Err(_) => break,
            }
        }
    }

    /// Delivers the current batch: connects (with backoff) as needed, then writes once.
    /// The batch is left intact only when cancelled before its write started.
    async fn deliver(&mut self, shutdown: Option<&CancellationToken>) -> Step {
        loop {
            if self
                .connection
                .as_mut()
                .is_some_and(Connection::closed_by_peer)
            {
                tracing::warn!(sink = %self.description, "peer closed the connection; reconnecting");
                self.connection = None;
            }
            if self.connection.is_none() {
                match self.transport.connect().await {
                    Ok(connection) => {
                        self.counters.record_connect(true);
                        self.backoff.reset();
                        tracing::info!(sink = %self.description, "connected");
                        self.connection = Some(connection);
                    }
                    Err(error) => {
                        self.counters.record_connect(false);
                        let delay = self.backoff.next_delay();
                        tracing::warn!(sink = %self.description, %error, retry_in = ?delay, "cannot connect");
                        match shutdown {
                            Some(token) => tokio::select! {
                                () = token.cancelled() => return Step::Cancelled,
                                () = tokio::time::sleep(delay) => {}
                            },
                            None => tokio::time::sleep(delay).await,
                        }
                        continue;
                    }
                }
            }
            let Some(connection) = self.connection.as_mut() else {
                continue;
            };
            let write = tokio::time::timeout(
                self.options.write_timeout,
                connection.write_batch(&self.batch),
            );
            let result = match shutdown {
                Some(token) => tokio::select! {
                    // A write cut off mid-frame leaves the stream unusable; the batch is
                    // retried on a fresh connection during the shutdown flush.
                    () = token.cancelled() => {
                        self.connection = None;
                        return Step::Cancelled;
                    }
                    result = write => result,
                },
                None => write.await,
            };
            let count = self.batch.len() as u64;
            match result {
                Ok(Ok(())) => self.counters.record_delivered(count),
                Ok(Err(error)) => {
                    tracing::warn!(sink = %self.description, %error, records = count, "write failed; records dropped");
                    self.counters.record_dropped(DropReason::WriteError, count);
                    self.connection = None;
                }
                Err(_) => {
                    tracing::warn!(sink = %self.description, records = count, "write timed out; records dropped");
                    self.counters.record_dropped(DropReason::WriteError, count);
                    self.connection = None;
                }
            }
            self.batch.clear();
            return Step::Done;
        }
    }

    /// Stops intake, delivers what is queued until the deadline, counts the rest as
    /// `shutdown`, and closes the connection.
    async fn drain_on_shutdown(&mut self) {
        self.receiver.close();
        let deadline = Instant::now() + self.options.shutdown_deadline;
        let flushed = tokio::time::timeout_at(deadline, async {
            loop {
                if self.batch.is_empty() {
                    match self.receiver.recv().await {
                        Some(record) => {
                            self.take(record);
                            self.fill_batch();
                        }
                        None => break,
                    }
                }
                self.deliver(None).await;
            }
        })
        .await;
        if flushed.is_err() {
            let mut left = self.batch.len() as u64;
            self.batch.clear();
            while let Ok(record) = self.receiver.try_recv() {
                drop(record);
                self.counters.record_dequeued();
                left += 1;
            }
            self.counters.record_dropped(DropReason::Shutdown, left);
            tracing::warn!(sink = %self.description, records = left, "shutdown deadline passed; records dropped");
            // A connection cut off mid-write is not closed politely.
            self.connection = None;
        }
        if let Some(connection) = self.connection.take() {
            let remaining = deadline
                .saturating_duration_since(Instant::now())
                .max(Duration::from_millis(100));
            match tokio::time::timeout(remaining, connection.close()).await {
                Ok(Ok(())) => {}
                Ok(Err(error)) => tracing::warn!(sink = %self.description, %error, "close failed"),
                Err(_) => tracing::warn!(sink = %self.description, "close timed out"),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_to_the_cap_with_bounded_jitter() {
        let policy = BackoffPolicy {
            initial: Duration::from_millis(100),
            max: Duration::from_millis(800),
        };
        let mut backoff = Backoff::new(policy);
        let expected_bases = [100u64, 200, 400, 800, 800, 800];
        for base in expected_bases {
            let delay = backoff.next_delay();
            let base = Duration::from_millis(base);
            assert!(delay >= base / 2 && delay <= base, "{delay:?} vs {base:?}");
        }
        backoff.reset();
        assert!(backoff.next_delay() <= Duration::from_millis(100));
    }

    #[test]
    fn truncation_respects_utf8() {
        let text = "zoné-é";
        // "zon" is bytes 0..3, "é" bytes 3..5, "-" byte 5, "é" bytes 6..8.
        assert_eq!(floor_char_boundary(text, 3), 3);
        assert_eq!(floor_char_boundary(text, 4), 3, "inside é");
        assert_eq!(floor_char_boundary(text, 5), 5);
        assert_eq!(floor_char_boundary(text, 7), 6, "inside the second é");
        assert_eq!(floor_char_boundary(text, 100), text.len());
        assert_eq!(floor_char_boundary("éé", 1), 0);
    }
}
