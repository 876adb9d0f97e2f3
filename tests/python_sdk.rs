//! The Python OpenTelemetry SDK (`tests/python/send_otlp.py`) sends spans,
//! metrics and logs over OTLP/gRPC and over OTLP/HTTP, and over gRPC with
//! mutual TLS; the collector's file exporter receives exactly those items.
//! Under mutual TLS the same client without a certificate is refused.
//!
//! Needs `python3` with the packages of `tests/python/requirements.txt`;
//! without them the tests fail and name the pip command.

mod common;

use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use common::pki::TlsSecret;
use common::{TestCollector, read_file_export, total_items};
use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value};
use opentelemetry_proto::tonic::metrics::v1::{metric, number_data_point};
use otlp_collector::signal::{Payload, Signal};

const SCRIPT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/python/send_otlp.py");
const PIP: &str = "pip install -r tests/python/requirements.txt";
/// Python start-up, imports and three flushes; generous for a loaded 2-core machine.
const SCRIPT_DEADLINE: Duration = Duration::from_secs(120);

const SPANS: usize = 40;
const POINTS: usize = 3;
const LOGS: usize = 25;

/// Fails (never skips) when python3 or the SDK is missing, naming the fix.
async fn require_python_sdk() {
    let modules = [
        "opentelemetry.sdk",
        "opentelemetry.exporter.otlp.proto.grpc.trace_exporter",
        "opentelemetry.exporter.otlp.proto.http.trace_exporter",
    ];
    let out = tokio::process::Command::new("python3")
        .arg("-c")
        .arg(format!("import {}", modules.join(", ")))
        .output()
        .await
        .unwrap_or_else(|e| panic!("cannot run python3 ({e}); install Python 3, then `{PIP}`"));
    assert!(
        out.status.success(),
        "the Python OpenTelemetry SDK is not installed; run `{PIP}`\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Runs send_otlp.py to completion; it exits 0 only when every export was acknowledged.
async fn send_with_python(protocol: &str, endpoint: &str, service: &str, compression: &str) {
    let out = run_python(protocol, endpoint, service, compression, &[]).await;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "send_otlp.py over {protocol} failed ({}):\n{stderr}", out.status);
}

/// Runs send_otlp.py to completion with `extra` arguments and returns what it
/// did; fails only when the SDK is missing or the script hangs.
async fn run_python(
    protocol: &str,
    endpoint: &str,
    service: &str,
    compression: &str,
    extra: &[&str],
) -> std::process::Output {
    require_python_sdk().await;
    let mut cmd = tokio::process::Command::new("python3");
    cmd.arg(SCRIPT)
        .args(["--protocol", protocol, "--endpoint", endpoint, "--service", service, "--compression", compression])
        .args(["--spans", &SPANS.to_string(), "--metric-points", &POINTS.to_string(), "--logs", &LOGS.to_string()])
        .args(extra)
        // Talk to the collector directly, whatever the machine's proxy and OTEL_* settings.
        .env("NO_PROXY", "127.0.0.1,localhost")
        .env("no_proxy", "127.0.0.1,localhost")
        .env_remove("OTEL_EXPORTER_OTLP_HEADERS")
        .env_remove("OTEL_RESOURCE_ATTRIBUTES")
        .env_remove("OTEL_SERVICE_NAME")
        .env_remove("OTEL_EXPORTER_OTLP_CERTIFICATE")
        .env_remove("OTEL_EXPORTER_OTLP_CLIENT_CERTIFICATE")
        .env_remove("OTEL_EXPORTER_OTLP_CLIENT_KEY")
        .stdin(Stdio::null())
        .kill_on_drop(true);
    let out = tokio::time::timeout(SCRIPT_DEADLINE, cmd.output())
        .await
        .unwrap_or_else(|_| panic!("send_otlp.py did not finish within {SCRIPT_DEADLINE:?}"))
        .expect("run python3 send_otlp.py");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_ne!(out.status.code(), Some(2), "the Python OpenTelemetry SDK is not installed; run `{PIP}`\n{stderr}");
    out
}

fn string_value(v: &Option<AnyValue>) -> Option<String> {
    match v.as_ref()?.value.as_ref()? {
        any_value::Value::StringValue(s) => Some(s.clone()),
        _ => None,
    }
}

fn attr(attrs: &[KeyValue], key: &str) -> Option<String> {
    attrs.iter().find(|kv| kv.key == key).and_then(|kv| string_value(&kv.value))
}

/// The service.name of every resource in `payloads`.
fn service_names(payloads: &[Payload]) -> Vec<Option<String>> {
    let name =
        |r: &Option<opentelemetry_proto::tonic::resource::v1::Resource>| attr(&r.as_ref()?.attributes, "service.name");
    payloads
        .iter()
        .flat_map(|p| match p {
            Payload::Traces(v) => v.iter().map(|r| name(&r.resource)).collect::<Vec<_>>(),
            Payload::Metrics(v) => v.iter().map(|r| name(&r.resource)).collect(),
            Payload::Logs(v) => v.iter().map(|r| name(&r.resource)).collect(),
        })
        .collect()
}

/// Checks that the file holds exactly what send_otlp.py sent as `service`.
fn assert_exactly_what_python_sent(out: &Path, service: &str) {
    let written = read_file_export(out);
    let of = |signal: Signal| written.iter().filter(|p| p.signal() == signal).cloned().collect::<Vec<_>>();
    let (traces, metrics, logs) = (of(Signal::Traces), of(Signal::Metrics), of(Signal::Logs));

    assert_eq!(total_items(&traces), SPANS, "exactly the spans sent, no loss and no duplicates");
    let mut names = common::span_names(&traces);
    names.sort();
    let mut expected: Vec<String> = (0..SPANS).map(|i| format!("py-op-{i}")).collect();
    expected.sort();
    assert_eq!(names, expected);

    assert_eq!(total_items(&metrics), POINTS, "one data point per route");
    let mut points: Vec<(String, i64)> = metrics
        .iter()
        .flat_map(|p| match p {
            Payload::Metrics(v) => v.iter().flat_map(|r| &r.scope_metrics).flat_map(|s| &s.metrics).cloned().collect(),
            _ => vec![],
        })
        .inspect(|m| assert_eq!(m.name, "py.requests"))
        .flat_map(|m| match m.data {
            Some(metric::Data::Sum(s)) => {
                assert!(s.is_monotonic, "a counter is a monotonic sum");
                s.data_points
            }
            other => panic!("a counter is a sum, got {other:?}"),
        })
        .map(|p| {
            let route = attr(&p.attributes, "route").expect("a route attribute");
            let Some(number_data_point::Value::AsInt(v)) = p.value else {
                panic!("an integer counter, got {:?}", p.value)
            };
            (route, v)
        })
        .collect();
    points.sort();
    let expected: Vec<(String, i64)> = (0..POINTS).map(|i| (format!("/r{i}"), 10 * (i as i64 + 1))).collect();
    assert_eq!(points, expected);

    assert_eq!(total_items(&logs), LOGS, "exactly the log records sent");
    let bodies: Vec<String> = logs
        .iter()
        .flat_map(|p| match p {
            Payload::Logs(v) => v.iter().flat_map(|r| &r.scope_logs).flat_map(|s| &s.log_records).cloned().collect(),
            _ => vec![],
        })
        .map(|l| {
            assert_eq!(l.severity_text, "WARN");
            string_value(&l.body).unwrap_or_else(|| panic!("a string body, got {:?}", l.body))
        })
        .collect();
    assert_eq!(bodies, (0..LOGS).map(|i| format!("py line {i}")).collect::<Vec<_>>(), "in order, none lost");

    let services = service_names(&written);
    assert!(!services.is_empty());
    assert!(services.iter().all(|s| s.as_deref() == Some(service)), "every resource is {service}: {services:?}");
}

/// Runs the script against a fresh collector, then shuts the collector down
/// (which flushes every batch) and checks the file.
async fn round_trip(protocol: &str, transport: &str, compression: &str) {
    let c = TestCollector::start().await;
    let service = format!("python-sdk-{transport}");
    let endpoint = match transport {
        "grpc" => c.grpc_url(),
        _ => c.http_url(""),
    };
    send_with_python(protocol, &endpoint, &service, compression).await;

    // What the collector says it accepted, over the transport the script used.
    let text = c.metrics_text().await;
    for (signal, n) in [("traces", SPANS), ("metrics", POINTS), ("logs", LOGS)] {
        let line = format!(r#"otlp_receiver_accepted_items_total{{signal="{signal}",transport="{transport}"}} {n}"#);
        assert!(text.contains(&line), "missing `{line}` in:\n{text}");
    }

    // The script exited 0, so the collector acknowledged everything; shutdown
    // flushes the batches, after which the file is complete.
    let TestCollector { collector, out, dir: _dir } = c;
    tokio::time::timeout(Duration::from_secs(30), collector.shutdown()).await.expect("collector shuts down");
    assert_exactly_what_python_sent(&out, &service);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_sdk_over_grpc_arrives_intact() {
    round_trip("grpc", "grpc", "gzip").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_sdk_over_http_protobuf_arrives_intact() {
    round_trip("http/protobuf", "http", "none").await;
}

/// A collector requiring mutual TLS (serving certificate and client CA in a
/// Secret-volume layout), and PEM files for the Python client.
struct MtlsSetup {
    secret: TlsSecret,
}

impl MtlsSetup {
    fn new() -> Self {
        let secret = TlsSecret::new("python-test-ca");
        let client = secret.ca.client("spiffe://test/ns/python/sa/sdk");
        std::fs::write(secret.path("client.crt"), &client.cert).unwrap();
        std::fs::write(secret.path("client.key"), &client.key).unwrap();
        Self { secret }
    }

    fn path(&self, file: &str) -> String {
        self.secret.path(file)
    }

    async fn collector(&self) -> TestCollector {
        let tls = self.secret.tls_config(true);
        TestCollector::start_with(|cfg| cfg.receivers.otlp.tls = Some(tls)).await
    }
}

fn grpc_tls_url(c: &TestCollector) -> String {
    format!("https://{}", c.collector.grpc_addr.expect("grpc enabled"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_sdk_over_grpc_with_a_client_certificate_arrives_intact() {
    let pki = MtlsSetup::new();
    let c = pki.collector().await;
    let service = "python-sdk-mtls";
    let (ca, cert, key) = (pki.path("ca.crt"), pki.path("client.crt"), pki.path("client.key"));
    // 127.0.0.1 is among the server certificate's SANs; gRPC checks it as it is.
    let out =
        run_python("grpc", &grpc_tls_url(&c), service, "gzip", &["--ca", &ca, "--cert", &cert, "--key", &key]).await;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "send_otlp.py over gRPC with mTLS failed ({}):\n{stderr}", out.status);

    let text = c.metrics_text().await;
    for (signal, n) in [("traces", SPANS), ("metrics", POINTS), ("logs", LOGS)] {
        let line = format!(r#"otlp_receiver_accepted_items_total{{signal="{signal}",transport="grpc"}} {n}"#);
        assert!(text.contains(&line), "missing `{line}` in:\n{text}");
    }
    let TestCollector { collector, out, dir: _dir } = c;
    tokio::time::timeout(Duration::from_secs(30), collector.shutdown()).await.expect("collector shuts down");
    assert_exactly_what_python_sent(&out, service);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_sdk_without_a_client_certificate_is_refused_under_mtls() {
    let pki = MtlsSetup::new();
    let c = pki.collector().await;
    let ca = pki.path("ca.crt");
    // The server is trusted, but the client has no certificate to show.
    // A short timeout: the exporter retries UNAVAILABLE until it runs out.
    let out =
        run_python("grpc", &grpc_tls_url(&c), "python-sdk-no-cert", "none", &["--ca", &ca, "--timeout", "3"]).await;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        out.status.code(),
        Some(1),
        "send_otlp.py without a client certificate must fail its exports:\n{stderr}"
    );
    assert!(stderr.contains("export failed"), "the script names the failed exports:\n{stderr}");

    let text = c.metrics_text().await;
    let accepted: Vec<&str> =
        text.lines().filter(|l| l.starts_with("otlp_receiver_accepted_items_total{") && !l.ends_with(" 0")).collect();
    assert!(accepted.is_empty(), "nothing is accepted from a client without a certificate: {accepted:?}");
    let TestCollector { collector, out, dir: _dir } = c;
    tokio::time::timeout(Duration::from_secs(30), collector.shutdown()).await.expect("collector shuts down");
    assert_eq!(total_items(&read_file_export(&out)), 0, "nothing got through without a client certificate");
}
