//! `otlp-load`: drives an OTLP/gRPC or OTLP/HTTP server with deterministic
//! payloads and reports throughput, latency percentiles (HDR histogram) and
//! errors by status (see [`otlp_bench::load`]).
#![forbid(unsafe_code)]

use clap::Parser;
use otlp_bench::load::{Options, run};

#[derive(Parser, Debug)]
#[command(name = "otlp-load", about = "Load generator for OTLP/gRPC and OTLP/HTTP collectors")]
struct Cli {
    #[command(flatten)]
    options: Options,
    /// Print one JSON object instead of the human summary.
    #[arg(long)]
    json: bool,
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let mut runtime = tokio::runtime::Builder::new_multi_thread();
    // As in the collector (see its main.rs): without the LIFO slot, a
    // connection's task runs after the other ready requests and writes them
    // together instead of one write per request.
    #[cfg(tokio_unstable)]
    runtime.disable_lifo_slot();
    let report = runtime.enable_all().build()?.block_on(run(&cli.options))?;
    if cli.json {
        println!("{}", serde_json::to_string(&report)?);
    } else {
        println!("{report}");
    }
    Ok(())
}
