//! The benchmark's load generator (`otlp-load`, as a library) against the
//! collector in-process: over OTLP/gRPC and OTLP/HTTP, plain, gzipped and
//! over mTLS, every request it counts as ok the collector counted as
//! accepted, and refusals are reported under their status name.

mod common;

use clap::Parser;
use common::TestCollector;
use common::pki::TlsSecret;
use otlp_bench::load::{Options, Report, run};
use otlp_collector::config::{
    AccessConfig, AccessDefault, AccessRule, ExporterConfig, NopExporterConfig, RateLimit, RateLimitConfig,
};
use otlp_collector::signal::Signal;

/// The test collector with a nop exporter: nothing downstream slows the
/// receivers, so a closed loop never meets backpressure.
fn nop_exporter(cfg: &mut otlp_collector::config::Config) {
    cfg.exporters = [("nop".to_owned(), ExporterConfig::Nop(NopExporterConfig {}))].into();
    for p in cfg.service.pipelines.values_mut() {
        p.exporters = vec!["nop".into()];
    }
}

/// A short closed-loop run with everything measured, as a user would start it.
async fn load(endpoint: &str, args: &[&str]) -> Report {
    let base = ["otlp-load", "--endpoint", endpoint, "--duration", "300ms", "--warmup", "0s"];
    let options = Options::try_parse_from(base.iter().chain(args)).expect("valid otlp-load arguments");
    run(&options).await.expect("the run starts")
}

/// `otlp_receiver_accepted_items_total` of one signal and transport.
async fn accepted(c: &TestCollector, signal: Signal, transport: &str) -> u64 {
    let series = format!("otlp_receiver_accepted_items_total{{signal=\"{signal}\",transport=\"{transport}\"}} ");
    let text = c.metrics_text().await;
    text.lines().find_map(|l| l.strip_prefix(&series)).map_or(0, |v| v.trim().parse().expect("a counter"))
}

fn grpc_endpoint(c: &TestCollector, scheme: &str) -> String {
    format!("{scheme}://{}", c.collector.grpc_addr.expect("grpc enabled"))
}

fn http_endpoint(c: &TestCollector, scheme: &str) -> String {
    format!("{scheme}://{}", c.collector.http_addr.expect("http enabled"))
}

/// Runs `args` against `endpoint` and checks that the collector accepted
/// exactly what the report counts as ok, with no errors.
async fn assert_all_accepted(c: &TestCollector, endpoint: &str, args: &[&str], signal: Signal, transport: &str) {
    let before = accepted(c, signal, transport).await;
    let report = load(endpoint, args).await;
    assert!(report.ok > 0, "{args:?}: {report}");
    assert!(report.errors.is_empty(), "{args:?}: {report}");
    let after = accepted(c, signal, transport).await;
    assert_eq!(after - before, report.ok * report.items_per_request as u64, "{args:?}: {report}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn over_grpc_every_ok_request_is_accepted_plain_and_gzipped() {
    let c = TestCollector::start_with(nop_exporter).await;
    let endpoint = grpc_endpoint(&c, "http");
    // 100 KB requests: more than the collector's 64 KiB HTTP/2 stream window.
    let plain = ["--profile", "metrics1000", "--connections", "1", "--concurrency", "4"];
    assert_all_accepted(&c, &endpoint, &plain, Signal::Metrics, "grpc").await;
    let gzip = ["--profile", "spans100", "--connections", "2", "--concurrency", "4", "--gzip"];
    assert_all_accepted(&c, &endpoint, &gzip, Signal::Traces, "grpc").await;
    c.collector.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn over_http_every_ok_request_is_accepted_plain_and_gzipped() {
    let c = TestCollector::start_with(nop_exporter).await;
    let endpoint = http_endpoint(&c, "http");
    let plain = ["--protocol", "http", "--profile", "spans100", "--connections", "2", "--concurrency", "2"];
    assert_all_accepted(&c, &endpoint, &plain, Signal::Traces, "http").await;
    let gzip = ["--protocol", "http", "--profile", "logs100", "--connections", "1", "--concurrency", "3", "--gzip"];
    assert_all_accepted(&c, &endpoint, &gzip, Signal::Logs, "http").await;
    c.collector.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn over_mtls_a_signal_the_acl_denies_is_reported_as_permission_denied() {
    let secret = TlsSecret::new("test-ca");
    let tls = secret.tls_config(true);
    let c = TestCollector::start_with(|cfg| {
        nop_exporter(cfg);
        cfg.receivers.otlp.tls = Some(tls);
        cfg.service.access = AccessConfig {
            default: AccessDefault::Deny,
            rules: vec![AccessRule {
                identities: vec!["spiffe://test/ns/shop/*".into()],
                signals: vec![Signal::Traces],
            }],
        };
    })
    .await;
    let me = secret.ca.client("spiffe://test/ns/shop/sa/checkout");
    let files = tempfile::tempdir().unwrap();
    let (cert, key) = (files.path().join("client.crt"), files.path().join("client.key"));
    std::fs::write(&cert, &me.cert).unwrap();
    std::fs::write(&key, &me.key).unwrap();
    let (ca, cert, key) = (secret.path("ca.crt"), cert.display().to_string(), key.display().to_string());
    let tls = ["--ca", &ca, "--cert", &cert, "--key", &key, "--connections", "1", "--concurrency", "2"];

    for (protocol, endpoint, transport, denied) in [
        ("grpc", grpc_endpoint(&c, "https"), "grpc", "PermissionDenied"),
        ("http", http_endpoint(&c, "https"), "http", "HTTP 403"),
    ] {
        let allowed = [&tls[..], &["--protocol", protocol, "--profile", "spans100"]].concat();
        assert_all_accepted(&c, &endpoint, &allowed, Signal::Traces, transport).await;

        let report = load(&endpoint, &[&tls[..], &["--protocol", protocol, "--profile", "metrics10"]].concat()).await;
        assert!(report.tls, "{report}");
        assert_eq!(report.ok, 0, "{report}");
        assert_eq!(report.errors.keys().map(String::as_str).collect::<Vec<_>>(), [denied], "{report}");
        assert!(report.errors[denied] > 0, "{report}");
        assert_eq!(accepted(&c, Signal::Metrics, transport).await, 0, "{report}");
    }
    c.collector.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_over_the_rate_limit_are_reported_as_resource_exhausted() {
    let c = TestCollector::start_with(|cfg| {
        nop_exporter(cfg);
        cfg.service.rate_limits = RateLimitConfig {
            default: Some(RateLimit { requests_per_second: Some(5.0), items_per_second: None, burst_seconds: 1.0 }),
            overrides: vec![],
        };
    })
    .await;
    for (protocol, endpoint, transport, throttled) in [
        ("grpc", grpc_endpoint(&c, "http"), "grpc", "ResourceExhausted"),
        ("http", http_endpoint(&c, "http"), "http", "HTTP 429"),
    ] {
        let before = accepted(&c, Signal::Logs, transport).await;
        let report = load(&endpoint, &["--protocol", protocol, "--profile", "logs100", "--concurrency", "2"]).await;
        assert_eq!(report.errors.keys().map(String::as_str).collect::<Vec<_>>(), [throttled], "{report}");
        assert!(report.errors[throttled] > 0, "{report}");
        let after = accepted(&c, Signal::Logs, transport).await;
        assert_eq!(after - before, report.ok * report.items_per_request as u64, "{report}");
    }
    c.collector.shutdown().await;
}
