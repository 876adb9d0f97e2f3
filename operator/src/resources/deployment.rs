//! The collector Deployment.

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::{Deployment, DeploymentSpec, DeploymentStrategy, RollingUpdateDeployment};
use k8s_openapi::api::core::v1::{
    Capabilities, ConfigMapVolumeSource, Container, ContainerPort, EmptyDirVolumeSource, GRPCAction, HTTPGetAction,
    PodSecurityContext, PodSpec, PodTemplateSpec, Probe, ResourceRequirements, SeccompProfile, SecretVolumeSource,
    SecurityContext, Volume, VolumeMount,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use super::configmap::{CONFIG_DIR, TLS_DIR, config_path};
use super::{child_meta, labels, version};
use crate::Result;
use crate::api::{OtlpCollector, TlsMode};

/// The image repository used when `spec.image` is unset.
pub const DEFAULT_IMAGE_REPOSITORY: &str = "ghcr.io/otlp-fleet/otlp-collector";
/// The non-root user the collector runs as.
pub const RUN_AS_USER: i64 = 65532;

pub fn image(cr: &OtlpCollector) -> String {
    cr.spec.image.clone().unwrap_or_else(|| format!("{DEFAULT_IMAGE_REPOSITORY}:{}", version(cr)))
}

/// `replicas` comes from [`super::replicas`]: `spec.replicas`, which the HPA owns when autoscaling is set.
/// `restart_hash` is [`super::configmap::restart_hash`] of the rendered config: only the part of the
/// config the collector cannot hot-reload rolls the pods.
pub fn deployment(cr: &OtlpCollector, replicas: i32, restart_hash: &str) -> Result<Deployment> {
    let spec = &cr.spec;
    let tls = spec.tls.mode != TlsMode::Disabled;
    let mut pod_labels = labels::labels(cr, "collector");
    pod_labels.insert(labels::VERSION.into(), version(cr));

    let mut volumes = vec![
        Volume {
            name: "config".into(),
            config_map: Some(ConfigMapVolumeSource { name: labels::collector(cr), ..Default::default() }),
            ..Default::default()
        },
        Volume { name: "tmp".into(), empty_dir: Some(EmptyDirVolumeSource::default()), ..Default::default() },
    ];
    // A directory mount (never subPath): the kubelet swaps the files atomically and the
    // collector's file watch picks them up without a restart.
    let mut mounts = vec![
        VolumeMount {
            name: "config".into(),
            mount_path: CONFIG_DIR.into(),
            read_only: Some(true),
            ..Default::default()
        },
        VolumeMount { name: "tmp".into(), mount_path: "/tmp".into(), ..Default::default() },
    ];
    if tls {
        volumes.push(Volume {
            name: "tls".into(),
            secret: Some(SecretVolumeSource { secret_name: Some(labels::tls_secret(cr)), ..Default::default() }),
            ..Default::default()
        });
        mounts.push(VolumeMount {
            name: "tls".into(),
            mount_path: TLS_DIR.into(),
            read_only: Some(true),
            ..Default::default()
        });
    }

    let (readiness, liveness) = probes(cr);
    let container = Container {
        name: "collector".into(),
        image: Some(image(cr)),
        args: Some(vec!["--config".into(), config_path()]),
        ports: Some(vec![
            port("otlp-grpc", spec.ports.grpc),
            port("otlp-http", spec.ports.http),
            port("metrics", spec.ports.metrics),
        ]),
        readiness_probe: Some(readiness),
        liveness_probe: Some(liveness),
        resources: Some(spec.resources.clone().unwrap_or_else(default_resources)),
        volume_mounts: Some(mounts),
        security_context: Some(SecurityContext {
            allow_privilege_escalation: Some(false),
            read_only_root_filesystem: Some(true),
            run_as_non_root: Some(true),
            capabilities: Some(Capabilities { drop: Some(vec!["ALL".into()]), ..Default::default() }),
            ..Default::default()
        }),
        ..Default::default()
    };

    let mut meta = child_meta(cr, labels::collector(cr), "collector")?;
    meta.labels.get_or_insert_with(BTreeMap::new).insert(labels::VERSION.into(), version(cr));
    Ok(Deployment {
        metadata: meta,
        spec: DeploymentSpec {
            replicas: Some(replicas),
            selector: LabelSelector { match_labels: Some(labels::selector(cr)), ..Default::default() },
            strategy: Some(DeploymentStrategy {
                type_: Some("RollingUpdate".into()),
                rolling_update: Some(RollingUpdateDeployment {
                    max_surge: Some(IntOrString::Int(1)),
                    max_unavailable: Some(IntOrString::Int(0)),
                }),
            }),
            template: PodTemplateSpec {
                metadata: Some(ObjectMeta {
                    labels: Some(pod_labels),
                    annotations: Some(BTreeMap::from([
                        (labels::ANN_CONFIG_RELOAD.into(), "file-watch".into()),
                        (labels::ANN_RESTART_HASH.into(), restart_hash.to_owned()),
                    ])),
                    ..Default::default()
                }),
                spec: Some(PodSpec {
                    containers: vec![container],
                    volumes: Some(volumes),
                    automount_service_account_token: Some(false),
                    termination_grace_period_seconds: Some(40),
                    security_context: Some(PodSecurityContext {
                        run_as_non_root: Some(true),
                        run_as_user: Some(RUN_AS_USER),
                        run_as_group: Some(RUN_AS_USER),
                        fs_group: Some(RUN_AS_USER),
                        seccomp_profile: Some(SeccompProfile { type_: "RuntimeDefault".into(), ..Default::default() }),
                        ..Default::default()
                    }),
                    ..Default::default()
                }),
            },
            ..Default::default()
        },
        ..Default::default()
    })
}

fn port(name: &str, port: i32) -> ContainerPort {
    ContainerPort { name: Some(name.into()), container_port: port, protocol: Some("TCP".into()), ..Default::default() }
}

/// (readiness, liveness): gRPC health on the OTLP port, over TLS when TLS is on (the kubelet's
/// TLS mode does not verify the certificate). Under MutualTLS the kubelet has no client
/// certificate, so the plaintext `/readyz` and `/healthz` of the metrics port are probed instead.
fn probes(cr: &OtlpCollector) -> (Probe, Probe) {
    let base = |period| Probe { period_seconds: Some(period), failure_threshold: Some(3), ..Default::default() };
    let grpc = |mode: &str| Some(GRPCAction { port: cr.spec.ports.grpc, service: None, mode: Some(mode.into()) });
    let http = |path: &str| {
        Some(HTTPGetAction {
            path: Some(path.into()),
            port: IntOrString::Int(cr.spec.ports.metrics),
            scheme: Some("HTTP".into()),
            ..Default::default()
        })
    };
    match cr.spec.tls.mode {
        TlsMode::Disabled => {
            (Probe { grpc: grpc("Plaintext"), ..base(5) }, Probe { grpc: grpc("Plaintext"), ..base(10) })
        }
        TlsMode::Tls => (Probe { grpc: grpc("TLS"), ..base(5) }, Probe { grpc: grpc("TLS"), ..base(10) }),
        TlsMode::MutualTLS => {
            (Probe { http_get: http("/readyz"), ..base(5) }, Probe { http_get: http("/healthz"), ..base(10) })
        }
    }
}

fn default_resources() -> ResourceRequirements {
    ResourceRequirements {
        requests: Some(BTreeMap::from([
            ("cpu".into(), Quantity("100m".into())),
            ("memory".into(), Quantity("128Mi".into())),
        ])),
        limits: Some(BTreeMap::from([("memory".into(), Quantity("512Mi".into()))])),
        ..Default::default()
    }
}
