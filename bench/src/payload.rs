//! Deterministic payload profiles: the same bytes on every run, for both
//! collectors under test (used by [`crate::load`]).

use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::{AnyValue, InstrumentationScope, KeyValue, any_value};
use opentelemetry_proto::tonic::logs::v1::{LogRecord, ResourceLogs, ScopeLogs};
use opentelemetry_proto::tonic::metrics::v1::{
    Gauge, Metric, NumberDataPoint, ResourceMetrics, ScopeMetrics, metric, number_data_point,
};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span, Status, span};

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Profile {
    /// 10 metric data points (2 gauges × 5 points, 4 attributes each), ~1 KB.
    Metrics10,
    /// 1,000 metric data points (20 gauges × 50 points, 4 attributes each), ~100 KB.
    Metrics1000,
    /// 100 spans with 5 attributes each.
    Spans100,
    /// 100 log records with a ~80 byte body and 3 attributes each.
    Logs100,
}

/// A tiny deterministic generator (SplitMix64), so payloads never vary.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| (self.next() & 0xff) as u8 | 1).collect()
    }
}

fn kv(k: &str, v: impl Into<String>) -> KeyValue {
    KeyValue {
        key: k.into(),
        value: Some(AnyValue { value: Some(any_value::Value::StringValue(v.into())) }),
        ..Default::default()
    }
}

fn resource(service: &str) -> Option<Resource> {
    Some(Resource {
        attributes: vec![
            kv("service.name", service),
            kv("host.name", "bench-host-01"),
            kv("deployment.environment", "bench"),
        ],
        ..Default::default()
    })
}

fn scope() -> Option<InstrumentationScope> {
    Some(InstrumentationScope { name: "otlp-bench".into(), version: "1.0.0".into(), ..Default::default() })
}

const T0: u64 = 1_764_000_000_000_000_000;

pub enum Request {
    Metrics(ExportMetricsServiceRequest),
    Traces(ExportTraceServiceRequest),
    Logs(ExportLogsServiceRequest),
}

impl Request {
    pub fn encode_to_vec(&self) -> Vec<u8> {
        use prost::Message;
        match self {
            Request::Metrics(r) => r.encode_to_vec(),
            Request::Traces(r) => r.encode_to_vec(),
            Request::Logs(r) => r.encode_to_vec(),
        }
    }
}

fn metrics(gauges: usize, points: usize, rng: &mut Rng) -> ExportMetricsServiceRequest {
    let metrics = (0..gauges)
        .map(|g| Metric {
            name: format!("bench.gauge.{g}"),
            unit: "1".into(),
            description: "a benchmark gauge".into(),
            data: Some(metric::Data::Gauge(Gauge {
                data_points: (0..points)
                    .map(|p| NumberDataPoint {
                        attributes: vec![
                            kv("pod", format!("pod-{p}")),
                            kv("node", format!("node-{:02}", p % 16)),
                            kv("zone", "zone-a"),
                            kv("route", format!("/api/v{}", p % 7)),
                        ],
                        time_unix_nano: T0 + p as u64,
                        value: Some(number_data_point::Value::AsDouble((rng.next() % 10_000) as f64 / 7.0)),
                        ..Default::default()
                    })
                    .collect(),
            })),
            ..Default::default()
        })
        .collect();
    ExportMetricsServiceRequest {
        resource_metrics: vec![ResourceMetrics {
            resource: resource("bench-metrics"),
            scope_metrics: vec![ScopeMetrics { scope: scope(), metrics, ..Default::default() }],
            ..Default::default()
        }],
    }
}

impl Profile {
    /// The request and its item count.
    pub fn request(self) -> (Request, usize) {
        let mut rng = Rng(42);
        match self {
            Profile::Metrics10 => (Request::Metrics(metrics(2, 5, &mut rng)), 10),
            Profile::Metrics1000 => (Request::Metrics(metrics(20, 50, &mut rng)), 1000),
            Profile::Spans100 => {
                let trace_id = rng.bytes(16);
                let spans = (0..100u64)
                    .map(|i| Span {
                        trace_id: trace_id.clone(),
                        span_id: rng.bytes(8),
                        parent_span_id: if i == 0 { vec![] } else { rng.bytes(8) },
                        name: format!("GET /api/items/{}", i % 10),
                        kind: span::SpanKind::Server as i32,
                        start_time_unix_nano: T0 + i * 1000,
                        end_time_unix_nano: T0 + i * 1000 + 500,
                        attributes: vec![
                            kv("http.request.method", "GET"),
                            kv("http.route", "/api/items/{id}"),
                            kv("url.path", format!("/api/items/{i}")),
                            kv("server.address", "bench.example"),
                            kv("user_agent.original", "otlp-bench/1.0"),
                        ],
                        status: Some(Status { code: 1, ..Default::default() }),
                        ..Default::default()
                    })
                    .collect();
                let req = ExportTraceServiceRequest {
                    resource_spans: vec![ResourceSpans {
                        resource: resource("bench-traces"),
                        scope_spans: vec![ScopeSpans { scope: scope(), spans, ..Default::default() }],
                        ..Default::default()
                    }],
                };
                (Request::Traces(req), 100)
            }
            Profile::Logs100 => {
                let records = (0..100u64)
                    .map(|i| LogRecord {
                        time_unix_nano: T0 + i,
                        severity_number: 9,
                        severity_text: "INFO".into(),
                        body: Some(AnyValue {
                            value: Some(any_value::Value::StringValue(format!(
                                "request {i} served in {} ms for tenant acme-{} from 10.0.{}.{}",
                                rng.next() % 500,
                                i % 13,
                                i % 255,
                                rng.next() % 255
                            ))),
                        }),
                        attributes: vec![
                            kv("logger", "http"),
                            kv("thread", format!("worker-{}", i % 8)),
                            kv("tenant", "acme"),
                        ],
                        ..Default::default()
                    })
                    .collect();
                let req = ExportLogsServiceRequest {
                    resource_logs: vec![ResourceLogs {
                        resource: resource("bench-logs"),
                        scope_logs: vec![ScopeLogs { scope: scope(), log_records: records, ..Default::default() }],
                        ..Default::default()
                    }],
                };
                (Request::Logs(req), 100)
            }
        }
    }

    pub fn path(self) -> &'static str {
        match self {
            Profile::Metrics10 | Profile::Metrics1000 => {
                "/opentelemetry.proto.collector.metrics.v1.MetricsService/Export"
            }
            Profile::Spans100 => "/opentelemetry.proto.collector.trace.v1.TraceService/Export",
            Profile::Logs100 => "/opentelemetry.proto.collector.logs.v1.LogsService/Export",
        }
    }

    /// The OTLP/HTTP path of the profile's signal.
    pub fn http_path(self) -> &'static str {
        match self {
            Profile::Metrics10 | Profile::Metrics1000 => "/v1/metrics",
            Profile::Spans100 => "/v1/traces",
            Profile::Logs100 => "/v1/logs",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn profiles_are_deterministic_and_sized_as_named() {
        let sizes: Vec<usize> = [Profile::Metrics10, Profile::Metrics1000, Profile::Spans100, Profile::Logs100]
            .iter()
            .map(|p| {
                let a = p.request().0.encode_to_vec();
                assert_eq!(a, p.request().0.encode_to_vec(), "{p:?} is deterministic");
                a.len()
            })
            .collect();
        assert!((500..2_000).contains(&sizes[0]), "metrics10: {} bytes", sizes[0]);
        assert!((80_000..130_000).contains(&sizes[1]), "metrics1000: {} bytes", sizes[1]);
    }
}
