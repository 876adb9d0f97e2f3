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
    // The client reconnects; no request the server took is failed while
    // requests, paced over three connection lifetimes, cross GOAWAYs, and
    // none is lost or doubled.
    for n in 1..20 {
        export_across_goaway(&mut client, otlp::traces("svc", n, 1)).await;
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(common::total_items(&c.wait_items(otlp_collector::signal::Signal::Traces, 20).await), 20);
    c.collector.shutdown().await;
}

/// Exports `request`, resending it only when the server never processed it:
/// refused by a GOAWAY (NO_ERROR), or never sent because its connection
/// closed first. tonic's client can still route a request to a connection
/// that has received a GOAWAY before it reconnects
/// (<https://github.com/grpc/grpc-rust/issues/2185>); gRPC clients with
/// transparent retries resend such a request, and so does this one. Any
/// other error fails the test, and the caller's exact count shows that no
/// resent request had been taken.
async fn export_across_goaway(
    client: &mut opentelemetry_proto::tonic::collector::trace::v1::trace_service_client::TraceServiceClient<
        tonic::transport::Channel,
    >,
    request: opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest,
) {
    for _ in 0..3 {
        let Err(status) = client.export(request.clone()).await else { return };
        assert!(never_processed(&status), "only a request the server never processed may fail: {status:?}");
    }
    panic!("a request was refused three times in a row");
}

fn never_processed(status: &tonic::Status) -> bool {
    let mut source: Option<&(dyn std::error::Error + 'static)> = std::error::Error::source(status);
    while let Some(e) = source {
        if let Some(h2) = e.downcast_ref::<h2::Error>() {
            return h2.is_go_away() && h2.reason() == Some(h2::Reason::NO_ERROR);
        }
        if let Some(hyper) = e.downcast_ref::<hyper::Error>()
            && hyper.is_canceled()
        {
            return true;
        }
        source = e.source();
    }
    false
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

/// A gRPC request's announced length is charged to the memory budget when
/// its 5-byte prefix arrives, before its body is read: requests still being
/// read count against `memory_limit_mib`, and one that does not fit is
/// refused before the collector buffers it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_being_read_holds_its_announced_length_against_the_memory_limit() {
    use tonic_types::StatusExt;
    let c = TestCollector::start_with(|cfg| {
        cfg.service.limits.memory_limit_mib = 1;
        cfg.service.limits.admission_wait = Duration::ZERO;
    })
    .await;
    // Six 95 KB metrics requests, concatenated, are one ~570 KB request: two
    // of them do not fit in 1 MiB.
    let (otlp_bench::Request::Metrics(one), points) = otlp_bench::Profile::Metrics1000.request() else {
        unreachable!("the metrics profile is a metrics request")
    };
    let message = prost::Message::encode_to_vec(&one).repeat(6);
    let framed = common::grpc_frame(&message);

    let tcp = tokio::net::TcpStream::connect(c.collector.grpc_addr.unwrap()).await.unwrap();
    let (mut client, connection) = h2::client::handshake(tcp).await.unwrap();
    tokio::spawn(connection);
    let used = |text: String| gauge(&text, "otlp_memory_used_bytes ");

    // The first request sends its prefix and 1,000 bytes, then waits.
    let (first, mut rest) = common::export_started(&mut client, &framed, 1000);
    wait_for("the first request's announced length to be charged", || async {
        (used(c.metrics_text().await) >= message.len() as f64).then_some(())
    })
    .await;
    // A second of the same size does not fit beside it: refused at once, with
    // the RetryInfo that tells OTLP clients to retry.
    let (second, _) = common::export_started(&mut client, &framed, framed.len());
    let refused = common::grpc_status(second).await;
    assert_eq!(refused.code(), tonic::Code::ResourceExhausted, "{refused:?}");
    assert!(refused.get_details_retry_info().is_some(), "a refusal carries RetryInfo: {refused:?}");

    // The first one's body arrives: it is accepted and delivered whole, and
    // once written its memory is free again.
    rest.send_data(framed.slice(1000..), true).unwrap();
    let accepted = common::grpc_status(first).await;
    assert_eq!(accepted.code(), tonic::Code::Ok, "{accepted:?}");
    assert_eq!(
        common::total_items(&c.wait_items(otlp_collector::signal::Signal::Metrics, 6 * points).await),
        6 * points
    );
    wait_for("the budget to be released", || async { (used(c.metrics_text().await) == 0.0).then_some(()) }).await;
    let (third, _) = common::export_started(&mut client, &framed, framed.len());
    assert_eq!(common::grpc_status(third).await.code(), tonic::Code::Ok);
    c.collector.shutdown().await;
}
