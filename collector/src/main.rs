//! The `otlp-collector` binary: run the collector, check a config, or tap
//! into a running collector's live data.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use clap::{Parser, Subcommand};
use otlp_collector::Collector;
use otlp_collector::config::Config;
use otlp_collector::signal::{Signal, decode_request};
use otlp_fleet::tap::v1::tap_client::TapClient;
use otlp_fleet::tap::v1::{Signal as TapSignal, WatchRequest};
use tokio_util::sync::CancellationToken;

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// mimalloc v3's `mi_option_purge_delay` (its include/mimalloc.h; retired
/// options keep their places in that enum, so the index is stable).
/// libmimalloc-sys does not name it; a test below checks its default.
const MI_OPTION_PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;

/// Makes mimalloc return freed memory to the system after 10 ms instead of
/// a second (its default). The memory limit reads resident memory (see
/// `Collector::limit_process_memory`), and under overload a second of freed
/// request bodies is tens of megabytes it would count against telemetry.
/// 0 (at once) kept no less memory under overload and cost 20-30 % of the
/// throughput on 95 KB requests (pages faulted back in and zeroed).
/// `MIMALLOC_PURGE_DELAY` in the environment still wins.
fn return_freed_memory_soon() {
    if std::env::var_os("MIMALLOC_PURGE_DELAY").is_none() {
        // SAFETY: sets an integer option; called before any other thread exists.
        unsafe { libmimalloc_sys::mi_option_set(MI_OPTION_PURGE_DELAY, 10) }
    }
}

#[derive(Parser)]
#[command(name = "otlp-collector", version, about = "An OTLP/gRPC and OTLP/HTTP collector")]
struct Cli {
    /// The YAML config file. Without it: OTLP on 4317/4318, batched into the debug exporter.
    #[arg(long, short, env = "COLLECTOR_CONFIG", global = true)]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Run the collector (the default).
    Run,
    /// Check a config file (and the environment overrides); names every bad key.
    Validate {
        file: PathBuf,
        /// Print the effective configuration when it is valid.
        #[arg(long)]
        print: bool,
    },
    /// Stream live telemetry that matches a filter out of a running collector,
    /// one OTLP-JSON line per event.
    Tap {
        /// The collector's gRPC address.
        #[arg(long, default_value = "http://127.0.0.1:4317")]
        addr: String,
        /// traces, metrics or logs; repeat for several; none for all.
        #[arg(long)]
        signal: Vec<Signal>,
        /// KEY=VALUE that a resource or item attribute must equal; repeatable.
        #[arg(long = "match", value_parser = parse_match)]
        matches: Vec<(String, String)>,
        /// Fraction of matching requests to print.
        #[arg(long, default_value_t = 1.0)]
        sample: f64,
        /// Exit after this many events.
        #[arg(long)]
        count: Option<u64>,
    },
}

fn parse_match(s: &str) -> Result<(String, String), String> {
    s.split_once('=').map(|(k, v)| (k.to_owned(), v.to_owned())).ok_or_else(|| format!("`{s}` is not KEY=VALUE"))
}

fn load(path: Option<&PathBuf>) -> anyhow::Result<Config> {
    let mut config = match path {
        Some(path) => {
            let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
            Config::from_yaml(&text).with_context(|| format!("in {}", path.display()))?
        }
        None => Config::default(),
    };
    config.apply_env(|k| std::env::var(k).ok())?;
    Ok(config)
}

fn main() -> std::process::ExitCode {
    return_freed_memory_soon();
    match run_cli(Cli::parse()) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("otlp-collector: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn run_cli(cli: Cli) -> anyhow::Result<()> {
    match cli.command.unwrap_or(Command::Run) {
        Command::Validate { file, print } => {
            let config = load(Some(&file))?;
            if print {
                print!("{config}");
            } else {
                println!("{}: valid", file.display());
            }
            Ok(())
        }
        Command::Tap { addr, signal, matches, sample, count } => {
            tokio::runtime::Runtime::new()?.block_on(tap(addr, signal, matches, sample, count))
        }
        Command::Run => {
            let config = load(cli.config.as_ref())?;
            otlp_collector::telemetry::init(config.service.telemetry.log_format);
            let mut runtime = tokio::runtime::Builder::new_multi_thread();
            if config.service.limits.max_workers > 0 {
                runtime.worker_threads(config.service.limits.max_workers);
            }
            // Without the LIFO slot, a task woken by the running task waits
            // its turn at the back of the queue instead of running next. For
            // HTTP/2 this matters: each request's task wakes its
            // connection's task with the answer, and with the LIFO slot the
            // connection writes that one answer at once, a syscall per
            // request. Without it the connection runs after the other ready
            // requests and writes their answers together.
            #[cfg(tokio_unstable)]
            runtime.disable_lifo_slot();
            runtime.enable_all().build()?.block_on(run(config, cli.config))
        }
    }
}

async fn run(config: Config, path: Option<PathBuf>) -> anyhow::Result<()> {
    let collector = Arc::new(Collector::start(config).await?);
    collector.limit_process_memory();
    let stop_watching = CancellationToken::new();
    let watcher = match path {
        Some(path) => Some(watch_config(collector.clone(), path, stop_watching.clone())?),
        None => None,
    };
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::select! {
        _ = term.recv() => tracing::info!("SIGTERM received"),
        _ = tokio::signal::ctrl_c() => tracing::info!("SIGINT received"),
    }
    stop_watching.cancel();
    // The watcher holds a clone of the collector until it has stopped.
    if let Some(watcher) = watcher {
        let _ = watcher.await;
    }
    let collector = Arc::into_inner(collector).ok_or_else(|| anyhow::anyhow!("the collector is still shared"))?;
    collector.shutdown().await;
    Ok(())
}

/// Reloads the configuration when its file changes (a ConfigMap volume swaps
/// a symlink; an editor writes in place: both are seen). An invalid file is
/// logged and counted, and the running configuration stays.
fn watch_config(
    collector: Arc<Collector>,
    path: PathBuf,
    stop: CancellationToken,
) -> anyhow::Result<tokio::task::JoinHandle<()>> {
    let file = path.display().to_string();
    let mut ticks = otlp_collector::watch::watch_files(&[&file], Duration::from_secs(10), stop)?;
    let mut last = std::fs::read(&path).ok();
    Ok(tokio::spawn(async move {
        while ticks.recv().await.is_some() {
            let now = std::fs::read(&path).ok();
            if now.is_none() || now == last {
                continue;
            }
            last = now;
            match load(Some(&path)) {
                Ok(config) => match collector.reload(config).await {
                    Ok(warnings) => warnings.iter().for_each(|w| tracing::warn!(config = %file, "{w}")),
                    Err(e) => {
                        collector.metrics.config_reload_failures.inc();
                        tracing::error!(config = %file, error = %format!("{e:#}"), "reload failed, keeping the running configuration");
                    }
                },
                Err(e) => {
                    collector.metrics.config_reload_failures.inc();
                    tracing::error!(config = %file, error = %format!("{e:#}"), "invalid configuration, keeping the running one");
                }
            }
        }
    }))
}

async fn tap(
    addr: String,
    signals: Vec<Signal>,
    matches: Vec<(String, String)>,
    sample: f64,
    count: Option<u64>,
) -> anyhow::Result<()> {
    let mut client = TapClient::connect(addr.clone()).await.with_context(|| format!("connecting to {addr}"))?;
    let request = WatchRequest {
        signals: signals
            .iter()
            .map(|s| match s {
                Signal::Traces => TapSignal::Traces as i32,
                Signal::Metrics => TapSignal::Metrics as i32,
                Signal::Logs => TapSignal::Logs as i32,
            })
            .collect(),
        match_attributes: matches.into_iter().collect(),
        sample_rate: sample,
    };
    // Keep the request stream open: closing it is fine, but there is nothing more to say.
    let requests = futures::StreamExt::chain(futures::stream::iter([request]), futures::stream::pending());
    let mut events = client.watch(requests).await?.into_inner();
    let mut seen = 0;
    while let Some(event) = tokio::time::timeout(Duration::from_secs(3600), events.message()).await?? {
        let signal = match event.signal() {
            TapSignal::Traces => Signal::Traces,
            TapSignal::Metrics => Signal::Metrics,
            TapSignal::Logs => Signal::Logs,
            TapSignal::Unspecified => bail!("the collector sent an event without a signal"),
        };
        if event.dropped > 0 {
            eprintln!("tap: {} events dropped (this client read too slowly)", event.dropped);
        }
        println!("{}", decode_request(signal, &event.otlp)?.to_json());
        seen += 1;
        if count.is_some_and(|c| seen >= c) {
            break;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_purge_delay_index_is_mimallocs() {
        // SAFETY: reads an integer option.
        let delay = unsafe { libmimalloc_sys::mi_option_get(MI_OPTION_PURGE_DELAY) };
        // v3's default is 1000 ms; the test binary did not change it.
        assert_eq!(delay, 1000, "option {MI_OPTION_PURGE_DELAY} is not mimalloc's purge delay");
    }
}
