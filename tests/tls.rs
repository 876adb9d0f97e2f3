//! TLS 1.3 and mutual TLS with real clients, certificate rotation the way a
//! Kubernetes Secret volume does it, identity-based ACLs and rate limits, and
//! hostile connections.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::pki::{Ca, Pem, TlsSecret, write_secret_volume};
use common::{TestCollector, otlp, wait_for};
use opentelemetry_proto::tonic::collector::logs::v1::logs_service_client::LogsServiceClient;
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_client::TraceServiceClient;
use otlp_collector::config::{
    AccessConfig, AccessDefault, AccessRule, RateLimit, RateLimitConfig, RateLimitOverride, TlsVersion,
};
use otlp_collector::signal::Signal;
use tokio::io::AsyncReadExt;
use tonic::Code;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Identity};
use tonic_types::StatusExt;

async fn tls_collector(
    secret: &TlsSecret,
    mtls: bool,
    edit: impl FnOnce(&mut otlp_collector::config::Config),
) -> TestCollector {
    let tls = secret.tls_config(mtls);
    TestCollector::start_with(|cfg| {
        cfg.receivers.otlp.tls = Some(tls);
        edit(cfg);
    })
    .await
}

async fn channel(c: &TestCollector, ca: &Ca, client: Option<&Pem>) -> Result<Channel, tonic::transport::Error> {
    let mut tls = ClientTlsConfig::new().ca_certificate(Certificate::from_pem(ca.pem())).domain_name("localhost");
    if let Some(p) = client {
        tls = tls.identity(Identity::from_pem(&p.cert, &p.key));
    }
    let url = format!("https://{}", c.collector.grpc_addr.unwrap());
    Channel::from_shared(url).unwrap().tls_config(tls)?.connect().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mtls_accepts_clients_of_the_ca_and_refuses_the_rest() {
    let secret = TlsSecret::new("test-ca");
    let c = tls_collector(&secret, true, |_| {}).await;
    let good = secret.ca.client("spiffe://test/ns/shop/sa/checkout");

    let mut client = TraceServiceClient::new(channel(&c, &secret.ca, Some(&good)).await.unwrap());
    client.export(otlp::traces("svc", 0, 3)).await.unwrap();
    assert_eq!(common::total_items(&c.wait_items(Signal::Traces, 3).await), 3);

    // No client certificate: the handshake fails.
    let refused = match channel(&c, &secret.ca, None).await {
        Err(_) => true,
        Ok(ch) => TraceServiceClient::new(ch).export(otlp::traces("svc", 10, 1)).await.is_err(),
    };
    assert!(refused, "a client without a certificate must be refused");
    // A certificate from another CA: refused too.
    let stranger = Ca::new("other-ca").client("spiffe://test/ns/shop/sa/checkout");
    let refused = match channel(&c, &secret.ca, Some(&stranger)).await {
        Err(_) => true,
        Ok(ch) => TraceServiceClient::new(ch).export(otlp::traces("svc", 20, 1)).await.is_err(),
    };
    assert!(refused, "a client certificate from another CA must be refused");
    assert_eq!(common::total_items(&c.written()), 3, "nothing from refused clients");
    c.collector.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_rust_sdk_exports_over_mtls() {
    use opentelemetry::trace::{Tracer as _, TracerProvider as _};
    use opentelemetry_otlp::{WithExportConfig, WithTonicConfig};
    let secret = TlsSecret::new("test-ca");
    let c = tls_collector(&secret, true, |_| {}).await;
    let me = secret.ca.client("spiffe://test/ns/shop/sa/sdk");
    let tls = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(secret.ca.pem()))
        .identity(Identity::from_pem(&me.cert, &me.key))
        .domain_name("localhost");
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_tonic()
        .with_endpoint(format!("https://{}", c.collector.grpc_addr.unwrap()))
        .with_tls_config(tls)
        .build()
        .unwrap();
    let provider = opentelemetry_sdk::trace::SdkTracerProvider::builder().with_batch_exporter(exporter).build();
    let tracer = provider.tracer("tls");
    for i in 0..10 {
        tracer.in_span(format!("secure-{i}"), |_| {});
    }
    tokio::task::spawn_blocking(move || provider.force_flush()).await.unwrap().unwrap();
    assert_eq!(common::total_items(&c.wait_items(Signal::Traces, 10).await), 10);
    c.collector.shutdown().await;
}

fn s_client(port: u16, version: &str) -> (bool, String) {
    let out = std::process::Command::new("openssl")
        .args(["s_client", "-connect", &format!("127.0.0.1:{port}"), version, "-servername", "localhost"])
        .stdin(std::process::Stdio::null())
        .output()
        .expect("openssl is installed (apt-get install openssl)");
    let text = String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    (out.status.success() && text.contains("Cipher is"), text)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_1_2_is_refused_unless_allowed() {
    let secret = TlsSecret::new("test-ca");
    let c = tls_collector(&secret, false, |_| {}).await;
    let port = c.collector.grpc_addr.unwrap().port();
    let (ok, text) = tokio::task::spawn_blocking(move || s_client(port, "-tls1_2")).await.unwrap();
    assert!(!ok, "TLS 1.2 must fail by default:\n{text}");
    let (ok, text) = tokio::task::spawn_blocking(move || s_client(port, "-tls1_3")).await.unwrap();
    assert!(ok && text.contains("TLSv1.3"), "TLS 1.3 works:\n{text}");
    c.collector.shutdown().await;

    let c =
        tls_collector(&secret, false, |cfg| cfg.receivers.otlp.tls.as_mut().unwrap().min_version = TlsVersion::V1_2)
            .await;
    let port = c.collector.http_addr.unwrap().port();
    let (ok, text) = tokio::task::spawn_blocking(move || s_client(port, "-tls1_2")).await.unwrap();
    assert!(ok, "min_version 1.2 allows TLS 1.2:\n{text}");
    c.collector.shutdown().await;
}

/// The serial number of the certificate a fresh handshake presents.
async fn served_serial(addr: std::net::SocketAddr, ca: &Ca) -> u64 {
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls::pki_types::CertificateDer::pem_slice_iter(ca.pem().as_bytes()) {
        roots.add(cert.unwrap()).unwrap();
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
    let tls = tokio_rustls::TlsConnector::from(Arc::new(config)).connect(name, tcp).await.unwrap();
    let leaf = tls.get_ref().1.peer_certificates().unwrap()[0].clone();
    let (_, cert) = x509_parser::parse_x509_certificate(&leaf).unwrap();
    cert.raw_serial().iter().fold(0u64, |acc, b| acc << 8 | u64::from(*b))
}

use rustls::pki_types::pem::PemObject;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn certificates_rotate_like_a_secret_volume_without_a_restart() {
    let secret = TlsSecret::new("test-ca");
    let c = tls_collector(&secret, false, |_| {}).await;
    let addr = c.collector.grpc_addr.unwrap();
    assert_eq!(served_serial(addr, &secret.ca).await, 1);
    let mut before = TraceServiceClient::new(channel(&c, &secret.ca, None).await.unwrap());
    before.export(otlp::traces("svc", 0, 1)).await.unwrap();

    // The kubelet writes a new timestamped directory and swaps `..data`.
    let next = secret.ca.server(2);
    write_secret_volume(
        secret.dir.path(),
        "v2",
        &[("tls.crt", &next.cert), ("tls.key", &next.key), ("ca.crt", &secret.ca.pem())],
    );
    wait_for("new handshakes to present serial 2", || async {
        (served_serial(addr, &secret.ca).await == 2).then_some(())
    })
    .await;
    // The connection opened before the swap carries on.
    before.export(otlp::traces("svc", 1, 1)).await.unwrap();
    let text = c.metrics_text().await;
    assert!(
        text.contains("otlp_tls_certificate_not_after_timestamp_seconds 2051222400"),
        "notAfter (2035-01-01) exported:\n{text}"
    );

    // A broken replacement (a key that does not match) keeps the old material.
    let wrong = secret.ca.server(3);
    write_secret_volume(
        secret.dir.path(),
        "v3",
        &[("tls.crt", &wrong.cert), ("tls.key", &next.key), ("ca.crt", &secret.ca.pem())],
    );
    let healthz = format!("http://{}/healthz", c.collector.telemetry_addr.unwrap());
    let body = wait_for("healthz to report the failed reload", || async {
        let body = reqwest::get(&healthz).await.ok()?.text().await.ok()?;
        body.contains("tls: reload failed").then_some(body)
    })
    .await;
    assert!(body.contains("does not match"), "{body}");
    assert_eq!(served_serial(addr, &secret.ca).await, 2, "still the last good certificate");
    assert!(c.metrics_text().await.contains("otlp_tls_reload_failures_total 1"));
    c.collector.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acls_and_rate_limits_follow_the_client_identity() {
    let secret = TlsSecret::new("test-ca");
    let c = tls_collector(&secret, true, |cfg| {
        cfg.service.access = AccessConfig {
            default: AccessDefault::Deny,
            rules: vec![
                AccessRule {
                    identities: vec!["spiffe://test/ns/shop/*".into()],
                    signals: vec![Signal::Traces, Signal::Metrics],
                },
                AccessRule {
                    identities: vec!["spiffe://test/ns/ops/*".into()],
                    signals: vec![Signal::Traces, Signal::Logs],
                },
            ],
        };
        cfg.service.rate_limits = RateLimitConfig {
            default: None,
            overrides: vec![RateLimitOverride {
                identities: vec!["spiffe://test/ns/shop/*".into()],
                limit: RateLimit { requests_per_second: Some(2.0), items_per_second: None, burst_seconds: 2.0 },
            }],
        };
    })
    .await;
    let shop = secret.ca.client("spiffe://test/ns/shop/sa/checkout");
    let ops = secret.ca.client("spiffe://test/ns/ops/sa/batch");
    let shop_ch = channel(&c, &secret.ca, Some(&shop)).await.unwrap();
    let ops_ch = channel(&c, &secret.ca, Some(&ops)).await.unwrap();

    // ACL: shop may not send logs, ops may.
    let denied = LogsServiceClient::new(shop_ch.clone()).export(otlp::logs("shop", &["x"])).await.unwrap_err();
    assert_eq!(denied.code(), Code::PermissionDenied);
    assert_eq!(denied.message(), "client `spiffe://test/ns/shop/sa/checkout` may not send logs");
    LogsServiceClient::new(ops_ch.clone()).export(otlp::logs("ops", &["y"])).await.unwrap();

    // Rate limit: shop's burst is 4 requests; the 5th is throttled with a RetryInfo.
    let mut shop_traces = TraceServiceClient::new(shop_ch);
    for n in 0..4 {
        shop_traces.export(otlp::traces("shop", n, 1)).await.unwrap();
    }
    let throttled = shop_traces.export(otlp::traces("shop", 4, 1)).await.unwrap_err();
    assert_eq!(throttled.code(), Code::ResourceExhausted);
    let delay = throttled.get_details_retry_info().and_then(|r| r.retry_delay).expect("RetryInfo with a delay");
    assert!(delay > Duration::ZERO && delay <= Duration::from_millis(501), "{delay:?}");
    // ops shares nothing with shop: 20 requests in a row go through.
    let mut ops_traces = TraceServiceClient::new(ops_ch);
    for n in 100..120 {
        ops_traces.export(otlp::traces("ops", n, 1)).await.unwrap();
    }
    // Once under its limit again, shop gets through.
    tokio::time::sleep(delay).await;
    shop_traces.export(otlp::traces("shop", 4, 1)).await.unwrap();

    let text = c.metrics_text().await;
    assert!(
        text.contains(
            r#"otlp_receiver_client_refused_items_total{client="spiffe://test/ns/shop/*",reason="denied"} 1"#
        ),
        "{text}"
    );
    assert!(
        text.contains(
            r#"otlp_receiver_client_refused_items_total{client="spiffe://test/ns/shop/*",reason="rate_limited"} 1"#
        ),
        "{text}"
    );
    c.collector.shutdown().await;
}

/// Reads until the server closes the connection; fails after the deadline.
async fn closed_by_server(mut stream: tokio::net::TcpStream) {
    let mut buf = [0u8; 1024];
    let closed = tokio::time::timeout(common::DEADLINE, async {
        loop {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
    })
    .await;
    assert!(closed.is_ok(), "the server kept the connection open");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silent_connections_and_connection_floods_are_bounded() {
    let secret = TlsSecret::new("test-ca");
    let c = tls_collector(&secret, false, |cfg| {
        cfg.receivers.otlp.tls.as_mut().unwrap().handshake_timeout = Duration::from_millis(300);
        cfg.receivers.otlp.max_connections = 3;
    })
    .await;
    let addr = c.collector.grpc_addr.unwrap();
    // Slowloris: a connection that never starts its handshake is closed.
    closed_by_server(tokio::net::TcpStream::connect(addr).await.unwrap()).await;

    // Three working connections fill the limit; a fourth is closed at once.
    let mut held = Vec::new();
    for n in 0..3 {
        let mut client = TraceServiceClient::new(channel(&c, &secret.ca, None).await.unwrap());
        client.export(otlp::traces("svc", n, 1)).await.unwrap();
        held.push(client);
    }
    closed_by_server(tokio::net::TcpStream::connect(addr).await.unwrap()).await;
    assert!(c.metrics_text().await.contains("otlp_receiver_refused_connections_total 2"));
    // Huge metadata is refused; the connection limit is unaffected by it.
    let mut req = tonic::Request::new(otlp::traces("svc", 9, 1));
    req.metadata_mut().insert("x-junk", "a".repeat(100 * 1024).parse().unwrap());
    assert!(held[0].export(req).await.is_err(), "100 KiB of headers must be refused");
    drop(held);
    c.collector.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_otlp_exporter_forwards_over_mtls() {
    use otlp_collector::config::{ClientTlsConfig, ExporterConfig, OtlpExporterConfig};
    let secret = TlsSecret::new("test-ca");
    let b = tls_collector(&secret, true, |_| {}).await;
    let me = secret.ca.client("spiffe://test/ns/edge/sa/collector-a");
    let files = tempfile::tempdir().unwrap();
    let write = |name: &str, pem: &str| {
        let path = files.path().join(name);
        std::fs::write(&path, pem).unwrap();
        path.display().to_string()
    };
    let tls = ClientTlsConfig {
        ca_file: Some(write("ca.crt", &secret.ca.pem())),
        cert_file: Some(write("tls.crt", &me.cert)),
        key_file: Some(write("tls.key", &me.key)),
        server_name: Some("localhost".into()),
    };
    let endpoint = format!("https://{}", b.collector.grpc_addr.unwrap());
    let a = TestCollector::start_with(|cfg| {
        let otlp = OtlpExporterConfig { endpoint, tls: Some(tls), ..Default::default() };
        cfg.exporters = [("otlp".to_owned(), ExporterConfig::Otlp(Box::new(otlp)))].into();
        for p in cfg.service.pipelines.values_mut() {
            p.exporters = vec!["otlp".into()];
        }
    })
    .await;
    common::trace_client(&a.grpc_url()).await.export(otlp::traces("svc", 0, 25)).await.unwrap();
    assert_eq!(common::span_numbers(&b.wait_items(Signal::Traces, 25).await), (0..25).collect::<Vec<_>>());
    a.collector.shutdown().await;
    b.collector.shutdown().await;
}
