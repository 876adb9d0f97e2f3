//! `CollectorPipeline` (`otlpfleet.dev/v1alpha1`, short name `otlpp`): a pipeline that teams
//! attach to one or more `OtlpCollector`s of their namespace.
//!
//! Processors and exporters are written in the collector's own config syntax, one
//! `type: settings` pair per list item, and checked by the collector's own parser and
//! validation; the operator reports what is wrong in the pipeline's status.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::{CustomResource, KubeSchema};
use serde::{Deserialize, Serialize};

use super::SignalName;

/// A pipeline: the signals it takes, its processors in order, and its exporters.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "otlpfleet.dev",
    version = "v1alpha1",
    kind = "CollectorPipeline",
    namespaced,
    shortname = "otlpp",
    category = "otlpfleet",
    status = "CollectorPipelineStatus",
    derive = "PartialEq",
    doc = "A pipeline (signals, processors, exporters) that runs in the named OtlpCollectors of its namespace.",
    printcolumn(name = "Accepted", type_ = "string", json_path = ".status.conditions[?(@.type==\"Accepted\")].status"),
    printcolumn(name = "Reason", type_ = "string", json_path = ".status.conditions[?(@.type==\"Accepted\")].reason"),
    printcolumn(name = "Collectors", type_ = "string", json_path = ".status.collectors"),
    printcolumn(name = "Age", type_ = "date", json_path = ".metadata.creationTimestamp")
)]
#[serde(rename_all = "camelCase")]
pub struct CollectorPipelineSpec {
    /// Names of the OtlpCollectors, in this namespace, that run this pipeline.
    #[schemars(length(min = 1))]
    pub collectors: Vec<String>,
    /// Every accepted request of these signals goes through this pipeline (as well as through
    /// the collector's other pipelines of the signal).
    #[schemars(length(min = 1))]
    pub signals: Vec<SignalName>,
    /// Processors in the order they run, each one `type: settings` pair in the collector's
    /// syntax: `batch`, `attributes`, `resource`, `filter`. `batch`, if present, comes last.
    #[serde(default)]
    #[schemars(schema_with = "settings_list")]
    pub processors: Vec<serde_json::Value>,
    /// Where the pipeline sends, each one `type: settings` pair: `otlp`, `debug`, `file`, `nop`.
    #[schemars(schema_with = "settings_list")]
    pub exporters: Vec<serde_json::Value>,
}

/// A list of objects the API server keeps as written; the collector's parser checks them.
fn settings_list(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    schemars::json_schema!({
        "type": "array",
        "items": {"type": "object", "x-kubernetes-preserve-unknown-fields": true}
    })
}

/// What the operator decided about the pipeline; written only by the operator.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct CollectorPipelineStatus {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// Accepted: True when every named collector runs it; False with a reason
    /// (`CollectorNotFound`, `InvalidPipeline`, `CollectorInvalid`) and what to fix.
    #[serde(default)]
    #[x_kube(merge_strategy = ListMerge::Map(vec!["type".into()]))]
    pub conditions: Vec<Condition>,
    /// The collectors whose config holds this pipeline.
    #[serde(default)]
    pub collectors: Vec<String>,
}
