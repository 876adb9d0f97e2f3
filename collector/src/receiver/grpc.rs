//! OTLP/gRPC: the three `Export` methods, served directly on hyper; every
//! other gRPC service on the listener (health, the tap) is routed to tonic.
//!
//! A unary gRPC call is one length-prefixed message each way, then a status
//! in the trailers. For a 1 KB request, tonic's general machinery (routing,
//! a streaming decoder, boxed trait futures, a streaming response encoder)
//! cost as much as everything else the collector does with it, so these
//! three methods do without it. Clients see the same protocol: statuses with
//! RetryInfo details, trailers-only errors, gzip and zstd requests.

use std::convert::Infallible;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::{Buf, Bytes, BytesMut};
use futures::future::BoxFuture;
use http::header::CONTENT_TYPE;
use http::{HeaderMap, HeaderValue, Request, Response, StatusCode};
use http_body::Frame;
use http_body_util::BodyExt;
use hyper::body::Incoming;
use tokio::sync::Semaphore;
use tokio::time::Instant;
use tonic::body::Body;
use tonic::service::Routes;
use tonic::{Code, Status};
use tonic_types::{ErrorDetails, StatusExt};
use tower::ServiceExt;

use super::{Accepted, Encoding, Inflate, Ingest, RETRY_AFTER, Rejection, Transport};
use crate::IngestSlot;
use crate::encoded::Telemetry;
use crate::pipeline::{Refusal, Ticket};
use crate::server::tls::ClientIdentity;
use crate::signal::Signal;

/// gRPC's message prefix: a compressed flag and a big-endian u32 length.
const PREFIX: usize = 5;

/// The gRPC listener's service: OTLP `Export` here, the rest to tonic.
#[derive(Debug, Clone)]
pub struct OtlpGrpc {
    ingest: IngestSlot,
    /// Requests read and decoded at once, over all connections
    /// (`max_concurrent_requests`). A request takes its permit before its
    /// body is read, so waiting requests hold no more than HTTP/2 flow
    /// control lets their clients send.
    permits: Arc<Semaphore>,
    max_message_bytes: usize,
    others: Routes,
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
    /// `others` serves every path that is not an OTLP `Export` method.
    pub fn new(ingest: IngestSlot, max_message_bytes: usize, max_concurrent_requests: usize, others: Routes) -> Self {
        Self { ingest, permits: Arc::new(Semaphore::new(max_concurrent_requests)), max_message_bytes, others }
    }

    async fn export(self, signal: Signal, request: Request<Incoming>) -> Response<Body> {
        let started = Instant::now();
        let ingest = self.ingest.load_full();
        let m = ingest.metrics(signal, Transport::Grpc);
        let mut response = match self.handle(signal, &ingest, request).await {
            Ok(accepted) => {
                m.request(Code::Ok);
                answer(accepted.response(signal, false))
            }
            Err(status) => {
                m.request(status.code());
                status.into_http()
            }
        };
        response.headers_mut().insert("grpc-accept-encoding", HeaderValue::from_static(Encoding::ACCEPTED));
        m.duration.observe(started.elapsed().as_secs_f64());
        response
    }

    async fn handle(&self, signal: Signal, ingest: &Ingest, request: Request<Incoming>) -> Result<Accepted, Status> {
        let (parts, body) = request.into_parts();
        let encoding = match parts.headers.get("grpc-encoding") {
            None => Encoding::Identity,
            Some(name) => name.to_str().ok().and_then(Encoding::from_name).ok_or_else(|| {
                Status::unimplemented(format!(
                    "grpc-encoding {name:?} is not supported; use one of {}",
                    Encoding::ACCEPTED
                ))
            })?,
        };
        let identity = parts.extensions.get::<ClientIdentity>();
        let unknown = ClientIdentity("unknown".into());
        let _permit = self.permits.acquire().await.map_err(|_| Status::unavailable("shutting down"))?;
        let (compressed, message, reading) = read_message(body, self.max_message_bytes, ingest).await?;
        let message = match (compressed, encoding) {
            (false, _) => message,
            (true, Encoding::Identity) => {
                return Err(Status::invalid_argument("a compressed message needs a grpc-encoding header"));
            }
            (true, encoding) => encoding.decode(message, self.max_message_bytes).map_err(|e| match e {
                Inflate::TooLarge => {
                    too_large(format!("more than {} bytes", self.max_message_bytes), self.max_message_bytes)
                }
                Inflate::Invalid(why) => Status::invalid_argument(why),
            })?,
        };
        let data = Telemetry::from_request(signal, &message)
            .map_err(|e| Status::invalid_argument(format!("malformed protobuf: {e}")))?;
        ingest
            .ingest(Transport::Grpc, identity.unwrap_or(&unknown), data, message.len(), reading)
            .await
            .map_err(|r| status(&r))
    }
}

impl tower::Service<Request<Incoming>> for OtlpGrpc {
    type Response = Response<Body>;
    type Error = Infallible;
    type Future = BoxFuture<'static, Result<Response<Body>, Infallible>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: Request<Incoming>) -> Self::Future {
        match Signal::from_grpc_path(request.uri().path()) {
            Some(signal) if is_grpc(request.headers()) => {
                let this = self.clone();
                Box::pin(async move { Ok(this.export(signal, request).await) })
            }
            Some(_) => Box::pin(async {
                let mut response = Status::invalid_argument("content-type must be application/grpc").into_http();
                *response.status_mut() = StatusCode::UNSUPPORTED_MEDIA_TYPE;
                Ok(response)
            }),
            None => Box::pin(self.others.clone().oneshot(request)),
        }
    }
}

/// `application/grpc`, optionally `+proto` or with parameters.
fn is_grpc(headers: &HeaderMap) -> bool {
    let Some(rest) = headers.get(CONTENT_TYPE).and_then(|v| v.as_bytes().strip_prefix(b"application/grpc")) else {
        return false;
    };
    rest.is_empty() || rest.starts_with(b"+proto") || rest.starts_with(b";")
}

/// RESOURCE_EXHAUSTED, as gRPC's reference servers answer an oversized
/// message. (tonic says OUT_OF_RANGE, which the OTLP specification lists as
/// retryable: clients would resend the message forever.)
fn too_large(size: String, limit: usize) -> Status {
    Status::resource_exhausted(format!("the message is {size}, over the {limit} byte limit"))
}

/// Reads the one message of a unary call: its prefix, exactly the length
/// the prefix gives (into an allocation of that size, checked against
/// `limit` and charged to the memory budget before anything is allocated),
/// then the end of the stream. Returns the compressed flag, the message
/// and its charge.
async fn read_message(mut body: Incoming, limit: usize, ingest: &Ingest) -> Result<(bool, Bytes, Ticket), Status> {
    let mut prefix = [0u8; PREFIX];
    let mut have = 0;
    // The compressed flag, the message as far as it has arrived, its charge.
    let mut message: Option<(bool, BytesMut, Ticket)> = None;
    let mut len = 0;
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|e| Status::cancelled(format!("reading the request: {e}")))?;
        let Ok(mut data) = frame.into_data() else { continue }; // trailers carry nothing for us
        while data.has_remaining() {
            match &mut message {
                None => {
                    let n = (PREFIX - have).min(data.len());
                    prefix[have..have + n].copy_from_slice(&data[..n]);
                    data.advance(n);
                    have += n;
                    if have < PREFIX {
                        continue;
                    }
                    let compressed = match prefix[0] {
                        0 => false,
                        1 => true,
                        flag => return Err(Status::invalid_argument(format!("invalid message flag {flag}"))),
                    };
                    len = u32::from_be_bytes([prefix[1], prefix[2], prefix[3], prefix[4]]) as usize;
                    if len > limit {
                        return Err(too_large(format!("{len} bytes"), limit));
                    }
                    let reading = ingest.reserve(len).await.map_err(|r| status(&r))?;
                    message = Some((compressed, BytesMut::with_capacity(len), reading));
                }
                Some((_, buf, _)) => {
                    let n = (len - buf.len()).min(data.len());
                    if n == 0 {
                        return Err(Status::invalid_argument("a unary call carries one message; this one has more"));
                    }
                    buf.extend_from_slice(&data[..n]);
                    data.advance(n);
                }
            }
        }
    }
    match message {
        Some((compressed, buf, reading)) if buf.len() == len => Ok((compressed, buf.freeze(), reading)),
        None if have == 0 => Err(Status::invalid_argument("the request carries no message")),
        _ => Err(Status::invalid_argument("the request ends inside its message")),
    }
}

/// A successful answer: the encoded response message, then status OK.
fn answer(message: Vec<u8>) -> Response<Body> {
    let framed = if message.is_empty() {
        Bytes::from_static(&[0; PREFIX]) // the usual answer: all accepted
    } else {
        let mut framed = Vec::with_capacity(PREFIX + message.len());
        framed.push(0);
        framed.extend_from_slice(&(message.len() as u32).to_be_bytes());
        framed.extend_from_slice(&message);
        framed.into()
    };
    let mut response = Response::new(Body::new(Answer { message: Some(framed), done: false }));
    response.headers_mut().insert(CONTENT_TYPE, HeaderValue::from_static("application/grpc"));
    response
}

/// The body of a successful unary answer: one data frame, then trailers.
struct Answer {
    message: Option<Bytes>,
    done: bool,
}

impl http_body::Body for Answer {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        let this = self.get_mut();
        if let Some(message) = this.message.take() {
            return Poll::Ready(Some(Ok(Frame::data(message))));
        }
        if this.done {
            return Poll::Ready(None);
        }
        this.done = true;
        let mut trailers = HeaderMap::with_capacity(1);
        trailers.insert("grpc-status", HeaderValue::from_static("0"));
        Poll::Ready(Some(Ok(Frame::trailers(trailers))))
    }

    fn is_end_stream(&self) -> bool {
        self.done
    }
}
