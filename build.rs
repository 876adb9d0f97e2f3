//! Compiles the project's own protobuf API (proto/): the collector's live-tap
//! service.
//!
//! A pure-Rust compiler (protox) is used, so no system `protoc` is needed. The
//! OTLP message types come from the `opentelemetry-proto` crate; no upstream
//! .proto file is copied into this repository.

use std::error::Error;

fn main() -> Result<(), Box<dyn Error>> {
    println!("cargo:rerun-if-changed=proto");
    let fds = protox::compile(["otlpfleet/tap/v1/tap.proto"], ["proto"])?;
    tonic_prost_build::configure().bytes(".").compile_fds(fds)?;
    Ok(())
}
