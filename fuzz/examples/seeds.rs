//! Writes the seed corpus: a few valid requests of every signal, in protobuf
//! and OTLP-JSON, with the two-byte header the fuzz target expects.
//!
//!     cargo +nightly run --example seeds -- corpus/decode_validate
use std::path::PathBuf;

use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::{AnyValue, ArrayValue, InstrumentationScope, KeyValue, KeyValueList, any_value};
use opentelemetry_proto::tonic::logs::v1::{LogRecord, ResourceLogs, ScopeLogs};
use opentelemetry_proto::tonic::metrics::v1::{
    Exemplar, ExponentialHistogram, ExponentialHistogramDataPoint, Gauge, Histogram, HistogramDataPoint, Metric,
    NumberDataPoint, ResourceMetrics, ScopeMetrics, Sum, Summary, SummaryDataPoint, exponential_histogram_data_point,
    metric, number_data_point, summary_data_point,
};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span, Status, span};
use prost::Message;

fn kv(k: &str, v: any_value::Value) -> KeyValue {
    KeyValue { key: k.into(), value: Some(AnyValue { value: Some(v) }), ..Default::default() }
}
fn s(v: &str) -> any_value::Value {
    any_value::Value::StringValue(v.into())
}
fn resource(service: &str) -> Option<Resource> {
    Some(Resource {
        attributes: vec![kv("service.name", s(service)), kv("host.name", s("node-1"))],
        ..Default::default()
    })
}
fn scope() -> Option<InstrumentationScope> {
    Some(InstrumentationScope { name: "seed".into(), version: "1.0".into(), ..Default::default() })
}

fn traces() -> ExportTraceServiceRequest {
    let span = |i: u8| Span {
        trace_id: vec![i; 16],
        span_id: vec![i; 8],
        parent_span_id: if i > 1 { vec![1; 8] } else { vec![] },
        name: format!("span-{i}"),
        kind: span::SpanKind::Server as i32,
        start_time_unix_nano: 1_700_000_000_000_000_000,
        end_time_unix_nano: 1_700_000_000_100_000_000,
        attributes: vec![
            kv("i", any_value::Value::IntValue(i.into())),
            kv("http.method", s("GET")),
            kv("ok", any_value::Value::BoolValue(true)),
            kv("ratio", any_value::Value::DoubleValue(0.5)),
            kv("raw", any_value::Value::BytesValue(vec![0, 1, 2])),
            kv(
                "list",
                any_value::Value::ArrayValue(ArrayValue { values: vec![AnyValue { value: Some(s("a")) }] }),
            ),
            kv(
                "map",
                any_value::Value::KvlistValue(KeyValueList { values: vec![kv("nested", s("b"))] }),
            ),
        ],
        events: vec![span::Event { name: "ev".into(), time_unix_nano: 1, ..Default::default() }],
        links: vec![span::Link { trace_id: vec![9; 16], span_id: vec![9; 8], ..Default::default() }],
        status: Some(Status { message: "fine".into(), code: 1 }),
        ..Default::default()
    };
    ExportTraceServiceRequest {
        resource_spans: vec![
            ResourceSpans {
                resource: resource("svc"),
                scope_spans: vec![ScopeSpans { scope: scope(), spans: (1..=3).map(span).collect(), schema_url: String::new() }],
                schema_url: "https://opentelemetry.io/schemas/1.21.0".into(),
            },
            ResourceSpans {
                resource: resource("other"),
                scope_spans: vec![ScopeSpans { scope: scope(), spans: vec![span(4)], schema_url: String::new() }],
                schema_url: String::new(),
            },
        ],
    }
}

fn metrics() -> ExportMetricsServiceRequest {
    let attrs = |i: i64| vec![kv("i", any_value::Value::IntValue(i))];
    let number = |i: i64| NumberDataPoint {
        attributes: attrs(i),
        time_unix_nano: 1_700_000_000_000_000_000,
        value: Some(if i % 2 == 0 { number_data_point::Value::AsInt(i) } else { number_data_point::Value::AsDouble(i as f64 / 3.0) }),
        exemplars: vec![Exemplar { trace_id: vec![1; 16], span_id: vec![1; 8], ..Default::default() }],
        ..Default::default()
    };
    let metric = |name: &str, data: metric::Data| Metric { name: name.into(), unit: "1".into(), data: Some(data), ..Default::default() };
    ExportMetricsServiceRequest {
        resource_metrics: vec![ResourceMetrics {
            resource: resource("svc"),
            scope_metrics: vec![ScopeMetrics {
                scope: scope(),
                metrics: vec![
                    metric("m0", metric::Data::Gauge(Gauge { data_points: (0..3).map(number).collect() })),
                    metric(
                        "m1",
                        metric::Data::Sum(Sum { data_points: (1..3).map(number).collect(), aggregation_temporality: 2, is_monotonic: true }),
                    ),
                    metric(
                        "m2",
                        metric::Data::Histogram(Histogram {
                            data_points: vec![HistogramDataPoint {
                                attributes: attrs(1),
                                count: 3,
                                sum: Some(4.5),
                                bucket_counts: vec![1, 2],
                                explicit_bounds: vec![1.0],
                                min: Some(0.5),
                                max: Some(3.0),
                                ..Default::default()
                            }],
                            aggregation_temporality: 1,
                        }),
                    ),
                    metric(
                        "m3",
                        metric::Data::ExponentialHistogram(ExponentialHistogram {
                            data_points: vec![ExponentialHistogramDataPoint {
                                count: 2,
                                scale: 3,
                                positive: Some(exponential_histogram_data_point::Buckets { offset: -1, bucket_counts: vec![1, 1] }),
                                ..Default::default()
                            }],
                            aggregation_temporality: 2,
                        }),
                    ),
                    metric(
                        "m4",
                        metric::Data::Summary(Summary {
                            data_points: vec![SummaryDataPoint {
                                count: 1,
                                sum: 2.0,
                                quantile_values: vec![summary_data_point::ValueAtQuantile { quantile: 0.5, value: 2.0 }],
                                ..Default::default()
                            }],
                        }),
                    ),
                ],
                schema_url: String::new(),
            }],
            schema_url: String::new(),
        }],
    }
}

fn logs() -> ExportLogsServiceRequest {
    let record = |i: u8| LogRecord {
        time_unix_nano: 1_700_000_000_000_000_000,
        severity_number: 9,
        severity_text: if i == 1 { "INFO".into() } else { "WARN".into() },
        body: Some(AnyValue { value: Some(s(&format!("line {i}"))) }),
        attributes: vec![kv("i", any_value::Value::IntValue(i.into()))],
        trace_id: if i == 2 { vec![2; 16] } else { vec![] },
        span_id: if i == 2 { vec![2; 8] } else { vec![] },
        ..Default::default()
    };
    ExportLogsServiceRequest {
        resource_logs: vec![ResourceLogs {
            resource: resource("svc"),
            scope_logs: vec![ScopeLogs { scope: scope(), log_records: (1..=3).map(record).collect(), schema_url: String::new() }],
            schema_url: String::new(),
        }],
    }
}

fn main() {
    let dir = PathBuf::from(std::env::args().nth(1).unwrap_or_else(|| "corpus/decode_validate".into()));
    std::fs::create_dir_all(&dir).unwrap();
    let requests: [(u8, &str, Vec<u8>, String); 3] = [
        (0, "traces", traces().encode_to_vec(), serde_json::to_string(&traces()).unwrap()),
        (1, "metrics", metrics().encode_to_vec(), serde_json::to_string(&metrics()).unwrap()),
        (2, "logs", logs().encode_to_vec(), serde_json::to_string(&logs()).unwrap()),
    ];
    for (signal, name, proto, json) in requests {
        // Protobuf with no processors, JSON with all of them; batches of 2.
        for (selector, format, body) in [(signal, "pb", proto), (signal | 4 | (15 << 3), "json", json.into_bytes())] {
            let mut input = vec![selector, 1];
            input.extend_from_slice(&body);
            std::fs::write(dir.join(format!("seed-{name}-{format}")), input).unwrap();
        }
    }
}
