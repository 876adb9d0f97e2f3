//! otlp-operator: reconciles `OtlpCollector` resources into collector fleets (ConfigMap, Secrets,
//! Deployment, Services, HPA, PDB) with server-side apply, and reports status.
#![forbid(unsafe_code)]

pub mod api;
pub mod apply;
pub mod controller;
pub mod leader;
pub mod metrics;
pub mod resources;
pub mod status;
pub mod telemetry;

#[cfg(test)]
pub mod fixtures;

/// Errors of one reconcile.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The spec cannot be turned into a fleet; the user must change it.
    #[error("invalid spec: {0}")]
    Spec(#[from] resources::SpecError),
    #[error("kubernetes api: {0}")]
    Kube(#[source] kube::Error),
    #[error("certificate: {0}")]
    Certificate(#[source] rcgen::Error),
    #[error("serialising {what}: {source}")]
    Serialize {
        what: &'static str,
        #[source]
        source: serde_json::Error,
    },
    #[error("object has no {0}")]
    MissingObjectKey(&'static str),
    #[error("lost the leader lease {0}")]
    LostLease(String),
}

impl Error {
    /// A short, stable label for the `failures` metric.
    pub fn metric_label(&self) -> &'static str {
        match self {
            Error::Spec(_) => "invalid_spec",
            Error::Kube(_) => "kube_api",
            Error::Certificate(_) => "certificate",
            Error::Serialize { .. } => "serialize",
            Error::MissingObjectKey(_) => "missing_object_key",
            Error::LostLease(_) => "lost_lease",
        }
    }

    /// Permanent errors wait for a spec change; the others are retried with backoff.
    pub fn is_permanent(&self) -> bool {
        matches!(self, Error::Spec(_))
    }
}

impl From<kube::Error> for Error {
    fn from(e: kube::Error) -> Self {
        Error::Kube(e)
    }
}

impl From<rcgen::Error> for Error {
    fn from(e: rcgen::Error) -> Self {
        Error::Certificate(e)
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// The field manager of every server-side apply the operator makes.
pub const FIELD_MANAGER: &str = "otlp-operator";

/// The operator's version: also the default collector version it deploys.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");

/// Each CRD as YAML with its file name under `crds/` (and the chart's `crds/`), as
/// `otlp-operator crd` prints them.
pub fn crds() -> Vec<(&'static str, String)> {
    use kube::CustomResourceExt as _;
    // Serialising a derived CRD cannot fail: every field is a plain value.
    let yaml = |crd| serde_norway::to_string(&crd).expect("the CRD serialises");
    vec![
        ("otlpcollector.yaml", yaml(api::OtlpCollector::crd())),
        ("collectorpipeline.yaml", yaml(api::CollectorPipeline::crd())),
    ]
}

/// Every CRD, as one multi-document YAML (`otlp-operator crd`).
pub fn crd_yaml() -> String {
    crds().into_iter().map(|(_, yaml)| yaml).collect::<Vec<_>>().join("---\n")
}
