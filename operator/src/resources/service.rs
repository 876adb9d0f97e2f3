//! The collector Service (grpc, http, metrics) and the headless Service (per-pod DNS).

use k8s_openapi::api::core::v1::{Service, ServicePort, ServiceSpec};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use super::{child_meta, labels};
use crate::Result;
use crate::api::OtlpCollector;

pub fn service(cr: &OtlpCollector) -> Result<Service> {
    Ok(Service {
        metadata: child_meta(cr, labels::collector(cr), "service")?,
        spec: Some(ServiceSpec { type_: Some("ClusterIP".into()), ..spec(cr) }),
        ..Default::default()
    })
}

pub fn headless(cr: &OtlpCollector) -> Result<Service> {
    Ok(Service {
        metadata: child_meta(cr, labels::headless(cr), "service")?,
        spec: Some(ServiceSpec { cluster_ip: Some("None".into()), ..spec(cr) }),
        ..Default::default()
    })
}

fn spec(cr: &OtlpCollector) -> ServiceSpec {
    let p = &cr.spec.ports;
    ServiceSpec {
        selector: Some(labels::selector(cr)),
        ports: Some(vec![
            port("otlp-grpc", p.grpc, Some("grpc")),
            port("otlp-http", p.http, Some("http")),
            port("metrics", p.metrics, Some("http")),
        ]),
        ..Default::default()
    }
}

fn port(name: &str, port: i32, app_protocol: Option<&str>) -> ServicePort {
    ServicePort {
        name: Some(name.into()),
        port,
        target_port: Some(IntOrString::String(name.into())),
        protocol: Some("TCP".into()),
        app_protocol: app_protocol.map(Into::into),
        ..Default::default()
    }
}
