//! OTLP/HTTP on 4318: protobuf and JSON, gzip and zstd, and the error answers
//! the specification asks for.

mod common;

use std::io::Write;

use common::{TestCollector, otlp, span_numbers, total_items};
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceResponse;
use otlp_collector::signal::{Payload, Signal};
use prost::Message;

fn gzip(data: &[u8]) -> Vec<u8> {
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    gz.write_all(data).unwrap();
    gz.finish().unwrap()
}

async fn post(url: &str, content_type: &str, encoding: Option<&str>, body: Vec<u8>) -> reqwest::Response {
    let mut req = reqwest::Client::new().post(url).header("content-type", content_type).body(body);
    if let Some(e) = encoding {
        req = req.header("content-encoding", e);
    }
    req.send().await.unwrap()
}

/// The OTLP-JSON example of the OTLP specification (hex ids, string int64s).
const SPEC_JSON: &str = r#"{"resourceSpans":[{"resource":{"attributes":[{"key":"service.name","value":{"stringValue":"my.service"}}]},
"scopeSpans":[{"scope":{"name":"my.library","version":"1.0.0"},"spans":[{"traceId":"5b8efff798038103d269b633813fc60c",
"spanId":"eee19b7ec3c1b174","parentSpanId":"eee19b7ec3c1b173","name":"I'm a server span","startTimeUnixNano":"1544712660000000000",
"endTimeUnixNano":"1544712661000000000","kind":2,"attributes":[{"key":"my.span.attr","value":{"intValue":"42"}}]}]}]}]}"#;

#[tokio::test]
async fn protobuf_json_gzip_and_zstd_bodies_are_accepted() {
    let c = TestCollector::start().await;
    let url = c.http_url("/v1/traces");

    let resp = post(&url, "application/x-protobuf", None, otlp::traces("svc", 0, 2).encode_to_vec()).await;
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["content-type"], "application/x-protobuf");
    assert_eq!(
        ExportTraceServiceResponse::decode(resp.bytes().await.unwrap()).unwrap(),
        ExportTraceServiceResponse::default()
    );

    let resp =
        post(&url, "application/x-protobuf", Some("gzip"), gzip(&otlp::traces("svc", 2, 2).encode_to_vec())).await;
    assert_eq!(resp.status(), 200);
    let zstd = zstd::encode_all(&otlp::traces("svc", 4, 2).encode_to_vec()[..], 3).unwrap();
    assert_eq!(post(&url, "application/x-protobuf", Some("zstd"), zstd).await.status(), 200);

    let resp = post(&url, "application/json", Some("gzip"), gzip(SPEC_JSON.as_bytes())).await;
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["content-type"], "application/json");
    assert_eq!(resp.text().await.unwrap(), "{}");

    let written = c.wait_items(Signal::Traces, 7).await;
    let numbers = span_numbers(&written);
    assert!((0..6).all(|n| numbers.contains(&n)), "{numbers:?}");
    let json_span = written
        .iter()
        .flat_map(|p| match p {
            Payload::Traces(v) => v.iter().flat_map(|r| &r.scope_spans).flat_map(|s| &s.spans).cloned().collect(),
            _ => vec![],
        })
        .find(|s| s.name == "I'm a server span")
        .expect("the JSON span arrived");
    assert_eq!(
        json_span.trace_id,
        [0x5b, 0x8e, 0xff, 0xf7, 0x98, 0x03, 0x81, 0x03, 0xd2, 0x69, 0xb6, 0x33, 0x81, 0x3f, 0xc6, 0x0c]
    );
    assert_eq!(json_span.start_time_unix_nano, 1_544_712_660_000_000_000);
    c.collector.shutdown().await;
}

#[tokio::test]
async fn logs_over_json_with_a_partly_bad_batch_get_partial_success() {
    let c = TestCollector::start().await;
    let mut req = otlp::logs("svc", &["ok 1", "bad", "ok 2"]);
    req.resource_logs[0].scope_logs[0].log_records[1].trace_id = vec![1, 2, 3];
    let resp = post(&c.http_url("/v1/logs"), "application/json", None, serde_json::to_vec(&req).unwrap()).await;
    assert_eq!(resp.status(), 200);
    let body: serde_json::Value = resp.json().await.unwrap();
    assert_eq!(body["partialSuccess"]["rejectedLogRecords"], 1, "{body}");
    assert_eq!(
        body["partialSuccess"]["errorMessage"],
        "1 invalid item rejected: log record: trace_id must be empty or 16 bytes (got 3)"
    );
    assert_eq!(total_items(&c.wait_items(Signal::Logs, 2).await), 2);
    c.collector.shutdown().await;
}

#[tokio::test]
async fn bad_requests_get_the_status_the_spec_asks_for() {
    let c = TestCollector::start_with(|cfg| cfg.receivers.otlp.max_message_bytes = 1 << 20).await;
    let url = c.http_url("/v1/metrics");

    let resp = post(&url, "text/plain", None, b"hello".to_vec()).await;
    assert_eq!(resp.status(), 415);

    let resp = post(&url, "application/json", None, b"{\"resourceMetrics\": 7}".to_vec()).await;
    assert_eq!(resp.status(), 400);
    let status: serde_json::Value = resp.json().await.unwrap();
    assert_eq!(status["code"], 3, "google.rpc.Status with INVALID_ARGUMENT");
    assert!(status["message"].as_str().unwrap().starts_with("malformed OTLP JSON"), "{status}");

    let resp = post(&url, "application/x-protobuf", None, vec![0x0a, 0x64, 1]).await;
    assert_eq!(resp.status(), 400);

    // A gzip bomb: 32 MiB of zeros in ~32 KiB.
    let resp = post(&url, "application/x-protobuf", Some("gzip"), gzip(&vec![0; 32 << 20])).await;
    assert_eq!(resp.status(), 413);

    let resp = post(&url, "application/x-protobuf", Some("br"), vec![1]).await;
    assert_eq!(resp.status(), 400);
    c.collector.shutdown().await;
}
