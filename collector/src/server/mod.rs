//! The accept loop under every listener: TCP_NODELAY, per-connection
//! HTTP/2 settings, connection age limits, and graceful shutdown (GOAWAY,
//! then in-flight requests get a grace period).
//!
//! tonic's own `Server` cannot limit connection age, so connections are
//! served with hyper directly and the tonic routes are a plain tower service.
//!
//! Hostile clients are bounded here: a global connection limit, a deadline
//! for the TLS handshake (or, in plaintext, for the first byte), 64 KiB of
//! headers, and a header-read timeout on HTTP/1.

pub mod access;
pub mod ratelimit;
pub mod tls;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::time::Duration;

use http::{Request, Response};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::service::TowerToHyperService;
use std::sync::Arc;

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tonic::transport::server::TcpConnectInfo;
use tower::{Service, ServiceExt};

use self::tls::{Alpn, ClientIdentity, Tls};

/// Largest header block (HTTP/2 header list, HTTP/1 buffer) a client may send.
const MAX_HEADER_BYTES: u32 = 64 * 1024;
/// HTTP/2 stream window: what a client may send on one stream before the
/// collector reads it (the protocol's default).
const STREAM_WINDOW: u32 = 64 * 1024;
/// Streams per connection when the caller sets no limit.
const DEFAULT_STREAMS: u32 = 100;

/// The HTTP/2 connection window for `streams` concurrent streams.
///
/// gRPC requests wait for a read permit (`max_concurrent_requests`) before
/// their bodies are read, so the bodies of waiting requests sit unread in
/// the connection's window. If they could fill it, a request holding a
/// permit could never receive the rest of its own body, and with every
/// permit held that way the collector would stall for good. The window
/// therefore holds every stream's full stream window and one more: unread
/// bodies can never take all of it.
fn connection_window(streams: u32) -> u32 {
    streams.saturating_add(1).saturating_mul(STREAM_WINDOW).min(i32::MAX as u32)
}
/// Plaintext connections must send their first byte within this time.
const FIRST_BYTE_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Debug, Clone)]
pub struct ServeOptions {
    /// gRPC listeners speak only HTTP/2; HTTP listeners speak both.
    pub http2_only: bool,
    pub max_concurrent_streams: Option<u32>,
    pub keepalive: Option<(Duration, Duration)>,
    pub max_connection_age: Option<Duration>,
    /// Time in-flight requests get after GOAWAY (age limit or shutdown).
    pub grace: Duration,
}

impl ServeOptions {
    pub fn http(grace: Duration) -> Self {
        Self { http2_only: false, max_concurrent_streams: None, keepalive: None, max_connection_age: None, grace }
    }
}

/// What every listener of one collector shares.
#[derive(Debug, Clone)]
pub struct Shared {
    pub shutdown: CancellationToken,
    pub tracker: TaskTracker,
    /// Open connections (gauge) and the limit on them.
    pub connections: Gauge,
    pub slots: Arc<Semaphore>,
    /// Connections closed at once because of the limit, or a failed/slow handshake.
    pub refused: Counter,
}

/// Serves `service` on every connection of `listener` until `shutdown`; then
/// sends GOAWAY on every connection and lets in-flight requests finish
/// within the grace period. Connection tasks are tracked by `tracker`.
pub async fn serve<S, B>(
    listener: TcpListener,
    tls: Option<(Arc<Tls>, Alpn)>,
    service: S,
    options: ServeOptions,
    shared: Shared,
) where
    S: Service<Request<Incoming>, Response = Response<B>, Error = Infallible> + Clone + Send + 'static,
    S::Future: Send + 'static,
    B: http_body::Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let local = listener.local_addr().ok();
    loop {
        let (stream, peer) = tokio::select! {
            _ = shared.shutdown.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok(pair) => pair,
                Err(e) => {
                    // EMFILE and friends: back off instead of spinning.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let Ok(slot) = shared.slots.clone().try_acquire_owned() else {
            shared.refused.inc();
            tracing::warn!(%peer, "connection limit reached, closing the new connection");
            continue;
        };
        if let Err(e) = stream.set_nodelay(true) {
            tracing::debug!(error = %e, "set_nodelay failed");
        }
        let service = service.clone();
        let options = options.clone();
        let tls = tls.clone();
        let shared = shared.clone();
        shared.tracker.clone().spawn(async move {
            shared.connections.inc();
            let info = TcpConnectInfo { local_addr: local, remote_addr: Some(peer) };
            match accept(stream, peer, tls.as_ref()).await {
                Ok(Accepted::Plain(stream)) => {
                    let identity = ClientIdentity::from_addr(peer);
                    serve_connection(stream, info, identity, service, &options, &shared.shutdown).await
                }
                Ok(Accepted::Tls(stream, identity)) => {
                    serve_connection(*stream, info, identity, service, &options, &shared.shutdown).await
                }
                Err(e) => {
                    shared.refused.inc();
                    tracing::debug!(%peer, error = %e, "connection refused before serving");
                }
            }
            shared.connections.dec();
            drop(slot);
        });
    }
}

enum Accepted {
    Plain(TcpStream),
    Tls(Box<tokio_rustls::server::TlsStream<TcpStream>>, ClientIdentity),
}

/// The TLS handshake (bounded in time) and the client's identity; in
/// plaintext, a wait for the first byte.
async fn accept(stream: TcpStream, peer: SocketAddr, tls: Option<&(Arc<Tls>, Alpn)>) -> Result<Accepted, String> {
    let Some((tls, alpn)) = tls else {
        let mut byte = [0u8; 1];
        return match tokio::time::timeout(FIRST_BYTE_TIMEOUT, stream.peek(&mut byte)).await {
            Ok(Ok(n)) if n > 0 => Ok(Accepted::Plain(stream)),
            Ok(Ok(_)) => Err("closed before sending anything".into()),
            Ok(Err(e)) => Err(e.to_string()),
            Err(_) => Err("sent nothing in time".into()),
        };
    };
    let acceptor = tokio_rustls::TlsAcceptor::from(tls.server_config(*alpn));
    let stream = match tokio::time::timeout(tls.handshake_timeout(), acceptor.accept(stream)).await {
        Ok(Ok(s)) => s,
        Ok(Err(e)) => return Err(format!("TLS handshake failed: {e}")),
        Err(_) => return Err("TLS handshake timed out".into()),
    };
    let identity = stream
        .get_ref()
        .1
        .peer_certificates()
        .and_then(|certs| certs.first())
        .and_then(|leaf| ClientIdentity::from_certificate(leaf))
        .unwrap_or_else(|| ClientIdentity::from_addr(peer));
    Ok(Accepted::Tls(Box::new(stream), identity))
}

async fn serve_connection<I, S, B>(
    stream: I,
    info: TcpConnectInfo,
    identity: ClientIdentity,
    service: S,
    options: &ServeOptions,
    shutdown: &CancellationToken,
) where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    S: Service<Request<Incoming>, Response = Response<B>, Error = Infallible> + Clone + Send + 'static,
    S::Future: Send + 'static,
    B: http_body::Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let peer = info.remote_addr.map_or_else(|| "?".to_owned(), |a| a.to_string());
    let service = service.map_request(move |mut req: Request<Incoming>| {
        req.extensions_mut().insert(info.clone());
        req.extensions_mut().insert(identity.clone());
        req
    });
    let mut builder = auto::Builder::new(TokioExecutor::new());
    if options.http2_only {
        builder = builder.http2_only();
    }
    {
        let mut h2 = builder.http2();
        let streams = options.max_concurrent_streams.unwrap_or(DEFAULT_STREAMS);
        h2.timer(TokioTimer::new())
            .max_concurrent_streams(streams)
            .max_header_list_size(MAX_HEADER_BYTES)
            .initial_stream_window_size(STREAM_WINDOW)
            .initial_connection_window_size(connection_window(streams));
        if let Some((interval, timeout)) = options.keepalive {
            h2.keep_alive_interval(interval).keep_alive_timeout(timeout);
        }
    }
    if !options.http2_only {
        builder
            .http1()
            .timer(TokioTimer::new())
            .header_read_timeout(FIRST_BYTE_TIMEOUT)
            .max_buf_size(MAX_HEADER_BYTES as usize);
    }
    let conn = builder.serve_connection(TokioIo::new(stream), TowerToHyperService::new(service));
    tokio::pin!(conn);
    let age = async {
        match options.max_connection_age {
            // ±10 % jitter so connections opened together do not all close together.
            Some(age) => tokio::time::sleep(age.mul_f64(0.9 + rand::random::<f64>() * 0.2)).await,
            None => std::future::pending().await,
        }
    };
    tokio::select! {
        result = conn.as_mut() => {
            if let Err(e) = result {
                tracing::debug!(%peer, error = %e, "connection ended with an error");
            }
            return;
        }
        _ = shutdown.cancelled() => {}
        _ = age => tracing::debug!(%peer, "connection reached its maximum age"),
    }
    conn.as_mut().graceful_shutdown();
    if tokio::time::timeout(options.grace, conn).await.is_err() {
        tracing::warn!(%peer, "connection still busy after the grace period, closing it");
    }
}
