//! The collector's own `Config`, rendered from the spec and validated by the collector's own rules.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::ConfigMap;
use kube::ResourceExt as _;
use otlp_collector::config::{
    AccessConfig, AccessDefault as CollectorAccessDefault, AccessRule, Config, ExporterConfig, OtlpExporterConfig,
    RateLimit, RateLimitConfig, RateLimitOverride, TlsConfig,
};
use otlp_collector::signal::Signal;

use super::{SpecError, child_meta, labels, parse_duration, stable_hash};
use crate::Result;
use crate::api::{AccessDefault, CollectorPipeline, OtlpCollector, RateLimitSpec, SignalName, TlsMode};

/// The key of the config file in the ConfigMap.
pub const CONFIG_KEY: &str = "collector.yaml";
/// Where the ConfigMap is mounted (a directory mount, so the kubelet swaps the file in place and
/// the collector's file watch hot-reloads it).
pub const CONFIG_DIR: &str = "/etc/otlp-collector";
/// Where the serving Secret is mounted.
pub const TLS_DIR: &str = "/etc/otlp-collector/tls";
/// Keys of the serving Secret.
pub const TLS_CERT: &str = "tls.crt";
pub const TLS_KEY: &str = "tls.key";
pub const CA_CERT: &str = "ca.crt";
pub const CLIENT_CA_CERT: &str = "client-ca.crt";

pub fn config_path() -> String {
    format!("{CONFIG_DIR}/{CONFIG_KEY}")
}

/// The collector config for this spec with the `pipelines` that name it; `Err` names every
/// problem the collector would refuse in the spec. A pipeline the collector would refuse
/// ([`add_pipeline`] says why; the pipeline's status shows it) keeps the version `running` (the
/// config the collectors have now) holds, if any, so a bad edit stops nothing that flows.
pub fn render(
    cr: &OtlpCollector,
    pipelines: &[CollectorPipeline],
    running: Option<&Config>,
) -> Result<Config, SpecError> {
    render_reporting(cr, pipelines, running).map(|(config, _)| config)
}

/// What became of the CollectorPipelines that name a collector.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct PipelineReport {
    /// In the config as written.
    pub rendered: Vec<String>,
    /// Refused by the collector; the config keeps the version the collectors run.
    pub kept: Vec<String>,
    /// Refused by the collector, and not running: left out.
    pub left_out: Vec<String>,
}

/// [`render`], and what became of each pipeline.
pub fn render_reporting(
    cr: &OtlpCollector,
    pipelines: &[CollectorPipeline],
    running: Option<&Config>,
) -> Result<(Config, PipelineReport), SpecError> {
    let mut config = render_spec(cr)?;
    let mut report = PipelineReport::default();
    let mut sorted: Vec<&CollectorPipeline> = pipelines.iter().collect();
    sorted.sort_by_key(|p| p.name_any());
    let mut covered = std::collections::BTreeSet::new();
    for p in sorted {
        let name = p.name_any();
        match add_pipeline(&config, p) {
            Ok(with) => {
                config = with;
                covered.extend(p.spec.signals.iter().map(|s| signal(*s).as_str()));
                report.rendered.push(name);
            }
            Err(_) => {
                let kept = running.map(|r| keep_running(&mut config, r, &name)).unwrap_or_default();
                if kept.is_empty() {
                    report.left_out.push(name);
                } else {
                    covered.extend(kept);
                    report.kept.push(name);
                }
            }
        }
    }
    // A signal with pipelines of its own no longer goes to the spec's default exporter.
    for s in covered {
        config.service.pipelines.remove(s);
    }
    let used: std::collections::BTreeSet<String> =
        config.service.pipelines.values().flat_map(|p| p.exporters.iter().cloned()).collect();
    config.exporters.retain(|name, _| used.contains(name));
    config.validate().map_err(SpecError::InvalidConfig)?;
    Ok((config, report))
}

/// Copies the pipelines `<signal>/<name>` of `running`, with the processors and exporters they
/// use, into `config`. Returns their signals.
fn keep_running(config: &mut Config, running: &Config, name: &str) -> Vec<&'static str> {
    let mut signals = Vec::new();
    for s in [Signal::Traces, Signal::Metrics, Signal::Logs] {
        let key = format!("{}/{name}", s.as_str());
        let Some(pipeline) = running.service.pipelines.get(&key) else { continue };
        for p in &pipeline.processors {
            if let Some(settings) = running.processors.get(p) {
                config.processors.insert(p.clone(), settings.clone());
            }
        }
        for e in &pipeline.exporters {
            if let Some(settings) = running.exporters.get(e) {
                config.exporters.insert(e.clone(), settings.clone());
            }
        }
        config.service.pipelines.insert(key, pipeline.clone());
        signals.push(s.as_str());
    }
    signals
}

/// `base` with the pipeline `p` added: its processors and exporters under the names
/// `<type>/<pipeline>-<n>` and one collector pipeline `<signal>/<pipeline>` per signal. `Err`:
/// every problem, in the collector's own words, with the pipeline's fields named.
pub fn add_pipeline(base: &Config, p: &CollectorPipeline) -> Result<Config, String> {
    let name = p.name_any();
    let mut root = serde_json::to_value(base).map_err(|e| format!("rendering the collector config: {e}"))?;
    let mut section = |field: &str, items: &[serde_json::Value]| -> Result<Vec<String>, String> {
        let mut keys = Vec::new();
        for (i, item) in items.iter().enumerate() {
            let entry = item.as_object().filter(|o| o.len() == 1).and_then(|o| o.iter().next());
            let Some((kind, settings)) = entry else {
                return Err(format!("spec.{field}[{i}]: must be one `type: settings` pair, e.g. `batch: {{}}`"));
            };
            let key = format!("{kind}/{name}-{i}");
            let settings = if settings.is_null() { serde_json::json!({}) } else { settings.clone() };
            let map = root
                .as_object_mut()
                .expect("a config is a mapping")
                .entry(field)
                .or_insert_with(|| serde_json::json!({}));
            map[&key] = settings;
            keys.push(key);
        }
        Ok(keys)
    };
    let processors = section("processors", &p.spec.processors)?;
    let exporters = section("exporters", &p.spec.exporters)?;
    for s in &p.spec.signals {
        root["service"]["pipelines"][format!("{}/{name}", signal(*s).as_str())] =
            serde_json::json!({"receivers": ["otlp"], "processors": processors, "exporters": exporters});
    }
    let yaml = serde_norway::to_string(&root).map_err(|e| format!("rendering the collector config: {e}"))?;
    Config::from_yaml(&yaml).map_err(|e| e.0.join("; "))
}

/// The collector config for the OtlpCollector's own spec, without pipelines.
fn render_spec(cr: &OtlpCollector) -> Result<Config, SpecError> {
    let spec = &cr.spec;
    let mut c = Config::default();
    let otlp = &mut c.receivers.otlp;
    if let Some(grpc) = otlp.grpc.as_mut() {
        grpc.endpoint = format!("0.0.0.0:{}", spec.ports.grpc);
        if let Some(age) = &spec.limits.max_connection_age {
            grpc.max_connection_age = Some(parse_duration("limits.maxConnectionAge", age)?);
        }
    }
    if let Some(http) = otlp.http.as_mut() {
        http.endpoint = format!("0.0.0.0:{}", spec.ports.http);
    }
    if let Some(n) = spec.limits.max_message_bytes {
        otlp.max_message_bytes = usize::try_from(n).unwrap_or(0);
    }
    if let Some(n) = spec.limits.max_connections {
        otlp.max_connections = usize::try_from(n).unwrap_or(0);
    }
    if spec.tls.mode != TlsMode::Disabled {
        otlp.tls = Some(TlsConfig {
            cert_file: format!("{TLS_DIR}/{TLS_CERT}"),
            key_file: format!("{TLS_DIR}/{TLS_KEY}"),
            client_ca_file: (spec.tls.mode == TlsMode::MutualTLS).then(|| format!("{TLS_DIR}/{CLIENT_CA_CERT}")),
            ..TlsConfig::default()
        });
    }
    c.service.telemetry.endpoint = Some(format!("0.0.0.0:{}", spec.ports.metrics));
    if let Some(n) = spec.limits.memory_limit_mib {
        c.service.limits.memory_limit_mib = usize::try_from(n).unwrap_or(0);
    }
    if let Some(access) = &spec.access {
        c.service.access = AccessConfig {
            default: match access.default {
                AccessDefault::Allow => CollectorAccessDefault::Allow,
                AccessDefault::Deny => CollectorAccessDefault::Deny,
            },
            rules: access
                .rules
                .iter()
                .map(|r| AccessRule {
                    identities: r.identities.clone(),
                    signals: r.signals.iter().map(|s| signal(*s)).collect(),
                })
                .collect(),
        };
        c.service.rate_limits = RateLimitConfig {
            default: access.rate_limit.as_ref().map(rate_limit),
            overrides: access
                .rules
                .iter()
                .filter_map(|r| {
                    r.rate_limit
                        .as_ref()
                        .map(|l| RateLimitOverride { identities: r.identities.clone(), limit: rate_limit(l) })
                })
                .collect(),
        };
    }
    if let Some(exporter) = &spec.exporter {
        let otlp = OtlpExporterConfig {
            endpoint: exporter.endpoint.clone(),
            headers: exporter.headers.clone(),
            ..OtlpExporterConfig::default()
        };
        c.exporters = BTreeMap::from([("otlp".to_owned(), ExporterConfig::Otlp(Box::new(otlp)))]);
        for pipeline in c.service.pipelines.values_mut() {
            pipeline.exporters = vec!["otlp".into()];
        }
    }
    c.validate().map_err(SpecError::InvalidConfig)?;
    Ok(c)
}

fn signal(s: SignalName) -> Signal {
    match s {
        SignalName::Traces => Signal::Traces,
        SignalName::Metrics => Signal::Metrics,
        SignalName::Logs => Signal::Logs,
    }
}

fn rate_limit(l: &RateLimitSpec) -> RateLimit {
    RateLimit {
        requests_per_second: l.requests_per_second,
        items_per_second: l.items_per_second,
        burst_seconds: l.burst_seconds.unwrap_or(1.0),
    }
}

/// The ConfigMap holding the rendered config, annotated with its hash (the Deployment's pod
/// template is NOT: the collector hot-reloads the file, so a config change restarts nothing).
pub fn config_map(cr: &OtlpCollector, config: &Config) -> Result<ConfigMap> {
    let yaml = config.to_yaml();
    let mut meta = child_meta(cr, labels::collector(cr), "config")?;
    meta.annotations = Some(BTreeMap::from([(labels::ANN_CONFIG_HASH.into(), config_hash(&yaml))]));
    Ok(ConfigMap { metadata: meta, data: Some(BTreeMap::from([(CONFIG_KEY.into(), yaml)])), ..ConfigMap::default() })
}

pub fn config_hash(yaml: &str) -> String {
    stable_hash(&[yaml.as_bytes()])
}

/// The hash of what the collector applies only at start (its `Collector::reload` keeps the
/// listeners and says "restart to apply"): the receivers (endpoints, TLS files and mode, message
/// and connection limits), `service.telemetry` and `service.limits.max_workers`.
pub fn restart_hash(config: &Config) -> String {
    let receivers = serde_json::to_string(&config.receivers).unwrap_or_default();
    let telemetry = serde_json::to_string(&config.service.telemetry).unwrap_or_default();
    let workers = config.service.limits.max_workers.to_string();
    stable_hash(&[receivers.as_bytes(), telemetry.as_bytes(), workers.as_bytes()])
}
