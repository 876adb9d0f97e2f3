//! The accept loop under every listener: TCP_NODELAY, per-connection
//! HTTP/2 settings, connection age limits, and graceful shutdown (GOAWAY,
//! then in-flight requests get a grace period).
//!
//! tonic's own `Server` cannot limit connection age, so connections are
//! served with hyper directly and the tonic routes are a plain tower service.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::time::Duration;

use http::{Request, Response};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::service::TowerToHyperService;
use prometheus_client::metrics::gauge::Gauge;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tonic::transport::server::TcpConnectInfo;
use tower::{Service, ServiceExt};

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

/// Serves `service` on every connection of `listener` until `shutdown`; then
/// sends GOAWAY on every connection and lets in-flight requests finish
/// within the grace period. Connection tasks are tracked by `tracker`.
pub async fn serve<S, B>(
    listener: TcpListener,
    service: S,
    options: ServeOptions,
    shutdown: CancellationToken,
    tracker: TaskTracker,
    connections: Gauge,
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
            _ = shutdown.cancelled() => break,
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
        if let Err(e) = stream.set_nodelay(true) {
            tracing::debug!(error = %e, "set_nodelay failed");
        }
        let service = service.clone();
        let options = options.clone();
        let shutdown = shutdown.clone();
        let connections = connections.clone();
        tracker.spawn(async move {
            connections.inc();
            serve_connection(stream, peer, local, service, &options, &shutdown).await;
            connections.dec();
        });
    }
}

async fn serve_connection<S, B>(
    stream: tokio::net::TcpStream,
    peer: SocketAddr,
    local: Option<SocketAddr>,
    service: S,
    options: &ServeOptions,
    shutdown: &CancellationToken,
) where
    S: Service<Request<Incoming>, Response = Response<B>, Error = Infallible> + Clone + Send + 'static,
    S::Future: Send + 'static,
    B: http_body::Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let info = TcpConnectInfo { local_addr: local, remote_addr: Some(peer) };
    let service = service.map_request(move |mut req: Request<Incoming>| {
        req.extensions_mut().insert(info.clone());
        req
    });
    let mut builder = auto::Builder::new(TokioExecutor::new());
    if options.http2_only {
        builder = builder.http2_only();
    }
    {
        let mut h2 = builder.http2();
        h2.timer(TokioTimer::new()).max_concurrent_streams(options.max_concurrent_streams);
        if let Some((interval, timeout)) = options.keepalive {
            h2.keep_alive_interval(interval).keep_alive_timeout(timeout);
        }
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
