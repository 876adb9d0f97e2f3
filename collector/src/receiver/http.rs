//! OTLP/HTTP: `POST /v1/{traces,metrics,logs}` with protobuf or JSON bodies,
//! optionally gzip or zstd encoded, answered in the request's encoding.

use std::sync::Arc;

use axum::Router;
use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use bytes::Bytes;
use http_body_util::{BodyExt, Limited};
use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use prost::Message;
use tokio::time::Instant;

use super::{Accepted, Encoding, Inflate, Ingest, RETRY_AFTER, Rejection, Transport};
use crate::IngestSlot;
use crate::encoded::Telemetry;
use crate::pipeline::Refusal;
use crate::server::tls::ClientIdentity;
use crate::signal::Signal;

#[derive(Debug)]
struct HttpState {
    ingest: IngestSlot,
    max_message_bytes: usize,
}

/// The OTLP/HTTP routes.
pub fn router(ingest: IngestSlot, max_message_bytes: usize) -> Router {
    let state = Arc::new(HttpState { ingest, max_message_bytes });
    Router::new()
        .route("/v1/traces", post(|State(s), r| export(s, r, Signal::Traces)))
        .route("/v1/metrics", post(|State(s), r| export(s, r, Signal::Metrics)))
        .route("/v1/logs", post(|State(s), r| export(s, r, Signal::Logs)))
        .with_state(state)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Format {
    Protobuf,
    Json,
}

impl Format {
    fn content_type(self) -> &'static str {
        match self {
            Format::Protobuf => "application/x-protobuf",
            Format::Json => "application/json",
        }
    }
}

/// `google.rpc.Status`, the body of an OTLP/HTTP error.
#[derive(Clone, PartialEq, Message, serde::Serialize)]
struct RpcStatus {
    #[prost(int32, tag = "1")]
    code: i32,
    #[prost(string, tag = "2")]
    message: String,
}

fn error(format: Format, status: StatusCode, code: tonic::Code, message: String) -> Response {
    let body = RpcStatus { code: code as i32, message };
    let bytes = match format {
        Format::Protobuf => body.encode_to_vec(),
        Format::Json => serde_json::to_vec(&body).expect("a status serialises"),
    };
    (status, [(header::CONTENT_TYPE, format.content_type())], bytes).into_response()
}

async fn export(state: Arc<HttpState>, request: axum::extract::Request, signal: Signal) -> Response {
    let identity = request.extensions().get::<ClientIdentity>().cloned().unwrap_or(ClientIdentity("unknown".into()));
    let (parts, body) = request.into_parts();
    let headers = parts.headers;
    let started = Instant::now();
    let ingest = state.ingest.load_full();
    let m = ingest.metrics(signal, Transport::Http);
    let content_type = headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or("");
    let format = match content_type.split(';').next().unwrap_or("").trim() {
        "application/x-protobuf" | "application/protobuf" => Format::Protobuf,
        "application/json" => Format::Json,
        other => {
            m.request(tonic::Code::InvalidArgument);
            return error(
                Format::Json,
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                tonic::Code::InvalidArgument,
                format!("unsupported content type `{other}`: use application/x-protobuf or application/json"),
            );
        }
    };
    let (code, response) = match handle(&state, &ingest, &identity, &headers, body, signal, format).await {
        Ok(response) => (tonic::Code::Ok, response),
        Err((status, code, message, retry)) => {
            let mut response = error(format, status, code, message);
            if let Some(after) = retry {
                // Retry-After is in whole seconds: round up.
                let secs = HeaderValue::from(after.as_secs() + u64::from(after.subsec_nanos() > 0));
                response.headers_mut().insert(header::RETRY_AFTER, secs);
            }
            (code, response)
        }
    };
    m.request(code);
    m.duration.observe(started.elapsed().as_secs_f64());
    response
}

/// An error answer: HTTP status, the gRPC code inside the body, a message,
/// and the delay for `Retry-After` when a retry may succeed.
type Failure = (StatusCode, tonic::Code, String, Option<std::time::Duration>);

fn invalid(message: String) -> Failure {
    (StatusCode::BAD_REQUEST, tonic::Code::InvalidArgument, message, None)
}

async fn handle(
    state: &HttpState,
    ingest: &Ingest,
    identity: &ClientIdentity,
    headers: &HeaderMap,
    body: Body,
    signal: Signal,
    format: Format,
) -> Result<Response, Failure> {
    let limit = state.max_message_bytes;
    let too_large = || {
        (
            StatusCode::PAYLOAD_TOO_LARGE,
            tonic::Code::ResourceExhausted,
            format!("request body is larger than the {limit} byte limit"),
            None,
        )
    };
    // Charge the memory budget before reading: the announced length, or
    // the limit for a body of unknown length until it has been read.
    let announced = headers.get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()?.parse::<usize>().ok());
    if announced.is_some_and(|len| len > limit) {
        return Err(too_large());
    }
    let mut reading = ingest.reserve(announced.unwrap_or(limit)).await.map_err(rejected)?;
    let raw = Limited::new(body, limit).collect().await.map_err(|e| {
        if e.is::<http_body_util::LengthLimitError>() { too_large() } else { invalid(format!("reading body: {e}")) }
    })?;
    let raw = raw.to_bytes();
    drop(reading.split(reading.bytes().saturating_sub(raw.len())));
    let encoding = headers.get(header::CONTENT_ENCODING).and_then(|v| v.to_str().ok()).unwrap_or("identity");
    let Some(encoding) = Encoding::from_name(encoding) else {
        return Err(invalid(format!("unsupported content encoding `{encoding}`: use gzip or zstd")));
    };
    let body = encoding.decode(raw, limit).map_err(|e| match e {
        Inflate::TooLarge => too_large(),
        Inflate::Invalid(why) => invalid(why),
    })?;
    let data = decode(signal, format, &body).map_err(invalid)?;
    let wire_len = match format {
        Format::Protobuf => body.len(),
        Format::Json => data.encoded_len(),
    };
    let accepted = ingest.ingest(Transport::Http, identity, data, wire_len, reading).await.map_err(rejected)?;
    Ok(respond(signal, format, accepted))
}

/// The HTTP answer to a rejected request.
fn rejected(r: Rejection) -> Failure {
    match r {
        Rejection::Invalid(msg) => invalid(msg),
        Rejection::Denied(msg) => (StatusCode::FORBIDDEN, tonic::Code::PermissionDenied, msg, None),
        Rejection::RateLimited(_, wait) => {
            (StatusCode::TOO_MANY_REQUESTS, tonic::Code::ResourceExhausted, r.to_string(), Some(wait))
        }
        Rejection::Refused(Refusal::ShuttingDown) => (
            StatusCode::SERVICE_UNAVAILABLE,
            tonic::Code::Unavailable,
            Refusal::ShuttingDown.to_string(),
            Some(RETRY_AFTER),
        ),
        Rejection::Refused(r) => {
            (StatusCode::TOO_MANY_REQUESTS, tonic::Code::ResourceExhausted, r.to_string(), Some(RETRY_AFTER))
        }
    }
}

fn decode(signal: Signal, format: Format, body: &Bytes) -> Result<Telemetry, String> {
    fn json<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<T, String> {
        serde_json::from_slice(body).map_err(|e| format!("malformed OTLP JSON: {e}"))
    }
    match format {
        Format::Protobuf => Telemetry::from_request(signal, body).map_err(|e| format!("malformed protobuf: {e}")),
        Format::Json => Ok(Telemetry::Decoded(match signal {
            Signal::Traces => json::<ExportTraceServiceRequest>(body)?.into(),
            Signal::Metrics => json::<ExportMetricsServiceRequest>(body)?.into(),
            Signal::Logs => json::<ExportLogsServiceRequest>(body)?.into(),
        })),
    }
}

fn respond(signal: Signal, format: Format, a: Accepted) -> Response {
    let bytes = a.response(signal, format == Format::Json);
    (StatusCode::OK, [(header::CONTENT_TYPE, format.content_type())], Body::from(bytes)).into_response()
}
