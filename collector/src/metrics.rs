//! The collector's own metrics, served in the Prometheus text format on
//! `/metrics`. Names follow the OpenTelemetry Collector's
//! (`otelcol_receiver_accepted_spans` and so on), with an `otlp_` prefix and
//! the signal as a label.
//!
//! Handles are resolved once per (signal, component) so the request path only
//! touches atomics.

use std::sync::Arc;
use std::sync::atomic::AtomicU64;

use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::{Registry, Unit};

use crate::signal::Signal;

type Labels = Vec<(&'static str, String)>;

fn labels(pairs: &[(&'static str, &str)]) -> Labels {
    pairs.iter().map(|(k, v)| (*k, (*v).to_owned())).collect()
}

fn latency_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.000_05, 2.0, 18))
}

fn with(base: &Labels, key: &'static str, value: &str) -> Labels {
    let mut l = base.clone();
    l.push((key, value.to_owned()));
    l
}

pub struct Metrics {
    registry: Registry,
    accepted_items: Family<Labels, Counter>,
    accepted_bytes: Family<Labels, Counter>,
    refused_items: Family<Labels, Counter>,
    requests: Family<Labels, Counter>,
    duration: Family<Labels, Histogram, fn() -> Histogram>,
    sent_items: Family<Labels, Counter>,
    sent_bytes: Family<Labels, Counter>,
    send_failed_items: Family<Labels, Counter>,
    retries: Family<Labels, Counter>,
    queue_size: Family<Labels, Gauge>,
    queue_capacity: Family<Labels, Gauge>,
    processor_dropped: Family<Labels, Counter>,
    client_refused: Family<Labels, Counter>,
    pub refused_connections: Counter,
    pub config_reloads: Counter,
    pub config_reload_failures: Counter,
    pub memory_used: Gauge,
    pub memory_limit: Gauge,
    pub memory_resident: Gauge,
    pub tap_subscribers: Gauge,
    pub tap_dropped: Counter,
    pub connections: Gauge,
    pub tls_reload_failures: Counter,
    pub tls_not_after: Gauge<f64, AtomicU64>,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Metrics")
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("otlp");
        let accepted_items = Family::default();
        registry.register(
            "receiver_accepted_items",
            "Items (spans, data points, log records) accepted into the pipeline",
            accepted_items.clone(),
        );
        let accepted_bytes = Family::default();
        registry.register_with_unit(
            "receiver_accepted",
            "Encoded size of accepted requests",
            Unit::Bytes,
            accepted_bytes.clone(),
        );
        let refused_items = Family::default();
        registry.register("receiver_refused_items", "Items refused, by reason", refused_items.clone());
        let requests = Family::default();
        registry.register(
            "receiver_requests",
            "Export requests by outcome (a gRPC status code name)",
            requests.clone(),
        );
        let duration: Family<Labels, Histogram, fn() -> Histogram> = Family::new_with_constructor(latency_histogram);
        registry.register_with_unit(
            "receiver_request_duration",
            "Time from a decoded request to its answer",
            Unit::Seconds,
            duration.clone(),
        );
        let sent_items = Family::default();
        registry.register("exporter_sent_items", "Items an exporter delivered", sent_items.clone());
        let sent_bytes = Family::default();
        registry.register_with_unit(
            "exporter_sent",
            "Encoded size of delivered batches",
            Unit::Bytes,
            sent_bytes.clone(),
        );
        let send_failed_items = Family::default();
        registry.register(
            "exporter_send_failed_items",
            "Items an exporter gave up on, by reason",
            send_failed_items.clone(),
        );
        let retries = Family::default();
        registry.register("exporter_retries", "Export attempts that were retried", retries.clone());
        let queue_size = Family::default();
        registry.register("exporter_queue_size", "Batches waiting in an exporter's queue", queue_size.clone());
        let queue_capacity = Family::default();
        registry.register("exporter_queue_capacity", "Capacity of an exporter's queue", queue_capacity.clone());
        let processor_dropped = Family::default();
        registry.register("processor_dropped_items", "Items a filter processor dropped", processor_dropped.clone());
        let client_refused = Family::default();
        registry.register(
            "receiver_client_refused_items",
            "Items refused per client (the matching access or rate-limit pattern, else other), by reason",
            client_refused.clone(),
        );
        let refused_connections = Counter::default();
        registry.register(
            "receiver_refused_connections",
            "Connections closed before serving: connection limit, failed or slow TLS handshake, nothing sent",
            refused_connections.clone(),
        );
        let config_reloads = Counter::default();
        registry.register("config_reloads", "Configuration changes applied without a restart", config_reloads.clone());
        let config_reload_failures = Counter::default();
        registry.register(
            "config_reload_failures",
            "Configuration changes refused (invalid); the previous configuration stays",
            config_reload_failures.clone(),
        );
        let memory_used = Gauge::default();
        registry.register_with_unit(
            "memory_used",
            "Telemetry being read and held in queues and batches (estimated in-memory size)",
            Unit::Bytes,
            memory_used.clone(),
        );
        let memory_limit = Gauge::default();
        registry.register_with_unit(
            "memory_limit",
            "The memory limit (memory_limit_mib): telemetry gets what the rest of the process leaves of it",
            Unit::Bytes,
            memory_limit.clone(),
        );
        let memory_resident = Gauge::default();
        registry.register_with_unit(
            "memory_resident",
            "Resident memory of the process, as the memory limit sees it",
            Unit::Bytes,
            memory_resident.clone(),
        );
        let tap_subscribers = Gauge::default();
        registry.register("tap_subscribers", "Connected live-tap clients", tap_subscribers.clone());
        let tap_dropped = Counter::default();
        registry.register(
            "tap_dropped_events",
            "Tap events dropped because a tap client read too slowly",
            tap_dropped.clone(),
        );
        let connections = Gauge::default();
        registry.register("receiver_connections", "Open client connections", connections.clone());
        let tls_reload_failures = Counter::default();
        registry.register(
            "tls_reload_failures",
            "Certificate reloads that failed and kept the old material",
            tls_reload_failures.clone(),
        );
        let tls_not_after = Gauge::default();
        registry.register(
            "tls_certificate_not_after_timestamp_seconds",
            "notAfter of the serving certificate",
            tls_not_after.clone(),
        );
        Self {
            registry,
            accepted_items,
            accepted_bytes,
            refused_items,
            requests,
            duration,
            sent_items,
            sent_bytes,
            send_failed_items,
            retries,
            queue_size,
            queue_capacity,
            processor_dropped,
            client_refused,
            refused_connections,
            config_reloads,
            config_reload_failures,
            memory_used,
            memory_limit,
            memory_resident,
            tap_subscribers,
            tap_dropped,
            connections,
            tls_reload_failures,
            tls_not_after,
        }
    }

    /// The metrics in the Prometheus text exposition format.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        encode(&mut out, &self.registry).expect("writing to a String cannot fail");
        out
    }

    pub fn receiver(&self, signal: Signal, transport: &'static str) -> ReceiverMetrics {
        let l = labels(&[("signal", signal.as_str()), ("transport", transport)]);
        ReceiverMetrics {
            accepted_items: self.accepted_items.get_or_create(&l).clone(),
            accepted_bytes: self.accepted_bytes.get_or_create(&l).clone(),
            duration: self.duration.get_or_create(&l).clone(),
            refused: self.refused_items.clone(),
            ok_requests: self.requests.get_or_create(&with(&l, "code", "Ok")).clone(),
            requests: self.requests.clone(),
            labels: l,
        }
    }

    pub fn exporter(&self, exporter: &str, signal: Signal) -> ExporterMetrics {
        let l = labels(&[("exporter", exporter), ("signal", signal.as_str())]);
        ExporterMetrics {
            sent_items: self.sent_items.get_or_create(&l).clone(),
            sent_bytes: self.sent_bytes.get_or_create(&l).clone(),
            retries: self.retries.get_or_create(&l).clone(),
            failed: self.send_failed_items.clone(),
            labels: l,
        }
    }

    /// Gauges of one exporter queue: (size, capacity).
    pub fn queue(&self, exporter: &str, pipeline: &str) -> (Gauge, Gauge) {
        let l = labels(&[("exporter", exporter), ("pipeline", pipeline)]);
        (self.queue_size.get_or_create(&l).clone(), self.queue_capacity.get_or_create(&l).clone())
    }

    pub fn client_refused(&self, client: &str, reason: &'static str, items: u64) {
        self.client_refused.get_or_create(&labels(&[("client", client), ("reason", reason)])).inc_by(items);
    }

    pub fn processor_dropped(&self, processor: &str, signal: Signal) -> Counter {
        self.processor_dropped.get_or_create(&labels(&[("processor", processor), ("signal", signal.as_str())])).clone()
    }
}

#[derive(Clone, Debug)]
pub struct ReceiverMetrics {
    pub accepted_items: Counter,
    pub accepted_bytes: Counter,
    pub duration: Histogram,
    refused: Family<Labels, Counter>,
    ok_requests: Counter,
    requests: Family<Labels, Counter>,
    labels: Labels,
}

impl ReceiverMetrics {
    pub fn refused(&self, reason: &'static str, items: u64) {
        self.refused.get_or_create(&with(&self.labels, "reason", reason)).inc_by(items);
    }

    pub fn request(&self, code: tonic::Code) {
        if code == tonic::Code::Ok {
            self.ok_requests.inc();
        } else {
            self.requests.get_or_create(&with(&self.labels, "code", &format!("{code:?}"))).inc();
        }
    }
}

#[derive(Clone, Debug)]
pub struct ExporterMetrics {
    pub sent_items: Counter,
    pub sent_bytes: Counter,
    pub retries: Counter,
    failed: Family<Labels, Counter>,
    labels: Labels,
}

impl ExporterMetrics {
    pub fn failed(&self, reason: &'static str, items: u64) {
        self.failed.get_or_create(&with(&self.labels, "reason", reason)).inc_by(items);
    }
}

pub type SharedMetrics = Arc<Metrics>;
