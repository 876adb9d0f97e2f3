//! Bad input over gRPC gets a clear status, never a panic, and nothing that
//! was valid is lost: malformed protobuf, bad ids, partial batches,
//! compression bombs, oversized messages.

mod common;

use std::io::Write;

use common::{TestCollector, export_raw, otlp, span_numbers};
use otlp_collector::signal::Signal;
use prost::Message;
use tonic::Code;
use tonic::codec::CompressionEncoding;

#[tokio::test]
async fn malformed_protobuf_is_invalid_argument() {
    let c = TestCollector::start().await;
    for signal in Signal::ALL {
        // Field 1, wire type 2 (length-delimited), length 100, but only 3 bytes follow.
        let err = export_raw(&c.grpc_url(), signal, vec![0x0a, 100, 1, 2, 3], None).await.unwrap_err();
        assert_eq!(err.code(), Code::InvalidArgument, "{signal}: {err:?}");
        assert!(err.message().starts_with("malformed protobuf"), "{}", err.message());
    }
    // Invalid UTF-8 in a string field (span name) is malformed too.
    let mut req = otlp::traces("svc", 0, 1).encode_to_vec();
    let at = req.windows(6).position(|w| w == b"span-0").unwrap();
    req[at] = 0xff;
    let err = export_raw(&c.grpc_url(), Signal::Traces, req, None).await.unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument, "{err:?}");
    c.collector.shutdown().await;
}

#[tokio::test]
async fn a_request_of_only_bad_ids_is_invalid_argument() {
    let c = TestCollector::start().await;
    let mut req = otlp::traces("svc", 0, 2);
    req.resource_spans[0].scope_spans[0].spans[0].trace_id.truncate(15);
    req.resource_spans[0].scope_spans[0].spans[1].span_id = vec![1; 9];
    let err = otlp_client(&c).await.export(req).await.unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert_eq!(
        err.message(),
        "2 invalid items rejected; first: span \"span-0\": trace_id must be 16 bytes, not all zero (got 15)"
    );
    assert!(
        c.metrics_text()
            .await
            .contains(r#"otlp_receiver_refused_items_total{signal="traces",transport="grpc",reason="invalid"} 2"#)
    );
    c.collector.shutdown().await;
}

#[tokio::test]
async fn a_partly_bad_request_is_accepted_minus_the_bad_items() {
    let c = TestCollector::start().await;
    let mut req = otlp::traces("svc", 0, 3);
    req.resource_spans[0].scope_spans[0].spans[1].span_id = vec![0; 8]; // all-zero ids are invalid
    let resp = otlp_client(&c).await.export(req).await.unwrap().into_inner();
    let partial = resp.partial_success.expect("partial_success is set");
    assert_eq!(partial.rejected_spans, 1);
    assert_eq!(
        partial.error_message,
        "1 invalid item rejected: span \"span-1\": span_id must be 8 bytes, not all zero (got 8)"
    );
    let written = c.wait_items(Signal::Traces, 2).await;
    assert_eq!(span_numbers(&written), vec![0, 2]);
    c.collector.shutdown().await;
}

#[tokio::test]
async fn gzip_and_zstd_requests_are_accepted() {
    let c = TestCollector::start().await;
    let url = c.grpc_url();
    export_raw(&url, Signal::Traces, otlp::traces("svc", 0, 5).encode_to_vec(), Some(CompressionEncoding::Gzip))
        .await
        .unwrap();
    export_raw(&url, Signal::Traces, otlp::traces("svc", 5, 5).encode_to_vec(), Some(CompressionEncoding::Zstd))
        .await
        .unwrap();
    let mut got = span_numbers(&c.wait_items(Signal::Traces, 10).await);
    got.sort();
    assert_eq!(got, (0..10).collect::<Vec<_>>());
    c.collector.shutdown().await;
}

#[tokio::test]
async fn a_decompression_bomb_is_refused_and_the_server_carries_on() {
    let c = TestCollector::start_with(|cfg| cfg.receivers.otlp.max_message_bytes = 1 << 20).await;
    // 64 MiB of zeros compresses to about 64 KiB: far under the limit on the
    // wire, 64 times over it once inflated.
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    gz.write_all(&vec![0u8; 64 << 20]).unwrap();
    let bomb = gz.finish().unwrap();
    assert!(bomb.len() < 128 << 10);
    let err = send_precompressed(&c.grpc_url(), bomb).await;
    assert_eq!(err.code(), Code::ResourceExhausted, "{err:?}");
    // The collector is still there and takes the next request.
    otlp_client(&c).await.export(otlp::traces("svc", 0, 1)).await.unwrap();
    c.wait_items(Signal::Traces, 1).await;
    c.collector.shutdown().await;
}

#[tokio::test]
async fn an_oversized_message_is_refused() {
    let c = TestCollector::start_with(|cfg| cfg.receivers.otlp.max_message_bytes = 64 << 10).await;
    let big = otlp::traces("svc", 0, 3000); // ~100 KB
    assert!(big.encoded_len() > 64 << 10);
    let err = otlp_client(&c).await.export(big).await.unwrap_err();
    assert_eq!(err.code(), Code::ResourceExhausted, "{err:?}");
    c.collector.shutdown().await;
}

async fn otlp_client(
    c: &TestCollector,
) -> opentelemetry_proto::tonic::collector::trace::v1::trace_service_client::TraceServiceClient<tonic::transport::Channel>
{
    common::trace_client(&c.grpc_url()).await
}

/// Sends a gRPC frame that is already gzip-compressed (what a hostile client
/// would do), bypassing the client's own compression.
async fn send_precompressed(url: &str, gz: Vec<u8>) -> tonic::Status {
    let mut frame = vec![1u8]; // compressed flag
    frame.extend_from_slice(&(gz.len() as u32).to_be_bytes());
    frame.extend_from_slice(&gz);
    let url = format!("{url}{}", Signal::Traces.grpc_path());
    // gRPC needs HTTP/2 with prior knowledge.
    let client = reqwest::Client::builder().http2_prior_knowledge().build().unwrap();
    let resp = client
        .post(url)
        .header("content-type", "application/grpc")
        .header("grpc-encoding", "gzip")
        .header("te", "trailers")
        .body(frame)
        .send()
        .await
        .unwrap();
    let headers = resp.headers().clone();
    // Trailers-only responses carry the status in the headers.
    let code = headers.get("grpc-status").map(|v| v.to_str().unwrap().parse::<i32>().unwrap());
    let message = headers.get("grpc-message").map(|v| v.to_str().unwrap().to_owned()).unwrap_or_default();
    tonic::Status::new(Code::from_i32(code.expect("grpc-status in a trailers-only response")), message)
}

/// A raw gRPC call over HTTP/2 with `headers`: the HTTP status, and the
/// status the answer's headers carry (a trailers-only error).
async fn raw_call(url: &str, headers: &[(&str, &str)], body: Vec<u8>) -> (u16, Option<String>, Option<String>) {
    let client = reqwest::Client::builder().http2_prior_knowledge().build().unwrap();
    let mut request = client.post(format!("{url}{}", Signal::Traces.grpc_path())).header("te", "trailers");
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let resp = request.body(body).send().await.unwrap();
    let header = |name| resp.headers().get(name).map(|v: &reqwest::header::HeaderValue| v.to_str().unwrap().to_owned());
    (resp.status().as_u16(), header("grpc-status"), header("grpc-accept-encoding"))
}

#[tokio::test]
async fn an_unknown_encoding_or_content_type_is_refused_plainly() {
    let c = TestCollector::start().await;
    let body = otlp::traces("svc", 0, 1).encode_to_vec();
    let mut frame = vec![1u8];
    frame.extend_from_slice(&(body.len() as u32).to_be_bytes());
    frame.extend_from_slice(&body);
    // An encoding the collector does not take: UNIMPLEMENTED, with the list it does take.
    let grpc = ("content-type", "application/grpc");
    let (http, status, accepts) = raw_call(&c.grpc_url(), &[grpc, ("grpc-encoding", "snappy")], frame.clone()).await;
    assert_eq!((http, status.as_deref(), accepts.as_deref()), (200, Some("12"), Some("gzip,zstd")));
    // A compressed message without an encoding is malformed.
    let (_, status, _) = raw_call(&c.grpc_url(), &[grpc], frame.clone()).await;
    assert_eq!(status.as_deref(), Some("3"));
    // Not gRPC at all: HTTP 415.
    frame[0] = 0;
    let (http, _, _) = raw_call(&c.grpc_url(), &[("content-type", "application/json")], frame).await;
    assert_eq!(http, 415);
    let metrics = c.metrics_text().await;
    for code in ["Unimplemented", "InvalidArgument"] {
        let line = format!(r#"otlp_receiver_requests_total{{signal="traces",transport="grpc",code="{code}"}} 1"#);
        assert!(metrics.contains(&line), "{line} in\n{metrics}");
    }
    c.collector.shutdown().await;
}
