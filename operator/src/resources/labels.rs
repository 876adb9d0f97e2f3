//! Names, label keys and the labels every child carries.

use std::collections::BTreeMap;

use kube::ResourceExt as _;

use crate::api::OtlpCollector;

pub const NAME: &str = "app.kubernetes.io/name";
pub const INSTANCE: &str = "app.kubernetes.io/instance";
pub const MANAGED_BY: &str = "app.kubernetes.io/managed-by";
pub const COMPONENT: &str = "app.kubernetes.io/component";
pub const PART_OF: &str = "app.kubernetes.io/part-of";
pub const VERSION: &str = "app.kubernetes.io/version";

/// `app.kubernetes.io/name` of every collector child.
pub const APP_NAME: &str = "otlp-collector";
/// `app.kubernetes.io/managed-by` of every child: prune only ever touches objects with it.
pub const MANAGER: &str = "otlp-operator";

/// Annotations the operator writes.
pub const ANN_CONFIG_HASH: &str = "otlpfleet.dev/config-hash";
pub const ANN_CONFIG_RELOAD: &str = "otlpfleet.dev/config-reload";
/// On the pod template: the hash of the config sections the collector cannot hot-reload
/// (listeners: `receivers`, `service.telemetry`, `service.limits.max_workers`). A change there
/// rolls the pods; every other config change is hot-reloaded and restarts nothing.
pub const ANN_RESTART_HASH: &str = "otlpfleet.dev/restart-hash";
pub const ANN_NOT_AFTER: &str = "otlpfleet.dev/not-after";
pub const ANN_RENEW_AT: &str = "otlpfleet.dev/renew-at";
pub const ANN_ISSUED_FOR: &str = "otlpfleet.dev/issued-for";

/// Deployment, Services, ConfigMap, HPA, PDB: `<cr>-collector`.
pub fn collector(cr: &OtlpCollector) -> String {
    format!("{}-collector", cr.name_any())
}
pub fn headless(cr: &OtlpCollector) -> String {
    format!("{}-collector-headless", cr.name_any())
}
/// The built-in CA.
pub fn ca_secret(cr: &OtlpCollector) -> String {
    format!("{}-ca", cr.name_any())
}
/// The serving certificate, its key and the CA bundle.
pub fn tls_secret(cr: &OtlpCollector) -> String {
    format!("{}-collector-tls", cr.name_any())
}

/// The labels that select the collector pods (stable for the life of the resource).
pub fn selector(cr: &OtlpCollector) -> BTreeMap<String, String> {
    BTreeMap::from([(NAME.into(), APP_NAME.into()), (INSTANCE.into(), cr.name_any())])
}

/// `k=v,k=v` of [`selector`], for `status.selector` (the scale subresource).
pub fn selector_string(cr: &OtlpCollector) -> String {
    selector(cr).iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join(",")
}

/// `managed-by` and `instance`: how prune finds this resource's children.
pub fn owned_selector_string(cr: &OtlpCollector) -> String {
    format!("{MANAGED_BY}={MANAGER},{INSTANCE}={}", cr.name_any())
}

/// The labels every child carries.
pub fn labels(cr: &OtlpCollector, component: &str) -> BTreeMap<String, String> {
    let mut l = selector(cr);
    l.insert(MANAGED_BY.into(), MANAGER.into());
    l.insert(PART_OF.into(), "otlp-fleet".into());
    l.insert(COMPONENT.into(), component.into());
    l
}
