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
