//! `OtlpCollector` (`otlpfleet.dev/v1alpha1`, short name `otlpc`): a fleet of OTLP collectors.
//!
//! Defaults live in the schema (serde defaults become OpenAPI `default`s the API server applies);
//! what the schema alone cannot say is a CEL rule the API server evaluates on every write.

use k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscalerBehavior;
use k8s_openapi::api::core::v1::ResourceRequirements;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// A Go-style duration as the API server's CEL `duration()` reads it: `2160h`, `90m`, `1h30m`.
const DURATION_PATTERN: &str = r"^([0-9]+(\.[0-9]+)?(ns|us|ms|s|m|h))+$";

/// The desired fleet.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "otlpfleet.dev",
    version = "v1alpha1",
    kind = "OtlpCollector",
    namespaced,
    shortname = "otlpc",
    category = "otlpfleet",
    status = "OtlpCollectorStatus",
    derive = "PartialEq",
    doc = "A fleet of OTLP collectors: a Deployment, Services, config, certificates and autoscaling.",
    scale(
        spec_replicas_path = ".spec.replicas",
        status_replicas_path = ".status.replicas",
        label_selector_path = ".status.selector"
    ),
    printcolumn(
        name = "Ready",
        type_ = "string",
        json_path = ".status.ready",
        description = "Ready pods / desired pods"
    ),
    printcolumn(name = "Phase", type_ = "string", json_path = ".status.phase"),
    printcolumn(name = "Version", type_ = "string", json_path = ".status.version"),
    printcolumn(name = "TLS", type_ = "string", json_path = ".spec.tls.mode"),
    printcolumn(name = "Cert-Expiry", type_ = "string", json_path = ".status.certificate.notAfter"),
    printcolumn(name = "Age", type_ = "date", json_path = ".metadata.creationTimestamp")
)]
#[serde(rename_all = "camelCase")]
pub struct OtlpCollectorSpec {
    /// Collector pods. With autoscaling, the HorizontalPodAutoscaler sets this through the scale
    /// subresource and the operator copies it to the Deployment.
    #[serde(default = "default_replicas")]
    #[schemars(range(min = 0, max = 1000))]
    pub replicas: i32,
    /// The collector image; default `ghcr.io/otlp-fleet/otlp-collector:<version>`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<String>,
    /// The collector version (image tag); default: the operator's own version.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    /// Scale between minReplicas and maxReplicas on CPU and/or memory utilisation. Unset: fixed replicas.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub autoscaling: Option<AutoscalingSpec>,
    /// Requests and limits of the collector container; default requests cpu 100m, memory 128Mi.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<ResourceRequirements>,
    #[serde(default)]
    pub ports: PortsSpec,
    #[serde(default)]
    pub tls: TlsSpec,
    /// Which client identities may send which signals, and per-identity rate limits.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub access: Option<AccessSpec>,
    #[serde(default)]
    pub limits: LimitsSpec,
    /// Where the collector forwards telemetry (OTLP/gRPC). Unset: the debug exporter (logs a summary).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exporter: Option<ExporterSpec>,
}

fn default_replicas() -> i32 {
    1
}

#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
#[x_kube(
    validation = Rule::new("self.minReplicas <= self.maxReplicas").message("autoscaling.minReplicas must not be greater than autoscaling.maxReplicas"),
    validation = Rule::new("has(self.targetCPUUtilization) || has(self.targetMemoryUtilization)").message("autoscaling needs targetCPUUtilization or targetMemoryUtilization")
)]
pub struct AutoscalingSpec {
    #[serde(default = "default_min_replicas")]
    #[schemars(range(min = 1))]
    pub min_replicas: i32,
    #[schemars(range(min = 1, max = 1000))]
    pub max_replicas: i32,
    /// Target average CPU utilisation, percent of the requested CPU.
    #[serde(rename = "targetCPUUtilization", default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 100))]
    pub target_cpu_utilization: Option<i32>,
    /// Target average memory utilisation, percent of the requested memory.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 100))]
    pub target_memory_utilization: Option<i32>,
    /// Scale-up and scale-down behavior, as in `autoscaling/v2`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub behavior: Option<HorizontalPodAutoscalerBehavior>,
}

fn default_min_replicas() -> i32 {
    1
}

#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("self.grpc != self.http && self.grpc != self.metrics && self.http != self.metrics").message("ports.grpc, ports.http and ports.metrics must differ"))]
pub struct PortsSpec {
    /// OTLP/gRPC.
    #[serde(default = "default_grpc_port")]
    #[schemars(range(min = 1, max = 65535))]
    pub grpc: i32,
    /// OTLP/HTTP.
    #[serde(default = "default_http_port")]
    #[schemars(range(min = 1, max = 65535))]
    pub http: i32,
    /// Prometheus `/metrics`, `/healthz`, `/readyz`.
    #[serde(default = "default_metrics_port")]
    #[schemars(range(min = 1, max = 65535))]
    pub metrics: i32,
}

fn default_grpc_port() -> i32 {
    4317
}
fn default_http_port() -> i32 {
    4318
}
fn default_metrics_port() -> i32 {
    8888
}

impl Default for PortsSpec {
    fn default() -> Self {
        Self { grpc: default_grpc_port(), http: default_http_port(), metrics: default_metrics_port() }
    }
}

#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum TlsMode {
    /// Plaintext.
    #[default]
    Disabled,
    /// Server TLS: clients verify the collector.
    #[serde(rename = "TLS")]
    Tls,
    /// Server TLS, and clients must present a certificate the client CA issued.
    MutualTLS,
}

#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
#[x_kube(
    validation = Rule::new("duration(self.renewBefore) < duration(self.validity)").message("tls.renewBefore must be shorter than tls.validity"),
    validation = Rule::new("!has(self.clientCA) || self.mode == 'MutualTLS'").message("tls.clientCA is only used with mode MutualTLS"),
    validation = Rule::new("self.mode != 'Disabled' || !has(self.issuer)").message("tls.issuer needs tls.mode TLS or MutualTLS")
)]
pub struct TlsSpec {
    #[serde(default)]
    pub mode: TlsMode,
    /// Lifetime of a serving certificate.
    #[serde(default = "default_validity")]
    #[schemars(regex(pattern = DURATION_PATTERN))]
    pub validity: String,
    /// A serving certificate is re-issued this long before it expires.
    #[serde(default = "default_renew_before")]
    #[schemars(regex(pattern = DURATION_PATTERN))]
    pub renew_before: String,
    /// Who signs serving certificates; default: a CA the operator creates (`<name>-ca` Secret).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub issuer: Option<IssuerSpec>,
    /// MutualTLS: the CA bundle client certificates must chain to; default: the issuer's CA.
    #[serde(default, rename = "clientCA", skip_serializing_if = "Option::is_none")]
    pub client_ca: Option<ClientCaSpec>,
}

fn default_validity() -> String {
    "2160h".into()
}
fn default_renew_before() -> String {
    "360h".into()
}

impl Default for TlsSpec {
    fn default() -> Self {
        Self {
            mode: TlsMode::Disabled,
            validity: default_validity(),
            renew_before: default_renew_before(),
            issuer: None,
            client_ca: None,
        }
    }
}

#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("self.builtIn != has(self.secretName)").message("tls.issuer: set exactly one of builtIn: true or secretName"))]
pub struct IssuerSpec {
    /// Use the operator's own CA (kept in the `<name>-ca` Secret).
    #[serde(default)]
    pub built_in: bool,
    /// An existing `kubernetes.io/tls` Secret holding a CA certificate (`tls.crt`) and key (`tls.key`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_name: Option<String>,
}

#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ClientCaSpec {
    /// A Secret in the same namespace with the CA bundle under `key`.
    #[schemars(length(min = 1))]
    pub secret_name: String,
    #[serde(default = "default_ca_key")]
    pub key: String,
}

fn default_ca_key() -> String {
    "ca.crt".into()
}

#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum AccessDefault {
    #[default]
    Allow,
    Deny,
}

#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum SignalName {
    Traces,
    Metrics,
    Logs,
}

/// Client identity: the first URI SAN of its certificate, else DNS SAN, else CN, else `ip:<address>`.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct AccessSpec {
    /// For identities no rule matches.
    #[serde(default)]
    pub default: AccessDefault,
    /// The first rule whose identity pattern matches decides.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub rules: Vec<AccessRuleSpec>,
    /// Applies to every identity without an override.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rate_limit: Option<RateLimitSpec>,
}

#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct AccessRuleSpec {
    /// Identity patterns: exact, or a prefix ending in `*`.
    #[schemars(length(min = 1))]
    pub identities: Vec<String>,
    /// Signals these identities may send; empty: none.
    #[serde(default)]
    pub signals: Vec<SignalName>,
    /// Overrides the default rate limit for these identities.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rate_limit: Option<RateLimitSpec>,
}

#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct RateLimitSpec {
    /// Export requests per second.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub requests_per_second: Option<f64>,
    /// Items (spans, data points, log records) per second.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub items_per_second: Option<f64>,
    /// Bucket size, in seconds of the rates.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub burst_seconds: Option<f64>,
}

#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct LimitsSpec {
    /// Largest accepted request after decompression, bytes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1024))]
    pub max_message_bytes: Option<i64>,
    /// Telemetry held in queues and batches, MiB; past it requests are refused with RetryInfo.
    #[serde(default, rename = "memoryLimitMiB", skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub memory_limit_mib: Option<i64>,
    /// gRPC connections older than this get a GOAWAY, so clients spread over new pods.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = DURATION_PATTERN))]
    pub max_connection_age: Option<String>,
    /// Open connections per pod.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub max_connections: Option<i64>,
}

#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ExporterSpec {
    /// `http://host:port` or `https://host:port`.
    #[schemars(length(min = 1))]
    pub endpoint: String,
    /// gRPC metadata sent with every export.
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub headers: std::collections::BTreeMap<String, String>,
}

/// What the operator observed and decided; written only by the operator.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct OtlpCollectorStatus {
    /// The generation the status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<Phase>,
    /// Ready, Progressing, Degraded, CertificateReady, ConfigValid, PipelinesReady.
    #[serde(default)]
    #[x_kube(merge_strategy = ListMerge::Map(vec!["type".into()]))]
    pub conditions: Vec<Condition>,
    /// Pods of the Deployment (scale subresource).
    #[serde(default)]
    pub replicas: i32,
    #[serde(default)]
    pub ready_replicas: i32,
    /// `ready/desired`, for `kubectl get`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ready: Option<String>,
    /// Label selector of the pods (scale subresource, for the HPA).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub selector: Option<String>,
    /// The collector version deployed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub certificate: Option<CertificateStatus>,
}

#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Phase {
    /// Children are being created or rolled out.
    Pending,
    /// Every desired pod is ready.
    Running,
    /// The spec cannot be applied, or reconciling fails; see the Degraded condition.
    Degraded,
}

#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct CertificateStatus {
    /// Expiry of the serving certificate.
    pub not_after: Time,
    /// When the operator re-issues it.
    pub renew_at: Time,
    /// The Secret holding `tls.crt`, `tls.key` and `ca.crt`.
    pub secret_name: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_committed_crds_match_the_types() {
        for (file, generated) in crate::crds() {
            for dir in ["../crds", "../helm/otlp-operator/crds"] {
                let full = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(dir).join(file);
                if std::env::var_os("UPDATE_CRDS").is_some() {
                    std::fs::write(&full, &generated).unwrap();
                    continue;
                }
                let committed = std::fs::read_to_string(&full).unwrap_or_default();
                assert!(
                    committed == generated,
                    "{} is out of date: run `cargo run -p otlp-operator -- crd`, and put each document in crds/ and helm/otlp-operator/crds/ (or run the test with UPDATE_CRDS=1)",
                    full.display()
                );
            }
        }
    }

    #[test]
    fn the_crd_has_scale_status_short_name_columns_and_rules() {
        use kube::CustomResourceExt as _;
        let crd = serde_json::to_value(OtlpCollector::crd()).unwrap();
        let v = &crd["spec"]["versions"][0];
        assert_eq!(crd["spec"]["names"]["shortNames"][0], "otlpc");
        assert_eq!(crd["spec"]["scope"], "Namespaced");
        assert_eq!(v["subresources"]["scale"]["specReplicasPath"], ".spec.replicas");
        assert_eq!(v["subresources"]["scale"]["statusReplicasPath"], ".status.replicas");
        assert_eq!(v["subresources"]["scale"]["labelSelectorPath"], ".status.selector");
        assert!(v["subresources"]["status"].is_object());
        let columns: Vec<&str> =
            v["additionalPrinterColumns"].as_array().unwrap().iter().map(|c| c["name"].as_str().unwrap()).collect();
        assert_eq!(columns, ["Ready", "Phase", "Version", "TLS", "Cert-Expiry", "Age"]);
        let text = crd.to_string();
        for rule in ["self.minReplicas <= self.maxReplicas", "duration(self.renewBefore) < duration(self.validity)"] {
            assert!(text.contains(rule), "missing CEL rule {rule}");
        }
        let conditions = &v["schema"]["openAPIV3Schema"]["properties"]["status"]["properties"]["conditions"];
        assert_eq!(conditions["x-kubernetes-list-type"], "map");
        assert_eq!(conditions["x-kubernetes-list-map-keys"][0], "type");
    }

    #[test]
    fn the_issue_manifest_deserialises_with_defaults() {
        let cr: OtlpCollector = serde_norway::from_str(
            "apiVersion: otlpfleet.dev/v1alpha1\nkind: OtlpCollector\nmetadata: {name: edge, namespace: telemetry}\nspec:\n  replicas: 2\n  tls: {mode: MutualTLS}\n  autoscaling: {minReplicas: 2, maxReplicas: 6, targetCPUUtilization: 70}\n",
        )
        .unwrap();
        assert_eq!(cr.spec.replicas, 2);
        assert_eq!(cr.spec.tls.mode, TlsMode::MutualTLS);
        assert_eq!(cr.spec.tls.validity, "2160h");
        assert_eq!(cr.spec.ports, PortsSpec::default());
        let a = cr.spec.autoscaling.unwrap();
        assert_eq!((a.min_replicas, a.max_replicas, a.target_cpu_utilization), (2, 6, Some(70)));
    }
}
