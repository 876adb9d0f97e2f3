//! `otlp-load`: drives an OTLP/gRPC server with deterministic payloads and
//! reports throughput, latency percentiles (HDR histogram) and errors by
//! gRPC status.
//!
//! Closed loop (`--rate 0`, the default) measures maximum throughput: every
//! worker sends its next request as soon as the previous one is answered.
//! Open loop (`--rate R`) sends R requests/s on a fixed schedule and measures
//! each latency from the moment the request was DUE, not when it was sent, so
//! a stalled server cannot hide its stall (no coordinated omission).
//! A gRPC error is an HTTP 200 with a non-zero `grpc-status`: it counts as an
//! error, by code.
#![forbid(unsafe_code)]

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use anyhow::Context;
use bytes::{BufMut, Bytes};
use clap::Parser;
use hdrhistogram::Histogram;
use tokio::time::Instant;
use tonic::codec::{Codec, CompressionEncoding, DecodeBuf, Decoder, EncodeBuf, Encoder};
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity};

use otlp_bench::Profile;

#[derive(Parser, Debug)]
#[command(name = "otlp-load", about = "Load generator for OTLP/gRPC collectors")]
struct Args {
    /// The collector, e.g. http://127.0.0.1:4317 (https:// with --ca).
    #[arg(long, default_value = "http://127.0.0.1:4317")]
    endpoint: String,
    #[arg(long, value_enum, default_value = "metrics10")]
    profile: Profile,
    /// TCP (HTTP/2) connections.
    #[arg(long, default_value_t = 4)]
    connections: usize,
    /// Requests in flight per connection.
    #[arg(long, default_value_t = 8)]
    concurrency: usize,
    /// Total requests per second on a fixed schedule; 0: as fast as answered.
    #[arg(long, default_value_t = 0.0)]
    rate: f64,
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    duration: Duration,
    /// Not measured: connections warm up, the server's allocator settles.
    #[arg(long, default_value = "2s", value_parser = humantime::parse_duration)]
    warmup: Duration,
    #[arg(long)]
    gzip: bool,
    /// CA that verifies the server (turns TLS on).
    #[arg(long)]
    ca: Option<PathBuf>,
    /// The name the server's certificate must carry.
    #[arg(long, default_value = "localhost")]
    server_name: String,
    /// Client certificate and key, for mTLS.
    #[arg(long, requires = "key")]
    cert: Option<PathBuf>,
    #[arg(long, requires = "cert")]
    key: Option<PathBuf>,
    /// Print one JSON object instead of the human summary.
    #[arg(long)]
    json: bool,
}

/// Sends pre-encoded request bytes; ignores the response body.
#[derive(Clone, Default)]
struct RawCodec;

impl Codec for RawCodec {
    type Encode = Bytes;
    type Decode = ();
    type Encoder = RawCodec;
    type Decoder = RawCodec;
    fn encoder(&mut self) -> Self {
        RawCodec
    }
    fn decoder(&mut self) -> Self {
        RawCodec
    }
}

impl Encoder for RawCodec {
    type Item = Bytes;
    type Error = tonic::Status;
    fn encode(&mut self, item: Bytes, dst: &mut EncodeBuf<'_>) -> Result<(), tonic::Status> {
        dst.put(item);
        Ok(())
    }
}

impl Decoder for RawCodec {
    type Item = ();
    type Error = tonic::Status;
    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<()>, tonic::Status> {
        use bytes::Buf;
        src.advance(src.remaining());
        Ok(Some(()))
    }
}

struct Stats {
    latency: Histogram<u64>,
    ok: u64,
    errors: BTreeMap<String, u64>,
}

impl Stats {
    fn new() -> Self {
        Self {
            latency: Histogram::new_with_bounds(1, 60_000_000, 3).expect("valid bounds"),
            ok: 0,
            errors: BTreeMap::new(),
        }
    }
}

async fn connect(args: &Args) -> anyhow::Result<Channel> {
    let mut endpoint = Endpoint::from_shared(args.endpoint.clone())?.tcp_nodelay(true);
    if let Some(ca) = &args.ca {
        let mut tls = ClientTlsConfig::new()
            .ca_certificate(Certificate::from_pem(std::fs::read(ca)?))
            .domain_name(args.server_name.clone());
        if let (Some(cert), Some(key)) = (&args.cert, &args.key) {
            tls = tls.identity(Identity::from_pem(std::fs::read(cert)?, std::fs::read(key)?));
        }
        endpoint = endpoint.tls_config(tls)?;
    }
    endpoint.connect().await.with_context(|| format!("connecting to {}", args.endpoint))
}

fn main() -> anyhow::Result<()> {
    let mut runtime = tokio::runtime::Builder::new_multi_thread();
    // As in the collector (see its main.rs): without the LIFO slot, a
    // connection's task runs after the other ready requests and writes them
    // together instead of one write per request.
    #[cfg(tokio_unstable)]
    runtime.disable_lifo_slot();
    runtime.enable_all().build()?.block_on(run(Args::parse()))
}

async fn run(args: Args) -> anyhow::Result<()> {
    let args = Arc::new(args);
    let (body, items) = args.profile.request();
    let body = Bytes::from(body.encode_to_vec());
    let path = http::uri::PathAndQuery::from_static(args.profile.path());
    let workers = args.connections * args.concurrency;
    let interval = (args.rate > 0.0).then(|| Duration::from_secs_f64(1.0 / args.rate));
    let start = Instant::now() + Duration::from_millis(100);
    let measure_from = start + args.warmup;
    let end = measure_from + args.duration;
    let tickets = Arc::new(AtomicU64::new(0));

    let mut tasks = Vec::new();
    for c in 0..args.connections {
        let channel = connect(&args).await?;
        for _ in 0..args.concurrency {
            let mut grpc = tonic::client::Grpc::new(channel.clone());
            if args.gzip {
                grpc = grpc.send_compressed(CompressionEncoding::Gzip);
            }
            let (body, path, tickets) = (body.clone(), path.clone(), tickets.clone());
            tasks.push(tokio::spawn(async move {
                let mut stats = Stats::new();
                tokio::time::sleep_until(start).await;
                loop {
                    // When the request is due: now (closed loop) or its slot in the schedule.
                    let due = match interval {
                        Some(i) => {
                            let due = start + i.mul_f64(tickets.fetch_add(1, Ordering::Relaxed) as f64);
                            tokio::time::sleep_until(due).await;
                            due
                        }
                        None => Instant::now(),
                    };
                    if due >= end {
                        break;
                    }
                    let result = async {
                        grpc.ready().await.map_err(|e| tonic::Status::unavailable(e.to_string()))?;
                        grpc.unary(tonic::Request::new(body.clone()), path.clone(), RawCodec).await
                    }
                    .await;
                    if due < measure_from {
                        continue;
                    }
                    let micros = due.elapsed().as_micros().max(1) as u64;
                    stats.latency.saturating_record(micros);
                    match result {
                        Ok(_) => stats.ok += 1,
                        Err(s) => *stats.errors.entry(format!("{:?}", s.code())).or_default() += 1,
                    }
                }
                stats
            }));
        }
        let _ = c;
    }
    let mut total = Stats::new();
    for t in tasks {
        let s = t.await?;
        total.latency.add(&s.latency)?;
        total.ok += s.ok;
        for (k, v) in s.errors {
            *total.errors.entry(k).or_default() += v;
        }
    }
    let secs = args.duration.as_secs_f64();
    let errors: u64 = total.errors.values().sum();
    let q = |p: f64| total.latency.value_at_quantile(p) as f64 / 1000.0;
    let report = serde_json::json!({
        "profile": format!("{:?}", args.profile).to_lowercase(),
        "items_per_request": items,
        "connections": args.connections,
        "concurrency": args.concurrency,
        "rate": args.rate,
        "gzip": args.gzip,
        "tls": args.ca.is_some(),
        "workers": workers,
        "duration_s": secs,
        "ok": total.ok,
        "errors": total.errors,
        "error_rate": errors as f64 / (total.ok + errors).max(1) as f64,
        "req_per_s": total.ok as f64 / secs,
        "items_per_s": (total.ok * items as u64) as f64 / secs,
        "p50_ms": q(0.50), "p95_ms": q(0.95), "p99_ms": q(0.99), "p999_ms": q(0.999),
        "max_ms": total.latency.max() as f64 / 1000.0,
    });
    if args.json {
        println!("{report}");
    } else {
        println!(
            "{} x{} conn x{} in flight{}: {:.0} req/s, {:.0} items/s, p50 {:.2} ms, p95 {:.2} ms, p99 {:.2} ms, p99.9 {:.2} ms, max {:.2} ms, ok {}, errors {:?}",
            report["profile"].as_str().unwrap_or(""),
            args.connections,
            args.concurrency,
            if args.rate > 0.0 { format!(" at {} req/s", args.rate) } else { String::new() },
            report["req_per_s"].as_f64().unwrap_or(0.0),
            report["items_per_s"].as_f64().unwrap_or(0.0),
            q(0.5),
            q(0.95),
            q(0.99),
            q(0.999),
            total.latency.max() as f64 / 1000.0,
            total.ok,
            total.errors
        );
    }
    Ok(())
}
