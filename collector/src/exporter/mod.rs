//! Exporters and the bounded, retrying queue in front of each.
//!
//! An exporter is built once per configured name and shared by the pipelines
//! that use it (one connection pool, one file handle); every pipeline gets its
//! own queue in front of it.

mod debug;
mod file;
pub mod otlp;

use std::sync::Arc;
use std::time::Duration;

use prometheus_client::metrics::gauge::Gauge;
use tokio::sync::{Semaphore, mpsc};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::config::{ExporterConfig, QueueConfig, RetryConfig};
use crate::encoded::Telemetry;
use crate::metrics::ExporterMetrics;
use crate::pipeline::Batch;

pub use debug::DebugExporter;
pub use file::FileExporter;
pub use otlp::OtlpExporter;

/// Why an export failed, and whether trying again may help.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{message}")]
pub struct ExportError {
    pub message: String,
    pub retryable: bool,
    /// The delay a server asked for (gRPC `RetryInfo`).
    pub retry_after: Option<Duration>,
    /// For the `send_failed` metric.
    pub reason: &'static str,
}

impl ExportError {
    pub fn permanent(reason: &'static str, message: impl Into<String>) -> Self {
        Self { message: message.into(), retryable: false, retry_after: None, reason }
    }

    pub fn retryable(reason: &'static str, message: impl Into<String>) -> Self {
        Self { message: message.into(), retryable: true, retry_after: None, reason }
    }
}

#[derive(Debug)]
pub enum Exporter {
    Otlp(OtlpExporter),
    Debug(DebugExporter),
    File(FileExporter),
    Nop,
}

impl Exporter {
    pub fn build(name: &str, config: &ExporterConfig) -> anyhow::Result<Self> {
        Ok(match config {
            ExporterConfig::Otlp(c) => Exporter::Otlp(OtlpExporter::new(c)?),
            ExporterConfig::Debug(c) => Exporter::Debug(DebugExporter::new(name, c.verbosity)),
            ExporterConfig::File(c) => Exporter::File(FileExporter::open(&c.path)?),
            ExporterConfig::Nop(_) => Exporter::Nop,
        })
    }

    pub async fn export(&self, data: &Telemetry) -> Result<(), ExportError> {
        match self {
            Exporter::Otlp(e) => e.export(data).await,
            Exporter::Debug(e) => {
                e.export(data);
                Ok(())
            }
            Exporter::File(e) => e.export(data).await,
            Exporter::Nop => Ok(()),
        }
    }

    /// Retry and queue settings: the otlp exporter's own, defaults for the rest.
    pub fn settings(config: &ExporterConfig) -> (RetryConfig, QueueConfig) {
        match config {
            ExporterConfig::Otlp(c) => (c.retry.clone(), c.queue.clone()),
            _ => (RetryConfig::default(), QueueConfig { size: 64, consumers: 1 }),
        }
    }
}

/// The sending side of one exporter queue.
#[derive(Debug)]
pub struct ExporterQueue {
    tx: mpsc::Sender<Arc<Batch>>,
    size: Gauge,
}

impl ExporterQueue {
    /// Waits for room in the queue (this is where backpressure starts).
    pub async fn send(&self, batch: Arc<Batch>) {
        self.size.inc();
        if self.tx.send(batch).await.is_err() {
            self.size.dec();
            tracing::error!("exporter queue closed before its pipeline");
        }
    }
}

pub struct QueueSettings {
    pub retry: RetryConfig,
    pub queue: QueueConfig,
    pub metrics: ExporterMetrics,
    pub size: Gauge,
    pub capacity: Gauge,
}

/// Starts the consumers of a queue in front of `exporter`. They run until the
/// queue's senders are gone and it is empty; `abort` makes retries give up
/// (the shutdown deadline has passed).
pub fn spawn_queue(
    name: String,
    exporter: Arc<Exporter>,
    settings: QueueSettings,
    abort: CancellationToken,
    tracker: &TaskTracker,
) -> ExporterQueue {
    let QueueSettings { retry, queue, metrics, size, capacity } = settings;
    let (tx, mut rx) = mpsc::channel::<Arc<Batch>>(queue.size);
    capacity.set(queue.size as i64);
    let consumers = Arc::new(Semaphore::new(queue.consumers));
    let size_gauge = size.clone();
    let inner = tracker.clone();
    tracker.spawn(async move {
        while let Some(batch) = rx.recv().await {
            size_gauge.dec();
            let Ok(permit) = consumers.clone().acquire_owned().await else { break };
            let (exporter, retry, metrics, abort, name) =
                (exporter.clone(), retry.clone(), metrics.clone(), abort.clone(), name.clone());
            inner.spawn(async move {
                deliver(&name, &exporter, &batch, &retry, &metrics, &abort).await;
                drop(permit);
            });
        }
    });
    ExporterQueue { tx, size }
}

/// Sends one batch, retrying with exponential backoff (or the server's
/// RetryInfo delay) while the error is retryable and time allows.
async fn deliver(
    name: &str,
    exporter: &Exporter,
    batch: &Batch,
    retry: &RetryConfig,
    metrics: &ExporterMetrics,
    abort: &CancellationToken,
) {
    let items = batch.items as u64;
    let started = Instant::now();
    let mut backoff = retry.initial_interval;
    loop {
        let err = match exporter.export(&batch.data).await {
            Ok(()) => {
                metrics.sent_items.inc_by(items);
                metrics.sent_bytes.inc_by(batch.data.encoded_len() as u64);
                return;
            }
            Err(e) => e,
        };
        let delay = err.retry_after.unwrap_or(backoff).min(retry.max_interval.max(err.retry_after.unwrap_or_default()));
        let out_of_time = started.elapsed() + delay > retry.max_elapsed_time;
        if !err.retryable || !retry.enabled || out_of_time || abort.is_cancelled() {
            let reason = if err.retryable && abort.is_cancelled() { "shutdown" } else { err.reason };
            tracing::error!(exporter = name, items, error = %err, reason, "dropping batch");
            metrics.failed(reason, items);
            return;
        }
        tracing::warn!(exporter = name, items, error = %err, retry_in = ?delay, "export failed, will retry");
        metrics.retries.inc();
        tokio::select! {
            _ = tokio::time::sleep(delay) => {}
            _ = abort.cancelled() => {}
        }
        backoff = (backoff * 2).min(retry.max_interval);
    }
}
