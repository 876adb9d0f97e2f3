//! The `otlp-operator` binary: `run` (the default) reconciles OtlpCollectors and
//! CollectorPipelines; `crd` prints the CRDs.
#![forbid(unsafe_code)]

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use otlp_operator::controller::{self, RunConfig};
use otlp_operator::leader::LeaseConfig;
use otlp_operator::metrics::Metrics;
use tokio_util::sync::CancellationToken;

#[derive(Parser)]
#[command(name = "otlp-operator", version, about = "Runs fleets of OTLP collectors on Kubernetes")]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    #[command(flatten)]
    run: RunArgs,
}

#[derive(Subcommand)]
enum Command {
    /// Reconcile OtlpCollector and CollectorPipeline resources (the default).
    Run,
    /// Print the CustomResourceDefinitions as YAML (`kubectl apply -f -` takes them).
    Crd,
}

#[derive(clap::Args)]
struct RunArgs {
    /// Watch only this namespace (default: all).
    #[arg(long, env = "WATCH_NAMESPACE")]
    namespace: Option<String>,
    /// Namespace of the leader Lease.
    #[arg(long, env = "POD_NAMESPACE", default_value = "default")]
    lease_namespace: String,
    #[arg(long, env = "LEASE_NAME", default_value = "otlp-operator")]
    lease_name: String,
    /// Seconds a leader's Lease lasts without renewal.
    #[arg(long, default_value_t = 15)]
    lease_duration: u64,
    /// This instance's identity in the Lease and Events (default: the pod name or hostname).
    #[arg(long, env = "POD_NAME")]
    identity: Option<String>,
    /// Where /metrics and /healthz are served.
    #[arg(long, env = "METRICS_ADDR", default_value = "0.0.0.0:8080")]
    metrics_addr: SocketAddr,
    /// Human-readable logs instead of JSON.
    #[arg(long)]
    text_logs: bool,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    if let Some(Command::Crd) = cli.command {
        print!("{}", otlp_operator::crd_yaml());
        return Ok(());
    }
    let args = cli.run;
    otlp_operator::telemetry::init(!args.text_logs);
    let client = kube::Client::try_default().await.context("connecting to the Kubernetes API")?;
    let identity = match args.identity {
        Some(id) => id,
        None => std::fs::read_to_string("/etc/hostname")
            .map(|h| h.trim().to_owned())
            .unwrap_or_else(|_| format!("otlp-operator-{}", std::process::id())),
    };
    let config = RunConfig {
        namespace: args.namespace,
        lease: LeaseConfig {
            namespace: args.lease_namespace,
            name: args.lease_name,
            identity,
            lease_duration: Duration::from_secs(args.lease_duration.max(3)),
        },
    };
    let metrics = Arc::new(Metrics::default());
    let shutdown = CancellationToken::new();
    let http = tokio::spawn(controller::serve_http(args.metrics_addr, metrics.clone(), shutdown.clone()));
    let signal = shutdown.clone();
    tokio::spawn(async move {
        let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(t) => t,
            Err(_) => return,
        };
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
        signal.cancel();
    });
    let result = controller::run(client, config, metrics, shutdown.clone()).await;
    shutdown.cancel();
    let _ = http.await;
    result.context("the operator stopped")
}
