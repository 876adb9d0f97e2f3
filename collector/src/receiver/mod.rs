//! Receivers: OTLP/gRPC and OTLP/HTTP, both feeding [`Ingest`].

pub mod grpc;
pub mod http;

use std::sync::Arc;
use std::time::Duration;

use crate::metrics::{Metrics, ReceiverMetrics};
use crate::pipeline::{Pipelines, Refusal};
use crate::signal::{Payload, Signal};
use crate::tap::TapHub;
use crate::validate::validate;

/// How long a refused client is asked to wait (gRPC RetryInfo, HTTP Retry-After).
pub const RETRY_AFTER: Duration = Duration::from_secs(1);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    Grpc,
    Http,
}

/// The answer to an accepted request: how many items were dropped as invalid.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Accepted {
    pub rejected: i64,
    pub message: String,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Rejection {
    /// Nothing in the request was valid.
    #[error("{0}")]
    Invalid(String),
    #[error("{0}")]
    Refused(Refusal),
}

/// Validation, the tap and admission into the pipelines, shared by every
/// receiver.
#[derive(Debug)]
pub struct Ingest {
    pipelines: Pipelines,
    tap: Arc<TapHub>,
    metrics: [[ReceiverMetrics; 2]; 3],
}

impl Ingest {
    pub fn new(pipelines: Pipelines, tap: Arc<TapHub>, metrics: &Metrics) -> Self {
        let m = |s| [metrics.receiver(s, "grpc"), metrics.receiver(s, "http")];
        Self { pipelines, tap, metrics: [m(Signal::Traces), m(Signal::Metrics), m(Signal::Logs)] }
    }

    pub fn metrics(&self, signal: Signal, transport: Transport) -> &ReceiverMetrics {
        &self.metrics[signal.index()][transport as usize]
    }

    /// Takes one decoded request of `wire_len` bytes.
    pub fn ingest(&self, transport: Transport, mut payload: Payload, wire_len: usize) -> Result<Accepted, Rejection> {
        let m = self.metrics(payload.signal(), transport);
        let rejected = validate(&mut payload);
        if rejected.count > 0 {
            m.refused("invalid", rejected.count as u64);
        }
        if payload.is_empty() {
            return if rejected.count > 0 { Err(Rejection::Invalid(rejected.message())) } else { Ok(Accepted::default()) };
        }
        let items = payload.items() as u64;
        self.tap.publish(&payload);
        match self.pipelines.accept(payload, wire_len) {
            Ok(()) => {
                m.accepted_items.inc_by(items);
                m.accepted_bytes.inc_by(wire_len as u64);
                Ok(Accepted { rejected: rejected.count as i64, message: rejected.message() })
            }
            Err(refusal) => {
                m.refused(refusal.metric_label(), items);
                Err(Rejection::Refused(refusal))
            }
        }
    }
}
