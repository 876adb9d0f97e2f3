//! Shared helpers for the integration tests: a collector on 127.0.0.1 with
//! a file exporter, readers for what it wrote, and waits with deadlines.
#![allow(dead_code)] // each test binary uses a different part

pub mod pki;

use std::future::Future;
use std::path::{Path, PathBuf};
use std::time::Duration;

use bytes::Bytes;
use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use opentelemetry_proto::tonic::collector::trace::v1::{ExportTraceServiceRequest, ExportTraceServiceResponse};
use otlp_collector::Collector;
use otlp_collector::config::Config;
use otlp_collector::exporter::otlp::RawCodec;
use otlp_collector::signal::{Payload, Signal};
use tempfile::TempDir;
use tonic::codec::CompressionEncoding;
use tonic::transport::Channel;

pub const DEADLINE: Duration = Duration::from_secs(20);

/// A collector writing every signal to `out` as OTLP-JSON lines.
pub struct TestCollector {
    pub collector: Collector,
    pub out: PathBuf,
    pub dir: TempDir,
}

/// YAML for a collector on 127.0.0.1:0 whose pipelines batch into a file
/// exporter; `extra` is appended (and may add processors or exporters).
pub fn config_yaml(out: &Path, processors: &str, extra: &str) -> String {
    format!(
        r#"
receivers:
  otlp:
    grpc: {{endpoint: "127.0.0.1:0"}}
    http: {{endpoint: "127.0.0.1:0"}}
processors:
  batch: {{timeout: 50ms, send_batch_size: 256}}
{processors}
exporters:
  file: {{path: "{out}"}}
{extra}
service:
  telemetry: {{endpoint: "127.0.0.1:0", log_format: text}}
  limits: {{shutdown_timeout: 5s}}
  pipelines:
    traces: {{processors: [batch], exporters: [file]}}
    metrics: {{processors: [batch], exporters: [file]}}
    logs: {{processors: [batch], exporters: [file]}}
"#,
        out = out.display()
    )
}

impl TestCollector {
    pub async fn start() -> Self {
        Self::start_with(|_| {}).await
    }

    /// Starts with the default test config, changed by `edit`.
    pub async fn start_with(edit: impl FnOnce(&mut Config)) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let out = dir.path().join("out.jsonl");
        let mut config = Config::from_yaml(&config_yaml(&out, "", "")).expect("test config is valid");
        edit(&mut config);
        Self::start_config(config, out, dir).await
    }

    pub async fn start_config(config: Config, out: PathBuf, dir: TempDir) -> Self {
        if std::env::var_os("RUST_LOG").is_some() {
            otlp_collector::telemetry::init(otlp_collector::config::LogFormat::Text);
        }
        let collector = Collector::start(config).await.expect("collector starts");
        Self { collector, out, dir }
    }

    /// The receivers section this collector started with, for reloads that
    /// keep the listeners as they are.
    pub fn collector_config_receivers(&self) -> otlp_collector::config::Receivers {
        self.collector.config().receivers
    }

    pub fn grpc_url(&self) -> String {
        format!("http://{}", self.collector.grpc_addr.expect("grpc enabled"))
    }

    pub fn http_url(&self, path: &str) -> String {
        format!("http://{}{path}", self.collector.http_addr.expect("http enabled"))
    }

    pub async fn metrics_text(&self) -> String {
        let url = format!("http://{}/metrics", self.collector.telemetry_addr.expect("telemetry enabled"));
        reqwest::get(url).await.expect("GET /metrics").text().await.expect("metrics body")
    }

    /// Everything the file exporter wrote so far.
    pub fn written(&self) -> Vec<Payload> {
        read_file_export(&self.out)
    }

    /// Waits until the file holds at least `n` items of `signal`, then returns them all.
    pub async fn wait_items(&self, signal: Signal, n: usize) -> Vec<Payload> {
        let out = self.out.clone();
        wait_for(&format!("{n} {signal} items in {}", out.display()), || {
            let out = out.clone();
            async move {
                let got: Vec<Payload> = read_file_export(&out).into_iter().filter(|p| p.signal() == signal).collect();
                (got.iter().map(Payload::items).sum::<usize>() >= n).then_some(got)
            }
        })
        .await
    }
}

/// The complete lines of a file another task may be appending to: a line
/// still being written (no newline yet) is left for the next read.
pub fn complete_lines(path: &Path) -> Vec<String> {
    let Ok(text) = std::fs::read_to_string(path) else { return Vec::new() };
    let complete = text.rfind('\n').map_or("", |end| &text[..end]);
    complete.lines().map(str::to_owned).collect()
}

/// Parses the file exporter's OTLP-JSON lines.
pub fn read_file_export(path: &Path) -> Vec<Payload> {
    complete_lines(path)
        .iter()
        .filter(|l| !l.is_empty())
        .map(|line| {
            if line.starts_with(r#"{"resourceSpans""#) {
                serde_json::from_str::<ExportTraceServiceRequest>(line).expect("trace line").into()
            } else if line.starts_with(r#"{"resourceMetrics""#) {
                serde_json::from_str::<ExportMetricsServiceRequest>(line).expect("metrics line").into()
            } else {
                serde_json::from_str::<ExportLogsServiceRequest>(line).expect("logs line").into()
            }
        })
        .collect()
}

pub fn total_items(payloads: &[Payload]) -> usize {
    payloads.iter().map(Payload::items).sum()
}

/// Polls `check` every 20 ms until it returns `Some`, failing after [`DEADLINE`].
pub async fn wait_for<T, F, Fut>(what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + DEADLINE;
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(tokio::time::Instant::now() < deadline, "timed out after {DEADLINE:?} waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Sends raw bytes as the body of `signal`'s Export call, optionally compressed.
pub async fn export_raw(
    url: &str,
    signal: Signal,
    body: Vec<u8>,
    compression: Option<CompressionEncoding>,
) -> Result<ExportTraceServiceResponse, tonic::Status> {
    let channel = Channel::from_shared(url.to_owned()).expect("url").connect().await.expect("connect");
    let mut grpc = tonic::client::Grpc::new(channel);
    if let Some(c) = compression {
        grpc = grpc.send_compressed(c);
    }
    grpc.ready().await.expect("ready");
    let path = http::uri::PathAndQuery::from_static(signal.grpc_path());
    grpc.unary(tonic::Request::new(vec![Bytes::from(body)]), path, RawCodec::default()).await.map(|r| r.into_inner())
}

pub mod otlp {
    //! Small OTLP requests built by hand, with ids that tell items apart.
    use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
    use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
    use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value};
    use opentelemetry_proto::tonic::logs::v1::{LogRecord, ResourceLogs, ScopeLogs};
    use opentelemetry_proto::tonic::resource::v1::Resource;
    use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span};

    pub fn kv(k: &str, v: &str) -> KeyValue {
        KeyValue {
            key: k.into(),
            value: Some(AnyValue { value: Some(any_value::Value::StringValue(v.into())) }),
            ..Default::default()
        }
    }

    /// A span whose trace id encodes `n`, so every span of a test is distinct.
    pub fn span(n: u64, name: &str) -> Span {
        let mut trace_id = vec![0xab; 8];
        trace_id.extend_from_slice(&n.to_be_bytes());
        Span { trace_id, span_id: (n + 1).to_be_bytes().to_vec(), name: name.into(), ..Default::default() }
    }

    /// `count` spans numbered from `first`, for `service`.
    pub fn traces(service: &str, first: u64, count: u64) -> ExportTraceServiceRequest {
        ExportTraceServiceRequest {
            resource_spans: vec![ResourceSpans {
                resource: Some(Resource { attributes: vec![kv("service.name", service)], ..Default::default() }),
                scope_spans: vec![ScopeSpans {
                    spans: (first..first + count).map(|n| span(n, &format!("span-{n}"))).collect(),
                    ..Default::default()
                }],
                ..Default::default()
            }],
        }
    }

    pub fn logs(service: &str, bodies: &[&str]) -> ExportLogsServiceRequest {
        ExportLogsServiceRequest {
            resource_logs: vec![ResourceLogs {
                resource: Some(Resource { attributes: vec![kv("service.name", service)], ..Default::default() }),
                scope_logs: vec![ScopeLogs {
                    log_records: bodies
                        .iter()
                        .map(|b| LogRecord {
                            severity_text: "INFO".into(),
                            body: Some(AnyValue { value: Some(any_value::Value::StringValue((*b).into())) }),
                            ..Default::default()
                        })
                        .collect(),
                    ..Default::default()
                }],
                ..Default::default()
            }],
        }
    }
}

/// Names of every span in `payloads`, in order.
pub fn span_names(payloads: &[Payload]) -> Vec<String> {
    payloads
        .iter()
        .flat_map(|p| match p {
            Payload::Traces(v) => {
                v.iter().flat_map(|r| &r.scope_spans).flat_map(|s| &s.spans).map(|s| s.name.clone()).collect()
            }
            _ => vec![],
        })
        .collect()
}

/// Trace ids of every span in `payloads`, in order.
pub fn span_numbers(payloads: &[Payload]) -> Vec<u64> {
    payloads
        .iter()
        .flat_map(|p| match p {
            Payload::Traces(v) => v
                .iter()
                .flat_map(|r| &r.scope_spans)
                .flat_map(|s| &s.spans)
                .map(|s| u64::from_be_bytes(s.trace_id[8..16].try_into().expect("16-byte trace id")))
                .collect(),
            _ => vec![],
        })
        .collect()
}

pub async fn trace_client(
    url: &str,
) -> opentelemetry_proto::tonic::collector::trace::v1::trace_service_client::TraceServiceClient<Channel> {
    opentelemetry_proto::tonic::collector::trace::v1::trace_service_client::TraceServiceClient::connect(url.to_owned())
        .await
        .expect("connect")
}

/// One gRPC Export over a raw HTTP/2 connection, so a test can hold a
/// request's body back: its first `sent` bytes go now, the rest when the
/// returned sender is used.
pub fn export_started(
    client: &mut h2::client::SendRequest<bytes::Bytes>,
    framed: &bytes::Bytes,
    sent: usize,
) -> (h2::client::ResponseFuture, h2::SendStream<bytes::Bytes>) {
    let request = http::Request::post(otlp_collector::signal::Signal::Metrics.grpc_path())
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .body(())
        .unwrap();
    let (response, mut body) = client.send_request(request, false).unwrap();
    body.send_data(framed.slice(..sent), sent == framed.len()).unwrap();
    (response, body)
}

/// The gRPC status of an answer (trailers, or headers when trailers-only).
pub async fn grpc_status(response: h2::client::ResponseFuture) -> tonic::Status {
    let response = response.await.unwrap();
    if let Some(status) = tonic::Status::from_header_map(response.headers()) {
        return status;
    }
    let mut body = response.into_body();
    while let Some(chunk) = body.data().await {
        let _ = body.flow_control().release_capacity(chunk.unwrap().len());
    }
    let trailers = body.trailers().await.unwrap().expect("trailers");
    tonic::Status::from_header_map(&trailers).expect("a grpc-status")
}

/// `message` as one uncompressed gRPC message: a zero flag, its length, the bytes.
pub fn grpc_frame(message: &[u8]) -> Bytes {
    let mut framed = vec![0u8];
    framed.extend_from_slice(&(message.len() as u32).to_be_bytes());
    framed.extend_from_slice(message);
    Bytes::from(framed)
}
