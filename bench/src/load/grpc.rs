//! OTLP/gRPC on the `h2` crate: one HTTP/2 connection per [`Link`], shared
//! by the workers on it, each request a single DATA frame's worth of
//! pre-built bytes; the answer's `grpc-status` decides.

use std::future::poll_fn;
use std::sync::Arc;

use ::http::header::{CONTENT_TYPE, HeaderMap, HeaderName, HeaderValue, TE};
use ::http::{Method, StatusCode, Uri};
use bytes::Bytes;
use h2::client::SendRequest;
use tokio::sync::Mutex;
use tonic::Code;

use super::Failure;
use super::connect::{ConnectError, Connector};

/// The client's per-stream receive window: a 100 KB answer never waits for
/// a WINDOW_UPDATE.
const STREAM_WINDOW: u32 = 2 << 20;
/// The client's connection receive window, for many streams at once.
const CONNECTION_WINDOW: u32 = 16 << 20;

const GRPC_STATUS: HeaderName = HeaderName::from_static("grpc-status");
const GRPC_ENCODING: HeaderName = HeaderName::from_static("grpc-encoding");

/// The request every worker of a run sends.
pub(in crate::load) struct Request {
    uri: Uri,
    headers: HeaderMap,
    /// The 5-byte gRPC prefix and the (compressed) message.
    body: Bytes,
}

impl Request {
    pub(in crate::load) fn new(connector: &Connector, path: &'static str, gzip: bool, body: Bytes) -> Self {
        let uri = Uri::builder()
            .scheme(connector.scheme.clone())
            .authority(connector.authority.clone())
            .path_and_query(path)
            .build()
            .expect("scheme, authority and a static path make a URI");
        let mut headers = HeaderMap::new();
        headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/grpc"));
        headers.insert(TE, HeaderValue::from_static("trailers"));
        if gzip {
            headers.insert(GRPC_ENCODING, HeaderValue::from_static("gzip"));
        }
        Self { uri, headers, body }
    }

    fn head(&self) -> ::http::Request<()> {
        let mut head = ::http::Request::new(());
        *head.method_mut() = Method::POST;
        *head.uri_mut() = self.uri.clone();
        *head.headers_mut() = self.headers.clone();
        head
    }
}

/// One HTTP/2 connection, replaced by the first of its workers that finds it
/// closed or failed.
pub(in crate::load) struct Link {
    connector: Arc<Connector>,
    /// The connection's generation and a handle to it.
    current: Mutex<(u64, SendRequest<Bytes>)>,
}

impl Link {
    pub(in crate::load) async fn open(connector: Arc<Connector>) -> Result<Self, ConnectError> {
        let send = handshake(&connector).await?;
        Ok(Self { connector, current: Mutex::new((0, send)) })
    }

    /// The connection after generation `seen`: a new one if `seen` is still current.
    async fn renew(&self, seen: u64) -> Result<(u64, SendRequest<Bytes>), ConnectError> {
        let mut current = self.current.lock().await;
        if current.0 == seen {
            *current = (seen + 1, handshake(&self.connector).await?);
        }
        Ok(current.clone())
    }
}

async fn handshake(connector: &Connector) -> Result<SendRequest<Bytes>, ConnectError> {
    let io = connector.open().await?;
    let (send, connection) = h2::client::Builder::new()
        .initial_window_size(STREAM_WINDOW)
        .initial_connection_window_size(CONNECTION_WINDOW)
        .handshake(io)
        .await?;
    // The connection's error, if any, also fails its open streams and the
    // next `poll_ready`: that is where it is counted.
    tokio::spawn(async move {
        let _closed = connection.await;
    });
    Ok(send)
}

/// One worker: one request at a time on its link's connection.
pub(in crate::load) struct Client {
    link: Arc<Link>,
    generation: u64,
    send: SendRequest<Bytes>,
    request: Arc<Request>,
}

impl Client {
    pub(in crate::load) async fn new(link: Arc<Link>, request: Arc<Request>) -> Self {
        let (generation, send) = link.current.lock().await.clone();
        Self { link, generation, send, request }
    }

    pub(in crate::load) async fn send(&mut self) -> Result<(), Failure> {
        self.ready().await?;
        let (response, mut body) = self.send.send_request(self.request.head(), false).map_err(failure)?;
        body.send_data(self.request.body.clone(), true).map_err(failure)?;
        let (head, mut answer) = response.await.map_err(failure)?.into_parts();
        if head.status != StatusCode::OK {
            return Err(Failure::Grpc(code_of_http(head.status)));
        }
        let trailers = if answer.is_end_stream() {
            None // trailers-only: the status is in the headers
        } else {
            while let Some(chunk) = answer.data().await {
                let chunk = chunk.map_err(failure)?;
                answer.flow_control().release_capacity(chunk.len()).map_err(failure)?;
            }
            answer.trailers().await.map_err(failure)?
        };
        let status = trailers.as_ref().and_then(|t| t.get(GRPC_STATUS)).or_else(|| head.headers.get(GRPC_STATUS));
        match status.map(|s| Code::from_bytes(s.as_bytes())) {
            Some(Code::Ok) => Ok(()),
            Some(code) => Err(Failure::Grpc(code)),
            // A 200 without a status: the gRPC specification's UNKNOWN.
            None => Err(Failure::Grpc(Code::Unknown)),
        }
    }

    /// Waits until the connection takes another stream; renews it once if it
    /// is closed, so a GOAWAY fails no request.
    async fn ready(&mut self) -> Result<(), Failure> {
        if poll_fn(|cx| self.send.poll_ready(cx)).await.is_ok() {
            return Ok(());
        }
        (self.generation, self.send) = self.link.renew(self.generation).await.map_err(|_| Failure::Transport)?;
        poll_fn(|cx| self.send.poll_ready(cx)).await.map_err(failure)
    }
}

/// A stream reset by the server maps to a gRPC code as the gRPC
/// specification says (PROTOCOL-HTTP2.md, "Errors"); anything else means
/// the connection failed.
fn failure(e: h2::Error) -> Failure {
    if !(e.is_reset() && e.is_remote()) {
        return Failure::Transport;
    }
    let code = match e.reason() {
        Some(h2::Reason::REFUSED_STREAM) => Code::Unavailable,
        Some(h2::Reason::CANCEL) => Code::Cancelled,
        Some(h2::Reason::ENHANCE_YOUR_CALM) => Code::ResourceExhausted,
        Some(h2::Reason::INADEQUATE_SECURITY) => Code::PermissionDenied,
        _ => Code::Internal,
    };
    Failure::Grpc(code)
}

/// The gRPC code of an answer that is not HTTP 200, as the gRPC
/// specification maps them (http-grpc-status-mapping.md).
fn code_of_http(status: StatusCode) -> Code {
    match status {
        StatusCode::BAD_REQUEST => Code::Internal,
        StatusCode::UNAUTHORIZED => Code::Unauthenticated,
        StatusCode::FORBIDDEN => Code::PermissionDenied,
        StatusCode::NOT_FOUND => Code::Unimplemented,
        StatusCode::TOO_MANY_REQUESTS
        | StatusCode::BAD_GATEWAY
        | StatusCode::SERVICE_UNAVAILABLE
        | StatusCode::GATEWAY_TIMEOUT => Code::Unavailable,
        _ => Code::Unknown,
    }
}
