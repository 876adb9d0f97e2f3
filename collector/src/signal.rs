//! The three OTLP signals and the data that flows through a pipeline.

use std::fmt;
use std::str::FromStr;

use bytes::{Bytes, BytesMut};
use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::logs::v1::ResourceLogs;
use opentelemetry_proto::tonic::metrics::v1::{ResourceMetrics, metric};
use opentelemetry_proto::tonic::trace::v1::ResourceSpans;
use prost::Message;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Signal {
    Traces,
    Metrics,
    Logs,
}

impl Signal {
    pub const ALL: [Signal; 3] = [Signal::Traces, Signal::Metrics, Signal::Logs];

    pub fn as_str(self) -> &'static str {
        match self {
            Signal::Traces => "traces",
            Signal::Metrics => "metrics",
            Signal::Logs => "logs",
        }
    }

    pub fn index(self) -> usize {
        self as usize
    }

    /// Memory a decoded request of `wire_len` encoded bytes holds, estimated.
    ///
    /// Decoded OTLP is several times its encoding (every attribute is a
    /// struct with two heap strings). Measured with a counting allocator on
    /// the benchmark payloads: 4.6-6.7x for metrics, 4.1x for spans, 4.3x for
    /// logs; rounded up here to cover allocator overhead.
    pub fn in_memory_estimate(self, wire_len: usize) -> usize {
        let factor = match self {
            Signal::Traces | Signal::Logs => 5,
            Signal::Metrics => 7,
        };
        wire_len.max(1) * factor
    }

    /// The gRPC path of the signal's OTLP Export method.
    /// The signal whose `Export` method is at `path`.
    pub fn from_grpc_path(path: &str) -> Option<Self> {
        Signal::ALL.into_iter().find(|s| s.grpc_path() == path)
    }

    pub fn grpc_path(self) -> &'static str {
        match self {
            Signal::Traces => "/opentelemetry.proto.collector.trace.v1.TraceService/Export",
            Signal::Metrics => "/opentelemetry.proto.collector.metrics.v1.MetricsService/Export",
            Signal::Logs => "/opentelemetry.proto.collector.logs.v1.LogsService/Export",
        }
    }
}

impl fmt::Display for Signal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Signal {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "traces" => Ok(Signal::Traces),
            "metrics" => Ok(Signal::Metrics),
            "logs" => Ok(Signal::Logs),
            other => Err(format!("unknown signal `{other}`, expected traces, metrics or logs")),
        }
    }
}

/// The content of one export request of any signal.
#[derive(Debug, Clone, PartialEq)]
pub enum Payload {
    Traces(Vec<ResourceSpans>),
    Metrics(Vec<ResourceMetrics>),
    Logs(Vec<ResourceLogs>),
}

impl From<ExportTraceServiceRequest> for Payload {
    fn from(r: ExportTraceServiceRequest) -> Self {
        Payload::Traces(r.resource_spans)
    }
}

impl From<ExportMetricsServiceRequest> for Payload {
    fn from(r: ExportMetricsServiceRequest) -> Self {
        Payload::Metrics(r.resource_metrics)
    }
}

impl From<ExportLogsServiceRequest> for Payload {
    fn from(r: ExportLogsServiceRequest) -> Self {
        Payload::Logs(r.resource_logs)
    }
}

/// Number of data points in a metric, the unit metrics are counted in.
pub fn data_points(data: &Option<metric::Data>) -> usize {
    match data {
        Some(metric::Data::Gauge(g)) => g.data_points.len(),
        Some(metric::Data::Sum(s)) => s.data_points.len(),
        Some(metric::Data::Histogram(h)) => h.data_points.len(),
        Some(metric::Data::ExponentialHistogram(h)) => h.data_points.len(),
        Some(metric::Data::Summary(s)) => s.data_points.len(),
        None => 0,
    }
}

pub fn spans_in(r: &ResourceSpans) -> usize {
    r.scope_spans.iter().map(|s| s.spans.len()).sum()
}

pub fn points_in(r: &ResourceMetrics) -> usize {
    r.scope_metrics.iter().flat_map(|s| &s.metrics).map(|m| data_points(&m.data)).sum()
}

pub fn records_in(r: &ResourceLogs) -> usize {
    r.scope_logs.iter().map(|s| s.log_records.len()).sum()
}

impl Payload {
    pub fn empty(signal: Signal) -> Self {
        match signal {
            Signal::Traces => Payload::Traces(Vec::new()),
            Signal::Metrics => Payload::Metrics(Vec::new()),
            Signal::Logs => Payload::Logs(Vec::new()),
        }
    }

    pub fn signal(&self) -> Signal {
        match self {
            Payload::Traces(_) => Signal::Traces,
            Payload::Metrics(_) => Signal::Metrics,
            Payload::Logs(_) => Signal::Logs,
        }
    }

    /// Spans, metric data points or log records.
    pub fn items(&self) -> usize {
        match self {
            Payload::Traces(rs) => rs.iter().map(spans_in).sum(),
            Payload::Metrics(rm) => rm.iter().map(points_in).sum(),
            Payload::Logs(rl) => rl.iter().map(records_in).sum(),
        }
    }

    pub fn is_empty(&self) -> bool {
        match self {
            Payload::Traces(v) => v.is_empty(),
            Payload::Metrics(v) => v.is_empty(),
            Payload::Logs(v) => v.is_empty(),
        }
    }

    /// Size of the payload encoded as its Export request.
    pub fn encoded_len(&self) -> usize {
        fn len<M: Message>(v: &[M]) -> usize {
            v.iter().map(|m| prost::encoding::message::encoded_len(1, m)).sum()
        }
        match self {
            Payload::Traces(v) => len(v),
            Payload::Metrics(v) => len(v),
            Payload::Logs(v) => len(v),
        }
    }

    /// Encodes the payload as the signal's Export request, without copying it
    /// into a request struct first.
    pub fn encode_request(&self) -> Bytes {
        fn enc<M: Message>(v: &[M], buf: &mut BytesMut) {
            for m in v {
                prost::encoding::message::encode(1, m, buf);
            }
        }
        let mut buf = BytesMut::with_capacity(self.encoded_len());
        match self {
            Payload::Traces(v) => enc(v, &mut buf),
            Payload::Metrics(v) => enc(v, &mut buf),
            Payload::Logs(v) => enc(v, &mut buf),
        }
        buf.freeze()
    }

    /// The payload as OTLP-JSON (the Export request object).
    pub fn to_json(&self) -> String {
        #[derive(Serialize)]
        #[serde(rename_all = "camelCase")]
        struct Traces<'a> {
            resource_spans: &'a [ResourceSpans],
        }
        #[derive(Serialize)]
        #[serde(rename_all = "camelCase")]
        struct Metrics<'a> {
            resource_metrics: &'a [ResourceMetrics],
        }
        #[derive(Serialize)]
        #[serde(rename_all = "camelCase")]
        struct Logs<'a> {
            resource_logs: &'a [ResourceLogs],
        }
        let json = match self {
            Payload::Traces(v) => serde_json::to_string(&Traces { resource_spans: v }),
            Payload::Metrics(v) => serde_json::to_string(&Metrics { resource_metrics: v }),
            Payload::Logs(v) => serde_json::to_string(&Logs { resource_logs: v }),
        };
        json.expect("OTLP types always serialise to JSON")
    }

    /// Moves everything from `other` (of the same signal) to the end of `self`.
    pub fn append(&mut self, other: Payload) {
        match (self, other) {
            (Payload::Traces(a), Payload::Traces(b)) => a.extend(b),
            (Payload::Metrics(a), Payload::Metrics(b)) => a.extend(b),
            (Payload::Logs(a), Payload::Logs(b)) => a.extend(b),
            (a, b) => unreachable!("appending {} to {}", b.signal(), a.signal()),
        }
    }

    /// Removes and returns the first `n` items, keeping their resource and
    /// scope. Metrics are split between metrics, never inside one, so the
    /// returned part may hold a few more than `n` data points.
    pub fn split_front(&mut self, n: usize) -> Payload {
        match self {
            Payload::Traces(rs) => Payload::Traces(split(
                rs,
                n,
                |r| &mut r.scope_spans,
                |s| &mut s.spans,
                |_| 1,
                |r| ResourceSpans {
                    resource: r.resource.clone(),
                    scope_spans: vec![],
                    schema_url: r.schema_url.clone(),
                },
            )),
            Payload::Metrics(rm) => Payload::Metrics(split(
                rm,
                n,
                |r| &mut r.scope_metrics,
                |s| &mut s.metrics,
                |m| data_points(&m.data).max(1),
                |r| ResourceMetrics {
                    resource: r.resource.clone(),
                    scope_metrics: vec![],
                    schema_url: r.schema_url.clone(),
                },
            )),
            Payload::Logs(rl) => Payload::Logs(split(
                rl,
                n,
                |r| &mut r.scope_logs,
                |s| &mut s.log_records,
                |_| 1,
                |r| ResourceLogs { resource: r.resource.clone(), scope_logs: vec![], schema_url: r.schema_url.clone() },
            )),
        }
    }
}

/// Items of a scope collection, the part of the three signals' shapes that is the same.
trait Scope: Sized {
    fn shell(&self) -> Self;
}

macro_rules! scope_shell {
    ($ty:ty, $items:ident) => {
        impl Scope for $ty {
            fn shell(&self) -> Self {
                Self { scope: self.scope.clone(), $items: Vec::new(), schema_url: self.schema_url.clone() }
            }
        }
    };
}
scope_shell!(opentelemetry_proto::tonic::trace::v1::ScopeSpans, spans);
scope_shell!(opentelemetry_proto::tonic::metrics::v1::ScopeMetrics, metrics);
scope_shell!(opentelemetry_proto::tonic::logs::v1::ScopeLogs, log_records);

/// Splits the first `n` weighted items off a resource → scope → item tree.
fn split<R, S: Scope, I>(
    resources: &mut Vec<R>,
    n: usize,
    scopes: fn(&mut R) -> &mut Vec<S>,
    items: fn(&mut S) -> &mut Vec<I>,
    weight: fn(&I) -> usize,
    resource_shell: fn(&R) -> R,
) -> Vec<R> {
    let mut out = Vec::new();
    let mut taken = 0;
    while taken < n && !resources.is_empty() {
        let total: usize = scopes(&mut resources[0]).iter_mut().flat_map(|s| items(s).iter()).map(weight).sum();
        if taken + total <= n {
            out.push(resources.remove(0));
            taken += total;
            continue;
        }
        // Only part of this resource fits.
        let mut head = resource_shell(&resources[0]);
        let rest = scopes(&mut resources[0]);
        while taken < n && !rest.is_empty() {
            let scope_total: usize = items(&mut rest[0]).iter().map(weight).sum();
            if taken + scope_total <= n {
                scopes(&mut head).push(rest.remove(0));
                taken += scope_total;
                continue;
            }
            let mut part = rest[0].shell();
            let list = items(&mut rest[0]);
            let mut count = 0;
            let mut w = 0;
            while count < list.len() && (taken + w < n) {
                w += weight(&list[count]);
                count += 1;
            }
            items(&mut part).extend(list.drain(..count));
            taken += w;
            scopes(&mut head).push(part);
        }
        out.push(head);
    }
    out
}

/// An encoded OTLP export request of a signal, for callers that only have bytes.
pub fn decode_request(signal: Signal, bytes: &[u8]) -> Result<Payload, prost::DecodeError> {
    Ok(match signal {
        Signal::Traces => ExportTraceServiceRequest::decode(bytes)?.into(),
        Signal::Metrics => ExportMetricsServiceRequest::decode(bytes)?.into(),
        Signal::Logs => ExportLogsServiceRequest::decode(bytes)?.into(),
    })
}

#[cfg(test)]
pub(crate) mod testdata {
    //! Small, deterministic OTLP payloads for unit tests.
    use opentelemetry_proto::tonic::common::v1::{AnyValue, InstrumentationScope, KeyValue, any_value};
    use opentelemetry_proto::tonic::logs::v1::{LogRecord, ScopeLogs};
    use opentelemetry_proto::tonic::metrics::v1::{Gauge, Metric, NumberDataPoint, ScopeMetrics};
    use opentelemetry_proto::tonic::resource::v1::Resource;
    use opentelemetry_proto::tonic::trace::v1::{ScopeSpans, Span};

    use super::*;

    pub fn kv(k: &str, v: &str) -> KeyValue {
        KeyValue {
            key: k.into(),
            value: Some(AnyValue { value: Some(any_value::Value::StringValue(v.into())) }),
            ..Default::default()
        }
    }

    pub fn resource(service: &str) -> Option<Resource> {
        Some(Resource { attributes: vec![kv("service.name", service)], ..Default::default() })
    }

    pub fn span(i: u8) -> Span {
        Span {
            trace_id: vec![1; 16],
            span_id: vec![i.max(1); 8],
            name: format!("span-{i}"),
            attributes: vec![kv("i", &i.to_string())],
            ..Default::default()
        }
    }

    /// `resources` resources × `scopes` scopes × `spans` spans.
    pub fn traces(resources: usize, scopes: usize, spans: usize) -> Payload {
        Payload::Traces(
            (0..resources)
                .map(|r| ResourceSpans {
                    resource: resource(&format!("svc-{r}")),
                    scope_spans: (0..scopes)
                        .map(|s| ScopeSpans {
                            scope: Some(InstrumentationScope { name: format!("scope-{s}"), ..Default::default() }),
                            spans: (0..spans).map(|i| span(i as u8 + 1)).collect(),
                            schema_url: String::new(),
                        })
                        .collect(),
                    schema_url: String::new(),
                })
                .collect(),
        )
    }

    pub fn gauge(name: &str, points: usize) -> Metric {
        Metric {
            name: name.into(),
            data: Some(metric::Data::Gauge(Gauge {
                data_points: (0..points)
                    .map(|i| NumberDataPoint {
                        attributes: vec![kv("i", &i.to_string())],
                        value: Some(opentelemetry_proto::tonic::metrics::v1::number_data_point::Value::AsInt(i as i64)),
                        ..Default::default()
                    })
                    .collect(),
            })),
            ..Default::default()
        }
    }

    pub fn metrics(metrics: usize, points: usize) -> Payload {
        Payload::Metrics(vec![ResourceMetrics {
            resource: resource("svc"),
            scope_metrics: vec![ScopeMetrics {
                metrics: (0..metrics).map(|m| gauge(&format!("m{m}"), points)).collect(),
                ..Default::default()
            }],
            schema_url: String::new(),
        }])
    }

    pub fn logs(records: usize) -> Payload {
        Payload::Logs(vec![ResourceLogs {
            resource: resource("svc"),
            scope_logs: vec![ScopeLogs {
                log_records: (0..records)
                    .map(|i| LogRecord {
                        severity_text: "INFO".into(),
                        body: Some(AnyValue { value: Some(any_value::Value::StringValue(format!("line {i}"))) }),
                        ..Default::default()
                    })
                    .collect(),
                ..Default::default()
            }],
            schema_url: String::new(),
        }])
    }
}

#[cfg(test)]
mod tests {
    use super::testdata::*;
    use super::*;

    #[test]
    fn counts_items_of_every_signal() {
        assert_eq!(traces(2, 3, 4).items(), 24);
        assert_eq!(metrics(3, 5).items(), 15);
        assert_eq!(logs(7).items(), 7);
    }

    #[test]
    fn split_keeps_every_item_once_and_in_order() {
        let original = traces(3, 2, 5);
        let mut rest = original.clone();
        let mut parts = Vec::new();
        while !rest.is_empty() {
            let part = rest.split_front(7);
            assert!(part.items() <= 7 && part.items() > 0);
            parts.push(part);
        }
        assert_eq!(parts.iter().map(Payload::items).sum::<usize>(), 30);
        let mut joined = Payload::empty(Signal::Traces);
        for p in parts {
            joined.append(p);
        }
        let names = |p: &Payload| match p {
            Payload::Traces(rs) => rs
                .iter()
                .flat_map(|r| {
                    r.scope_spans.iter().flat_map(move |s| {
                        s.spans.iter().map(move |sp| (r.resource.clone(), s.scope.clone(), sp.name.clone()))
                    })
                })
                .collect::<Vec<_>>(),
            _ => unreachable!(),
        };
        assert_eq!(names(&joined), names(&original), "resource, scope and order are kept");
    }

    #[test]
    fn metrics_split_between_metrics() {
        let mut m = metrics(4, 3);
        let head = m.split_front(5);
        assert_eq!(head.items(), 6, "two whole metrics");
        assert_eq!(m.items(), 6);
    }

    #[test]
    fn encode_request_matches_the_request_message() {
        let p = logs(3);
        let Payload::Logs(rl) = p.clone() else { unreachable!() };
        let expected = ExportLogsServiceRequest { resource_logs: rl }.encode_to_vec();
        assert_eq!(p.encode_request().as_ref(), expected.as_slice());
        assert_eq!(p.encoded_len(), expected.len());
        assert_eq!(decode_request(Signal::Logs, &expected).unwrap(), p);
    }

    /// Found by `fuzz/` (decode_validate): without serde_json's
    /// `float_roundtrip`, this double came back from our own OTLP-JSON one
    /// ULP off.
    #[test]
    fn json_round_trips_doubles_exactly() {
        use opentelemetry_proto::tonic::metrics::v1::{
            Metric, ScopeMetrics, Summary, SummaryDataPoint, summary_data_point,
        };
        let value = f64::from_bits(0x6567_7561_6700_0000); // 3.041921361098866e+180
        let p = Payload::Metrics(vec![ResourceMetrics {
            scope_metrics: vec![ScopeMetrics {
                metrics: vec![Metric {
                    name: "m".into(),
                    data: Some(metric::Data::Summary(Summary {
                        data_points: vec![SummaryDataPoint {
                            quantile_values: vec![summary_data_point::ValueAtQuantile { quantile: 0.5, value }],
                            ..Default::default()
                        }],
                    })),
                    ..Default::default()
                }],
                ..Default::default()
            }],
            ..Default::default()
        }]);
        let back: Payload = serde_json::from_str::<ExportMetricsServiceRequest>(&p.to_json()).unwrap().into();
        assert_eq!(back.encode_request(), p.encode_request(), "{}", p.to_json());
    }

    #[test]
    fn json_uses_the_otlp_mapping() {
        let json = traces(1, 1, 1).to_json();
        assert!(json.starts_with(r#"{"resourceSpans":[{"resource""#), "{json}");
        assert!(json.contains(r#""traceId":"01010101010101010101010101010101""#), "hex ids: {json}");
    }
}
