//! otlp-collector: an OTLP/gRPC and OTLP/HTTP collector that validates,
//! batches and forwards telemetry without losing what it acknowledged.
//!
//! [`Collector::start`] binds every listener and starts every pipeline;
//! [`Collector::shutdown`] stops them in order (receivers, pipelines,
//! exporters) within the configured deadline. The same code runs in the
//! binary and in the integration tests.
#![forbid(unsafe_code)]

pub mod config;
pub mod encoded;
pub mod exporter;
pub mod metrics;
pub mod pipeline;
pub mod receiver;
pub mod server;
pub mod signal;
pub mod tap;
pub mod telemetry;
pub mod validate;
pub mod watch;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use anyhow::Context;
use axum::Router;
use axum::http::{StatusCode, header};
use axum::routing::get;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tonic_health::ServingStatus;
use tonic_health::server::HealthReporter;

use crate::config::{Config, ProcessorConfig, component_type};
use crate::exporter::{Exporter, QueueSettings, spawn_queue};
use crate::metrics::Metrics;
use crate::pipeline::batch::PipelineTask;
use crate::pipeline::{MemoryBudget, PipelineInput, Pipelines, Processor};
use crate::receiver::Ingest;
use crate::receiver::grpc::OtlpGrpc;
use crate::server::access::Access;
use crate::server::ratelimit::RateLimiter;
use crate::server::tls::{Alpn, Tls};
use crate::server::{ServeOptions, Shared, serve};
use crate::signal::Signal;
use crate::tap::{TapHub, TapService};

/// gRPC health service names: the empty name (the whole server) and one per OTLP service.
const HEALTH_SERVICES: [&str; 4] = [
    "",
    "opentelemetry.proto.collector.trace.v1.TraceService",
    "opentelemetry.proto.collector.metrics.v1.MetricsService",
    "opentelemetry.proto.collector.logs.v1.LogsService",
];

/// A running collector.
pub struct Collector {
    /// Where OTLP/gRPC listens (with port 0 in the config: the port chosen).
    pub grpc_addr: Option<SocketAddr>,
    pub http_addr: Option<SocketAddr>,
    pub telemetry_addr: Option<SocketAddr>,
    pub metrics: Arc<Metrics>,
    config: std::sync::Mutex<Config>,
    health: HealthReporter,
    ready: Arc<AtomicBool>,
    stop_receivers: CancellationToken,
    stop_telemetry: CancellationToken,
    connections: TaskTracker,
    telemetry: TaskTracker,
    /// What the receivers hand requests to; swapped by a reload.
    ingest: IngestSlot,
    budget: Arc<MemoryBudget>,
    tap: Arc<TapHub>,
    /// The pipelines and exporters of the current configuration.
    generation: tokio::sync::Mutex<Option<Generation>>,
    /// Generations replaced by a reload, still delivering what they hold.
    retiring: TaskTracker,
}

/// The receivers' handle on the current [`Ingest`].
pub type IngestSlot = Arc<arc_swap::ArcSwap<Ingest>>;

/// What one configuration's `processors`, `exporters` and `service` build:
/// the pipelines with their exporters, ACLs and rate limits. A reload builds a
/// new generation, switches the receivers to it, and lets the old one
/// deliver what it holds.
struct Generation {
    ingest: Arc<Ingest>,
    stop: CancellationToken,
    abort: CancellationToken,
    pipelines: Vec<JoinHandle<()>>,
    exports: TaskTracker,
}

impl Generation {
    fn build(
        config: &Config,
        metrics: &Arc<Metrics>,
        budget: &Arc<MemoryBudget>,
        tap: &Arc<TapHub>,
    ) -> anyhow::Result<Self> {
        let stop = CancellationToken::new();
        let abort = CancellationToken::new();
        let exports = TaskTracker::new();
        let mut exporters: BTreeMap<&str, Arc<Exporter>> = BTreeMap::new();
        let mut inputs = Vec::new();
        let mut pipelines = Vec::new();
        for (name, pipe) in &config.service.pipelines {
            let signal: Signal = component_type(name).parse().map_err(anyhow::Error::msg)?;
            let mut queues = Vec::new();
            for exp in &pipe.exporters {
                let exporter_config = &config.exporters[exp];
                let exporter = match exporters.get(exp.as_str()) {
                    Some(e) => e.clone(),
                    None => {
                        let e =
                            Arc::new(Exporter::build(exp, exporter_config).with_context(|| format!("exporter {exp}"))?);
                        exporters.insert(exp, e.clone());
                        e
                    }
                };
                let (retry, queue) = Exporter::settings(exporter_config);
                let (size, capacity) = metrics.queue(exp, name);
                let settings = QueueSettings { retry, queue, metrics: metrics.exporter(exp, signal), size, capacity };
                queues.push(spawn_queue(exp.clone(), exporter, settings, abort.clone(), &exports));
            }
            let mut processors = Vec::new();
            let mut batch = None;
            for p in &pipe.processors {
                match &config.processors[p] {
                    ProcessorConfig::Batch(b) => batch = Some(b.clone()),
                    ProcessorConfig::Attributes(a) => processors.push(Processor::Attributes(a.actions.clone())),
                    ProcessorConfig::Resource(a) => processors.push(Processor::Resource(a.actions.clone())),
                    ProcessorConfig::Filter(f) => processors
                        .push(Processor::Filter { config: f.clone(), dropped: metrics.processor_dropped(p, signal) }),
                }
            }
            let (tx, rx) = tokio::sync::mpsc::channel(config.service.limits.pipeline_queue_size);
            inputs.push((signal, PipelineInput { name: name.clone(), processors, tx }));
            let task = PipelineTask { name: name.clone(), rx, batch, exporters: queues };
            pipelines.push(tokio::spawn(task.run(stop.clone())));
        }
        let access = Access::new(config.service.access.clone());
        let limiter = RateLimiter::new(config.service.rate_limits.clone());
        let pipelines_in = Pipelines::new(inputs, budget.clone(), config.service.limits.admission_wait);
        let ingest = Arc::new(Ingest::new(pipelines_in, tap.clone(), access, limiter, metrics.clone()));
        Ok(Self { ingest, stop, abort, pipelines, exports })
    }

    /// Retires a generation a reload replaced. Requests that took it before
    /// the swap may still be being read or admitted: its inputs close only
    /// once none holds it (or at `deadline`), so none of them is refused as
    /// "shutting down" by a collector that is not. Then [`Generation::drain`].
    async fn retire(self, deadline: Instant) {
        // The slot no longer holds it: what else does is a request in flight.
        while Arc::strong_count(&self.ingest) > 1 && Instant::now() < deadline {
            tokio::time::sleep(std::time::Duration::from_millis(1)).await;
        }
        self.drain(deadline).await;
    }

    /// Closes the pipeline inputs, flushes batches into the exporters and lets
    /// them deliver until `deadline`; past it, retries give up.
    async fn drain(mut self, deadline: Instant) {
        self.stop.cancel();
        for task in self.pipelines.drain(..) {
            let _ = tokio::time::timeout_at(deadline, task).await;
        }
        self.exports.close();
        if tokio::time::timeout_at(deadline, self.exports.wait()).await.is_err() {
            tracing::warn!("exports still running at the deadline, abandoning retries");
            self.abort.cancel();
            let _ = tokio::time::timeout(std::time::Duration::from_secs(2), self.exports.wait()).await;
        }
    }
}

async fn bind(what: &str, endpoint: &str) -> anyhow::Result<TcpListener> {
    TcpListener::bind(endpoint).await.with_context(|| format!("binding the {what} endpoint {endpoint}"))
}

impl Collector {
    /// Binds the listeners and starts the pipelines. Fails if the config is
    /// invalid, an exporter cannot be built, or a port cannot be bound.
    pub async fn start(config: Config) -> anyhow::Result<Self> {
        config.validate()?;
        let metrics = Arc::new(Metrics::new());
        let limit = config.service.limits.memory_limit_mib * 1024 * 1024;
        metrics.memory_limit.set(limit as i64);
        let budget = MemoryBudget::new(limit, metrics.memory_used.clone());
        let tap = TapHub::new(metrics.tap_subscribers.clone(), metrics.tap_dropped.clone());
        let generation = Generation::build(&config, &metrics, &budget, &tap)?;
        let ingest: IngestSlot = Arc::new(arc_swap::ArcSwap::new(generation.ingest.clone()));

        let (health, health_service) = tonic_health::server::health_reporter();
        for name in HEALTH_SERVICES {
            health.set_service_status(name, ServingStatus::Serving).await;
        }
        let ready = Arc::new(AtomicBool::new(true));
        let stop_receivers = CancellationToken::new();
        let connections = TaskTracker::new();
        let otlp = &config.receivers.otlp;
        let tls = match &otlp.tls {
            Some(t) => {
                let tls = Tls::load(t, metrics.tls_reload_failures.clone(), metrics.tls_not_after.clone())?;
                tls.watch(stop_receivers.clone())?;
                Some(tls)
            }
            None => None,
        };
        let shared = Shared {
            shutdown: stop_receivers.clone(),
            tracker: connections.clone(),
            connections: metrics.connections.clone(),
            slots: Arc::new(tokio::sync::Semaphore::new(otlp.max_connections)),
            refused: metrics.refused_connections.clone(),
        };

        let mut grpc_addr = None;
        if let Some(grpc) = &otlp.grpc {
            let listener = bind("gRPC", &grpc.endpoint).await?;
            grpc_addr = Some(listener.local_addr()?);
            let mut others = tonic::service::Routes::new(health_service);
            if grpc.tap {
                others =
                    others.add_service(otlp_fleet::tap::v1::tap_server::TapServer::new(TapService::new(tap.clone())));
            }
            let svc =
                OtlpGrpc::new(ingest.clone(), otlp.max_message_bytes, otlp.max_concurrent_requests, others.prepare());
            let options = ServeOptions {
                http2_only: true,
                max_concurrent_streams: Some(grpc.max_concurrent_streams),
                keepalive: Some((grpc.keepalive_interval, grpc.keepalive_timeout)),
                max_connection_age: grpc.max_connection_age,
                grace: grpc.max_connection_age_grace,
            };
            let tls = tls.clone().map(|t| (t, Alpn::H2));
            tokio::spawn(serve(listener, tls, svc, options, shared.clone()));
        }
        let mut http_addr = None;
        if let Some(http) = &otlp.http {
            let listener = bind("HTTP", &http.endpoint).await?;
            http_addr = Some(listener.local_addr()?);
            let router = receiver::http::router(ingest.clone(), otlp.max_message_bytes);
            let options = ServeOptions::http(config.service.limits.shutdown_timeout / 2);
            let tls = tls.clone().map(|t| (t, Alpn::H2Http11));
            tokio::spawn(serve(listener, tls, router, options, shared.clone()));
        }

        let stop_telemetry = CancellationToken::new();
        let telemetry = TaskTracker::new();
        let mut telemetry_addr = None;
        if let Some(endpoint) = &config.service.telemetry.endpoint {
            let listener = bind("telemetry", endpoint).await?;
            telemetry_addr = Some(listener.local_addr()?);
            let router = telemetry_router(metrics.clone(), ready.clone(), tls.clone());
            let options = ServeOptions::http(std::time::Duration::from_secs(1));
            let shared = Shared {
                shutdown: stop_telemetry.clone(),
                tracker: telemetry.clone(),
                connections: Default::default(),
                slots: Arc::new(tokio::sync::Semaphore::new(64)),
                refused: Default::default(),
            };
            tokio::spawn(serve(listener, None, router, options, shared));
        }
        tracing::info!(grpc = ?grpc_addr, http = ?http_addr, telemetry = ?telemetry_addr, "collector started");
        Ok(Self {
            grpc_addr,
            http_addr,
            telemetry_addr,
            metrics,
            config: std::sync::Mutex::new(config),
            health,
            ready,
            stop_receivers,
            stop_telemetry,
            connections,
            telemetry,
            ingest,
            budget,
            tap,
            generation: tokio::sync::Mutex::new(Some(generation)),
            retiring: TaskTracker::new(),
        })
    }

    /// Makes `memory_limit_mib` a limit on this whole process: its resident
    /// memory is read every [`pipeline::RESIDENT_INTERVAL`] and telemetry
    /// gets the part of the limit the rest of the process leaves. For the
    /// binary, which is one collector to a process; collectors embedded
    /// side by side in one process (tests) limit only their telemetry.
    pub fn limit_process_memory(&self) {
        let watch = pipeline::watch_resident(
            self.budget.clone(),
            self.metrics.memory_resident.clone(),
            self.stop_receivers.clone(),
        );
        tokio::spawn(watch);
    }

    /// Stops in order: health goes NOT_SERVING, listeners close, connections
    /// get GOAWAY and their in-flight requests finish; then pipelines flush
    /// into the exporters, which deliver what they hold. Everything must be
    /// done by the configured `shutdown_timeout`; past it, retries give up
    /// (and what they held is counted as failed).
    pub async fn shutdown(self) {
        let deadline = Instant::now() + self.config.lock().expect("config lock").service.limits.shutdown_timeout;
        tracing::info!("shutting down: health NOT_SERVING, draining connections");
        self.ready.store(false, Ordering::SeqCst);
        for name in HEALTH_SERVICES {
            self.health.set_service_status(name, ServingStatus::NotServing).await;
        }
        self.stop_receivers.cancel();
        self.connections.close();
        if tokio::time::timeout_at(deadline, self.connections.wait()).await.is_err() {
            tracing::warn!("connections still open at the shutdown deadline");
        }
        if let Some(generation) = self.generation.lock().await.take() {
            generation.drain(deadline).await;
        }
        self.retiring.close();
        let _ = tokio::time::timeout_at(deadline, self.retiring.wait()).await;
        self.stop_telemetry.cancel();
        self.telemetry.close();
        self.telemetry.wait().await;
        tracing::info!("shutdown complete");
    }
}

impl Collector {
    /// The configuration in force.
    pub fn config(&self) -> Config {
        self.config.lock().expect("config lock").clone()
    }

    /// Applies a new configuration without dropping a connection or an
    /// accepted item: pipelines, exporters, processors, ACLs, rate limits and
    /// the memory limit change; the old pipelines deliver what they hold.
    /// Listener settings (`receivers`, `service.telemetry`, `max_workers`) need
    /// a restart: they are kept, and named in the returned warnings.
    pub async fn reload(&self, new: Config) -> anyhow::Result<Vec<String>> {
        new.validate()?;
        let mut warnings = Vec::new();
        {
            let old = self.config.lock().expect("config lock");
            if old.receivers != new.receivers {
                warnings.push("receivers changed: restart to apply".to_owned());
            }
            if old.service.telemetry != new.service.telemetry {
                warnings.push("service.telemetry changed: restart to apply".to_owned());
            }
            if old.service.limits.max_workers != new.service.limits.max_workers {
                warnings.push("service.limits.max_workers changed: restart to apply".to_owned());
            }
            if old.processors == new.processors
                && old.exporters == new.exporters
                && old.service.pipelines == new.service.pipelines
                && old.service.access == new.service.access
                && old.service.rate_limits == new.service.rate_limits
                && old.service.limits == new.service.limits
            {
                return Ok(warnings);
            }
        }
        let generation = Generation::build(&new, &self.metrics, &self.budget, &self.tap)?;
        let limit = new.service.limits.memory_limit_mib * 1024 * 1024;
        self.budget.set_limit(limit);
        self.metrics.memory_limit.set(limit as i64);
        self.ingest.store(generation.ingest.clone());
        let deadline = Instant::now() + new.service.limits.shutdown_timeout;
        if let Some(old) = self.generation.lock().await.replace(generation) {
            self.retiring.spawn(old.retire(deadline));
        }
        *self.config.lock().expect("config lock") = new;
        self.metrics.config_reloads.inc();
        tracing::info!("configuration reloaded");
        Ok(warnings)
    }
}

/// `/metrics`, `/healthz` (the process runs) and `/readyz` (it takes traffic).
fn telemetry_router(metrics: Arc<Metrics>, ready: Arc<AtomicBool>, tls: Option<Arc<Tls>>) -> Router {
    Router::new()
        .route(
            "/metrics",
            get(move || {
                let body = metrics.encode();
                async move { ([(header::CONTENT_TYPE, "application/openmetrics-text; version=1.0.0; charset=utf-8")], body) }
            }),
        )
        .route(
            "/healthz",
            get(move || {
                // Still healthy (the previous certificate serves), but say so.
                let problem = tls.as_ref().and_then(|t| t.problem());
                async move {
                    match problem {
                        Some(p) => format!("ok\ntls: reload failed, serving the previous certificate: {p}\n"),
                        None => "ok\n".to_owned(),
                    }
                }
            }),
        )
        .route(
            "/readyz",
            get(move || {
                let ready = ready.load(Ordering::SeqCst);
                async move {
                    if ready { (StatusCode::OK, "ready\n") } else { (StatusCode::SERVICE_UNAVAILABLE, "draining\n") }
                }
            }),
        )
}
