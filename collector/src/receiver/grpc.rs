//! OTLP/gRPC: the three collector services on one tonic router.

use std::sync::Arc;
use std::time::Duration;

use tonic::server::NamedService;
use tower::limit::ConcurrencyLimit;

use bytes::Bytes;
use opentelemetry_proto::tonic::collector::logs::v1::{ExportLogsPartialSuccess, ExportLogsServiceResponse};
use opentelemetry_proto::tonic::collector::metrics::v1::{ExportMetricsPartialSuccess, ExportMetricsServiceResponse};
use opentelemetry_proto::tonic::collector::trace::v1::{ExportTracePartialSuccess, ExportTraceServiceResponse};
use otlp_fleet::otlp::logs::logs_service_server::{LogsService, LogsServiceServer};
use otlp_fleet::otlp::metrics::metrics_service_server::{MetricsService, MetricsServiceServer};
use otlp_fleet::otlp::trace::trace_service_server::{TraceService, TraceServiceServer};
use tokio::time::Instant;
use tonic::codec::CompressionEncoding;
use tonic::{Code, Request, Response, Status};
use tonic_types::{ErrorDetails, StatusExt};

use super::{Accepted, RETRY_AFTER, Rejection, Transport};
use crate::IngestSlot;
use crate::encoded::Telemetry;
use crate::pipeline::Refusal;
use crate::server::tls::ClientIdentity;
use crate::signal::Signal;

/// The three OTLP services, each behind the shared read-permit limit.
pub type Services = (
    Bounded<TraceServiceServer<OtlpGrpc>>,
    Bounded<MetricsServiceServer<OtlpGrpc>>,
    Bounded<LogsServiceServer<OtlpGrpc>>,
);

#[derive(Debug, Clone)]
pub struct OtlpGrpc {
    ingest: IngestSlot,
}

/// The gRPC status for a rejected request. Refusals carry a RetryInfo: OTLP
/// clients retry RESOURCE_EXHAUSTED only when it has one.
pub fn status(rejection: &Rejection) -> Status {
    match rejection {
        Rejection::Invalid(msg) => Status::invalid_argument(msg.clone()),
        Rejection::Denied(msg) => Status::permission_denied(msg.clone()),
        Rejection::RateLimited(_, wait) => {
            // Round up to whole milliseconds so a client never retries too early.
            let wait = Duration::from_millis(wait.as_millis() as u64 + 1);
            Status::with_error_details(
                Code::ResourceExhausted,
                rejection.to_string(),
                ErrorDetails::with_retry_info(Some(wait)),
            )
        }
        Rejection::Refused(r) => {
            let code = if *r == Refusal::ShuttingDown { Code::Unavailable } else { Code::ResourceExhausted };
            Status::with_error_details(
                code,
                format!("{r}, retry later"),
                ErrorDetails::with_retry_info(Some(RETRY_AFTER)),
            )
        }
    }
}

impl OtlpGrpc {
    pub fn new(ingest: IngestSlot) -> Self {
        Self { ingest }
    }

    async fn handle(&self, signal: Signal, request: Request<Bytes>) -> Result<Accepted, Status> {
        let started = Instant::now();
        let ingest = self.ingest.load();
        let m = ingest.metrics(signal, Transport::Grpc);
        let identity = request.extensions().get::<ClientIdentity>().cloned().unwrap_or_else(|| {
            ClientIdentity(request.remote_addr().map_or_else(|| "unknown".to_owned(), |a| format!("ip:{}", a.ip())))
        });
        let bytes = request.into_inner();
        let result = match Telemetry::from_request(signal, &bytes) {
            Ok(data) => ingest.ingest(Transport::Grpc, &identity, data, bytes.len()).await.map_err(|r| status(&r)),
            Err(e) => Err(Status::invalid_argument(format!("malformed protobuf: {e}"))),
        };
        m.request(result.as_ref().map_or_else(|s| s.code(), |_| Code::Ok));
        m.duration.observe(started.elapsed().as_secs_f64());
        result
    }

    /// The three services, with compression, the decompressed-size limit, and
    /// a limit on requests read and decoded at once (shared by the three).
    pub fn services(self, max_message_bytes: usize, max_concurrent_requests: usize) -> Services {
        let permits = Arc::new(tokio::sync::Semaphore::new(max_concurrent_requests));
        macro_rules! configure {
            ($server:expr) => {
                $server
                    .accept_compressed(CompressionEncoding::Gzip)
                    .accept_compressed(CompressionEncoding::Zstd)
                    .send_compressed(CompressionEncoding::Gzip)
                    .send_compressed(CompressionEncoding::Zstd)
                    .max_decoding_message_size(max_message_bytes)
            };
        }
        (
            Bounded::new(configure!(TraceServiceServer::new(self.clone())), permits.clone()),
            Bounded::new(configure!(MetricsServiceServer::new(self.clone())), permits.clone()),
            Bounded::new(configure!(LogsServiceServer::new(self)), permits.clone()),
        )
    }
}

/// A service that runs only while it holds a permit of a shared semaphore:
/// tower's `ConcurrencyLimit`, keeping the gRPC service name for routing.
/// The permit is taken before the request body is read, so waiting requests
/// hold no more than HTTP/2 flow control lets the client send.
#[derive(Debug, Clone)]
pub struct Bounded<S>(ConcurrencyLimit<S>);

impl<S> Bounded<S> {
    fn new(inner: S, permits: Arc<tokio::sync::Semaphore>) -> Self {
        Self(ConcurrencyLimit::with_semaphore(inner, permits))
    }
}

impl<S: NamedService> NamedService for Bounded<S> {
    const NAME: &'static str = S::NAME;
}

impl<S, R> tower::Service<R> for Bounded<S>
where
    ConcurrencyLimit<S>: tower::Service<R>,
{
    type Response = <ConcurrencyLimit<S> as tower::Service<R>>::Response;
    type Error = <ConcurrencyLimit<S> as tower::Service<R>>::Error;
    type Future = <ConcurrencyLimit<S> as tower::Service<R>>::Future;

    fn poll_ready(&mut self, cx: &mut std::task::Context<'_>) -> std::task::Poll<Result<(), Self::Error>> {
        self.0.poll_ready(cx)
    }

    fn call(&mut self, request: R) -> Self::Future {
        self.0.call(request)
    }
}

#[tonic::async_trait]
impl TraceService for OtlpGrpc {
    async fn export(&self, request: Request<Bytes>) -> Result<Response<ExportTraceServiceResponse>, Status> {
        let a = self.handle(Signal::Traces, request).await?;
        Ok(Response::new(ExportTraceServiceResponse {
            partial_success: (a.rejected > 0)
                .then_some(ExportTracePartialSuccess { rejected_spans: a.rejected, error_message: a.message }),
        }))
    }
}

#[tonic::async_trait]
impl MetricsService for OtlpGrpc {
    async fn export(&self, request: Request<Bytes>) -> Result<Response<ExportMetricsServiceResponse>, Status> {
        let a = self.handle(Signal::Metrics, request).await?;
        Ok(Response::new(ExportMetricsServiceResponse {
            partial_success: (a.rejected > 0)
                .then_some(ExportMetricsPartialSuccess { rejected_data_points: a.rejected, error_message: a.message }),
        }))
    }
}

#[tonic::async_trait]
impl LogsService for OtlpGrpc {
    async fn export(&self, request: Request<Bytes>) -> Result<Response<ExportLogsServiceResponse>, Status> {
        let a = self.handle(Signal::Logs, request).await?;
        Ok(Response::new(ExportLogsServiceResponse {
            partial_success: (a.rejected > 0)
                .then_some(ExportLogsPartialSuccess { rejected_log_records: a.rejected, error_message: a.message }),
        }))
    }
}
