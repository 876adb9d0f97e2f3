//! Pipelines end to end: a collector chain, batching and splitting,
//! processors, fan-out, backpressure with RetryInfo, health while draining.

mod common;

use std::time::Duration;

use common::{TestCollector, config_yaml, otlp, span_numbers, total_items, trace_client, wait_for};
use otlp_collector::config::{Config, ExporterConfig, OtlpExporterConfig, QueueConfig, RetryConfig};
use otlp_collector::signal::{Payload, Signal};
use tonic::Code;
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;
use tonic_types::StatusExt;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_chain_of_two_collectors_loses_nothing() {
    let b = TestCollector::start().await;
    let b_url = b.grpc_url();
    let a = TestCollector::start_with(|cfg| {
        let otlp = OtlpExporterConfig { endpoint: b_url.clone(), ..Default::default() };
        cfg.exporters = [("otlp".to_owned(), ExporterConfig::Otlp(Box::new(otlp)))].into();
        for p in cfg.service.pipelines.values_mut() {
            p.exporters = vec!["otlp".into()];
        }
    })
    .await;
    // 20 concurrent clients, 50 requests of 10 spans each: 10,000 spans.
    let mut tasks = Vec::new();
    for client in 0..20u64 {
        let url = a.grpc_url();
        tasks.push(tokio::spawn(async move {
            let mut c = trace_client(&url).await;
            for r in 0..50u64 {
                c.export(otlp::traces("chain", (client * 50 + r) * 10, 10)).await.unwrap();
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let mut got = span_numbers(&b.wait_items(Signal::Traces, 10_000).await);
    got.sort();
    assert_eq!(got, (0..10_000).collect::<Vec<_>>(), "every span exactly once");
    assert!(
        a.metrics_text().await.contains(r#"otlp_exporter_sent_items_total{exporter="otlp",signal="traces"} 10000"#)
    );
    a.collector.shutdown().await;
    b.collector.shutdown().await;
}

#[tokio::test]
async fn batches_are_filled_to_size_and_oversize_ones_split() {
    let c = TestCollector::start_with(|cfg| {
        let Some(otlp_collector::config::ProcessorConfig::Batch(b)) = cfg.processors.get_mut("batch") else { panic!() };
        b.send_batch_size = 50;
        b.send_batch_max_size = 50;
        b.timeout = Duration::from_millis(300);
    })
    .await;
    let mut client = trace_client(&c.grpc_url()).await;
    for r in 0..10 {
        client.export(otlp::traces("svc", r * 10, 10)).await.unwrap();
    }
    client.export(otlp::traces("svc", 100, 120)).await.unwrap();
    let written = c.wait_items(Signal::Traces, 220).await;
    let sizes: Vec<usize> = written.iter().map(Payload::items).collect();
    // 100 small spans make two full batches; 120 more split into 50 + 50, and
    // the last 20 go out when the timeout fires.
    assert_eq!(sizes, vec![50, 50, 50, 50, 20]);
    assert_eq!(span_numbers(&written), (0..220).collect::<Vec<_>>(), "order is kept");
    c.collector.shutdown().await;
}

#[tokio::test]
async fn processors_edit_and_filter_and_pipelines_fan_out() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("all.jsonl");
    let kept = dir.path().join("kept.jsonl");
    let yaml = config_yaml(
        &out,
        r#"  attributes/team: {actions: [{key: team, action: insert, value: payments}, {key: secret, action: delete}]}
  resource/env: {actions: [{key: deployment.environment, action: upsert, value: prod}]}
  filter/no-health: {exclude: {names: [healthcheck]}}"#,
        &format!("  file/kept: {{path: \"{}\"}}", kept.display()),
    )
    .replace(
        "traces: {processors: [batch], exporters: [file]}",
        "traces: {processors: [resource/env, batch], exporters: [file]}\n    traces/kept: {processors: [filter/no-health, attributes/team, batch], exporters: [file/kept]}",
    );
    let config = Config::from_yaml(&yaml).unwrap();
    let c = TestCollector::start_config(config, out, dir).await;
    let mut req = otlp::traces("svc", 0, 3);
    let spans = &mut req.resource_spans[0].scope_spans[0].spans;
    spans[1].name = "healthcheck".into();
    spans[2].attributes.push(otlp::kv("secret", "hunter2"));
    trace_client(&c.grpc_url()).await.export(req).await.unwrap();

    let all = c.wait_items(Signal::Traces, 3).await;
    let Payload::Traces(rs) = &all[0] else { panic!() };
    assert!(rs[0].resource.as_ref().unwrap().attributes.contains(&otlp::kv("deployment.environment", "prod")));
    assert!(
        rs[0].scope_spans[0].spans[2].attributes.contains(&otlp::kv("secret", "hunter2")),
        "the other pipeline's edits do not leak"
    );

    let kept = wait_for("the filtered pipeline's file", || {
        let path = c.dir.path().join("kept.jsonl");
        async move {
            let got = common::read_file_export(&path);
            (total_items(&got) >= 2).then_some(got)
        }
    })
    .await;
    assert_eq!(span_numbers(&kept), vec![0, 2], "healthcheck was filtered out");
    let Payload::Traces(rs) = &kept[0] else { panic!() };
    for span in &rs[0].scope_spans[0].spans {
        assert!(span.attributes.contains(&otlp::kv("team", "payments")));
        assert!(!span.attributes.iter().any(|kv| kv.key == "secret"));
    }
    assert!(
        c.metrics_text()
            .await
            .contains(r#"otlp_processor_dropped_items_total{processor="filter/no-health",signal="traces"} 1"#)
    );
    c.collector.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stuck_exporter_turns_into_resource_exhausted_with_retry_info() {
    // The downstream refuses connections, so batches wait in retry and the
    // small queues and memory limit fill up.
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let c = TestCollector::start_with(|cfg| {
        let otlp = OtlpExporterConfig {
            endpoint: format!("http://127.0.0.1:{port}"),
            retry: RetryConfig { initial_interval: Duration::from_secs(5), ..Default::default() },
            queue: QueueConfig { size: 1, consumers: 1 },
            ..Default::default()
        };
        cfg.exporters = [("otlp".to_owned(), ExporterConfig::Otlp(Box::new(otlp)))].into();
        for p in cfg.service.pipelines.values_mut() {
            p.processors.clear();
            p.exporters = vec!["otlp".into()];
        }
        cfg.service.limits.pipeline_queue_size = 2;
        cfg.service.limits.memory_limit_mib = 1;
    })
    .await;
    let mut client = trace_client(&c.grpc_url()).await;
    let mut accepted = 0;
    let status = loop {
        match client.export(otlp::traces("svc", accepted * 100, 100)).await {
            Ok(_) => accepted += 1,
            Err(status) => break status,
        }
        assert!(accepted < 1000, "never refused");
    };
    assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
    let retry = status.get_details_retry_info().expect("RetryInfo detail");
    assert_eq!(retry.retry_delay, Some(Duration::from_secs(1)));
    let text = c.metrics_text().await;
    assert!(
        text.contains(r#"otlp_receiver_refused_items_total{signal="traces",transport="grpc",reason="queue_full"} 100"#),
        "{text}"
    );
    let used: f64 = text.lines().find_map(|l| l.strip_prefix("otlp_memory_used_bytes ")).unwrap().parse().unwrap();
    assert!(used <= (1 << 20) as f64, "memory held stays under the limit: {used}");
    c.collector.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_goes_not_serving_when_shutdown_starts() {
    let c = TestCollector::start().await;
    let url = c.grpc_url();
    let ready = format!("http://{}/readyz", c.collector.telemetry_addr.unwrap());
    assert_eq!(reqwest::get(&ready).await.unwrap().status(), 200);
    let mut health = HealthClient::new(tonic::transport::Channel::from_shared(url).unwrap().connect().await.unwrap());
    for service in
        ["", "opentelemetry.proto.collector.trace.v1.TraceService", "opentelemetry.proto.collector.logs.v1.LogsService"]
    {
        let r = health.check(HealthCheckRequest { service: service.into() }).await.unwrap().into_inner();
        assert_eq!(r.status(), ServingStatus::Serving, "{service:?}");
    }
    let mut watch = health
        .watch(HealthCheckRequest { service: "opentelemetry.proto.collector.metrics.v1.MetricsService".into() })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(watch.message().await.unwrap().unwrap().status(), ServingStatus::Serving);
    let shutdown = tokio::spawn(c.collector.shutdown());
    assert_eq!(watch.message().await.unwrap().unwrap().status(), ServingStatus::NotServing);
    assert_eq!(reqwest::get(&ready).await.unwrap().status(), 503, "readyz says draining");
    drop(watch);
    tokio::time::timeout(Duration::from_secs(10), shutdown).await.expect("shutdown finishes").unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_otlp_exporter_honours_the_downstream_retry_info() {
    use otlp_collector::config::{RateLimit, RateLimitConfig};
    // B lets one request per second through (burst 1) and answers the rest
    // RESOURCE_EXHAUSTED with a RetryInfo; A must wait as told and retry.
    let b = TestCollector::start_with(|cfg| {
        cfg.service.rate_limits = RateLimitConfig {
            default: Some(RateLimit { requests_per_second: Some(1.0), items_per_second: None, burst_seconds: 1.0 }),
            overrides: vec![],
        };
    })
    .await;
    let b_url = b.grpc_url();
    let a = TestCollector::start_with(|cfg| {
        let otlp = OtlpExporterConfig {
            endpoint: b_url.clone(),
            // Without RetryInfo the exporter would wait 30 s before its second attempt.
            retry: RetryConfig { initial_interval: Duration::from_secs(30), ..Default::default() },
            ..Default::default()
        };
        cfg.exporters = [("otlp".to_owned(), ExporterConfig::Otlp(Box::new(otlp)))].into();
        for p in cfg.service.pipelines.values_mut() {
            p.processors.clear(); // one batch per request
            p.exporters = vec!["otlp".into()];
        }
    })
    .await;
    let mut client = trace_client(&a.grpc_url()).await;
    for n in 0..3 {
        client.export(otlp::traces("svc", n * 10, 10)).await.unwrap();
    }
    let mut got = span_numbers(&b.wait_items(Signal::Traces, 30).await);
    got.sort();
    assert_eq!(got, (0..30).collect::<Vec<_>>(), "everything arrives, once");
    let text = a.metrics_text().await;
    let retries: f64 = text
        .lines()
        .find_map(|l| l.strip_prefix(r#"otlp_exporter_retries_total{exporter="otlp",signal="traces"} "#))
        .unwrap()
        .parse()
        .unwrap();
    assert!(retries >= 1.0, "throttled batches were retried:\n{text}");
    assert!(b.metrics_text().await.contains(r#"reason="rate_limited""#));
    a.collector.shutdown().await;
    b.collector.shutdown().await;
}
