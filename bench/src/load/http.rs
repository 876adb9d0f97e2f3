//! OTLP/HTTP (protobuf bodies) on hyper's HTTP/1.1 client: one keep-alive
//! connection per worker, reopened when the server closes it; a 2xx answer
//! is a success.

use std::sync::Arc;

use ::http::header::{CONTENT_ENCODING, CONTENT_TYPE, HOST, HeaderMap, HeaderValue};
use ::http::{Method, StatusCode, Uri};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::{self, SendRequest};
use hyper_util::rt::TokioIo;

use super::Failure;
use super::connect::{ConnectError, Connector};

/// The request every worker of a run sends.
pub(in crate::load) struct Request {
    path: Uri,
    headers: HeaderMap,
    /// The encoded (compressed) message.
    body: Bytes,
}

impl Request {
    pub(in crate::load) fn new(connector: &Connector, path: &'static str, gzip: bool, body: Bytes) -> Self {
        let mut headers = HeaderMap::new();
        let host = HeaderValue::from_str(connector.authority.as_str()).expect("an authority is a valid header value");
        headers.insert(HOST, host);
        headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/x-protobuf"));
        if gzip {
            headers.insert(CONTENT_ENCODING, HeaderValue::from_static("gzip"));
        }
        Self { path: Uri::from_static(path), headers, body }
    }

    fn build(&self) -> ::http::Request<Full<Bytes>> {
        let mut request = ::http::Request::new(Full::new(self.body.clone()));
        *request.method_mut() = Method::POST;
        *request.uri_mut() = self.path.clone();
        *request.headers_mut() = self.headers.clone();
        request
    }
}

/// One worker with its own connection.
pub(in crate::load) struct Client {
    connector: Arc<Connector>,
    request: Arc<Request>,
    /// `None` after the connection failed: the next request opens another.
    send: Option<SendRequest<Full<Bytes>>>,
}

impl Client {
    pub(in crate::load) async fn open(connector: Arc<Connector>, request: Arc<Request>) -> Result<Self, ConnectError> {
        let send = handshake(&connector).await?;
        Ok(Self { connector, request, send: Some(send) })
    }

    pub(in crate::load) async fn send(&mut self) -> Result<(), Failure> {
        let mut send = match self.send.take() {
            Some(send) => send,
            None => handshake(&self.connector).await.map_err(|_| Failure::Transport)?,
        };
        // A kept-alive connection the server closed since: open another, so
        // a server's idle timeout fails no request.
        if send.ready().await.is_err() {
            send = handshake(&self.connector).await.map_err(|_| Failure::Transport)?;
            send.ready().await.map_err(|_| Failure::Transport)?;
        }
        let status = exchange(&mut send, self.request.build()).await.map_err(|_| Failure::Transport)?;
        self.send = Some(send);
        if status.is_success() { Ok(()) } else { Err(Failure::Http(status)) }
    }
}

/// Sends the request and reads the whole answer, so the connection can
/// carry the next one.
async fn exchange(
    send: &mut SendRequest<Full<Bytes>>,
    request: ::http::Request<Full<Bytes>>,
) -> Result<StatusCode, hyper::Error> {
    let response = send.send_request(request).await?;
    let status = response.status();
    let mut body = response.into_body();
    while let Some(frame) = body.frame().await {
        frame?;
    }
    Ok(status)
}

async fn handshake(connector: &Connector) -> Result<SendRequest<Full<Bytes>>, ConnectError> {
    let io = TokioIo::new(connector.open().await?);
    let (send, connection) = http1::handshake(io).await?;
    // The connection's error, if any, also fails its request: that is where
    // it is counted.
    tokio::spawn(async move {
        let _closed = connection.await;
    });
    Ok(send)
}
