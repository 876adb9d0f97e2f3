//! Pure builders: every object the operator wants, from the `OtlpCollector` and what was
//! observed (existing certificates). No client calls; unit tested without an API server.

pub mod configmap;
pub mod deployment;
pub mod hpa;
pub mod labels;
pub mod secret;
pub mod service;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler;
use k8s_openapi::api::core::v1::{ConfigMap, Secret, Service};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use k8s_openapi::jiff::Timestamp;
use kube::{Resource as _, ResourceExt as _};

use crate::api::{CertificateStatus, OtlpCollector, TlsMode};
use crate::{Error, Result};

/// A spec the operator cannot turn into a fleet. Reported as `Degraded` / `ConfigValid=False`.
#[derive(Debug, thiserror::Error)]
pub enum SpecError {
    /// The rendered collector config fails the collector's own validation.
    #[error("the collector config is invalid: {}", .0.0.join("; "))]
    InvalidConfig(otlp_collector::config::ConfigError),
    #[error("{field}: `{value}` is not a duration like 2160h or 90m")]
    Duration { field: &'static str, value: String },
    /// A Secret the spec names is missing or lacks a key; retried, as it may appear later.
    #[error("secret `{name}`: {problem}")]
    Secret { name: String, problem: String },
}

impl SpecError {
    /// The condition reason (PascalCase).
    pub fn reason(&self) -> &'static str {
        match self {
            SpecError::InvalidConfig(_) => "InvalidConfig",
            SpecError::Duration { .. } => "InvalidDuration",
            SpecError::Secret { .. } => "SecretUnavailable",
        }
    }

    /// Whether only a change of the OtlpCollector can fix it (else it is retried).
    pub fn awaits_spec_change(&self) -> bool {
        !matches!(self, SpecError::Secret { .. })
    }
}

/// What the operator read besides the OtlpCollector itself: the Secrets certificates depend on.
#[derive(Debug, Clone, Default)]
pub struct Observed {
    /// `<cr>-ca`, the built-in CA.
    pub ca_secret: Option<Secret>,
    /// `<cr>-collector-tls`, the serving certificate.
    pub tls_secret: Option<Secret>,
    /// `spec.tls.issuer.secretName`.
    pub issuer_secret: Option<Secret>,
    /// `spec.tls.clientCA.secretName`.
    pub client_ca_secret: Option<Secret>,
    /// The CollectorPipelines of the namespace that name this collector.
    pub pipelines: Vec<crate::api::CollectorPipeline>,
    /// The config the collectors run now (from their ConfigMap), if it parses.
    pub running: Option<otlp_collector::config::Config>,
}

/// Every object the OtlpCollector should have, and facts for its status.
#[derive(Debug, Clone)]
pub struct Desired {
    pub config_map: ConfigMap,
    pub deployment: Deployment,
    pub service: Service,
    pub headless: Service,
    pub secrets: Vec<Secret>,
    pub hpa: Option<HorizontalPodAutoscaler>,
    pub pdb: Option<PodDisruptionBudget>,
    pub certificate: Option<CertificateStatus>,
    /// A serving certificate was (re-)issued by this build: worth an Event.
    pub certificate_issued: Option<secret::Issued>,
    /// The collector version deployed.
    pub version: String,
    /// `spec.replicas`, bounded by autoscaling's min and max: what the Deployment gets.
    pub replicas: i32,
    /// What became of the CollectorPipelines that name the collector.
    pub pipelines: configmap::PipelineReport,
}

/// Builds every desired object. `now` decides certificate renewal.
pub fn desired(cr: &OtlpCollector, observed: &Observed, now: Timestamp) -> Result<Desired> {
    let (config, pipelines) = configmap::render_reporting(cr, &observed.pipelines, observed.running.as_ref())?;
    let config_map = configmap::config_map(cr, &config)?;
    let (secrets, certificate, certificate_issued) = if cr.spec.tls.mode == TlsMode::Disabled {
        (Vec::new(), None, None)
    } else {
        let certs = secret::certificates(cr, observed, now)?;
        (certs.secrets, Some(certs.status), certs.issued)
    };
    let replicas = replicas(cr);
    Ok(Desired {
        deployment: deployment::deployment(cr, replicas, &configmap::restart_hash(&config))?,
        service: service::service(cr)?,
        headless: service::headless(cr)?,
        hpa: hpa::hpa(cr)?,
        pdb: hpa::pdb(cr)?,
        config_map,
        secrets,
        certificate,
        certificate_issued,
        version: version(cr),
        replicas,
        pipelines,
    })
}

/// The replicas the Deployment gets: `spec.replicas` (which the HPA sets through the scale
/// subresource), kept within autoscaling's bounds.
pub fn replicas(cr: &OtlpCollector) -> i32 {
    match &cr.spec.autoscaling {
        Some(a) => cr.spec.replicas.clamp(a.min_replicas, a.max_replicas.max(a.min_replicas)),
        None => cr.spec.replicas,
    }
}

/// The collector version: `spec.version`, else the operator's own.
pub fn version(cr: &OtlpCollector) -> String {
    cr.spec.version.clone().unwrap_or_else(|| crate::VERSION.to_owned())
}

/// Metadata of a child: name, namespace, labels and the controller owner reference.
pub(crate) fn child_meta(cr: &OtlpCollector, name: String, component: &str) -> Result<ObjectMeta> {
    Ok(ObjectMeta {
        name: Some(name),
        namespace: Some(cr.namespace().ok_or(Error::MissingObjectKey("metadata.namespace"))?),
        labels: Some(labels::labels(cr, component)),
        owner_references: Some(vec![owner_ref(cr)?]),
        ..ObjectMeta::default()
    })
}

fn owner_ref(cr: &OtlpCollector) -> Result<OwnerReference> {
    cr.controller_owner_ref(&()).ok_or(Error::MissingObjectKey("metadata.uid"))
}

/// A stable 64-bit FNV-1a hash, hex: for annotations that must not change between builds.
pub fn stable_hash(parts: &[&[u8]]) -> String {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for part in parts {
        for b in part.iter().chain(&[0xff]) {
            h ^= u64::from(*b);
            h = h.wrapping_mul(0x0000_0100_0000_01b3);
        }
    }
    format!("{h:016x}")
}

/// Parses a duration field of the spec (Go syntax: `2160h`, `90m`, `1h30m`).
pub(crate) fn parse_duration(field: &'static str, value: &str) -> Result<std::time::Duration, SpecError> {
    humantime::parse_duration(value).map_err(|_| SpecError::Duration { field, value: value.to_owned() })
}

#[cfg(test)]
mod tests;
