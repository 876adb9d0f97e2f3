//! Configuration reloads: new pipelines take over while requests keep
//! coming, and nothing acknowledged before, during or after is lost.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use common::{TestCollector, config_yaml, otlp, read_file_export, span_numbers, wait_for};
use otlp_collector::config::Config;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_under_load_loses_nothing_and_applies_the_new_pipelines() {
    let c = TestCollector::start().await;
    let second = c.dir.path().join("second.jsonl");
    let url = c.grpc_url();

    // Four clients send numbered spans until told to stop; they record what was acknowledged.
    let stop = Arc::new(AtomicBool::new(false));
    let next = Arc::new(AtomicU64::new(0));
    let mut senders = Vec::new();
    for _ in 0..4 {
        let (stop, next, url) = (stop.clone(), next.clone(), url.clone());
        senders.push(tokio::spawn(async move {
            let mut client = common::trace_client(&url).await;
            let mut acked = Vec::new();
            while !stop.load(Ordering::Relaxed) {
                let n = next.fetch_add(1, Ordering::Relaxed);
                client.export(otlp::traces("svc", n * 5, 5)).await.expect("no request fails during a reload");
                acked.extend(n * 5..n * 5 + 5);
            }
            acked
        }));
    }
    wait_for("some traffic before the reload", || async { (next.load(Ordering::Relaxed) > 50).then_some(()) }).await;

    // The new config writes to another file and tags every span.
    let yaml = config_yaml(&second, "  attributes/tag: {actions: [{key: reloaded, action: insert, value: true}]}", "")
        .replace("traces: {processors: [batch]", "traces: {processors: [attributes/tag, batch]");
    let mut config = Config::from_yaml(&yaml).unwrap();
    // Listener settings stay as they are (port 0 would mean "restart").
    config.receivers = c.collector_config_receivers();
    let warnings = c.collector.reload(config).await.unwrap();
    assert!(warnings.is_empty(), "{warnings:?}");
    let at_reload = next.load(Ordering::Relaxed);
    wait_for("traffic after the reload", || async { (next.load(Ordering::Relaxed) > at_reload + 50).then_some(()) })
        .await;
    stop.store(true, Ordering::Relaxed);
    let mut acked: Vec<u64> = Vec::new();
    for s in senders {
        acked.extend(s.await.unwrap());
    }
    acked.sort();
    c.collector.shutdown().await; // flushes both generations

    let mut first_file = span_numbers(&read_file_export(&c.out));
    let second_file = read_file_export(&second);
    let mut written = first_file.clone();
    written.extend(span_numbers(&second_file));
    written.sort();
    assert_eq!(written, acked, "every acknowledged span exactly once, across the two generations");
    assert!(!second_file.is_empty(), "the new pipeline got traffic");
    first_file.sort();
    // More than 50 requests were sent before the reload; the ones in flight at
    // the swap may land in either generation, the rest are in the old file.
    assert!(first_file.len() >= 200, "the old pipeline delivered what it had: {}", first_file.len());
    let tagged = second_file.iter().all(|p| match p {
        otlp_collector::signal::Payload::Traces(v) => v
            .iter()
            .flat_map(|r| &r.scope_spans)
            .flat_map(|s| &s.spans)
            .all(|s| s.attributes.iter().any(|kv| kv.key == "reloaded")),
        _ => true,
    });
    assert!(tagged, "the new processors apply after the reload");
}

#[tokio::test]
async fn an_invalid_reload_is_refused_and_listener_changes_are_named() {
    let c = TestCollector::start().await;
    let mut bad = Config::default();
    bad.service.pipelines.get_mut("traces").unwrap().exporters = vec!["nope".into()];
    let err = c.collector.reload(bad).await.unwrap_err();
    assert!(format!("{err}").contains("`nope` is not defined"), "{err}");

    let mut moved = Config::from_yaml(&config_yaml(&c.out, "", "")).unwrap();
    moved.receivers.otlp.max_message_bytes = 1 << 20;
    let warnings = c.collector.reload(moved).await.unwrap();
    assert_eq!(warnings, vec!["receivers changed: restart to apply"]);
    // Still serving.
    common::trace_client(&c.grpc_url()).await.export(otlp::traces("svc", 0, 1)).await.unwrap();
    c.collector.shutdown().await;
}

/// A request that loaded the configuration before a reload but is still
/// being read when it happens finishes into the pipelines it started in:
/// the retiring generation closes its inputs only once no request holds it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_still_being_read_at_a_reload_is_accepted_not_refused() {
    let c = TestCollector::start().await;
    let (otlp_bench::Request::Metrics(request), points) = otlp_bench::Profile::Metrics1000.request() else {
        unreachable!("the metrics profile is a metrics request")
    };
    let framed = common::grpc_frame(&prost::Message::encode_to_vec(&request));
    let tcp = tokio::net::TcpStream::connect(c.collector.grpc_addr.unwrap()).await.unwrap();
    let (mut client, connection) = h2::client::handshake(tcp).await.unwrap();
    tokio::spawn(connection);

    // The request's prefix and first bytes arrive, then it waits: it has
    // taken the current configuration and is being read.
    let (response, mut rest) = common::export_started(&mut client, &framed, 1000);
    let reading = |text: String| {
        let used = text.lines().find_map(|l| l.strip_prefix("otlp_memory_used_bytes ")).map(str::trim);
        used.and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0)
    };
    wait_for("the request to be charged as being read", || async {
        (reading(c.metrics_text().await) > 0.0).then_some(())
    })
    .await;

    let second = c.dir.path().join("second.jsonl");
    let mut config = Config::from_yaml(&config_yaml(&second, "", "")).unwrap();
    config.receivers = c.collector_config_receivers();
    c.collector.reload(config).await.unwrap();

    rest.send_data(framed.slice(1000..), true).unwrap();
    let status = common::grpc_status(response).await;
    assert_eq!(status.code(), tonic::Code::Ok, "{status:?}");
    c.collector.shutdown().await;
    let old = read_file_export(&c.out);
    assert_eq!(common::total_items(&old), points, "delivered by the generation it started in");
}
