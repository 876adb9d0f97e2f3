//! The Rust `opentelemetry-otlp` exporter (tonic, gzip) sends spans, metrics
//! and logs; the collector's file exporter receives exactly those items.

mod common;

use common::{TestCollector, total_items};
use opentelemetry::KeyValue;
use opentelemetry::logs::{AnyValue, LogRecord as _, Logger as _, LoggerProvider as _, Severity};
use opentelemetry::metrics::MeterProvider as _;
use opentelemetry::trace::{Span as _, Tracer as _, TracerProvider as _};
use opentelemetry_otlp::{Compression, WithExportConfig, WithTonicConfig};
use opentelemetry_proto::tonic::common::v1::any_value;
use opentelemetry_proto::tonic::metrics::v1::{metric, number_data_point};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::logs::SdkLoggerProvider;
use opentelemetry_sdk::metrics::SdkMeterProvider;
use opentelemetry_sdk::trace::SdkTracerProvider;
use otlp_collector::signal::{Payload, Signal};

fn resource() -> Resource {
    Resource::builder().with_service_name("rust-sdk-test").build()
}

fn service_names(payloads: &[Payload]) -> Vec<String> {
    let attrs = |r: &Option<opentelemetry_proto::tonic::resource::v1::Resource>| {
        r.as_ref().unwrap().attributes.iter().find(|kv| kv.key == "service.name").and_then(|kv| {
            match kv.value.as_ref()?.value.as_ref()? {
                any_value::Value::StringValue(s) => Some(s.clone()),
                _ => None,
            }
        })
    };
    payloads
        .iter()
        .flat_map(|p| match p {
            Payload::Traces(v) => v.iter().map(|r| attrs(&r.resource)).collect::<Vec<_>>(),
            Payload::Metrics(v) => v.iter().map(|r| attrs(&r.resource)).collect(),
            Payload::Logs(v) => v.iter().map(|r| attrs(&r.resource)).collect(),
        })
        .map(|s| s.unwrap_or_default())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spans_metrics_and_logs_from_the_rust_sdk_arrive_intact() {
    let c = TestCollector::start().await;
    let endpoint = c.grpc_url();

    // Traces: 50 spans with an attribute each.
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_tonic()
        .with_endpoint(&endpoint)
        .with_compression(Compression::Gzip)
        .build()
        .unwrap();
    let tracer_provider = SdkTracerProvider::builder().with_batch_exporter(exporter).with_resource(resource()).build();
    let tracer = tracer_provider.tracer("integration");
    for i in 0..50 {
        let mut span = tracer.start(format!("op-{i}"));
        span.set_attribute(KeyValue::new("op.index", i as i64));
        span.end();
    }

    // Metrics: one counter with two attribute sets.
    let exporter = opentelemetry_otlp::MetricExporter::builder().with_tonic().with_endpoint(&endpoint).build().unwrap();
    let meter_provider = SdkMeterProvider::builder().with_periodic_exporter(exporter).with_resource(resource()).build();
    let counter = meter_provider.meter("integration").u64_counter("checkout.requests").build();
    counter.add(5, &[KeyValue::new("route", "/pay")]);
    counter.add(7, &[KeyValue::new("route", "/cart")]);

    // Logs: 20 records.
    let exporter = opentelemetry_otlp::LogExporter::builder().with_tonic().with_endpoint(&endpoint).build().unwrap();
    let logger_provider = SdkLoggerProvider::builder().with_batch_exporter(exporter).with_resource(resource()).build();
    let logger = logger_provider.logger("integration");
    for i in 0..20 {
        let mut record = logger.create_log_record();
        record.set_severity_number(Severity::Warn);
        record.set_severity_text("WARN");
        record.set_body(AnyValue::String(format!("line {i}").into()));
        logger.emit(record);
    }

    tokio::task::spawn_blocking(move || {
        tracer_provider.force_flush().unwrap();
        meter_provider.force_flush().unwrap();
        logger_provider.force_flush().unwrap();
        (tracer_provider, meter_provider, logger_provider)
    })
    .await
    .unwrap();

    let traces = c.wait_items(Signal::Traces, 50).await;
    assert_eq!(total_items(&traces), 50, "exactly the spans sent");
    let mut names = common::span_names(&traces);
    names.sort();
    let mut expected: Vec<String> = (0..50).map(|i| format!("op-{i}")).collect();
    expected.sort();
    assert_eq!(names, expected);
    assert!(service_names(&traces).iter().all(|s| s == "rust-sdk-test"));

    let metrics = c.wait_items(Signal::Metrics, 2).await;
    let mut points: Vec<(String, i64)> = metrics
        .iter()
        .flat_map(|p| match p {
            Payload::Metrics(v) => v.iter().flat_map(|r| &r.scope_metrics).flat_map(|s| &s.metrics).cloned().collect(),
            _ => vec![],
        })
        .filter(|m| m.name == "checkout.requests")
        .flat_map(|m| match m.data {
            Some(metric::Data::Sum(s)) => s.data_points,
            other => panic!("a counter is a sum, got {other:?}"),
        })
        .map(|p| {
            let route = p.attributes.iter().find(|kv| kv.key == "route").unwrap();
            let Some(any_value::Value::StringValue(route)) = route.value.clone().unwrap().value else { panic!() };
            let Some(number_data_point::Value::AsInt(v)) = p.value else { panic!("an integer counter") };
            (route, v)
        })
        .collect();
    // Cumulative sums: every export (the periodic one and the flush) carries the same totals.
    points.sort();
    points.dedup();
    assert_eq!(points, vec![("/cart".to_owned(), 7), ("/pay".to_owned(), 5)]);

    let logs = c.wait_items(Signal::Logs, 20).await;
    assert_eq!(total_items(&logs), 20);
    let bodies: Vec<String> = logs
        .iter()
        .flat_map(|p| match p {
            Payload::Logs(v) => v.iter().flat_map(|r| &r.scope_logs).flat_map(|s| &s.log_records).cloned().collect(),
            _ => vec![],
        })
        .map(|l| {
            assert_eq!(l.severity_text, "WARN");
            match l.body.and_then(|b| b.value) {
                Some(any_value::Value::StringValue(s)) => s,
                other => panic!("string body expected, got {other:?}"),
            }
        })
        .collect();
    assert_eq!(bodies, (0..20).map(|i| format!("line {i}")).collect::<Vec<_>>(), "in order, none lost");

    let text = c.metrics_text().await;
    assert!(text.contains(r#"otlp_receiver_accepted_items_total{signal="traces",transport="grpc"} 50"#), "{text}");
    assert!(text.contains(r#"otlp_exporter_sent_items_total{exporter="file",signal="logs"} 20"#), "{text}");
    c.collector.shutdown().await;
}
