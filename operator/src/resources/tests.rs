use std::time::Duration;

use k8s_openapi::jiff::Timestamp;
use otlp_collector::config::Config;
use rustls_pki_types::pem::PemObject as _;
use rustls_pki_types::{CertificateDer, ServerName, UnixTime};

use super::secret::Issued;
use super::*;
use crate::api::{AccessRuleSpec, AccessSpec, CollectorPipeline, ExporterSpec, SignalName};

fn now() -> Timestamp {
    Timestamp::from_second(1_900_000_000).unwrap()
}

fn build(cr: &OtlpCollector) -> Desired {
    desired(cr, &Observed::default(), now()).unwrap()
}

fn data<'a>(s: &'a Secret, key: &str) -> &'a str {
    std::str::from_utf8(&s.data.as_ref().unwrap()[key].0).unwrap()
}

/// The serving certificate chains to `ca_pem` and names `dns` at time `at`.
fn verify(cert_pem: &str, ca_pem: &str, dns: &str, at: Timestamp) -> Result<(), String> {
    let ca = CertificateDer::from_pem_slice(ca_pem.as_bytes()).map_err(|e| e.to_string())?;
    let anchor = webpki::anchor_from_trusted_cert(&ca).map_err(|e| e.to_string())?;
    let leaf = CertificateDer::from_pem_slice(cert_pem.as_bytes()).map_err(|e| e.to_string())?;
    let ee = webpki::EndEntityCert::try_from(&leaf).map_err(|e| e.to_string())?;
    let time = UnixTime::since_unix_epoch(Duration::from_secs(at.as_second() as u64));
    ee.verify_for_usage(
        webpki::ALL_VERIFICATION_ALGS,
        &[anchor],
        &[],
        time,
        webpki::KeyUsage::server_auth(),
        None,
        None,
    )
    .map_err(|e| e.to_string())?;
    ee.verify_is_valid_for_subject_name(&ServerName::try_from(dns.to_owned()).map_err(|e| e.to_string())?)
        .map_err(|e| e.to_string())
}

#[test]
fn every_child_has_labels_and_a_controller_owner_reference() {
    let d = build(&OtlpCollector::test().with_replicas(2).with_mtls().with_autoscaling(2, 6, 70));
    let mut metas = vec![&d.config_map.metadata, &d.deployment.metadata, &d.service.metadata, &d.headless.metadata];
    metas.extend(d.secrets.iter().map(|s| &s.metadata));
    metas.push(&d.hpa.as_ref().unwrap().metadata);
    metas.push(&d.pdb.as_ref().unwrap().metadata);
    assert_eq!(metas.len(), 8);
    for m in metas {
        let l = m.labels.as_ref().unwrap();
        assert_eq!(l[labels::NAME], "otlp-collector");
        assert_eq!(l[labels::INSTANCE], "edge");
        assert_eq!(l[labels::MANAGED_BY], "otlp-operator");
        assert_eq!(m.namespace.as_deref(), Some("telemetry"));
        let owner = &m.owner_references.as_ref().unwrap()[0];
        assert_eq!((owner.kind.as_str(), owner.name.as_str(), owner.controller), ("OtlpCollector", "edge", Some(true)));
    }
}

#[test]
fn the_config_map_holds_the_collectors_own_config_and_parses_back() {
    let cr = OtlpCollector::test().with_mtls();
    let d = build(&cr);
    let yaml = &d.config_map.data.as_ref().unwrap()[configmap::CONFIG_KEY];
    let parsed = Config::from_yaml(yaml).expect("the collector reads what the operator wrote");
    assert_eq!(parsed, configmap::render(&cr, &[], None).unwrap());
    let tls = parsed.receivers.otlp.tls.unwrap();
    assert_eq!(tls.cert_file, "/etc/otlp-collector/tls/tls.crt");
    assert_eq!(tls.key_file, "/etc/otlp-collector/tls/tls.key");
    assert_eq!(tls.client_ca_file.as_deref(), Some("/etc/otlp-collector/tls/client-ca.crt"));
    assert_eq!(parsed.receivers.otlp.grpc.unwrap().endpoint, "0.0.0.0:4317");
    assert_eq!(parsed.service.telemetry.endpoint.as_deref(), Some("0.0.0.0:8888"));
    let annotations = d.config_map.metadata.annotations.as_ref().unwrap();
    assert_eq!(annotations[labels::ANN_CONFIG_HASH], configmap::config_hash(yaml));
}

#[test]
fn server_tls_has_no_client_ca_and_plaintext_has_no_tls() {
    let tls = configmap::render(&OtlpCollector::test().with_tls(), &[], None).unwrap();
    assert_eq!(tls.receivers.otlp.tls.unwrap().client_ca_file, None);
    assert_eq!(configmap::render(&OtlpCollector::test(), &[], None).unwrap().receivers.otlp.tls, None);
}

#[test]
fn access_rules_rate_limits_and_exporter_are_rendered() {
    let mut cr = OtlpCollector::test();
    cr.spec.access = Some(AccessSpec {
        default: crate::api::AccessDefault::Deny,
        rules: vec![AccessRuleSpec {
            identities: vec!["spiffe://prod/*".into()],
            signals: vec![SignalName::Traces],
            rate_limit: Some(crate::api::RateLimitSpec {
                requests_per_second: Some(10.0),
                items_per_second: None,
                burst_seconds: None,
            }),
        }],
        rate_limit: None,
    });
    cr.spec.exporter = Some(ExporterSpec { endpoint: "http://tempo:4317".into(), headers: Default::default() });
    let c = configmap::render(&cr, &[], None).unwrap();
    assert_eq!(c.service.access.rules[0].identities, ["spiffe://prod/*"]);
    assert_eq!(c.service.rate_limits.overrides[0].limit.requests_per_second, Some(10.0));
    assert!(c.exporters.contains_key("otlp") && !c.exporters.contains_key("debug"));
    assert!(c.service.pipelines.values().all(|p| p.exporters == ["otlp"]));
}

#[test]
fn an_invalid_config_is_a_spec_error_naming_the_key() {
    let mut cr = OtlpCollector::test();
    cr.spec.exporter = Some(ExporterSpec { endpoint: "tempo:4317".into(), headers: Default::default() });
    let err = desired(&cr, &Observed::default(), now()).unwrap_err();
    let Error::Spec(e) = err else { panic!("expected a spec error, got {err}") };
    assert_eq!(e.reason(), "InvalidConfig");
    assert!(e.awaits_spec_change());
    assert!(e.to_string().contains("exporters.otlp.endpoint"), "{e}");
}

#[test]
fn the_deployment_mounts_config_and_certs_runs_non_root_read_only() {
    let cr = OtlpCollector::test().with_replicas(3).with_tls();
    let d = build(&cr).deployment;
    assert_eq!(d.spec.replicas, Some(3));
    let pod = d.spec.template.spec.as_ref().unwrap();
    let c = &pod.containers[0];
    assert_eq!(c.image.as_deref(), Some(format!("ghcr.io/otlp-fleet/otlp-collector:{}", crate::VERSION).as_str()));
    assert_eq!(c.args.as_ref().unwrap(), &["--config", "/etc/otlp-collector/collector.yaml"]);
    let mounts: Vec<_> =
        c.volume_mounts.as_ref().unwrap().iter().map(|m| (m.mount_path.as_str(), m.sub_path.clone())).collect();
    assert!(
        mounts.contains(&("/etc/otlp-collector", None)),
        "config is a directory mount (no subPath) so it can hot-reload"
    );
    assert!(mounts.contains(&("/etc/otlp-collector/tls", None)));
    let volumes = pod.volumes.as_ref().unwrap();
    assert!(
        volumes.iter().any(|v| v.secret.as_ref().and_then(|s| s.secret_name.as_deref()) == Some("edge-collector-tls"))
    );
    assert!(volumes.iter().any(|v| v.config_map.as_ref().map(|c| c.name.as_str()) == Some("edge-collector")));
    let sc = c.security_context.as_ref().unwrap();
    assert_eq!(
        (sc.read_only_root_filesystem, sc.run_as_non_root, sc.allow_privilege_escalation),
        (Some(true), Some(true), Some(false))
    );
    assert_eq!(pod.security_context.as_ref().unwrap().run_as_user, Some(deployment::RUN_AS_USER));
    let ports: Vec<i32> = c.ports.as_ref().unwrap().iter().map(|p| p.container_port).collect();
    assert_eq!(ports, [4317, 4318, 8888]);
    assert!(
        c.resources.as_ref().unwrap().requests.as_ref().unwrap().contains_key("cpu"),
        "the HPA needs a CPU request"
    );
    // Config changes hot-reload: no hash of the whole config in the pod template, so they never roll the pods.
    let template_annotations = d.spec.template.metadata.as_ref().unwrap().annotations.clone().unwrap_or_default();
    assert!(!template_annotations.contains_key(labels::ANN_CONFIG_HASH));
}

#[test]
fn only_config_the_collector_cannot_hot_reload_rolls_the_pods() {
    let restart_hash = |cr: &OtlpCollector| {
        let d = build(cr).deployment;
        d.spec.template.metadata.unwrap().annotations.unwrap()[labels::ANN_RESTART_HASH].clone()
    };
    let base = OtlpCollector::test().with_tls();
    let h = restart_hash(&base);
    assert_eq!(restart_hash(&base), h, "stable");
    // Hot-reloadable (pipelines, exporters, memory limit): the pod template stays the same.
    let mut cr = base.clone();
    cr.spec.limits.memory_limit_mib = Some(1024);
    cr.spec.exporter = Some(ExporterSpec { endpoint: "http://tempo:4317".into(), headers: Default::default() });
    assert_eq!(restart_hash(&cr), h);
    // Listener settings: the collector says "restart to apply", so the pods roll.
    let mut cr = base.clone();
    cr.spec.limits.max_message_bytes = Some(1_048_576);
    assert_ne!(restart_hash(&cr), h, "max message size");
    let mut cr = base.clone();
    cr.spec.limits.max_connections = Some(10);
    assert_ne!(restart_hash(&cr), h, "max connections");
    let mut cr = base.clone();
    cr.spec.tls.mode = crate::api::TlsMode::MutualTLS;
    assert_ne!(restart_hash(&cr), h, "TLS to MutualTLS keeps the volume but needs the client CA in the listener");
}

#[test]
fn probes_use_grpc_health_and_fall_back_to_http_under_mtls() {
    let probe = |cr: OtlpCollector| {
        build(&cr).deployment.spec.template.spec.unwrap().containers[0].readiness_probe.clone().unwrap()
    };
    let plain = probe(OtlpCollector::test());
    assert_eq!(plain.grpc.as_ref().map(|g| (g.port, g.mode.as_deref())), Some((4317, Some("Plaintext"))));
    let tls = probe(OtlpCollector::test().with_tls());
    assert_eq!(tls.grpc.as_ref().map(|g| (g.port, g.mode.as_deref())), Some((4317, Some("TLS"))));
    let mtls = probe(OtlpCollector::test().with_mtls());
    assert_eq!(mtls.http_get.as_ref().and_then(|h| h.path.as_deref()), Some("/readyz"));
}

#[test]
fn with_autoscaling_the_deployment_follows_spec_replicas_within_bounds() {
    // The HPA writes spec.replicas through the scale subresource; the operator copies it.
    let hpa_decided = OtlpCollector::test().with_autoscaling(2, 6, 70).with_replicas(5);
    assert_eq!(build(&hpa_decided).deployment.spec.replicas, Some(5));
    let below = OtlpCollector::test().with_autoscaling(2, 6, 70).with_replicas(1);
    assert_eq!(build(&below).deployment.spec.replicas, Some(2));
    let above = OtlpCollector::test().with_autoscaling(2, 6, 70).with_replicas(9);
    assert_eq!(build(&above).deployment.spec.replicas, Some(6));
}

#[test]
fn services_expose_grpc_http_and_metrics_and_the_headless_one_has_no_ip() {
    let d = build(&OtlpCollector::test());
    let spec = d.service.spec.as_ref().unwrap();
    let ports: Vec<(&str, i32)> =
        spec.ports.as_ref().unwrap().iter().map(|p| (p.name.as_deref().unwrap(), p.port)).collect();
    assert_eq!(ports, [("otlp-grpc", 4317), ("otlp-http", 4318), ("metrics", 8888)]);
    assert_eq!(spec.selector.as_ref().unwrap(), &labels::selector(&OtlpCollector::test()));
    assert_eq!(d.headless.metadata.name.as_deref(), Some("edge-collector-headless"));
    assert_eq!(d.headless.spec.as_ref().unwrap().cluster_ip.as_deref(), Some("None"));
}

#[test]
fn the_hpa_targets_the_otlpcollector_scale_subresource() {
    let d = build(&OtlpCollector::test().with_autoscaling(2, 6, 70));
    let hpa = d.hpa.unwrap().spec;
    assert_eq!(hpa.scale_target_ref.kind, "OtlpCollector");
    assert_eq!(hpa.scale_target_ref.api_version.as_deref(), Some("otlpfleet.dev/v1alpha1"));
    assert_eq!(hpa.scale_target_ref.name, "edge");
    assert_eq!((hpa.min_replicas, hpa.max_replicas), (Some(2), 6));
    let m = &hpa.metrics.unwrap()[0];
    assert_eq!(m.resource.as_ref().map(|r| (r.name.as_str(), r.target.average_utilization)), Some(("cpu", Some(70))));
    assert!(build(&OtlpCollector::test()).hpa.is_none());
}

#[test]
fn a_pdb_exists_only_with_more_than_one_pod() {
    assert!(build(&OtlpCollector::test().with_replicas(1)).pdb.is_none());
    assert!(build(&OtlpCollector::test().with_replicas(2)).pdb.is_some());
    assert!(build(&OtlpCollector::test().with_replicas(3).with_autoscaling(1, 4, 50)).pdb.is_none());
    assert!(build(&OtlpCollector::test().with_autoscaling(2, 4, 50)).pdb.is_some());
}

#[test]
fn the_serving_certificate_verifies_against_the_ca_for_the_service_names() {
    let cr = OtlpCollector::test().with_mtls();
    let d = build(&cr);
    assert_eq!(d.certificate_issued, Some(Issued::First));
    let names: Vec<_> = d.secrets.iter().map(|s| s.metadata.name.clone().unwrap()).collect();
    assert_eq!(names, ["edge-ca", "edge-collector-tls"]);
    let (ca, tls) = (&d.secrets[0], &d.secrets[1]);
    assert_eq!(tls.type_.as_deref(), Some("kubernetes.io/tls"));
    for dns in [
        "edge-collector",
        "edge-collector.telemetry.svc",
        "edge-collector.telemetry.svc.cluster.local",
        "edge-collector-headless.telemetry.svc",
    ] {
        verify(data(tls, "tls.crt"), data(ca, "tls.crt"), dns, now()).unwrap();
    }
    assert!(verify(data(tls, "tls.crt"), data(ca, "tls.crt"), "other.telemetry.svc", now()).is_err());
    assert_eq!(data(tls, "ca.crt"), data(ca, "tls.crt"));
    assert_eq!(data(tls, "client-ca.crt"), data(ca, "tls.crt"), "MutualTLS trusts the built-in CA for clients");
    let cert = d.certificate.unwrap();
    assert_eq!(cert.not_after.0.as_second() - now().as_second(), 2160 * 3600);
    assert_eq!(cert.not_after.0.as_second() - cert.renew_at.0.as_second(), 360 * 3600);
}

#[test]
fn certificates_are_reused_until_renewal_and_reissued_on_change() {
    let cr = OtlpCollector::test().with_tls();
    let first = build(&cr);
    let observed = Observed {
        ca_secret: Some(first.secrets[0].clone()),
        tls_secret: Some(first.secrets[1].clone()),
        ..Observed::default()
    };
    let again = desired(&cr, &observed, now()).unwrap();
    assert_eq!(again.secrets, first.secrets, "a second build changes nothing");
    assert_eq!(again.certificate_issued, None);

    let renew_at = first.certificate.as_ref().unwrap().renew_at.0;
    let later = Timestamp::from_second(renew_at.as_second() + 1).unwrap();
    let renewed = desired(&cr, &observed, later).unwrap();
    assert_eq!(renewed.certificate_issued, Some(Issued::Renewal));
    assert_eq!(renewed.secrets[0], first.secrets[0], "the CA is kept");
    assert_ne!(data(&renewed.secrets[1], "tls.crt"), data(&first.secrets[1], "tls.crt"));
    verify(data(&renewed.secrets[1], "tls.crt"), data(&first.secrets[0], "tls.crt"), "edge-collector", later).unwrap();

    let mut shorter = cr.clone();
    shorter.spec.tls.validity = "720h".into();
    assert_eq!(desired(&shorter, &observed, now()).unwrap().certificate_issued, Some(Issued::Changed));
}

#[test]
fn an_external_issuer_secret_signs_and_a_missing_one_is_retried() {
    let mut cr = OtlpCollector::test().with_tls();
    cr.spec.tls.issuer = Some(crate::api::IssuerSpec { built_in: false, secret_name: Some("corp-ca".into()) });
    let err = desired(&cr, &Observed::default(), now()).unwrap_err();
    let Error::Spec(e) = err else { panic!("{err}") };
    assert!(!e.awaits_spec_change(), "the Secret may appear later");
    let ca = build(&OtlpCollector::test().with_tls()).secrets.remove(0);
    let d = desired(&cr, &Observed { issuer_secret: Some(ca.clone()), ..Observed::default() }, now()).unwrap();
    assert_eq!(d.secrets.len(), 1, "no built-in CA with an external issuer");
    verify(data(&d.secrets[0], "tls.crt"), data(&ca, "tls.crt"), "edge-collector.telemetry", now()).unwrap();
}

#[test]
fn tls_disabled_has_no_secrets() {
    let d = build(&OtlpCollector::test());
    assert!(d.secrets.is_empty() && d.certificate.is_none());
}

fn pipeline(yaml: &str) -> CollectorPipeline {
    serde_norway::from_str(yaml).unwrap()
}

const SHOP: &str = r#"
apiVersion: otlpfleet.dev/v1alpha1
kind: CollectorPipeline
metadata: {name: shop, namespace: telemetry}
spec:
  collectors: [edge]
  signals: [traces, logs]
  processors:
    - attributes: {actions: [{key: team, action: upsert, value: shop}]}
    - batch: {timeout: 1s}
  exporters:
    - otlp: {endpoint: "http://tempo.shop:4317"}
"#;

#[test]
fn a_pipeline_becomes_collector_pipelines_per_signal_and_takes_its_signals_from_the_default() {
    let c = configmap::render(&OtlpCollector::test(), &[pipeline(SHOP)], None).unwrap();
    let names: Vec<&str> = c.service.pipelines.keys().map(String::as_str).collect();
    assert_eq!(names, ["logs/shop", "metrics", "traces/shop"]);
    let traces = &c.service.pipelines["traces/shop"];
    assert_eq!(traces.processors, ["attributes/shop-0", "batch/shop-1"]);
    assert_eq!(traces.exporters, ["otlp/shop-0"]);
    assert_eq!(c.service.pipelines["metrics"].exporters, ["debug"], "metrics keep the default exporter");
    let exporters: Vec<&str> = c.exporters.keys().map(String::as_str).collect();
    assert_eq!(exporters, ["debug", "otlp/shop-0"]);
    // What the operator writes is what the collector reads back.
    assert_eq!(Config::from_yaml(&c.to_yaml()).unwrap(), c);
}

#[test]
fn an_invalid_pipeline_is_left_out_with_the_collectors_reason() {
    let base = configmap::render(&OtlpCollector::test(), &[], None).unwrap();
    let cases = [
        (
            SHOP.replace("    - batch: {timeout: 1s}\n", "")
                .replace("    - attributes:", "    - batch: {}\n    - attributes:"),
            "batch",
        ),
        (SHOP.replace("timeout: 1s", "timeout: soon"), "processors.batch/shop-1: invalid value: string \"soon\""),
        (
            SHOP.replace("    - otlp: {endpoint: \"http://tempo.shop:4317\"}\n", "    - otlp: {}\n      debug: {}\n"),
            "spec.exporters[0]: must be one `type: settings` pair",
        ),
        (SHOP.replace("otlp: {endpoint", "kafka: {endpoint"), "kafka"),
    ];
    for (yaml, needle) in cases {
        let bad = pipeline(&yaml);
        let err = configmap::add_pipeline(&base, &bad).unwrap_err();
        assert!(err.contains(needle), "{needle:?} not in {err:?}");
        let c = configmap::render(&OtlpCollector::test(), std::slice::from_ref(&bad), None).unwrap();
        assert_eq!(c, base, "the invalid pipeline is left out");
        // Where the collectors run an earlier version, they keep it.
        let good = configmap::render(&OtlpCollector::test(), &[pipeline(SHOP)], None).unwrap();
        let kept = configmap::render(&OtlpCollector::test(), &[bad], Some(&good)).unwrap();
        assert_eq!(kept, good, "the running version stays");
    }
}
