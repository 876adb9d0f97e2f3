//! The operator against a real control plane (e2e harness: etcd, kube-apiserver, controller-manager,
//! scheduler, kwok), driven with kubectl as a user would. The operator runs in-process, one instance
//! (or two) per test, watching only the test's namespace.

use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context as _, bail, ensure};
use e2e::{TestNs, wait_until, with_temp_ns};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler;
use k8s_openapi::api::core::v1::{ConfigMap, Secret, Service};
use k8s_openapi::api::events::v1::Event;
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use kube::api::ListParams;
use kube::{Api, Resource};
use otlp_operator::api::OtlpCollector;
use otlp_operator::controller::{self, RunConfig};
use otlp_operator::leader::LeaseConfig;
use otlp_operator::metrics::Metrics;
use rustls_pki_types::pem::PemObject as _;
use rustls_pki_types::{CertificateDer, ServerName, UnixTime};
use serde::de::DeserializeOwned;
use tokio::sync::OnceCell;
use tokio_util::sync::CancellationToken;

const WAIT: Duration = Duration::from_secs(60);

const MANIFEST: &str = "apiVersion: otlpfleet.dev/v1alpha1
kind: OtlpCollector
metadata: {name: edge, namespace: telemetry}
spec:
  replicas: 2
  tls: {mode: MutualTLS}
  autoscaling: {minReplicas: 2, maxReplicas: 6, targetCPUUtilization: 70}
";

/// The issue's manifest, in the test's namespace.
fn manifest(ns: &str) -> String {
    MANIFEST.replace("namespace: telemetry", &format!("namespace: {ns}"))
}

static CRD: OnceCell<()> = OnceCell::const_new();

/// Installs the committed CRD (as a user would, with kubectl) once per test binary.
async fn install_crd(ns: &TestNs) -> anyhow::Result<()> {
    CRD.get_or_try_init(|| async {
        let crd = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../crds/otlpcollector.yaml"))?;
        ns.kubectl(&["apply", "--server-side", "--force-conflicts", "-f", "-"], Some(&crd)).await?;
        ns.kubectl(&["wait", "--for=condition=Established", "crd/otlpcollectors.otlpfleet.dev", "--timeout=30s"], None).await?;
        anyhow::Ok(())
    })
    .await?;
    Ok(())
}

/// One in-process operator instance.
struct Operator {
    shutdown: CancellationToken,
    task: tokio::task::JoinHandle<otlp_operator::Result<()>>,
    metrics: Arc<Metrics>,
}

impl Operator {
    fn start(ns: &TestNs, identity: &str) -> Self {
        let config = RunConfig {
            namespace: Some(ns.name.clone()),
            lease: LeaseConfig {
                namespace: ns.name.clone(),
                name: "otlp-operator".into(),
                identity: identity.into(),
                lease_duration: Duration::from_secs(6),
            },
        };
        let metrics = Arc::new(Metrics::default());
        let shutdown = CancellationToken::new();
        let task = tokio::spawn(controller::run(ns.client.clone(), config, metrics.clone(), shutdown.clone()));
        Self { shutdown, task, metrics }
    }

    fn reconciles(&self) -> u64 {
        self.metrics.reconciles.get()
    }

    fn is_leader(&self) -> bool {
        self.metrics.leader.get() == 1
    }

    /// Waits until every reconcile that started has finished and none started for a second.
    async fn wait_quiet(&self) -> anyhow::Result<()> {
        let mut last = (u64::MAX, 0);
        let mut since = tokio::time::Instant::now();
        wait_until("the operator to go quiet", WAIT, || {
            let now = (self.reconciles(), self.metrics.finished.get());
            if now != last {
                last = now;
                since = tokio::time::Instant::now();
            }
            let quiet = now.0 >= 1 && now.0 == now.1 && since.elapsed() >= Duration::from_secs(1);
            async move { Ok(quiet.then_some(())) }
        })
        .await
    }

    async fn stop(self) -> anyhow::Result<()> {
        self.shutdown.cancel();
        self.task.await??;
        Ok(())
    }
}

async fn get<K>(ns: &TestNs, name: &str) -> anyhow::Result<Option<K>>
where
    K: Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()> + Clone + DeserializeOwned + std::fmt::Debug,
{
    Ok(Api::<K>::namespaced(ns.client.clone(), &ns.name).get_opt(name).await?)
}

/// `kubectl get otlpc NAME` columns: NAME READY PHASE VERSION TLS CERT-EXPIRY AGE.
async fn columns(ns: &TestNs, name: &str) -> anyhow::Result<Vec<String>> {
    let out = ns.kubectl(&["get", "otlpc", name, "--no-headers"], None).await?;
    Ok(out.split_whitespace().map(str::to_owned).collect())
}

async fn wait_ready(ns: &TestNs, name: &str, ready: &str) -> anyhow::Result<Vec<String>> {
    wait_until(&format!("kubectl get otlpc {name} to show {ready} Running"), WAIT, || async {
        let c = columns(ns, name).await?;
        Ok((c.get(1).map(String::as_str) == Some(ready) && c.get(2).map(String::as_str) == Some("Running")).then_some(c))
    })
    .await
}

async fn deployment_replicas(ns: &TestNs) -> anyhow::Result<Option<i32>> {
    Ok(get::<Deployment>(ns, "edge-collector").await?.and_then(|d| d.spec.replicas))
}

fn secret_str(s: &Secret, key: &str) -> anyhow::Result<String> {
    let v = s.data.as_ref().and_then(|d| d.get(key)).with_context(|| format!("secret has no {key}"))?;
    Ok(String::from_utf8(v.0.clone())?)
}

fn verify_serving_cert(cert_pem: &str, ca_pem: &str, dns: &str) -> anyhow::Result<()> {
    let ca = CertificateDer::from_pem_slice(ca_pem.as_bytes())?;
    let anchor = webpki::anchor_from_trusted_cert(&ca).map_err(|e| anyhow::anyhow!("{e}"))?;
    let leaf = CertificateDer::from_pem_slice(cert_pem.as_bytes())?;
    let ee = webpki::EndEntityCert::try_from(&leaf).map_err(|e| anyhow::anyhow!("{e}"))?;
    ee.verify_for_usage(webpki::ALL_VERIFICATION_ALGS, &[anchor], &[], UnixTime::now(), webpki::KeyUsage::server_auth(), None, None)
        .map_err(|e| anyhow::anyhow!("chain: {e}"))?;
    ee.verify_is_valid_for_subject_name(&ServerName::try_from(dns.to_owned())?).map_err(|e| anyhow::anyhow!("{dns}: {e}"))?;
    Ok(())
}

/// resourceVersions of every child (and of the OtlpCollector, whose status the operator writes), to
/// prove a reconcile changed nothing. The HPA's status is written by the HPA controller, so for it
/// the operator's own managedFields entry (time and fields) stands in for the resourceVersion.
async fn child_versions(ns: &TestNs) -> anyhow::Result<Vec<(String, String)>> {
    let lp = ListParams::default().labels("app.kubernetes.io/managed-by=otlp-operator");
    let mut out = Vec::new();
    macro_rules! collect {
        ($k:ty) => {
            collect!($k, &lp)
        };
        ($k:ty, $lp:expr) => {
            for o in Api::<$k>::namespaced(ns.client.clone(), &ns.name).list_metadata($lp).await? {
                let kind = <$k as Resource>::kind(&());
                let version = if kind == "HorizontalPodAutoscaler" {
                    let ours = o.metadata.managed_fields.unwrap_or_default().into_iter().filter(|m| m.manager.as_deref() == Some("otlp-operator"));
                    ours.map(|m| format!("{:?} {:?}", m.time, m.fields_v1)).collect::<Vec<_>>().join(";")
                } else {
                    o.metadata.resource_version.unwrap_or_default()
                };
                out.push((format!("{kind}/{}", o.metadata.name.unwrap_or_default()), version));
            }
        };
    }
    collect!(Deployment);
    collect!(Service);
    collect!(ConfigMap);
    collect!(Secret);
    collect!(HorizontalPodAutoscaler);
    collect!(PodDisruptionBudget);
    collect!(OtlpCollector, &ListParams::default());
    out.sort();
    Ok(out)
}

async fn events(ns: &TestNs) -> anyhow::Result<Vec<Event>> {
    Ok(Api::<Event>::namespaced(ns.client.clone(), &ns.name).list(&ListParams::default()).await?.items)
}

#[tokio::test]
async fn the_issue_manifest_becomes_a_ready_mtls_fleet_and_a_restart_changes_nothing() -> anyhow::Result<()> {
    with_temp_ns("op-manifest", |ns| async move {
        install_crd(&ns).await?;
        let op = Operator::start(&ns, "op-a");
        ns.kubectl(&["apply", "-f", "-"], Some(&manifest(&ns.name))).await?;

        let c = wait_ready(&ns, "edge", "2/2").await?;
        ensure!(c[3] == otlp_operator::VERSION && c[4] == "MutualTLS", "columns: {c:?}");
        ensure!(c[5].ends_with('Z'), "Cert-Expiry shows the notAfter time: {c:?}");

        // Every child, with the right content.
        let d: Deployment = get(&ns, "edge-collector").await?.context("deployment")?;
        ensure!(d.spec.replicas == Some(2));
        let pod = d.spec.template.spec.context("pod spec")?;
        let vols: Vec<String> = pod.volumes.unwrap_or_default().into_iter().map(|v| v.name).collect();
        ensure!(vols.contains(&"config".into()) && vols.contains(&"tls".into()), "volumes {vols:?}");
        let svc: Service = get(&ns, "edge-collector").await?.context("service")?;
        let ports: Vec<i32> = svc.spec.and_then(|s| s.ports).unwrap_or_default().iter().map(|p| p.port).collect();
        ensure!(ports == [4317, 4318, 8888], "ports {ports:?}");
        let headless: Service = get(&ns, "edge-collector-headless").await?.context("headless service")?;
        ensure!(headless.spec.and_then(|s| s.cluster_ip).as_deref() == Some("None"));
        let hpa: HorizontalPodAutoscaler = get(&ns, "edge-collector").await?.context("hpa")?;
        ensure!(hpa.spec.scale_target_ref.kind == "OtlpCollector" && hpa.spec.max_replicas == 6);
        ensure!(get::<PodDisruptionBudget>(&ns, "edge-collector").await?.is_some(), "pdb");
        let cm: ConfigMap = get(&ns, "edge-collector").await?.context("configmap")?;
        let yaml = cm.data.context("configmap data")?.remove("collector.yaml").context("collector.yaml")?;
        let config = otlp_collector::config::Config::from_yaml(&yaml).map_err(|e| anyhow::anyhow!("{e}"))?;
        ensure!(config.receivers.otlp.tls.and_then(|t| t.client_ca_file).is_some(), "mTLS in the rendered config");

        // The serving certificate verifies against the CA for the Service DNS names.
        let tls: Secret = get(&ns, "edge-collector-tls").await?.context("tls secret")?;
        let ca: Secret = get(&ns, "edge-ca").await?.context("ca secret")?;
        let ca_pem = secret_str(&ca, "tls.crt")?;
        ensure!(secret_str(&tls, "ca.crt")? == ca_pem);
        for host in ["edge-collector", "edge-collector.{ns}", "edge-collector.{ns}.svc", "edge-collector.{ns}.svc.cluster.local", "edge-collector-headless.{ns}.svc"] {
            verify_serving_cert(&secret_str(&tls, "tls.crt")?, &ca_pem, &host.replace("{ns}", &ns.name))?;
        }
        let reasons: Vec<String> = events(&ns).await?.into_iter().filter_map(|e| e.reason).collect();
        ensure!(reasons.contains(&"Created".into()) && reasons.contains(&"CertificateIssued".into()), "events {reasons:?}");

        // A restart reconciles again and changes nothing.
        let before = child_versions(&ns).await?;
        op.stop().await?;
        let op = Operator::start(&ns, "op-b");
        wait_until("the restarted operator to reconcile", WAIT, || async { Ok((op.reconciles() >= 1 && op.is_leader()).then_some(())) }).await?;
        op.wait_quiet().await?;
        let after = child_versions(&ns).await?;
        ensure!(before == after, "a restart changed objects:\nbefore {before:?}\nafter  {after:?}");
        op.stop().await
    })
    .await
}

#[tokio::test]
async fn kubectl_scale_and_the_hpa_set_replicas_and_the_operator_does_not_fight_them() -> anyhow::Result<()> {
    with_temp_ns("op-scale", |ns| async move {
        install_crd(&ns).await?;
        let op = Operator::start(&ns, "op-a");
        // Without autoscaling first: kubectl scale goes through the scale subresource.
        let plain = manifest(&ns.name).replace("  autoscaling: {minReplicas: 2, maxReplicas: 6, targetCPUUtilization: 70}\n", "");
        ns.kubectl(&["apply", "-f", "-"], Some(&plain)).await?;
        wait_ready(&ns, "edge", "2/2").await?;
        ns.kubectl(&["scale", "otlpc", "edge", "--replicas=3"], None).await?;
        wait_ready(&ns, "edge", "3/3").await?;
        ensure!(deployment_replicas(&ns).await? == Some(3));
        let scale = ns.kubectl(&["get", "--raw", &format!("/apis/otlpfleet.dev/v1alpha1/namespaces/{}/otlpcollectors/edge/scale", ns.name)], None).await?;
        ensure!(scale.contains("\"replicas\":3") && scale.contains("app.kubernetes.io/instance=edge"), "scale subresource: {scale}");

        // With autoscaling, the HPA owns spec.replicas: raising minReplicas makes it scale the
        // OtlpCollector (not the Deployment) and the operator follows.
        ns.kubectl(&["patch", "otlpc", "edge", "--type=merge", "-p", r#"{"spec":{"autoscaling":{"minReplicas":4,"maxReplicas":6,"targetCPUUtilization":70}}}"#], None).await?;
        wait_until("the HPA to scale the OtlpCollector to 4", Duration::from_secs(90), || async {
            let cr: Option<OtlpCollector> = get(&ns, "edge").await?;
            Ok((cr.map(|c| c.spec.replicas) == Some(4)).then_some(()))
        })
        .await?;
        wait_ready(&ns, "edge", "4/4").await?;
        ensure!(deployment_replicas(&ns).await? == Some(4));
        // A reconcile (spec change elsewhere) keeps what the HPA decided.
        ns.kubectl(&["patch", "otlpc", "edge", "--type=merge", "-p", r#"{"spec":{"limits":{"maxConnections":5000}}}"#], None).await?;
        op.wait_quiet().await?;
        ensure!(deployment_replicas(&ns).await? == Some(4), "the operator overwrote the HPA's replicas");
        let cr: OtlpCollector = get(&ns, "edge").await?.context("cr")?;
        ensure!(cr.spec.replicas == 4);
        op.stop().await
    })
    .await
}

#[tokio::test]
async fn spec_changes_update_children_and_what_no_longer_belongs_is_pruned() -> anyhow::Result<()> {
    with_temp_ns("op-prune", |ns| async move {
        install_crd(&ns).await?;
        let op = Operator::start(&ns, "op-a");
        ns.kubectl(&["apply", "-f", "-"], Some(&manifest(&ns.name))).await?;
        wait_ready(&ns, "edge", "2/2").await?;
        let pods_before = ns.kubectl(&["get", "pods", "-o", "name"], None).await?;

        // A config-only change updates the ConfigMap and does not restart pods (hot reload).
        ns.kubectl(&["patch", "otlpc", "edge", "--type=merge", "-p", r#"{"spec":{"limits":{"maxMessageBytes":1048576}}}"#], None).await?;
        wait_until("the ConfigMap to carry the new limit", WAIT, || async {
            let cm: Option<ConfigMap> = get(&ns, "edge-collector").await?;
            let yaml = cm.and_then(|c| c.data).and_then(|mut d| d.remove("collector.yaml")).unwrap_or_default();
            Ok(yaml.contains("max_message_bytes: 1048576").then_some(()))
        })
        .await?;
        op.wait_quiet().await?;
        ensure!(ns.kubectl(&["get", "pods", "-o", "name"], None).await? == pods_before, "a config change restarted pods");

        // Autoscaling off: the HPA goes. TLS off: the certificate Secrets go.
        ns.kubectl(&["patch", "otlpc", "edge", "--type=merge", "-p", r#"{"spec":{"autoscaling":null}}"#], None).await?;
        wait_until("the HPA to be pruned", WAIT, || async { Ok(get::<HorizontalPodAutoscaler>(&ns, "edge-collector").await?.is_none().then_some(())) }).await?;
        ns.kubectl(&["patch", "otlpc", "edge", "--type=merge", "-p", r#"{"spec":{"tls":{"mode":"Disabled"}}}"#], None).await?;
        wait_until("the TLS secrets to be pruned", WAIT, || async {
            let gone = get::<Secret>(&ns, "edge-collector-tls").await?.is_none() && get::<Secret>(&ns, "edge-ca").await?.is_none();
            Ok(gone.then_some(()))
        })
        .await?;
        let c = wait_ready(&ns, "edge", "2/2").await?;
        ensure!(c[4] == "Disabled", "columns {c:?}");
        let d: Deployment = get(&ns, "edge-collector").await?.context("deployment")?;
        let pod = d.spec.template.spec.context("pod")?;
        ensure!(!pod.volumes.unwrap_or_default().iter().any(|v| v.name == "tls"), "the tls volume is gone");
        // replicas 2 without autoscaling still has a PDB; 1 has none.
        ns.kubectl(&["scale", "otlpc", "edge", "--replicas=1"], None).await?;
        wait_until("the PDB to be pruned", WAIT, || async { Ok(get::<PodDisruptionBudget>(&ns, "edge-collector").await?.is_none().then_some(())) }).await?;

        // Deleting the OtlpCollector removes every child (owner references).
        ns.kubectl(&["delete", "otlpc", "edge", "--wait=true"], None).await?;
        wait_until("every child to be deleted", Duration::from_secs(90), || async {
            let left = child_versions(&ns).await?;
            Ok(left.is_empty().then_some(()))
        })
        .await?;
        op.stop().await
    })
    .await
}

#[tokio::test]
async fn an_invalid_spec_is_rejected_with_a_readable_message_or_reported_in_status() -> anyhow::Result<()> {
    with_temp_ns("op-invalid", |ns| async move {
        install_crd(&ns).await?;
        let m = manifest(&ns.name);
        for (bad, message) in [
            (m.replace("minReplicas: 2, maxReplicas: 6", "minReplicas: 7, maxReplicas: 6"), "autoscaling.minReplicas must not be greater than autoscaling.maxReplicas"),
            (m.replace("{mode: MutualTLS}", "{mode: MutualTLS, validity: 24h, renewBefore: 48h}"), "tls.renewBefore must be shorter than tls.validity"),
            (m.replace("{mode: MutualTLS}", "{mode: TLS, clientCA: {secretName: x}}"), "tls.clientCA is only used with mode MutualTLS"),
            (m.replace("{mode: MutualTLS}", "{mode: Mutual}"), "Unsupported value: \"Mutual\""),
            (m.replace("targetCPUUtilization: 70", "targetCPUUtilization: 170"), "should be less than or equal to 100"),
        ] {
            match ns.kubectl(&["apply", "-f", "-"], Some(&bad)).await {
                Ok(out) => bail!("accepted an invalid spec ({message}): {out}"),
                Err(e) => ensure!(format!("{e:#}").contains(message), "expected {message:?} in: {e:#}"),
            }
        }

        // What only the collector's validation can see is a condition and an Event, not a crash loop.
        let op = Operator::start(&ns, "op-a");
        ns.kubectl(&["apply", "-f", "-"], Some(&m)).await?;
        wait_ready(&ns, "edge", "2/2").await?;
        ns.kubectl(&["patch", "otlpc", "edge", "--type=merge", "-p", r#"{"spec":{"exporter":{"endpoint":"tempo:4317"}}}"#], None).await?;
        let cr = wait_until("ConfigValid=False", WAIT, || async {
            let cr: Option<OtlpCollector> = get(&ns, "edge").await?;
            let invalid = cr.as_ref().and_then(|c| c.status.as_ref()).is_some_and(|s| {
                s.conditions.iter().any(|c| c.type_ == "ConfigValid" && c.status == "False" && c.observed_generation == cr.as_ref().and_then(|c| c.metadata.generation))
            });
            Ok(if invalid { cr } else { None })
        })
        .await?;
        let st = cr.status.context("status")?;
        let cond = st.conditions.iter().find(|c| c.type_ == "ConfigValid").context("ConfigValid")?;
        ensure!(cond.message.contains("exporters.otlp.endpoint"), "message: {}", cond.message);
        ensure!(st.conditions.iter().any(|c| c.type_ == "Degraded" && c.status == "True"));
        let c = columns(&ns, "edge").await?;
        ensure!(c[2] == "Degraded", "columns {c:?}");
        let cm: ConfigMap = get(&ns, "edge-collector").await?.context("configmap")?;
        ensure!(!cm.data.unwrap_or_default().get("collector.yaml").is_some_and(|y| y.contains("tempo")), "the running fleet was left untouched");
        wait_until("an InvalidSpec event", WAIT, || async {
            Ok(events(&ns).await?.iter().any(|e| e.reason.as_deref() == Some("InvalidSpec")).then_some(()))
        })
        .await?;
        let failures = op.metrics.encode();
        ensure!(failures.contains("error=\"invalid_spec\""), "failures metric: {failures}");
        // Fixing the spec recovers.
        ns.kubectl(&["patch", "otlpc", "edge", "--type=merge", "-p", r#"{"spec":{"exporter":{"endpoint":"http://tempo:4317"}}}"#], None).await?;
        wait_ready(&ns, "edge", "2/2").await?;
        op.stop().await
    })
    .await
}

#[tokio::test]
async fn with_two_operators_only_the_leader_writes_and_the_other_takes_over() -> anyhow::Result<()> {
    with_temp_ns("op-leader", |ns| async move {
        install_crd(&ns).await?;
        let a = Operator::start(&ns, "op-a");
        wait_until("op-a to lead", WAIT, || async { Ok(a.is_leader().then_some(())) }).await?;
        let b = Operator::start(&ns, "op-b");
        ns.kubectl(&["apply", "-f", "-"], Some(&manifest(&ns.name))).await?;
        wait_ready(&ns, "edge", "2/2").await?;
        a.wait_quiet().await?;
        ensure!(!b.is_leader() && b.reconciles() == 0, "the follower reconciled");
        let instances: Vec<String> = events(&ns)
            .await?
            .into_iter()
            .filter(|e| e.reporting_controller.as_deref() == Some("otlp-operator"))
            .filter_map(|e| e.reporting_instance)
            .collect();
        ensure!(!instances.is_empty() && instances.iter().all(|i| i == "op-a"), "events from {instances:?}");
        let holder = ns.kubectl(&["get", "lease", "otlp-operator", "-o", "jsonpath={.spec.holderIdentity}"], None).await?;
        ensure!(holder == "op-a", "lease holder {holder}");

        // The leader goes away; the follower takes the Lease and reconciles the next change.
        a.stop().await?;
        wait_until("op-b to lead", WAIT, || async { Ok(b.is_leader().then_some(())) }).await?;
        ns.kubectl(&["scale", "otlpc", "edge", "--replicas=3"], None).await?;
        wait_ready(&ns, "edge", "3/3").await?;
        ensure!(b.reconciles() >= 1);
        b.stop().await
    })
    .await
}
