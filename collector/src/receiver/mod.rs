//! Receivers: OTLP/gRPC and OTLP/HTTP, both feeding [`Ingest`].

pub mod grpc;
pub mod http;

use std::io::Read;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use opentelemetry_proto::tonic::collector::logs::v1::{ExportLogsPartialSuccess, ExportLogsServiceResponse};
use opentelemetry_proto::tonic::collector::metrics::v1::{ExportMetricsPartialSuccess, ExportMetricsServiceResponse};
use opentelemetry_proto::tonic::collector::trace::v1::{ExportTracePartialSuccess, ExportTraceServiceResponse};
use prost::Message;

use crate::encoded::Telemetry;
use crate::metrics::{Metrics, ReceiverMetrics};
use crate::pipeline::{Pipelines, Refusal, Ticket};
use crate::server::access::Access;
use crate::server::ratelimit::RateLimiter;
use crate::server::tls::ClientIdentity;
use crate::signal::Signal;
use crate::tap::TapHub;
use crate::validate::{Rejected, validate};

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

impl Accepted {
    /// The `Export*ServiceResponse` of `signal`, as protobuf or OTLP JSON.
    pub fn response(self, signal: Signal, json: bool) -> Vec<u8> {
        fn encode<T: Message + serde::Serialize>(json: bool, message: T) -> Vec<u8> {
            if json { serde_json::to_vec(&message).expect("a response serialises") } else { message.encode_to_vec() }
        }
        let (rejected, error_message) = (self.rejected, self.message);
        let partial = rejected > 0;
        match signal {
            // An empty response is `{}`, not `{"partialSuccess":null}`.
            _ if !partial && json => b"{}".to_vec(),
            Signal::Traces => encode(
                json,
                ExportTraceServiceResponse {
                    partial_success: partial
                        .then_some(ExportTracePartialSuccess { rejected_spans: rejected, error_message }),
                },
            ),
            Signal::Metrics => encode(
                json,
                ExportMetricsServiceResponse {
                    partial_success: partial
                        .then_some(ExportMetricsPartialSuccess { rejected_data_points: rejected, error_message }),
                },
            ),
            Signal::Logs => encode(
                json,
                ExportLogsServiceResponse {
                    partial_success: partial
                        .then_some(ExportLogsPartialSuccess { rejected_log_records: rejected, error_message }),
                },
            ),
        }
    }
}

/// A request body's compression (OTLP/HTTP `Content-Encoding`, gRPC
/// `grpc-encoding`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Encoding {
    Identity,
    Gzip,
    Zstd,
}

/// Why a compressed body was not taken.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Inflate {
    /// It inflates past the message size limit.
    TooLarge,
    Invalid(String),
}

impl Encoding {
    /// The encodings the receivers take, as gRPC lists them.
    pub const ACCEPTED: &str = "gzip,zstd";

    pub fn from_name(name: &str) -> Option<Self> {
        match name {
            "" | "identity" => Some(Encoding::Identity),
            "gzip" => Some(Encoding::Gzip),
            "zstd" => Some(Encoding::Zstd),
            _ => None,
        }
    }

    /// Decompresses `raw` to at most `limit` bytes.
    pub fn decode(self, raw: Bytes, limit: usize) -> Result<Bytes, Inflate> {
        fn inflate(reader: impl Read, limit: usize) -> Result<Bytes, Inflate> {
            let mut out = Vec::new();
            reader
                .take(limit as u64 + 1)
                .read_to_end(&mut out)
                .map_err(|e| Inflate::Invalid(format!("decompressing: {e}")))?;
            if out.len() > limit { Err(Inflate::TooLarge) } else { Ok(out.into()) }
        }
        match self {
            Encoding::Identity => Ok(raw),
            Encoding::Gzip => inflate(flate2::read::GzDecoder::new(&raw[..]), limit),
            Encoding::Zstd => {
                let decoder =
                    zstd::stream::read::Decoder::new(&raw[..]).map_err(|e| Inflate::Invalid(format!("zstd: {e}")))?;
                inflate(decoder, limit)
            }
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Rejection {
    /// Nothing in the request was valid.
    #[error("{0}")]
    Invalid(String),
    /// The client may not send this signal.
    #[error("{0}")]
    Denied(String),
    /// The client is over its rate limit; it may retry after the delay.
    #[error("client `{0}` is over its rate limit")]
    RateLimited(String, Duration),
    #[error("{0}")]
    Refused(Refusal),
}

impl From<Refusal> for Rejection {
    fn from(r: Refusal) -> Self {
        Rejection::Refused(r)
    }
}

/// Validation, the tap and admission into the pipelines, shared by every
/// receiver.
#[derive(Debug)]
pub struct Ingest {
    pipelines: Pipelines,
    tap: Arc<TapHub>,
    access: Access,
    limiter: RateLimiter,
    metrics: [[ReceiverMetrics; 2]; 3],
    shared: Arc<Metrics>,
}

impl Ingest {
    pub fn new(
        pipelines: Pipelines,
        tap: Arc<TapHub>,
        access: Access,
        limiter: RateLimiter,
        metrics: Arc<Metrics>,
    ) -> Self {
        let m = |s| [metrics.receiver(s, "grpc"), metrics.receiver(s, "http")];
        let per_signal = [m(Signal::Traces), m(Signal::Metrics), m(Signal::Logs)];
        Self { pipelines, tap, access, limiter, metrics: per_signal, shared: metrics }
    }

    fn client_refused(&self, identity: &ClientIdentity, reason: &'static str, items: usize) {
        let label = self.access.label(&identity.0, self.limiter.patterns());
        self.shared.client_refused(label, reason, items as u64);
    }

    pub fn metrics(&self, signal: Signal, transport: Transport) -> &ReceiverMetrics {
        &self.metrics[signal.index()][transport as usize]
    }

    /// Charges the memory budget for a request of `bytes` before it is read
    /// (see [`Pipelines::reserve`]); refused when the budget stays full.
    /// A request refused here is counted by its status only: its items are
    /// not known.
    pub async fn reserve(&self, bytes: usize) -> Result<Ticket, Rejection> {
        self.pipelines.reserve(bytes).await
    }

    /// Takes one request of `wire_len` bytes (encoded) from `identity`;
    /// `reading` is what [`Ingest::reserve`] charged to read it.
    pub async fn ingest(
        &self,
        transport: Transport,
        identity: &ClientIdentity,
        data: Telemetry,
        wire_len: usize,
        reading: Ticket,
    ) -> Result<Accepted, Rejection> {
        let signal = data.signal();
        let m = self.metrics(signal, transport);
        if let Err(why) = self.access.check(&identity.0, signal) {
            let items = data.items();
            m.refused("denied", items as u64);
            self.client_refused(identity, "denied", items);
            tracing::warn!(client = %identity, %signal, "denied by the access rules");
            return Err(Rejection::Denied(why));
        }
        // Encoded data passed the wire walk, which accepts only valid items;
        // decoded data is validated here, and invalid items are dropped.
        let (data, rejected) = match data {
            Telemetry::Decoded(mut payload) => {
                let rejected = validate(&mut payload);
                (Telemetry::Decoded(payload), rejected)
            }
            encoded => (encoded, Rejected::default()),
        };
        if rejected.count > 0 {
            m.refused("invalid", rejected.count as u64);
        }
        if data.is_empty() {
            return if rejected.count > 0 {
                Err(Rejection::Invalid(rejected.message()))
            } else {
                Ok(Accepted::default())
            };
        }
        let items = data.items() as u64;
        if self.limiter.is_enabled()
            && let Err(wait) = self.limiter.check(&identity.0, items as usize)
        {
            m.refused("rate_limited", items);
            self.client_refused(identity, "rate_limited", items as usize);
            tracing::debug!(client = %identity, %signal, ?wait, "rate limited");
            return Err(Rejection::RateLimited(identity.0.clone(), wait));
        }
        self.tap.publish(&data);
        match self.pipelines.accept(data, wire_len, reading).await {
            Ok(()) => {
                m.accepted_items.inc_by(items);
                m.accepted_bytes.inc_by(wire_len as u64);
                Ok(Accepted { rejected: rejected.count as i64, message: rejected.message() })
            }
            Err(rejection) => {
                let label = match &rejection {
                    Rejection::Refused(refusal) => refusal.metric_label(),
                    _ => "invalid",
                };
                m.refused(label, items);
                Err(rejection)
            }
        }
    }
}
