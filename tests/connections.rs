//! Connection management: a maximum connection age sends GOAWAY so clients
//! reconnect (and spread over the pods behind a Service), without failing a
//! request.

mod common;

use std::time::Duration;

use common::{TestCollector, otlp, wait_for};

fn gauge(text: &str, name: &str) -> f64 {
    text.lines().find_map(|l| l.strip_prefix(name)).and_then(|v| v.trim().parse().ok()).unwrap_or(f64::NAN)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_are_recycled_at_their_maximum_age() {
    let c = TestCollector::start_with(|cfg| {
        let grpc = cfg.receivers.otlp.grpc.as_mut().unwrap();
        grpc.max_connection_age = Some(Duration::from_millis(300));
        grpc.max_connection_age_grace = Duration::from_secs(5);
    })
    .await;
    let mut client = common::trace_client(&c.grpc_url()).await;
    client.export(otlp::traces("svc", 0, 1)).await.unwrap();
    // The telemetry endpoint's own connections are not counted.
    assert_eq!(gauge(&c.metrics_text().await, "otlp_receiver_connections "), 1.0);

    // The idle gRPC connection is closed by the server once it is old enough.
    wait_for("the aged connection to close", || async {
        let text = reqwest::get(format!("http://{}/metrics", c.collector.telemetry_addr.unwrap()))
            .await
            .ok()?
            .text()
            .await
            .ok()?;
        (gauge(&text, "otlp_receiver_connections ") == 0.0).then_some(())
    })
    .await;
    // The client reconnects transparently; no request fails while requests,
    // paced over three connection lifetimes, cross GOAWAYs.
    for n in 1..20 {
        client.export(otlp::traces("svc", n, 1)).await.unwrap();
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(common::total_items(&c.wait_items(otlp_collector::signal::Signal::Traces, 20).await), 20);
    c.collector.shutdown().await;
}

/// Requests wait for a read permit (`max_concurrent_requests`) before their
/// bodies are read. The unread bodies of waiting requests must never fill
/// their connection's HTTP/2 window, or a request holding a permit could not
/// receive the rest of its own and the collector would stall for good. Many
/// 95 KB requests on one connection, with one permit, all complete.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_large_requests_on_one_connection_all_complete_with_one_read_permit() {
    use opentelemetry_proto::tonic::collector::metrics::v1::metrics_service_client::MetricsServiceClient;
    let c = TestCollector::start_with(|cfg| cfg.receivers.otlp.max_concurrent_requests = 1).await;
    let channel = tonic::transport::Channel::from_shared(c.grpc_url()).unwrap().connect().await.unwrap();
    let (otlp_bench::Request::Metrics(request), points) = otlp_bench::Profile::Metrics1000.request() else {
        unreachable!("the metrics profile is a metrics request")
    };
    let sends = (0..24).map(|_| {
        let mut client = MetricsServiceClient::new(channel.clone());
        let request = request.clone();
        async move { client.export(request).await }
    });
    let results = tokio::time::timeout(Duration::from_secs(60), futures::future::join_all(sends))
        .await
        .expect("every request completes (none starves for flow-control window)");
    for r in results {
        r.expect("accepted");
    }
    let accepted =
        gauge(&c.metrics_text().await, "otlp_receiver_accepted_items_total{signal=\"metrics\",transport=\"grpc\"} ");
    assert_eq!(accepted, (24 * points) as f64);
    c.collector.shutdown().await;
}
