//! The collector's configuration: one YAML file plus a few environment
//! variables, checked as a whole before anything starts.
//!
//! The operator renders this same type into a ConfigMap, so it serialises back
//! to the YAML it was read from. [`Config::from_yaml`] reports EVERY problem it
//! finds, each prefixed with the path of the offending key.

use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::str::FromStr;
use std::time::Duration;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_norway::{Mapping, Value};

use crate::signal::Signal;

/// Problems found in a configuration, one line each.
#[derive(Debug, thiserror::Error, PartialEq)]
#[error("invalid configuration:\n  - {}", .0.join("\n  - "))]
pub struct ConfigError(pub Vec<String>);

/// The whole configuration.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Config {
    pub receivers: Receivers,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub processors: BTreeMap<String, ProcessorConfig>,
    pub exporters: BTreeMap<String, ExporterConfig>,
    pub service: Service,
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Receivers {
    pub otlp: OtlpReceiver,
}

/// The OTLP receiver: gRPC on 4317 and HTTP on 4318 feed the same pipelines.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct OtlpReceiver {
    /// `null` disables the gRPC endpoint.
    pub grpc: Option<GrpcReceiver>,
    /// `null` disables the HTTP endpoint.
    pub http: Option<HttpReceiver>,
    /// Largest accepted request AFTER decompression, in bytes.
    pub max_message_bytes: usize,
    /// Server TLS for both endpoints (absent: plaintext).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tls: Option<TlsConfig>,
    /// Open connections over both endpoints; more are closed at once.
    pub max_connections: usize,
    /// gRPC export requests read and decoded at once over all connections;
    /// more wait (bounded by HTTP/2 flow control), so decoding cannot take
    /// more memory than this many requests.
    pub max_concurrent_requests: usize,
}

impl Default for OtlpReceiver {
    fn default() -> Self {
        Self {
            grpc: Some(GrpcReceiver::default()),
            http: Some(HttpReceiver::default()),
            max_message_bytes: 4 * 1024 * 1024,
            tls: None,
            max_connections: 10_000,
            max_concurrent_requests: 64,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct GrpcReceiver {
    pub endpoint: String,
    /// HTTP/2 streams one connection may have open at once. Each may park up
    /// to 64 KiB of unread request body while it waits to be read, so this
    /// also bounds what one connection holds before it is read.
    pub max_concurrent_streams: u32,
    /// Close connections after this age (GOAWAY), so clients reconnect and
    /// spread over the pods behind a Service. Absent: never.
    #[serde(with = "humantime_serde", skip_serializing_if = "Option::is_none")]
    pub max_connection_age: Option<Duration>,
    /// Time in-flight requests get after a connection's GOAWAY.
    #[serde(with = "humantime_serde")]
    pub max_connection_age_grace: Duration,
    /// Server HTTP/2 PING interval on idle connections.
    #[serde(with = "humantime_serde")]
    pub keepalive_interval: Duration,
    /// A connection whose PING is unanswered for this long is closed.
    #[serde(with = "humantime_serde")]
    pub keepalive_timeout: Duration,
    /// Serve the live-tap service (`otlpfleet.tap.v1.Tap`) on this port.
    pub tap: bool,
}

impl Default for GrpcReceiver {
    fn default() -> Self {
        Self {
            endpoint: "0.0.0.0:4317".into(),
            max_concurrent_streams: 100,
            max_connection_age: None,
            max_connection_age_grace: Duration::from_secs(30),
            keepalive_interval: Duration::from_secs(30),
            keepalive_timeout: Duration::from_secs(20),
            tap: true,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HttpReceiver {
    pub endpoint: String,
}

impl Default for HttpReceiver {
    fn default() -> Self {
        Self { endpoint: "0.0.0.0:4318".into() }
    }
}

/// Server TLS material, as files (a mounted Secret). The files are watched
/// and reloaded without a restart.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TlsConfig {
    /// PEM certificate chain, leaf first.
    pub cert_file: String,
    /// PEM private key (PKCS#8, PKCS#1 or SEC1).
    pub key_file: String,
    /// With a client CA, clients must present a certificate it signed (mTLS).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub client_ca_file: Option<String>,
    /// Lowest TLS version accepted: "1.3" (default) or "1.2".
    pub min_version: TlsVersion,
    /// A connection that has not finished its handshake by then is closed.
    #[serde(with = "humantime_serde")]
    pub handshake_timeout: Duration,
}

impl Default for TlsConfig {
    fn default() -> Self {
        Self {
            cert_file: String::new(),
            key_file: String::new(),
            client_ca_file: None,
            min_version: TlsVersion::V1_3,
            handshake_timeout: Duration::from_secs(10),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub enum TlsVersion {
    #[serde(rename = "1.2")]
    V1_2,
    #[default]
    #[serde(rename = "1.3")]
    V1_3,
}

/// Which clients may send which signals. A client is named by its identity:
/// the first URI SAN of its certificate (e.g. a SPIFFE id), else its first DNS
/// SAN, else its subject CN, else `ip:<address>` without a certificate.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AccessConfig {
    /// For identities no rule matches.
    pub default: AccessDefault,
    /// The first rule whose pattern matches the identity decides.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub rules: Vec<AccessRule>,
}

impl Default for AccessConfig {
    fn default() -> Self {
        Self { default: AccessDefault::Allow, rules: Vec::new() }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AccessDefault {
    #[default]
    Allow,
    Deny,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AccessRule {
    /// Identity patterns: exact, or a prefix ending in `*`.
    pub identities: Vec<String>,
    /// Signals these identities may send; empty: none.
    pub signals: Vec<Signal>,
}

/// Token buckets per client identity, shared by all its connections.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RateLimitConfig {
    /// Applies to every identity without an override; absent: no limit.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub default: Option<RateLimit>,
    /// The first override whose pattern matches the identity applies.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub overrides: Vec<RateLimitOverride>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RateLimit {
    /// Export requests per second; absent: unlimited.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub requests_per_second: Option<f64>,
    /// Items (spans, data points, log records) per second; absent: unlimited.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub items_per_second: Option<f64>,
    /// Bucket size, in seconds of the rates above.
    #[serde(default = "one", skip_serializing_if = "is_one")]
    pub burst_seconds: f64,
}

fn one() -> f64 {
    1.0
}

fn is_one(v: &f64) -> bool {
    *v == 1.0
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RateLimitOverride {
    pub identities: Vec<String>,
    #[serde(flatten)]
    pub limit: RateLimit,
}

/// A processor, by the type named before the `/` of its key.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(untagged)]
pub enum ProcessorConfig {
    Batch(BatchConfig),
    Attributes(AttributesConfig),
    Resource(AttributesConfig),
    Filter(FilterConfig),
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BatchConfig {
    /// A batch is sent once it holds this many items (spans, data points, log records).
    pub send_batch_size: usize,
    /// Upper bound on items per sent batch; larger ones are split. 0: no bound.
    pub send_batch_max_size: usize,
    /// A batch is sent after this time even if it is not full.
    #[serde(with = "humantime_serde")]
    pub timeout: Duration,
}

impl Default for BatchConfig {
    fn default() -> Self {
        Self { send_batch_size: 8192, send_batch_max_size: 16384, timeout: Duration::from_millis(200) }
    }
}

/// Edits of attributes: `attributes` edits items (spans, data points, log
/// records), `resource` edits the resource.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AttributesConfig {
    pub actions: Vec<AttributeAction>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AttributeAction {
    pub key: String,
    pub action: ActionKind,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<AttributeValue>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ActionKind {
    /// Set the key only where it is absent.
    Insert,
    /// Set the key only where it is present.
    Update,
    /// Set the key everywhere.
    Upsert,
    /// Remove the key.
    Delete,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum AttributeValue {
    Bool(bool),
    Int(i64),
    Double(f64),
    String(String),
}

/// Drops items: an item is kept when it matches `include` (if set) and does not
/// match `exclude` (if set).
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct FilterConfig {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub include: Option<FilterMatch>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub exclude: Option<FilterMatch>,
}

/// Every condition given must hold for an item to match.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct FilterMatch {
    /// Span names, metric names, or log severity texts; the item's must be one of them.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub names: Vec<String>,
    /// Item attributes (span, data point, log record) that must have these string values.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub attributes: BTreeMap<String, String>,
    /// Resource attributes that must have these string values.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub resource_attributes: BTreeMap<String, String>,
}

impl FilterMatch {
    fn is_empty(&self) -> bool {
        self.names.is_empty() && self.attributes.is_empty() && self.resource_attributes.is_empty()
    }
}

/// An exporter, by the type named before the `/` of its key.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(untagged)]
pub enum ExporterConfig {
    /// Boxed: by far the largest variant (TLS, headers, retry and queue).
    Otlp(Box<OtlpExporterConfig>),
    Debug(DebugExporterConfig),
    File(FileExporterConfig),
    /// Accepts and drops everything (counted as sent): for benchmarks and tests.
    Nop(NopExporterConfig),
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NopExporterConfig {}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct OtlpExporterConfig {
    /// `http://host:port` or `https://host:port`.
    pub endpoint: String,
    pub compression: Compression,
    /// Deadline of one export call.
    #[serde(with = "humantime_serde")]
    pub timeout: Duration,
    /// gRPC metadata sent with every export (e.g. an auth header).
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub headers: BTreeMap<String, String>,
    pub retry: RetryConfig,
    pub queue: QueueConfig,
    /// Client TLS for `https://` endpoints; without it the system roots verify the server.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tls: Option<ClientTlsConfig>,
}

/// TLS towards an exporter's server.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ClientTlsConfig {
    /// PEM CA bundle that verifies the server (instead of the system roots).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ca_file: Option<String>,
    /// Client certificate and key, for servers that require mTLS.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cert_file: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub key_file: Option<String>,
    /// The name to verify the server's certificate against (default: the endpoint's host).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub server_name: Option<String>,
}

impl Default for OtlpExporterConfig {
    fn default() -> Self {
        Self {
            endpoint: String::new(),
            compression: Compression::Gzip,
            timeout: Duration::from_secs(10),
            headers: BTreeMap::new(),
            retry: RetryConfig::default(),
            queue: QueueConfig::default(),
            tls: None,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Compression {
    None,
    Gzip,
    Zstd,
}

/// Exponential backoff; a server's `RetryInfo` delay takes precedence.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RetryConfig {
    pub enabled: bool,
    #[serde(with = "humantime_serde")]
    pub initial_interval: Duration,
    #[serde(with = "humantime_serde")]
    pub max_interval: Duration,
    /// Give up on a batch after retrying it this long.
    #[serde(with = "humantime_serde")]
    pub max_elapsed_time: Duration,
}

impl Default for RetryConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            initial_interval: Duration::from_millis(500),
            max_interval: Duration::from_secs(30),
            max_elapsed_time: Duration::from_secs(300),
        }
    }
}

/// The bounded queue in front of an exporter.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct QueueConfig {
    /// Batches waiting to be sent.
    pub size: usize,
    /// Batches being sent at once.
    pub consumers: usize,
}

impl Default for QueueConfig {
    fn default() -> Self {
        Self { size: 256, consumers: 4 }
    }
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DebugExporterConfig {
    pub verbosity: Verbosity,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Verbosity {
    /// One summary line per batch.
    #[default]
    Basic,
    /// Also one line per item.
    Detailed,
}

/// Writes every batch as one line of OTLP-JSON.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileExporterConfig {
    pub path: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Service {
    /// `traces`, `metrics`, `logs`, or `<signal>/<name>` for more than one.
    pub pipelines: BTreeMap<String, PipelineConfig>,
    pub telemetry: Telemetry,
    pub limits: Limits,
    /// Identity-based ACLs (which client may send which signals).
    pub access: AccessConfig,
    /// Per-identity rate limits.
    pub rate_limits: RateLimitConfig,
}

impl Default for Service {
    fn default() -> Self {
        let pipeline = PipelineConfig {
            receivers: vec!["otlp".into()],
            processors: vec!["batch".into()],
            exporters: vec!["debug".into()],
        };
        let pipelines = Signal::ALL.iter().map(|s| (s.as_str().to_owned(), pipeline.clone())).collect();
        Self {
            pipelines,
            telemetry: Telemetry::default(),
            limits: Limits::default(),
            access: AccessConfig::default(),
            rate_limits: RateLimitConfig::default(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PipelineConfig {
    /// Only `otlp` exists; accepted for familiarity with the OpenTelemetry Collector.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub receivers: Vec<String>,
    pub processors: Vec<String>,
    pub exporters: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Telemetry {
    /// `/metrics`, `/healthz` and `/readyz`. `null` disables them.
    pub endpoint: Option<String>,
    pub log_format: LogFormat,
}

impl Default for Telemetry {
    fn default() -> Self {
        Self { endpoint: Some("0.0.0.0:8888".into()), log_format: LogFormat::Json }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    #[default]
    Json,
    Text,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Limits {
    /// Telemetry being read and held in queues and batches, in MiB of
    /// (estimated) memory. Past it, requests are refused with
    /// RESOURCE_EXHAUSTED and a RetryInfo.
    pub memory_limit_mib: usize,
    /// Requests a pipeline's input queue holds before refusing.
    pub pipeline_queue_size: usize,
    /// How long a request may wait for memory or queue room before it is
    /// refused: a short burst becomes latency instead of errors.
    #[serde(with = "humantime_serde")]
    pub admission_wait: Duration,
    /// Worker threads of the runtime; 0 means one per core.
    pub max_workers: usize,
    /// Time SIGTERM gives in-flight requests and queued data to drain.
    #[serde(with = "humantime_serde")]
    pub shutdown_timeout: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            memory_limit_mib: 256,
            pipeline_queue_size: 1024,
            admission_wait: Duration::from_millis(500),
            max_workers: 0,
            shutdown_timeout: Duration::from_secs(20),
        }
    }
}

impl Default for Config {
    /// OTLP on 4317 (gRPC) and 4318 (HTTP), every signal batched into the debug exporter.
    fn default() -> Self {
        let mut processors = BTreeMap::new();
        processors.insert("batch".into(), ProcessorConfig::Batch(BatchConfig::default()));
        let mut exporters = BTreeMap::new();
        exporters.insert("debug".into(), ExporterConfig::Debug(DebugExporterConfig::default()));
        Self { receivers: Receivers::default(), processors, exporters, service: Service::default() }
    }
}

/// The type of a component key `type/name`.
pub fn component_type(key: &str) -> &str {
    key.split_once('/').map_or(key, |(t, _)| t)
}

impl Config {
    /// Parses and validates a YAML document, reporting every problem found.
    pub fn from_yaml(text: &str) -> Result<Self, ConfigError> {
        let root: Value =
            serde_norway::from_str(text).map_err(|e| ConfigError(vec![format!("not valid YAML: {e}")]))?;
        let root = match root {
            Value::Mapping(m) => m,
            Value::Null => Mapping::new(),
            _ => return Err(ConfigError(vec!["the document must be a mapping".into()])),
        };
        let mut problems = Vec::new();
        // A section absent from the file keeps its default; one present replaces it.
        let mut config = Config::default();
        if root.contains_key("processors") {
            config.processors.clear();
        }
        if root.contains_key("exporters") {
            config.exporters.clear();
        }
        for (key, value) in root {
            let Some(key) = key.as_str() else {
                problems.push(format!("{key:?}: keys must be strings"));
                continue;
            };
            match key {
                "receivers" => section(key, value, &mut problems, |v| config.receivers = v),
                "service" => section(key, value, &mut problems, |v| config.service = v),
                "processors" => {
                    for (name, value) in components(key, value, &mut problems) {
                        let path = format!("processors.{name}");
                        let parsed = match component_type(&name) {
                            "batch" => typed(&path, value, &mut problems).map(ProcessorConfig::Batch),
                            "attributes" => typed(&path, value, &mut problems).map(ProcessorConfig::Attributes),
                            "resource" => typed(&path, value, &mut problems).map(ProcessorConfig::Resource),
                            "filter" => typed(&path, value, &mut problems).map(ProcessorConfig::Filter),
                            other => {
                                problems.push(format!(
                                    "{path}: unknown processor type `{other}`, expected one of batch, attributes, resource, filter"
                                ));
                                None
                            }
                        };
                        if let Some(p) = parsed {
                            config.processors.insert(name, p);
                        }
                    }
                }
                "exporters" => {
                    for (name, value) in components(key, value, &mut problems) {
                        let path = format!("exporters.{name}");
                        let parsed = match component_type(&name) {
                            "otlp" => typed(&path, value, &mut problems).map(|o| ExporterConfig::Otlp(Box::new(o))),
                            "debug" => typed(&path, value, &mut problems).map(ExporterConfig::Debug),
                            "file" => typed(&path, value, &mut problems).map(ExporterConfig::File),
                            "nop" => typed(&path, value, &mut problems).map(ExporterConfig::Nop),
                            other => {
                                problems.push(format!(
                                    "{path}: unknown exporter type `{other}`, expected one of otlp, debug, file, nop"
                                ));
                                None
                            }
                        };
                        if let Some(e) = parsed {
                            config.exporters.insert(name, e);
                        }
                    }
                }
                other => problems
                    .push(format!("{other}: unknown key, expected one of receivers, processors, exporters, service")),
            }
        }
        if problems.is_empty() {
            config.validate()?;
            Ok(config)
        } else {
            // Report what the semantic check finds too, unless it is only noise
            // caused by sections that failed to parse.
            if let Err(ConfigError(more)) = config.validate() {
                problems.extend(more.into_iter().filter(|m| !m.contains("not defined")));
            }
            Err(ConfigError(problems))
        }
    }

    /// Renders the configuration as YAML that [`Config::from_yaml`] reads back.
    pub fn to_yaml(&self) -> String {
        serde_norway::to_string(self).expect("a Config always serialises")
    }

    /// Checks what types alone cannot: references between sections, ranges.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let mut p = Vec::new();
        let otlp = &self.receivers.otlp;
        if otlp.grpc.is_none() && otlp.http.is_none() {
            p.push("receivers.otlp: at least one of grpc and http must be enabled".into());
        }
        if let Some(g) = &otlp.grpc {
            check_addr("receivers.otlp.grpc.endpoint", &g.endpoint, &mut p);
            if !(1..=10_000).contains(&g.max_concurrent_streams) {
                p.push("receivers.otlp.grpc.max_concurrent_streams: must be between 1 and 10000".into());
            }
        }
        if let Some(h) = &otlp.http {
            check_addr("receivers.otlp.http.endpoint", &h.endpoint, &mut p);
        }
        if otlp.max_message_bytes < 1024 {
            p.push("receivers.otlp.max_message_bytes: must be at least 1024".into());
        }
        if let Some(tls) = &otlp.tls
            && (tls.cert_file.is_empty() || tls.key_file.is_empty())
        {
            p.push("receivers.otlp.tls: cert_file and key_file are both required".into());
        }
        for (name, proc) in &self.processors {
            let path = format!("processors.{name}");
            match proc {
                ProcessorConfig::Batch(b) => {
                    if b.send_batch_size == 0 {
                        p.push(format!("{path}.send_batch_size: must be at least 1"));
                    }
                    if b.send_batch_max_size != 0 && b.send_batch_max_size < b.send_batch_size {
                        p.push(format!("{path}.send_batch_max_size: must be 0 or at least send_batch_size"));
                    }
                    if b.timeout.is_zero() {
                        p.push(format!("{path}.timeout: must be more than 0"));
                    }
                }
                ProcessorConfig::Attributes(a) | ProcessorConfig::Resource(a) => {
                    if a.actions.is_empty() {
                        p.push(format!("{path}.actions: at least one action is required"));
                    }
                    for (i, action) in a.actions.iter().enumerate() {
                        if action.key.is_empty() {
                            p.push(format!("{path}.actions[{i}].key: must not be empty"));
                        }
                        match (action.action, &action.value) {
                            (ActionKind::Delete, Some(_)) => {
                                p.push(format!("{path}.actions[{i}].value: delete takes no value"))
                            }
                            (ActionKind::Delete, None) => {}
                            (_, None) => p.push(format!("{path}.actions[{i}].value: required for {:?}", action.action)),
                            _ => {}
                        }
                    }
                }
                ProcessorConfig::Filter(f) => {
                    let empty = |m: &Option<FilterMatch>| m.as_ref().is_none_or(FilterMatch::is_empty);
                    if empty(&f.include) && empty(&f.exclude) {
                        p.push(format!("{path}: needs a non-empty include or exclude"));
                    }
                }
            }
        }
        for (name, exp) in &self.exporters {
            let path = format!("exporters.{name}");
            match exp {
                ExporterConfig::Otlp(o) => {
                    if !(o.endpoint.starts_with("http://") || o.endpoint.starts_with("https://")) {
                        p.push(format!("{path}.endpoint: `{}` must start with http:// or https://", o.endpoint));
                    } else if o.endpoint.parse::<http::Uri>().is_err() {
                        p.push(format!("{path}.endpoint: `{}` is not a valid URI", o.endpoint));
                    }
                    if let Some(tls) = &o.tls {
                        if !o.endpoint.starts_with("https://") {
                            p.push(format!("{path}.tls: set, but the endpoint is not https://"));
                        }
                        if tls.cert_file.is_some() != tls.key_file.is_some() {
                            p.push(format!("{path}.tls: cert_file and key_file go together"));
                        }
                    }
                    if o.queue.size == 0 || o.queue.consumers == 0 {
                        p.push(format!("{path}.queue: size and consumers must be at least 1"));
                    }
                    if o.timeout.is_zero() {
                        p.push(format!("{path}.timeout: must be more than 0"));
                    }
                    for key in o.headers.keys() {
                        if key.parse::<tonic::metadata::MetadataKey<tonic::metadata::Ascii>>().is_err() {
                            p.push(format!("{path}.headers.{key}: not a valid gRPC metadata key"));
                        }
                    }
                }
                ExporterConfig::File(f) if f.path.is_empty() => p.push(format!("{path}.path: required")),
                _ => {}
            }
        }
        if self.service.pipelines.is_empty() {
            p.push("service.pipelines: at least one pipeline is required".into());
        }
        for (name, pipe) in &self.service.pipelines {
            let path = format!("service.pipelines.{name}");
            if Signal::from_str(component_type(name)).is_err() {
                p.push(format!("{path}: the name must start with traces, metrics or logs"));
            }
            for r in &pipe.receivers {
                if r != "otlp" {
                    p.push(format!("{path}.receivers: `{r}` is not defined (only `otlp` exists)"));
                }
            }
            for (i, proc) in pipe.processors.iter().enumerate() {
                match self.processors.get(proc) {
                    None => p.push(format!("{path}.processors: `{proc}` is not defined under processors")),
                    Some(ProcessorConfig::Batch(_)) if i + 1 != pipe.processors.len() => {
                        p.push(format!("{path}.processors: the batch processor `{proc}` must come last"))
                    }
                    Some(_) => {}
                }
            }
            if pipe.exporters.is_empty() {
                p.push(format!("{path}.exporters: at least one exporter is required"));
            }
            for exp in &pipe.exporters {
                if !self.exporters.contains_key(exp) {
                    p.push(format!("{path}.exporters: `{exp}` is not defined under exporters"));
                }
            }
        }
        if otlp.max_connections == 0 {
            p.push("receivers.otlp.max_connections: must be at least 1".into());
        }
        if otlp.max_concurrent_requests == 0 {
            p.push("receivers.otlp.max_concurrent_requests: must be at least 1".into());
        }
        for (i, rule) in self.service.access.rules.iter().enumerate() {
            check_patterns(&format!("service.access.rules[{i}].identities"), &rule.identities, &mut p);
        }
        let rl = &self.service.rate_limits;
        let limits_list = rl.default.iter().map(|l| ("service.rate_limits.default".to_owned(), l)).chain(
            rl.overrides.iter().enumerate().map(|(i, o)| (format!("service.rate_limits.overrides[{i}]"), &o.limit)),
        );
        for (path, limit) in limits_list {
            for (what, rate) in
                [("requests_per_second", limit.requests_per_second), ("items_per_second", limit.items_per_second)]
            {
                if rate.is_some_and(|r| !(r > 0.0 && r.is_finite())) {
                    p.push(format!("{path}.{what}: must be a positive number"));
                }
            }
            if !(limit.burst_seconds > 0.0 && limit.burst_seconds.is_finite()) {
                p.push(format!("{path}.burst_seconds: must be a positive number"));
            }
        }
        for (i, o) in rl.overrides.iter().enumerate() {
            check_patterns(&format!("service.rate_limits.overrides[{i}].identities"), &o.identities, &mut p);
        }
        let limits = &self.service.limits;
        if limits.memory_limit_mib == 0 {
            p.push("service.limits.memory_limit_mib: must be at least 1".into());
        }
        if limits.pipeline_queue_size == 0 {
            p.push("service.limits.pipeline_queue_size: must be at least 1".into());
        }
        if let Some(endpoint) = &self.service.telemetry.endpoint {
            check_addr("service.telemetry.endpoint", endpoint, &mut p);
        }
        if p.is_empty() { Ok(()) } else { Err(ConfigError(p)) }
    }

    /// Applies the environment variables users of OTLP collectors know. `get`
    /// reads one variable (`std::env::var` in production).
    pub fn apply_env(&mut self, get: impl Fn(&str) -> Option<String>) -> Result<(), ConfigError> {
        let mut p = Vec::new();
        let host = get("GRPC_HOST");
        let port = get("GRPC_PORT");
        if host.is_some() || port.is_some() {
            match &mut self.receivers.otlp.grpc {
                None => p.push("GRPC_HOST/GRPC_PORT: the gRPC receiver is disabled in the config file".into()),
                Some(grpc) => {
                    let (old_host, old_port) = grpc.endpoint.rsplit_once(':').unwrap_or((&grpc.endpoint, "4317"));
                    let host = host.unwrap_or_else(|| old_host.to_owned());
                    let port = port.unwrap_or_else(|| old_port.to_owned());
                    if port.parse::<u16>().is_err() {
                        p.push(format!("GRPC_PORT: `{port}` is not a port number"));
                    }
                    grpc.endpoint = if host.contains(':') && !host.starts_with('[') {
                        format!("[{host}]:{port}")
                    } else {
                        format!("{host}:{port}")
                    };
                }
            }
        }
        if let Some(v) = get("MAX_MESSAGE_LENGTH") {
            match v.parse() {
                Ok(n) => self.receivers.otlp.max_message_bytes = n,
                Err(_) => p.push(format!("MAX_MESSAGE_LENGTH: `{v}` is not a number of bytes")),
            }
        }
        if let Some(v) = get("MAX_WORKERS") {
            match v.parse() {
                Ok(n) => self.service.limits.max_workers = n,
                Err(_) => p.push(format!("MAX_WORKERS: `{v}` is not a number")),
            }
        }
        // SSL_CERT_FILE is often set machine-wide to a CA bundle for outgoing
        // TLS; it names the serving certificate only together with
        // SSL_KEY_FILE, and alone it never overrides the config file.
        let cert = get("SSL_CERT_FILE");
        let key = get("SSL_KEY_FILE");
        let ca = get("SSL_CLIENT_CA_FILE");
        if let Some(key) = key {
            let tls = self.receivers.otlp.tls.get_or_insert_with(TlsConfig::default);
            match cert {
                Some(cert) => tls.cert_file = cert,
                None if tls.cert_file.is_empty() => p.push("SSL_KEY_FILE: set without SSL_CERT_FILE".into()),
                None => {}
            }
            tls.key_file = key;
        }
        if let (Some(ca), Some(tls)) = (ca, self.receivers.otlp.tls.as_mut()) {
            tls.client_ca_file = Some(ca);
        }
        if let Some(endpoint) = get("OTLP_ENDPOINT") {
            let endpoint = if endpoint.contains("://") { endpoint } else { format!("http://{endpoint}") };
            match self.exporters.get_mut("otlp") {
                Some(ExporterConfig::Otlp(o)) => o.endpoint = endpoint,
                _ => {
                    let exporter = OtlpExporterConfig { endpoint, ..Default::default() };
                    self.exporters.insert("otlp".into(), ExporterConfig::Otlp(Box::new(exporter)));
                }
            }
            let only_default_debug = self.exporters.len() == 2 && self.exporters.contains_key("debug");
            for pipe in self.service.pipelines.values_mut() {
                if only_default_debug && pipe.exporters == ["debug"] {
                    pipe.exporters.clear();
                }
                if !pipe.exporters.iter().any(|e| e == "otlp") {
                    pipe.exporters.push("otlp".into());
                }
            }
            if only_default_debug {
                self.exporters.remove("debug");
            }
        }
        p.extend(self.validate().err().map(|e| e.0).unwrap_or_default());
        if p.is_empty() { Ok(()) } else { Err(ConfigError(p)) }
    }
}

fn section<T: DeserializeOwned>(path: &str, value: Value, problems: &mut Vec<String>, set: impl FnOnce(T)) {
    if let Some(v) = typed(path, value, problems) {
        set(v);
    }
}

fn typed<T: DeserializeOwned>(path: &str, value: Value, problems: &mut Vec<String>) -> Option<T> {
    let value = if value.is_null() { Value::Mapping(Mapping::new()) } else { value };
    match serde_norway::from_value(value) {
        Ok(v) => Some(v),
        Err(e) => {
            problems.push(format!("{path}: {e}"));
            None
        }
    }
}

fn components(path: &str, value: Value, problems: &mut Vec<String>) -> Vec<(String, Value)> {
    match value {
        Value::Null => Vec::new(),
        Value::Mapping(m) => m
            .into_iter()
            .filter_map(|(k, v)| match k {
                Value::String(k) => Some((k, v)),
                other => {
                    problems.push(format!("{path}: component names must be strings, found {other:?}"));
                    None
                }
            })
            .collect(),
        _ => {
            problems.push(format!("{path}: must be a mapping of component name to settings"));
            Vec::new()
        }
    }
}

fn check_patterns(path: &str, patterns: &[String], problems: &mut Vec<String>) {
    if patterns.is_empty() {
        problems.push(format!("{path}: at least one identity pattern is required"));
    }
    for pattern in patterns {
        if pattern.is_empty() || pattern.trim_end_matches('*').contains('*') {
            problems.push(format!("{path}: `{pattern}` must be an identity, or a prefix ending in a single `*`"));
        }
    }
}

fn check_addr(path: &str, value: &str, problems: &mut Vec<String>) {
    if value.parse::<SocketAddr>().is_err() {
        problems.push(format!("{path}: `{value}` is not an address like 0.0.0.0:4317"));
    }
}

impl fmt::Display for Config {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_yaml())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_config_is_valid_and_round_trips() {
        let config = Config::default();
        config.validate().unwrap();
        assert_eq!(Config::from_yaml(&config.to_yaml()).unwrap(), config);
    }

    #[test]
    fn every_bad_key_is_named() {
        let err = Config::from_yaml(
            r#"
receivers: {otlp: {grpc: {endpont: "0.0.0.0:1"}}}
processors: {batch: {timeout: 1s, sizee: 3}, sampler: {}}
exporters: {debug: {}, otlp: {endpoint: "localhost:4317"}}
service: {pipelines: {traces: {processors: [batch, nope], exporters: [debug]}, spans: {exporters: [debug]}}}
extra: 1
"#,
        )
        .unwrap_err();
        let text = err.0.join("\n");
        for needle in [
            "receivers: unknown field `endpont`",
            "processors.batch: unknown field `sizee`",
            "processors.sampler: unknown processor type `sampler`",
            "exporters.otlp.endpoint: `localhost:4317` must start with http://",
            "service.pipelines.spans: the name must start with traces",
            "extra: unknown key",
        ] {
            assert!(text.contains(needle), "missing {needle:?} in:\n{text}");
        }
    }

    #[test]
    fn pipelines_reference_defined_components_and_batch_is_last() {
        let err = Config::from_yaml(
            r#"
processors: {batch: {}, filter: {exclude: {names: [x]}}}
exporters: {debug: {}}
service: {pipelines: {logs: {processors: [batch, filter, missing], exporters: [debug, gone]}}}
"#,
        )
        .unwrap_err();
        assert_eq!(
            err.0,
            vec![
                "service.pipelines.logs.processors: the batch processor `batch` must come last",
                "service.pipelines.logs.processors: `missing` is not defined under processors",
                "service.pipelines.logs.exporters: `gone` is not defined under exporters",
            ]
        );
    }

    #[test]
    fn env_overrides_follow_the_original_brief() {
        let mut config = Config::default();
        let env = |k: &str| match k {
            "GRPC_HOST" => Some("127.0.0.1".to_owned()),
            "GRPC_PORT" => Some("5317".to_owned()),
            "MAX_MESSAGE_LENGTH" => Some("1048576".to_owned()),
            "OTLP_ENDPOINT" => Some("collector-b:4317".to_owned()),
            "SSL_CERT_FILE" => Some("/tls/tls.crt".to_owned()),
            "SSL_KEY_FILE" => Some("/tls/tls.key".to_owned()),
            _ => None,
        };
        config.apply_env(env).unwrap();
        assert_eq!(config.receivers.otlp.grpc.as_ref().unwrap().endpoint, "127.0.0.1:5317");
        assert_eq!(config.receivers.otlp.max_message_bytes, 1 << 20);
        assert!(!config.exporters.contains_key("debug"), "OTLP_ENDPOINT replaces the default debug exporter");
        let ExporterConfig::Otlp(otlp) = &config.exporters["otlp"] else { panic!("otlp exporter") };
        assert_eq!(otlp.endpoint, "http://collector-b:4317");
        assert!(config.service.pipelines.values().all(|p| p.exporters == ["otlp"]));
        assert_eq!(config.receivers.otlp.tls.as_ref().unwrap().cert_file, "/tls/tls.crt");
    }

    #[test]
    fn an_empty_file_is_the_default_config() {
        assert_eq!(Config::from_yaml("").unwrap(), Config::default());
        let only_receivers = Config::from_yaml("receivers: {otlp: {http: null}}").unwrap();
        assert_eq!(only_receivers.exporters, Config::default().exporters);
    }

    #[test]
    fn ssl_cert_file_alone_does_not_turn_tls_on_or_override_the_file() {
        let bundle = |k: &str| (k == "SSL_CERT_FILE").then(|| "/etc/ssl/certs/ca-certificates.crt".to_owned());
        let mut config = Config::default();
        config.apply_env(bundle).unwrap();
        assert_eq!(config.receivers.otlp.tls, None);
        let tls = TlsConfig { cert_file: "/tls/tls.crt".into(), key_file: "/tls/tls.key".into(), ..Default::default() };
        config.receivers.otlp.tls = Some(tls.clone());
        config.apply_env(bundle).unwrap();
        assert_eq!(config.receivers.otlp.tls, Some(tls), "the config file's certificate stays");
    }

    #[test]
    fn bad_env_values_are_named() {
        let mut config = Config::default();
        let err = config
            .apply_env(|k| match k {
                "GRPC_PORT" => Some("http".to_owned()),
                "MAX_WORKERS" => Some("many".to_owned()),
                _ => None,
            })
            .unwrap_err();
        assert!(err.0.iter().any(|e| e.starts_with("GRPC_PORT: `http`")), "{err}");
        assert!(err.0.iter().any(|e| e.starts_with("MAX_WORKERS: `many`")), "{err}");
    }

    #[test]
    fn attribute_actions_need_values_except_delete() {
        let err = Config::from_yaml(
            r#"
processors:
  attributes/a: {actions: [{key: env, action: insert}, {key: x, action: delete, value: 1}]}
  resource: {actions: [{key: region, action: upsert, value: eu}]}
service: {pipelines: {traces: {processors: [attributes/a, resource], exporters: [debug]}}}
exporters: {debug: {}}
"#,
        )
        .unwrap_err();
        assert_eq!(
            err.0,
            vec![
                "processors.attributes/a.actions[0].value: required for Insert",
                "processors.attributes/a.actions[1].value: delete takes no value",
            ]
        );
    }
}
