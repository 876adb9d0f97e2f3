//! One load run against an OTLP server: the connections, the workers on
//! them, and the report of throughput, latency percentiles and errors.
//!
//! Closed loop (`--rate 0`, the default) measures maximum throughput: every
//! worker sends its next request as soon as the previous one is answered.
//! Open loop (`--rate R`) sends R requests/s on a fixed schedule and measures
//! each latency from the moment the request was DUE, not when it was sent, so
//! a stalled server cannot hide its stall (no coordinated omission).
//!
//! Every request of a run sends the same body, encoded (and gzipped) once at
//! startup, so the load generator spends its core on the wire, not on
//! building requests.

mod connect;
mod grpc;
mod http;

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::io::Write;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bytes::{BufMut, Bytes, BytesMut};
use hdrhistogram::Histogram;
use tokio::time::Instant;

use crate::Profile;
pub use connect::ConnectError;
use connect::Connector;

/// The wire protocol of a run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    /// OTLP/gRPC: HTTP/2, `--concurrency` requests in flight on each connection.
    Grpc,
    /// OTLP/HTTP with protobuf bodies: HTTP/1.1 keep-alive, one connection per worker.
    Http,
}

/// What to send, where, and how hard.
#[derive(clap::Parser, Debug, Clone)]
#[command(name = "otlp-load", about = "Load generator for OTLP/gRPC and OTLP/HTTP collectors")]
pub struct Options {
    /// The collector, e.g. http://127.0.0.1:4317, or http://127.0.0.1:4318
    /// with --protocol http (https:// with --ca).
    #[arg(long, default_value = "http://127.0.0.1:4317")]
    pub endpoint: String,
    #[arg(long, value_enum, default_value = "grpc")]
    pub protocol: Protocol,
    #[arg(long, value_enum, default_value = "metrics10")]
    pub profile: Profile,
    /// TCP connections (HTTP/2); with --protocol http, groups of
    /// --concurrency HTTP/1.1 connections.
    #[arg(long, default_value_t = 4)]
    pub connections: usize,
    /// Requests in flight per connection (HTTP/2), or HTTP/1.1 connections
    /// per group, each with one request in flight.
    #[arg(long, default_value_t = 8)]
    pub concurrency: usize,
    /// Total requests per second on a fixed schedule; 0: as fast as answered.
    #[arg(long, default_value_t = 0.0)]
    pub rate: f64,
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    pub duration: Duration,
    /// Not measured: connections warm up, the server's allocator settles.
    #[arg(long, default_value = "2s", value_parser = humantime::parse_duration)]
    pub warmup: Duration,
    /// Send the body gzipped (compressed once, at startup).
    #[arg(long)]
    pub gzip: bool,
    /// CA that verifies the server (turns TLS 1.3 on; https:// without it
    /// verifies the server with the system's roots).
    #[arg(long)]
    pub ca: Option<PathBuf>,
    /// The name the server's certificate must carry.
    #[arg(long, default_value = "localhost")]
    pub server_name: String,
    /// Client certificate and key, for mTLS.
    #[arg(long, requires = "key")]
    pub cert: Option<PathBuf>,
    #[arg(long, requires = "cert")]
    pub key: Option<PathBuf>,
}

impl Options {
    fn workers(&self) -> usize {
        self.connections * self.concurrency
    }
}

/// What stops a run before it starts.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("bad endpoint `{endpoint}`: {reason}")]
    Endpoint { endpoint: String, reason: String },
    #[error("reading {}", path.display())]
    Pem {
        path: PathBuf,
        #[source]
        source: rustls::pki_types::pem::Error,
    },
    #[error("tls configuration")]
    Tls(#[source] rustls::Error),
    #[error("connecting to {endpoint}")]
    Connect {
        endpoint: String,
        #[source]
        source: ConnectError,
    },
    #[error("a worker stopped")]
    Worker(#[source] tokio::task::JoinError),
    #[error("merging latency histograms")]
    Histogram(#[source] hdrhistogram::AdditionError),
    #[error("a {0} byte message does not fit in a gRPC frame")]
    TooLarge(usize),
}

/// The result of a run; serialised, it is the `--json` line that
/// `bench/summarize.py` reads.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Report {
    pub profile: String,
    pub protocol: Protocol,
    pub items_per_request: usize,
    pub connections: usize,
    pub concurrency: usize,
    pub rate: f64,
    pub gzip: bool,
    pub tls: bool,
    pub workers: usize,
    pub duration_s: f64,
    /// Answered with success during the measured time.
    pub ok: u64,
    /// Failed requests by name: the gRPC code (`Unavailable`), `HTTP 429`, or
    /// `Transport` when no answer came.
    pub errors: BTreeMap<String, u64>,
    pub error_rate: f64,
    pub req_per_s: f64,
    pub items_per_s: f64,
    pub p50_ms: f64,
    pub p95_ms: f64,
    pub p99_ms: f64,
    pub p999_ms: f64,
    pub max_ms: f64,
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} over {} x{} conn x{} in flight",
            self.profile,
            self.protocol.name(),
            self.connections,
            self.concurrency
        )?;
        if self.rate > 0.0 {
            write!(f, " at {} req/s", self.rate)?;
        }
        write!(
            f,
            ": {:.0} req/s, {:.0} items/s, p50 {:.2} ms, p95 {:.2} ms, p99 {:.2} ms, p99.9 {:.2} ms, max {:.2} ms, ok {}, errors {:?}",
            self.req_per_s,
            self.items_per_s,
            self.p50_ms,
            self.p95_ms,
            self.p99_ms,
            self.p999_ms,
            self.max_ms,
            self.ok,
            self.errors
        )
    }
}

impl Protocol {
    fn name(self) -> &'static str {
        match self {
            Protocol::Grpc => "grpc",
            Protocol::Http => "http",
        }
    }
}

/// Why a request failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Failure {
    /// A gRPC status other than OK (also inferred from the HTTP status when
    /// the answer carries none, as the gRPC specification maps them).
    Grpc(tonic::Code),
    /// An OTLP/HTTP answer other than 2xx.
    Http(::http::StatusCode),
    /// No answer: the connection failed or closed.
    Transport,
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Failure::Grpc(code) => write!(f, "{code:?}"),
            Failure::Http(status) => write!(f, "HTTP {}", status.as_u16()),
            Failure::Transport => f.write_str("Transport"),
        }
    }
}

/// A worker's client: sends the run's request and waits for the answer.
enum Client {
    Grpc(grpc::Client),
    Http(http::Client),
}

impl Client {
    async fn send(&mut self) -> Result<(), Failure> {
        match self {
            Client::Grpc(c) => c.send().await,
            Client::Http(c) => c.send().await,
        }
    }
}

/// When requests are due: the run's clock, shared by all workers.
struct Schedule {
    start: Instant,
    measure_from: Instant,
    end: Instant,
    /// Open loop: the time between two requests of the whole run.
    interval: Option<Duration>,
    /// Open loop: the next free slot of the schedule.
    tickets: AtomicU64,
}

impl Schedule {
    /// When the worker's next request is due (closed loop: now; open loop:
    /// the next slot, after waiting for it), or `None` once the run is over.
    async fn next(&self) -> Option<Instant> {
        let due = match self.interval {
            Some(interval) => {
                let due = self.start + interval.mul_f64(self.tickets.fetch_add(1, Ordering::Relaxed) as f64);
                tokio::time::sleep_until(due).await;
                due
            }
            None => Instant::now(),
        };
        (due < self.end).then_some(due)
    }
}

/// One worker's measurements.
struct Stats {
    latency: Histogram<u64>,
    ok: u64,
    errors: HashMap<Failure, u64>,
}

impl Stats {
    fn new() -> Self {
        // Constant bounds (1 µs to 60 s, 3 digits) that are valid.
        let latency = Histogram::new_with_bounds(1, 60_000_000, 3).expect("valid histogram bounds");
        Self { latency, ok: 0, errors: HashMap::new() }
    }

    fn record(&mut self, due: Instant, result: Result<(), Failure>) {
        let micros = u64::try_from(due.elapsed().as_micros()).unwrap_or(u64::MAX).max(1);
        self.latency.saturating_record(micros);
        match result {
            Ok(()) => self.ok += 1,
            Err(failure) => *self.errors.entry(failure).or_default() += 1,
        }
    }

    fn merge(&mut self, other: Stats) -> Result<(), Error> {
        self.latency.add(&other.latency).map_err(Error::Histogram)?;
        self.ok += other.ok;
        for (failure, n) in other.errors {
            *self.errors.entry(failure).or_default() += n;
        }
        Ok(())
    }
}

/// Sends requests until the schedule ends; measures those due after the warm-up.
async fn drive(mut client: Client, schedule: Arc<Schedule>, mut stats: Stats) -> Stats {
    tokio::time::sleep_until(schedule.start).await;
    while let Some(due) = schedule.next().await {
        let result = client.send().await;
        if due >= schedule.measure_from {
            stats.record(due, result);
        }
    }
    stats
}

/// The encoded request as sent: gzipped (once) with `gzip`.
fn message(encoded: Vec<u8>, gzip: bool) -> Bytes {
    if !gzip {
        return Bytes::from(encoded);
    }
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    // Writing into a Vec does not fail.
    encoder.write_all(&encoded).expect("gzip into memory");
    Bytes::from(encoder.finish().expect("gzip into memory"))
}

/// A gRPC message: the 5-byte prefix (compressed flag, big-endian length)
/// and the message.
fn grpc_frame(message: &[u8], compressed: bool) -> Result<Bytes, Error> {
    let len = u32::try_from(message.len()).map_err(|_| Error::TooLarge(message.len()))?;
    let mut frame = BytesMut::with_capacity(5 + message.len());
    frame.put_u8(u8::from(compressed));
    frame.put_u32(len);
    frame.put_slice(message);
    Ok(frame.freeze())
}

/// Opens the connections, runs the workers on them, and reports what the
/// measured part of the run saw. Fails only if the run cannot start; failed
/// requests are counted in the report.
pub async fn run(options: &Options) -> Result<Report, Error> {
    let connector = Arc::new(Connector::new(options)?);
    let connect_error = |source| Error::Connect { endpoint: options.endpoint.clone(), source };
    let (request, items) = options.profile.request();
    let message = message(request.encode_to_vec(), options.gzip);
    let mut clients = Vec::with_capacity(options.workers());
    match options.protocol {
        Protocol::Grpc => {
            let body = grpc_frame(&message, options.gzip)?;
            let request = Arc::new(grpc::Request::new(&connector, options.profile.path(), options.gzip, body));
            for _ in 0..options.connections {
                let link = Arc::new(grpc::Link::open(connector.clone()).await.map_err(connect_error)?);
                for _ in 0..options.concurrency {
                    clients.push(Client::Grpc(grpc::Client::new(link.clone(), request.clone()).await));
                }
            }
        }
        Protocol::Http => {
            let request = Arc::new(http::Request::new(&connector, options.profile.http_path(), options.gzip, message));
            for _ in 0..options.workers() {
                let client = http::Client::open(connector.clone(), request.clone()).await.map_err(connect_error)?;
                clients.push(Client::Http(client));
            }
        }
    }

    let start = Instant::now() + Duration::from_millis(100);
    let measure_from = start + options.warmup;
    let schedule = Arc::new(Schedule {
        start,
        measure_from,
        end: measure_from + options.duration,
        interval: (options.rate > 0.0).then(|| Duration::from_secs_f64(1.0 / options.rate)),
        tickets: AtomicU64::new(0),
    });
    let tasks: Vec<_> = clients.into_iter().map(|c| tokio::spawn(drive(c, schedule.clone(), Stats::new()))).collect();
    let mut total = Stats::new();
    for task in tasks {
        total.merge(task.await.map_err(Error::Worker)?)?;
    }
    Ok(report(options, connector.tls(), items, total))
}

fn report(options: &Options, tls: bool, items: usize, total: Stats) -> Report {
    let secs = options.duration.as_secs_f64();
    let errors: u64 = total.errors.values().sum();
    let ms = |micros: u64| micros as f64 / 1000.0;
    let q = |quantile: f64| ms(total.latency.value_at_quantile(quantile));
    Report {
        profile: format!("{:?}", options.profile).to_lowercase(),
        protocol: options.protocol,
        items_per_request: items,
        connections: options.connections,
        concurrency: options.concurrency,
        rate: options.rate,
        gzip: options.gzip,
        tls,
        workers: options.workers(),
        duration_s: secs,
        ok: total.ok,
        errors: total.errors.iter().map(|(failure, n)| (failure.to_string(), *n)).collect(),
        error_rate: errors as f64 / (total.ok + errors).max(1) as f64,
        req_per_s: total.ok as f64 / secs,
        items_per_s: (total.ok * items as u64) as f64 / secs,
        p50_ms: q(0.50),
        p95_ms: q(0.95),
        p99_ms: q(0.99),
        p999_ms: q(0.999),
        max_ms: ms(total.latency.max()),
    }
}

#[cfg(test)]
mod tests {
    use std::io::Read;

    use clap::Parser;

    use super::*;

    #[test]
    fn the_json_report_has_the_keys_bench_summarize_reads_and_the_protocol() {
        let options = Options::try_parse_from(["otlp-load", "--protocol", "http"]).unwrap();
        let mut stats = Stats::new();
        stats.record(Instant::now(), Ok(()));
        stats.record(Instant::now(), Err(Failure::Http(::http::StatusCode::TOO_MANY_REQUESTS)));
        let json = serde_json::to_value(report(&options, false, 10, stats)).unwrap();
        let keys: Vec<&str> = json.as_object().unwrap().keys().map(String::as_str).collect();
        let mut expected = vec![
            "profile",
            "protocol",
            "items_per_request",
            "connections",
            "concurrency",
            "rate",
            "gzip",
            "tls",
            "workers",
            "duration_s",
            "ok",
            "errors",
            "error_rate",
            "req_per_s",
            "items_per_s",
            "p50_ms",
            "p95_ms",
            "p99_ms",
            "p999_ms",
            "max_ms",
        ];
        expected.sort_unstable();
        assert_eq!(keys, expected, "serde_json sorts the keys");
        assert_eq!(json["protocol"], "http");
        assert_eq!(json["profile"], "metrics10");
        assert_eq!(json["errors"], serde_json::json!({"HTTP 429": 1}));
        assert_eq!(json["error_rate"], 0.5);
    }

    #[test]
    fn failures_are_named_by_grpc_code_http_status_or_transport() {
        assert_eq!(Failure::Grpc(tonic::Code::ResourceExhausted).to_string(), "ResourceExhausted");
        assert_eq!(Failure::Http(::http::StatusCode::FORBIDDEN).to_string(), "HTTP 403");
        assert_eq!(Failure::Transport.to_string(), "Transport");
    }

    #[test]
    fn a_grpc_frame_is_the_compressed_flag_the_length_and_the_gzipped_message_once() {
        let encoded = Profile::Metrics10.request().0.encode_to_vec();
        let gzipped = message(encoded.clone(), true);
        let frame = grpc_frame(&gzipped, true).unwrap();
        assert_eq!(frame[0], 1);
        assert_eq!(u32::from_be_bytes(frame[1..5].try_into().unwrap()) as usize, gzipped.len());
        let mut inflated = Vec::new();
        flate2::read::GzDecoder::new(&frame[5..]).read_to_end(&mut inflated).unwrap();
        assert_eq!(inflated, encoded);

        let plain = grpc_frame(&message(encoded.clone(), false), false).unwrap();
        assert_eq!(plain[0], 0);
        assert_eq!(plain[1..5], u32::try_from(encoded.len()).unwrap().to_be_bytes());
        assert_eq!(plain[5..], encoded[..]);
    }
}
