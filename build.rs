//! Compiles the project's own protobuf API (proto/) and generates the OTLP
//! collector services with a codec that hands requests over as bytes (the
//! collector walks them with `wire::scan` and decodes only what it must).
//!
//! A pure-Rust compiler (protox) is used, so no system `protoc` is needed. The
//! OTLP message types come from the `opentelemetry-proto` crate; no upstream
//! .proto file is copied into this repository.

use std::error::Error;

fn main() -> Result<(), Box<dyn Error>> {
    println!("cargo:rerun-if-changed=proto");
    let fds = protox::compile(["otlpfleet/tap/v1/tap.proto"], ["proto"])?;
    tonic_prost_build::configure().bytes(".").compile_fds(fds)?;

    let otlp = |signal: &str, service: &str, kind: &str| {
        let types = format!("opentelemetry_proto::tonic::collector::{signal}::v1");
        tonic_build::manual::Service::builder()
            .name(service)
            .package(format!("opentelemetry.proto.collector.{signal}.v1"))
            .method(
                tonic_build::manual::Method::builder()
                    .name("export")
                    .route_name("Export")
                    .input_type("bytes::Bytes")
                    .output_type(format!("{types}::Export{kind}ServiceResponse"))
                    .codec_path("crate::codec::OtlpCodec")
                    .build(),
            )
            .build()
    };
    tonic_build::manual::Builder::new().build_client(false).compile(&[
        otlp("trace", "TraceService", "Trace"),
        otlp("metrics", "MetricsService", "Metrics"),
        otlp("logs", "LogsService", "Logs"),
    ]);
    Ok(())
}
