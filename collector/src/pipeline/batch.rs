//! The pipeline task: takes admitted requests, batches them (when the
//! pipeline has a `batch` processor) and hands each batch to every exporter
//! queue of the pipeline. A full exporter queue makes this task wait, which
//! fills the pipeline's input queue, which makes the receiver refuse with
//! RetryInfo: backpressure instead of unbounded memory.

use std::sync::Arc;

use tokio::sync::mpsc;
use tokio::time::{Instant, sleep_until};
use tokio_util::sync::CancellationToken;

use super::Batch;
use crate::config::BatchConfig;
use crate::exporter::ExporterQueue;

pub struct PipelineTask {
    pub name: String,
    pub rx: mpsc::Receiver<Batch>,
    pub batch: Option<BatchConfig>,
    pub exporters: Vec<ExporterQueue>,
}

impl PipelineTask {
    /// Runs until `stop` fires, then takes what is already queued, flushes it
    /// to the exporters and returns (closing the exporter queues).
    pub async fn run(mut self, stop: CancellationToken) {
        let mut pending: Option<(Batch, Instant)> = None;
        let mut stopping = false;
        loop {
            let deadline = pending.as_ref().map(|(_, d)| *d);
            tokio::select! {
                biased;
                _ = stop.cancelled(), if !stopping => {
                    stopping = true;
                    self.rx.close();
                }
                msg = self.rx.recv() => match msg {
                    Some(batch) => {
                        let Some(cfg) = &self.batch else {
                            self.send(batch).await;
                            continue;
                        };
                        match &mut pending {
                            Some((p, _)) => p.append(batch),
                            None => pending = Some((batch, Instant::now() + cfg.timeout)),
                        }
                        let size = cfg.send_batch_size;
                        let max = if cfg.send_batch_max_size == 0 { usize::MAX } else { cfg.send_batch_max_size };
                        while let Some((mut p, deadline)) = pending.take_if(|(p, _)| p.items >= size) {
                            if p.items > max {
                                let head = p.split_front(max);
                                pending = Some((p, deadline));
                                self.send(head).await;
                            } else {
                                self.send(p).await;
                            }
                        }
                    }
                    None => break,
                },
                _ = async { sleep_until(deadline.expect("guarded")).await }, if deadline.is_some() => {
                    let (p, _) = pending.take().expect("deadline implies pending");
                    self.send(p).await;
                }
            }
        }
        if let Some((p, _)) = pending {
            self.send(p).await;
        }
        tracing::debug!(pipeline = %self.name, "pipeline drained");
    }

    async fn send(&self, batch: Batch) {
        if batch.data.is_empty() {
            return;
        }
        let batch = Arc::new(batch);
        for q in &self.exporters {
            q.send(batch.clone()).await;
        }
    }
}
