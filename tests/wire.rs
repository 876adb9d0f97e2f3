//! The fast path's wire walk against the full decoder: it takes real OTLP
//! with every field set, and on every truncation and byte flip of it, and on
//! the fuzz corpora, it accepts nothing the decoder and validation would not
//! accept unchanged (see `wire_property`).

mod wire_property;

use std::path::Path;

use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::{
    AnyValue, ArrayValue as Array, EntityRef, InstrumentationScope, KeyValue, KeyValueList, any_value,
};
use opentelemetry_proto::tonic::logs::v1::{LogRecord, ResourceLogs, ScopeLogs};
use opentelemetry_proto::tonic::metrics::v1::{
    Exemplar, ExponentialHistogram, ExponentialHistogramDataPoint, Gauge, Histogram, HistogramDataPoint, Metric,
    NumberDataPoint, ResourceMetrics, ScopeMetrics, Sum, Summary, SummaryDataPoint, exemplar,
    exponential_histogram_data_point::Buckets, metric, number_data_point, summary_data_point::ValueAtQuantile,
};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span, Status, span};
use otlp_bench::Profile;
use otlp_collector::signal::Signal;
use prost::Message;

fn value(v: any_value::Value) -> Option<AnyValue> {
    Some(AnyValue { value: Some(v) })
}

/// Attributes of every value type, nested.
fn attributes() -> Vec<KeyValue> {
    use any_value::Value::*;
    let kv = |key: &str, v| KeyValue { key: key.into(), value: value(v), ..Default::default() };
    vec![
        kv("s", StringValue("grüße".into())),
        kv("b", BoolValue(true)),
        kv("i", IntValue(-42)),
        kv("d", DoubleValue(1.5)),
        kv("bytes", BytesValue(vec![0, 1, 2])),
        kv(
            "a",
            ArrayValue(Array { values: vec![value(IntValue(1)).unwrap(), value(StringValue("x".into())).unwrap()] }),
        ),
        kv("m", KvlistValue(KeyValueList { values: vec![kv("inner", ArrayValue(Array { values: vec![] }))] })),
    ]
}

fn resource() -> Option<Resource> {
    Some(Resource {
        attributes: attributes(),
        dropped_attributes_count: 1,
        entity_refs: vec![EntityRef {
            schema_url: "https://opentelemetry.io/schemas/1.30.0".into(),
            r#type: "service".into(),
            id_keys: vec!["service.name".into()],
            description_keys: vec!["service.version".into()],
        }],
    })
}

fn scope() -> Option<InstrumentationScope> {
    Some(InstrumentationScope {
        name: "lib".into(),
        version: "1.2.3".into(),
        attributes: attributes(),
        dropped_attributes_count: 2,
    })
}

fn traces() -> Vec<u8> {
    let span = |i: u8| Span {
        trace_id: vec![i; 16],
        span_id: vec![i; 8],
        parent_span_id: vec![9; 8],
        trace_state: "k=v".into(),
        flags: 0x301,
        name: format!("span-{i}"),
        kind: span::SpanKind::Server as i32,
        start_time_unix_nano: 1,
        end_time_unix_nano: 2,
        attributes: attributes(),
        dropped_attributes_count: 3,
        events: vec![span::Event {
            time_unix_nano: 3,
            name: "ev".into(),
            attributes: attributes(),
            dropped_attributes_count: 1,
        }],
        dropped_events_count: 4,
        links: vec![span::Link {
            trace_id: vec![7; 16],
            span_id: vec![7; 8],
            trace_state: "a=b".into(),
            attributes: attributes(),
            dropped_attributes_count: 1,
            flags: 1,
        }],
        dropped_links_count: 5,
        status: Some(Status { message: "boom".into(), code: 2 }),
    };
    ExportTraceServiceRequest {
        resource_spans: vec![
            ResourceSpans {
                resource: resource(),
                scope_spans: vec![ScopeSpans { scope: scope(), spans: vec![span(1), span(2)], schema_url: "s".into() }],
                schema_url: "r".into(),
            },
            ResourceSpans {
                resource: None,
                scope_spans: vec![ScopeSpans { scope: None, spans: vec![span(3)], schema_url: String::new() }],
                schema_url: String::new(),
            },
        ],
    }
    .encode_to_vec()
}

fn exemplars() -> Vec<Exemplar> {
    vec![
        Exemplar {
            filtered_attributes: attributes(),
            time_unix_nano: 5,
            span_id: vec![1; 8],
            trace_id: vec![1; 16],
            value: Some(exemplar::Value::AsDouble(0.5)),
        },
        Exemplar { value: Some(exemplar::Value::AsInt(3)), ..Default::default() },
    ]
}

fn metrics() -> Vec<u8> {
    let number = |v| NumberDataPoint {
        attributes: attributes(),
        start_time_unix_nano: 1,
        time_unix_nano: 2,
        exemplars: exemplars(),
        flags: 1,
        value: Some(v),
    };
    let metric = |name: &str, data| Metric {
        name: name.into(),
        description: "d".into(),
        unit: "ms".into(),
        metadata: attributes(),
        data: Some(data),
    };
    let buckets = Some(Buckets { offset: -3, bucket_counts: vec![1, 300, 70_000] });
    let metrics = vec![
        metric(
            "gauge",
            metric::Data::Gauge(Gauge { data_points: vec![number(number_data_point::Value::AsDouble(1.0))] }),
        ),
        metric(
            "sum",
            metric::Data::Sum(Sum {
                data_points: vec![
                    number(number_data_point::Value::AsInt(-7)),
                    number(number_data_point::Value::AsInt(8)),
                ],
                aggregation_temporality: 2,
                is_monotonic: true,
            }),
        ),
        metric(
            "histogram",
            metric::Data::Histogram(Histogram {
                data_points: vec![HistogramDataPoint {
                    attributes: attributes(),
                    start_time_unix_nano: 1,
                    time_unix_nano: 2,
                    count: 10,
                    sum: Some(12.5),
                    bucket_counts: vec![1, 2, 7],
                    explicit_bounds: vec![0.5, 1.0],
                    exemplars: exemplars(),
                    flags: 0,
                    min: Some(0.1),
                    max: Some(9.0),
                }],
                aggregation_temporality: 1,
            }),
        ),
        metric(
            "exponential",
            metric::Data::ExponentialHistogram(ExponentialHistogram {
                data_points: vec![ExponentialHistogramDataPoint {
                    attributes: attributes(),
                    start_time_unix_nano: 1,
                    time_unix_nano: 2,
                    count: 70_301,
                    sum: Some(1.0),
                    scale: -2,
                    zero_count: 1,
                    positive: buckets.clone(),
                    negative: buckets,
                    flags: 0,
                    exemplars: exemplars(),
                    min: Some(-1.0),
                    max: Some(1.0),
                    zero_threshold: 0.001,
                }],
                aggregation_temporality: 2,
            }),
        ),
        metric(
            "summary",
            metric::Data::Summary(Summary {
                data_points: vec![SummaryDataPoint {
                    attributes: attributes(),
                    start_time_unix_nano: 1,
                    time_unix_nano: 2,
                    count: 3,
                    sum: 4.0,
                    quantile_values: vec![ValueAtQuantile { quantile: 0.99, value: 3.5 }],
                    flags: 0,
                }],
            }),
        ),
        // Data with no points is valid and counts nothing.
        metric("empty", metric::Data::Gauge(Gauge { data_points: vec![] })),
    ];
    ExportMetricsServiceRequest {
        resource_metrics: vec![ResourceMetrics {
            resource: resource(),
            scope_metrics: vec![ScopeMetrics { scope: scope(), metrics, schema_url: "s".into() }],
            schema_url: "r".into(),
        }],
    }
    .encode_to_vec()
}

fn logs() -> Vec<u8> {
    use any_value::Value::*;
    let record = |trace_id: Vec<u8>, span_id: Vec<u8>| LogRecord {
        time_unix_nano: 1,
        observed_time_unix_nano: 2,
        severity_number: 9,
        severity_text: "INFO".into(),
        body: value(KvlistValue(KeyValueList { values: attributes() })),
        attributes: attributes(),
        dropped_attributes_count: 1,
        flags: 1,
        trace_id,
        span_id,
        event_name: "app.started".into(),
    };
    ExportLogsServiceRequest {
        resource_logs: vec![ResourceLogs {
            resource: resource(),
            scope_logs: vec![ScopeLogs {
                scope: scope(),
                log_records: vec![record(vec![1; 16], vec![2; 8]), record(vec![], vec![])],
                schema_url: String::new(),
            }],
            schema_url: String::new(),
        }],
    }
    .encode_to_vec()
}

fn requests() -> Vec<(Signal, Vec<u8>, usize)> {
    let mut all = vec![(Signal::Traces, traces(), 3), (Signal::Metrics, metrics(), 6), (Signal::Logs, logs(), 2)];
    for profile in [Profile::Metrics10, Profile::Spans100, Profile::Logs100] {
        let signal = match profile {
            Profile::Spans100 => Signal::Traces,
            Profile::Logs100 => Signal::Logs,
            _ => Signal::Metrics,
        };
        let (request, items) = profile.request();
        all.push((signal, request.encode_to_vec(), items));
    }
    all
}

#[test]
fn real_otlp_with_every_field_set_takes_the_fast_path() {
    for (signal, body, items) in requests() {
        assert!(wire_property::check(signal, &body), "{signal} ({} bytes) went the slow way", body.len());
        let encoded = otlp_collector::encoded::Encoded::scan(signal, &body.clone().into()).unwrap();
        assert_eq!(encoded.items(), items, "{signal}");
    }
}

#[test]
fn every_truncation_and_byte_flip_is_judged_like_the_decoder() {
    let (mut fast, mut slow) = (0, 0);
    for (signal, body, _) in requests().into_iter().filter(|(_, b, _)| b.len() < 8_000) {
        for i in 0..body.len() {
            let mut variants = vec![body[..i].to_vec()];
            for mask in [0x01, 0x02, 0x07, 0x80, 0xff] {
                let mut flipped = body.clone();
                flipped[i] ^= mask;
                variants.push(flipped);
            }
            for v in variants {
                if wire_property::check(signal, &v) { fast += 1 } else { slow += 1 }
            }
        }
    }
    // Both ways are exercised: some mutations stay valid, most do not.
    assert!(fast > 1_000 && slow > 1_000, "fast {fast}, slow {slow}");
}

#[test]
fn the_fuzz_corpora_are_judged_like_the_decoder() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus");
    let mut files = 0;
    for target in ["decode_validate", "wire_scan"] {
        let Ok(dir) = std::fs::read_dir(root.join(target)) else { continue };
        for entry in dir {
            let data = std::fs::read(entry.unwrap().path()).unwrap();
            // Both targets read `[selector, split, body...]`; every signal is tried.
            let [_, _, body @ ..] = data.as_slice() else { continue };
            for signal in Signal::ALL {
                wire_property::check(signal, body);
            }
            files += 1;
        }
    }
    assert!(files >= 50, "the corpus has {files} files");
}
