//! The operator against a real control plane (e2e harness: etcd, kube-apiserver, controller-manager,
//! scheduler, kwok), driven with kubectl as a user would. The operator runs in-process, one instance
//! (or two) per test, watching only the test's namespace.

mod common;

use std::collections::BTreeMap;
use std::fmt::Debug;
use std::path::Path;
use std::time::Duration;

use anyhow::{Context as _, bail, ensure};
use common::{Operator, WAIT, columns, get, install_crd, manifest, wait_ready};
use e2e::{TestNs, wait_until, with_temp_ns};
use k8s_openapi::NamespaceResourceScope;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler;
use k8s_openapi::api::core::v1::{ConfigMap, Secret, Service};
use k8s_openapi::api::events::v1::Event;
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::api::ListParams;
use kube::{Api, Resource};
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_client::TraceServiceClient;
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span};
use otlp_operator::api::OtlpCollector;
use rustls_pki_types::pem::PemObject as _;
use rustls_pki_types::{CertificateDer, ServerName, UnixTime};
use serde::de::DeserializeOwned;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Identity};

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
    ee.verify_for_usage(
        webpki::ALL_VERIFICATION_ALGS,
        &[anchor],
        &[],
        UnixTime::now(),
        webpki::KeyUsage::server_auth(),
        None,
        None,
    )
    .map_err(|e| anyhow::anyhow!("chain: {e}"))?;
    ee.verify_is_valid_for_subject_name(&ServerName::try_from(dns.to_owned())?)
        .map_err(|e| anyhow::anyhow!("{dns}: {e}"))?;
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
                    let ours = o
                        .metadata
                        .managed_fields
                        .unwrap_or_default()
                        .into_iter()
                        .filter(|m| m.manager.as_deref() == Some("otlp-operator"));
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

/// The Deployment's pod-template restart hash (config the collector cannot hot-reload).
fn restart_hash(d: &Deployment) -> Option<&str> {
    let ann = d.spec.template.metadata.as_ref()?.annotations.as_ref()?;
    ann.get("otlpfleet.dev/restart-hash").map(String::as_str)
}

async fn current_restart_hash(ns: &TestNs) -> anyhow::Result<String> {
    let d: Deployment = get(ns, "edge-collector").await?.context("deployment")?;
    restart_hash(&d).map(str::to_owned).context("no restart-hash on the pod template")
}

/// The collector config the operator rendered into its ConfigMap.
fn collector_yaml(cm: &ConfigMap) -> Option<&str> {
    cm.data.as_ref()?.get("collector.yaml").map(String::as_str)
}

fn condition<'a>(cr: &'a OtlpCollector, type_: &str) -> Option<&'a Condition> {
    cr.status.as_ref()?.conditions.iter().find(|c| c.type_ == type_)
}

async fn events(ns: &TestNs) -> anyhow::Result<Vec<Event>> {
    Ok(Api::<Event>::namespaced(ns.client.clone(), &ns.name).list(&ListParams::default()).await?.items)
}

// What a user does: kubectl against the OtlpCollector `edge`.

async fn apply(ns: &TestNs, yaml: &str) -> anyhow::Result<String> {
    ns.kubectl(&["apply", "-f", "-"], Some(yaml)).await
}

/// `kubectl patch otlpc edge --type=merge -p <patch>`.
async fn patch_edge(ns: &TestNs, patch: &str) -> anyhow::Result<()> {
    ns.kubectl(&["patch", "otlpc", "edge", "--type=merge", "-p", patch], None).await?;
    Ok(())
}

async fn scale_edge(ns: &TestNs, replicas: u32) -> anyhow::Result<()> {
    ns.kubectl(&["scale", "otlpc", "edge", &format!("--replicas={replicas}")], None).await?;
    Ok(())
}

// What the tests wait for: a condition on the API server, with a deadline.

/// Waits until the object `name` exists and `holds`; returns it.
async fn wait_for<K>(
    ns: &TestNs,
    name: &str,
    what: &str,
    timeout: Duration,
    holds: impl Fn(&K) -> bool,
) -> anyhow::Result<K>
where
    K: Resource<Scope = NamespaceResourceScope, DynamicType = ()> + Clone + DeserializeOwned + Debug,
{
    wait_until(what, timeout, || async { Ok(get::<K>(ns, name).await?.filter(|o| holds(o))) }).await
}

/// Waits until none of the objects `names` of kind `K` exists.
async fn wait_pruned<K>(ns: &TestNs, names: &[&str]) -> anyhow::Result<()>
where
    K: Resource<Scope = NamespaceResourceScope, DynamicType = ()> + Clone + DeserializeOwned + Debug,
{
    let what = format!("{} {} to be pruned", K::kind(&()), names.join(", "));
    wait_until(&what, WAIT, || async {
        for name in names {
            if get::<K>(ns, name).await?.is_some() {
                return Ok(None);
            }
        }
        Ok(Some(()))
    })
    .await
}

async fn wait_config(ns: &TestNs, needle: &str) -> anyhow::Result<()> {
    let what = format!("the ConfigMap to carry {needle}");
    let carries = |cm: &ConfigMap| collector_yaml(cm).is_some_and(|y| y.contains(needle));
    wait_for(ns, "edge-collector", &what, WAIT, carries).await?;
    Ok(())
}

/// Waits until `edge` reports `type_=status` for its current generation; returns it.
async fn wait_condition(ns: &TestNs, type_: &str, status: &str) -> anyhow::Result<OtlpCollector> {
    wait_for(ns, "edge", &format!("{type_}={status}"), WAIT, |cr: &OtlpCollector| {
        condition(cr, type_).is_some_and(|c| c.status == status && c.observed_generation == cr.metadata.generation)
    })
    .await
}

async fn wait_event(ns: &TestNs, reason: &str) -> anyhow::Result<()> {
    wait_until(&format!("an {reason} event"), WAIT, || async {
        Ok(events(ns).await?.iter().any(|e| e.reason.as_deref() == Some(reason)).then_some(()))
    })
    .await
}

/// Waits until `kubectl get otlpc edge` shows `n/n` Running, then checks the Deployment asks for `n`.
async fn wait_scaled(ns: &TestNs, n: i32) -> anyhow::Result<()> {
    wait_ready(ns, "edge", &format!("{n}/{n}")).await?;
    let replicas = deployment_replicas(ns).await?;
    ensure!(replicas == Some(n), "the Deployment asks for {replicas:?} replicas, not {n}");
    Ok(())
}

async fn wait_leading(op: &Operator, identity: &str) -> anyhow::Result<()> {
    wait_until(&format!("{identity} to lead"), WAIT, || async { Ok(op.is_leader().then_some(())) }).await
}

#[tokio::test]
async fn the_issue_manifest_becomes_a_ready_mtls_fleet_and_a_restart_changes_nothing() -> anyhow::Result<()> {
    with_temp_ns("op-manifest", |ns| async move {
        install_crd(&ns).await?;
        let op = Operator::start(&ns, "op-a");
        apply(&ns, &manifest(&ns.name)).await?;

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
        let yaml = collector_yaml(&cm).context("collector.yaml")?;
        let config = otlp_collector::config::Config::from_yaml(yaml).map_err(|e| anyhow::anyhow!("{e}"))?;
        ensure!(config.receivers.otlp.tls.and_then(|t| t.client_ca_file).is_some(), "mTLS in the rendered config");

        // The serving certificate verifies against the CA for the Service DNS names.
        let tls: Secret = get(&ns, "edge-collector-tls").await?.context("tls secret")?;
        let ca: Secret = get(&ns, "edge-ca").await?.context("ca secret")?;
        let ca_pem = secret_str(&ca, "tls.crt")?;
        ensure!(secret_str(&tls, "ca.crt")? == ca_pem);
        for host in [
            "edge-collector",
            "edge-collector.{ns}",
            "edge-collector.{ns}.svc",
            "edge-collector.{ns}.svc.cluster.local",
            "edge-collector-headless.{ns}.svc",
        ] {
            verify_serving_cert(&secret_str(&tls, "tls.crt")?, &ca_pem, &host.replace("{ns}", &ns.name))?;
        }
        let reasons: Vec<String> = events(&ns).await?.into_iter().filter_map(|e| e.reason).collect();
        ensure!(
            reasons.contains(&"Created".into()) && reasons.contains(&"CertificateIssued".into()),
            "events {reasons:?}"
        );

        // A restart reconciles again and changes nothing.
        let before = child_versions(&ns).await?;
        op.stop().await?;
        let op = Operator::start(&ns, "op-b");
        wait_until("the restarted operator to reconcile", WAIT, || async {
            Ok((op.reconciles() >= 1 && op.is_leader()).then_some(()))
        })
        .await?;
        op.wait_quiet().await?;
        let after = child_versions(&ns).await?;
        ensure!(before == after, "a restart changed objects:\nbefore {before:?}\nafter  {after:?}");
        op.stop().await
    })
    .await
}

/// Writes `files` into `dir` the way the kubelet lays out a ConfigMap or Secret volume:
/// `dir/<key>` → `..data/<key>`, `..data` → a timestamped directory.
fn write_volume(dir: &Path, files: &BTreeMap<String, Vec<u8>>) -> anyhow::Result<()> {
    let real = dir.join("..2026_01_01_00_00_00.000000001");
    std::fs::create_dir_all(&real)?;
    for (key, content) in files {
        std::fs::write(real.join(key), content)?;
    }
    std::os::unix::fs::symlink(real.file_name().context("name")?, dir.join("..data"))?;
    for key in files.keys() {
        std::os::unix::fs::symlink(format!("..data/{key}"), dir.join(key))?;
    }
    Ok(())
}

/// Lays out the collector pod's filesystem under `root` from what the operator wrote: every
/// ConfigMap or Secret volume of the Deployment's collector container at its mountPath. Returns the
/// path of the `--config` argument.
async fn pod_filesystem(ns: &TestNs, deployment: &Deployment, root: &Path) -> anyhow::Result<String> {
    let pod = deployment.spec.template.spec.as_ref().context("pod spec")?;
    let container = pod.containers.first().context("container")?;
    for mount in container.volume_mounts.as_deref().unwrap_or_default() {
        let volume =
            pod.volumes.as_deref().unwrap_or_default().iter().find(|v| v.name == mount.name).context("volume")?;
        let files: BTreeMap<String, Vec<u8>> = if let Some(cm) = &volume.config_map {
            let cm: ConfigMap = get(ns, &cm.name).await?.with_context(|| format!("configmap {}", cm.name))?;
            cm.data.unwrap_or_default().into_iter().map(|(k, v)| (k, v.into_bytes())).collect()
        } else if let Some(secret) = &volume.secret {
            let name = secret.secret_name.as_deref().context("secretName")?;
            let s: Secret = get(ns, name).await?.with_context(|| format!("secret {name}"))?;
            s.data.unwrap_or_default().into_iter().map(|(k, v)| (k, v.0)).collect()
        } else {
            continue;
        };
        write_volume(&root.join(mount.mount_path.trim_start_matches('/')), &files)?;
    }
    let args = container.args.as_deref().unwrap_or_default();
    let at = args.iter().position(|a| a == "--config").context("--config arg")?;
    args.get(at + 1).cloned().context("--config value")
}

/// A client certificate (URI SAN, clientAuth) signed by the CA in the operator's CA Secret.
fn client_cert(ca: &Secret, uri: &str) -> anyhow::Result<(String, String)> {
    use rcgen::{CertificateParams, DnType, ExtendedKeyUsagePurpose, Issuer, KeyPair, KeyUsagePurpose, SanType};
    let issuer =
        Issuer::from_ca_cert_pem(&secret_str(ca, "tls.crt")?, KeyPair::from_pem(&secret_str(ca, "tls.key")?)?)?;
    let mut params = CertificateParams::new(Vec::<String>::new())?;
    params.distinguished_name.push(DnType::CommonName, "checkout");
    params.subject_alt_names.push(SanType::URI(uri.try_into()?));
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    params.use_authority_key_identifier_extension = true;
    let now = time::OffsetDateTime::now_utc();
    params.not_before = now - time::Duration::hours(1);
    params.not_after = now + time::Duration::hours(1);
    let key = KeyPair::generate()?;
    let cert = params.signed_by(&key, &issuer)?;
    Ok((cert.pem(), key.serialize_pem()))
}

/// A TLS channel to `addr` that trusts `ca_pem` and expects the certificate to be valid for `dns`.
async fn mtls_channel(
    addr: std::net::SocketAddr,
    ca_pem: &str,
    dns: &str,
    identity: Option<&(String, String)>,
) -> anyhow::Result<Channel> {
    let mut tls = ClientTlsConfig::new().ca_certificate(Certificate::from_pem(ca_pem)).domain_name(dns);
    if let Some((cert, key)) = identity {
        tls = tls.identity(Identity::from_pem(cert, key));
    }
    Ok(Channel::from_shared(format!("https://{addr}"))?.tls_config(tls)?.connect().await?)
}

fn spans(n: u8) -> ExportTraceServiceRequest {
    let spans = (1..=n)
        .map(|i| Span {
            trace_id: vec![i; 16],
            span_id: vec![i; 8],
            name: format!("checkout-{i}"),
            start_time_unix_nano: 1_700_000_000_000_000_000,
            end_time_unix_nano: 1_700_000_001_000_000_000,
            ..Span::default()
        })
        .collect();
    ExportTraceServiceRequest {
        resource_spans: vec![ResourceSpans {
            scope_spans: vec![ScopeSpans { spans, ..ScopeSpans::default() }],
            ..ResourceSpans::default()
        }],
    }
}

/// `otlp_receiver_accepted_items_total` for traces over gRPC.
fn accepted_spans(collector: &otlp_collector::Collector) -> f64 {
    collector
        .metrics
        .encode()
        .lines()
        .filter(|l| {
            l.starts_with("otlp_receiver_accepted_items_total{")
                && l.contains("signal=\"traces\"")
                && l.contains("transport=\"grpc\"")
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

#[tokio::test]
async fn a_collector_started_from_what_the_operator_wrote_accepts_an_mtls_client_of_the_same_ca() -> anyhow::Result<()>
{
    with_temp_ns("op-mtls", |ns| async move {
        install_crd(&ns).await?;
        let op = Operator::start(&ns, "op-a");
        apply(&ns, &manifest(&ns.name)).await?;
        wait_ready(&ns, "edge", "2/2").await?;
        op.wait_quiet().await?;

        // The pod's filesystem, from the Deployment's mounts and the ConfigMap and Secret they name.
        let root = tempfile::tempdir()?;
        let d: Deployment = get(&ns, "edge-collector").await?.context("deployment")?;
        let config_path = pod_filesystem(&ns, &d, root.path()).await?;
        let in_root = |p: &str| root.path().join(p.trim_start_matches('/')).display().to_string();
        let yaml = std::fs::read_to_string(in_root(&config_path))
            .with_context(|| format!("the --config file {config_path}"))?;

        // The operator's config as written; only what a pod's network and root differ in changes.
        let mut config = otlp_collector::config::Config::from_yaml(&yaml).map_err(|e| anyhow::anyhow!("{e}"))?;
        let otlp = &mut config.receivers.otlp;
        otlp.grpc.as_mut().context("grpc receiver")?.endpoint = "127.0.0.1:0".into();
        otlp.http.as_mut().context("http receiver")?.endpoint = "127.0.0.1:0".into();
        config.service.telemetry.endpoint = Some("127.0.0.1:0".into());
        let tls = config.receivers.otlp.tls.as_mut().context("tls in the operator's config")?;
        tls.cert_file = in_root(&tls.cert_file);
        tls.key_file = in_root(&tls.key_file);
        tls.client_ca_file = Some(in_root(tls.client_ca_file.as_deref().context("client_ca_file under MutualTLS")?));
        let collector = otlp_collector::Collector::start(config).await?;
        let addr = collector.grpc_addr.context("grpc address")?;

        let ca: Secret = get(&ns, "edge-ca").await?.context("ca secret")?;
        let ca_pem = secret_str(&ca, "tls.crt")?;
        let tls_secret: Secret = get(&ns, "edge-collector-tls").await?.context("tls secret")?;
        let result = async {
            // A client whose certificate the operator's CA issued, dialling a Service DNS name.
            let me = client_cert(&ca, &format!("spiffe://cluster.local/ns/{}/sa/checkout", ns.name))?;
            for dns in [
                format!("edge-collector.{}.svc", ns.name),
                format!("edge-collector-headless.{}.svc.cluster.local", ns.name),
            ] {
                verify_serving_cert(&secret_str(&tls_secret, "tls.crt")?, &ca_pem, &dns)?;
                let mut client = TraceServiceClient::new(
                    mtls_channel(addr, &ca_pem, &dns, Some(&me))
                        .await
                        .with_context(|| format!("connecting as {dns}"))?,
                );
                let response = client.export(spans(3)).await.with_context(|| format!("export via {dns}"))?.into_inner();
                ensure!(
                    response.partial_success.as_ref().is_none_or(|p| p.rejected_spans == 0),
                    "partial success: {response:?}"
                );
            }
            ensure!(accepted_spans(&collector) == 6.0, "accepted spans:\n{}", collector.metrics.encode());

            // No client certificate: refused (at the handshake, or at the first request).
            let refused = match mtls_channel(addr, &ca_pem, &format!("edge-collector.{}.svc", ns.name), None).await {
                Err(_) => true,
                Ok(ch) => TraceServiceClient::new(ch).export(spans(1)).await.is_err(),
            };
            ensure!(refused, "a client without a certificate was served");
            // A name the certificate is not for: the client refuses the server.
            let refused = match mtls_channel(addr, &ca_pem, "edge-collector.elsewhere.svc", Some(&me)).await {
                Err(_) => true,
                Ok(ch) => TraceServiceClient::new(ch).export(spans(1)).await.is_err(),
            };
            ensure!(refused, "the serving certificate verified for a name it was not issued for");
            ensure!(accepted_spans(&collector) == 6.0, "nothing accepted from refused clients");
            anyhow::Ok(())
        }
        .await;
        collector.shutdown().await;
        result?;
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
        let plain = manifest(&ns.name)
            .replace("  autoscaling: {minReplicas: 2, maxReplicas: 6, targetCPUUtilization: 70}\n", "");
        apply(&ns, &plain).await?;
        wait_ready(&ns, "edge", "2/2").await?;
        scale_edge(&ns, 3).await?;
        wait_scaled(&ns, 3).await?;
        let scale = ns
            .kubectl(
                &[
                    "get",
                    "--raw",
                    &format!("/apis/otlpfleet.dev/v1alpha1/namespaces/{}/otlpcollectors/edge/scale", ns.name),
                ],
                None,
            )
            .await?;
        ensure!(
            scale.contains("\"replicas\":3") && scale.contains("app.kubernetes.io/instance=edge"),
            "scale subresource: {scale}"
        );

        // With autoscaling, the HPA owns spec.replicas: raising minReplicas makes it scale the
        // OtlpCollector (not the Deployment) and the operator follows.
        patch_edge(&ns, r#"{"spec":{"autoscaling":{"minReplicas":4,"maxReplicas":6,"targetCPUUtilization":70}}}"#)
            .await?;
        let hpa_scaled = |cr: &OtlpCollector| cr.spec.replicas == 4;
        wait_for(&ns, "edge", "the HPA to scale the OtlpCollector to 4", Duration::from_secs(90), hpa_scaled).await?;
        wait_scaled(&ns, 4).await?;
        // A reconcile (spec change elsewhere) keeps what the HPA decided.
        patch_edge(&ns, r#"{"spec":{"limits":{"maxConnections":5000}}}"#).await?;
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
        apply(&ns, &manifest(&ns.name)).await?;
        wait_ready(&ns, "edge", "2/2").await?;
        let pods_before = ns.kubectl(&["get", "pods", "-o", "name"], None).await?;

        // A change the collector hot-reloads updates the ConfigMap and does not restart pods.
        let template_before = current_restart_hash(&ns).await?;
        patch_edge(&ns, r#"{"spec":{"limits":{"memoryLimitMiB":1024}}}"#).await?;
        wait_config(&ns, "memory_limit_mib: 1024").await?;
        op.wait_quiet().await?;
        ensure!(
            current_restart_hash(&ns).await? == template_before,
            "a hot-reloadable change touched the pod template"
        );
        ensure!(
            ns.kubectl(&["get", "pods", "-o", "name"], None).await? == pods_before,
            "a config change restarted pods"
        );
        // A listener setting (the collector keeps its listeners on reload) rolls the pods instead.
        patch_edge(&ns, r#"{"spec":{"limits":{"maxMessageBytes":1048576}}}"#).await?;
        wait_config(&ns, "max_message_bytes: 1048576").await?;
        let rolled = |d: &Deployment| restart_hash(d).is_some_and(|h| h != template_before);
        wait_for(&ns, "edge-collector", "the pod template to change", WAIT, rolled).await?;

        // Autoscaling off: the HPA goes. TLS off: the certificate Secrets go.
        patch_edge(&ns, r#"{"spec":{"autoscaling":null}}"#).await?;
        wait_pruned::<HorizontalPodAutoscaler>(&ns, &["edge-collector"]).await?;
        patch_edge(&ns, r#"{"spec":{"tls":{"mode":"Disabled"}}}"#).await?;
        wait_pruned::<Secret>(&ns, &["edge-collector-tls", "edge-ca"]).await?;
        let c = wait_ready(&ns, "edge", "2/2").await?;
        ensure!(c[4] == "Disabled", "columns {c:?}");
        let d: Deployment = get(&ns, "edge-collector").await?.context("deployment")?;
        let pod = d.spec.template.spec.context("pod")?;
        ensure!(!pod.volumes.unwrap_or_default().iter().any(|v| v.name == "tls"), "the tls volume is gone");
        // replicas 2 without autoscaling still has a PDB; 1 has none.
        scale_edge(&ns, 1).await?;
        wait_pruned::<PodDisruptionBudget>(&ns, &["edge-collector"]).await?;

        // Deleting the OtlpCollector removes every child (owner references).
        ns.kubectl(&["delete", "otlpc", "edge", "--wait=true"], None).await?;
        wait_until("every child to be deleted", Duration::from_secs(90), || async {
            Ok(child_versions(&ns).await?.is_empty().then_some(()))
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
            (
                m.replace("minReplicas: 2, maxReplicas: 6", "minReplicas: 7, maxReplicas: 6"),
                "autoscaling.minReplicas must not be greater than autoscaling.maxReplicas",
            ),
            (
                m.replace("{mode: MutualTLS}", "{mode: MutualTLS, validity: 24h, renewBefore: 48h}"),
                "tls.renewBefore must be shorter than tls.validity",
            ),
            (
                m.replace("{mode: MutualTLS}", "{mode: TLS, clientCA: {secretName: x}}"),
                "tls.clientCA is only used with mode MutualTLS",
            ),
            (m.replace("{mode: MutualTLS}", "{mode: Mutual}"), "Unsupported value: \"Mutual\""),
            (m.replace("targetCPUUtilization: 70", "targetCPUUtilization: 170"), "should be less than or equal to 100"),
        ] {
            match apply(&ns, &bad).await {
                Ok(out) => bail!("accepted an invalid spec ({message}): {out}"),
                Err(e) => ensure!(format!("{e:#}").contains(message), "expected {message:?} in: {e:#}"),
            }
        }

        // What only the collector's validation can see is a condition and an Event, not a crash loop.
        let op = Operator::start(&ns, "op-a");
        apply(&ns, &m).await?;
        wait_ready(&ns, "edge", "2/2").await?;
        patch_edge(&ns, r#"{"spec":{"exporter":{"endpoint":"tempo:4317"}}}"#).await?;
        let cr = wait_condition(&ns, "ConfigValid", "False").await?;
        let cond = condition(&cr, "ConfigValid").context("ConfigValid")?;
        ensure!(cond.message.contains("exporters.otlp.endpoint"), "message: {}", cond.message);
        ensure!(condition(&cr, "Degraded").is_some_and(|c| c.status == "True"), "Degraded: {:?}", cr.status);
        let c = columns(&ns, "edge").await?;
        ensure!(c[2] == "Degraded", "columns {c:?}");
        let cm: ConfigMap = get(&ns, "edge-collector").await?.context("configmap")?;
        ensure!(!collector_yaml(&cm).is_some_and(|y| y.contains("tempo")), "the running fleet was left untouched");
        wait_event(&ns, "InvalidSpec").await?;
        let failures = op.metrics.encode();
        ensure!(failures.contains("error=\"invalid_spec\""), "failures metric: {failures}");
        // Fixing the spec recovers.
        patch_edge(&ns, r#"{"spec":{"exporter":{"endpoint":"http://tempo:4317"}}}"#).await?;
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
        wait_leading(&a, "op-a").await?;
        let b = Operator::start(&ns, "op-b");
        apply(&ns, &manifest(&ns.name)).await?;
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
        let holder =
            ns.kubectl(&["get", "lease", "otlp-operator", "-o", "jsonpath={.spec.holderIdentity}"], None).await?;
        ensure!(holder == "op-a", "lease holder {holder}");

        // The leader goes away; the follower takes the Lease and reconciles the next change.
        a.stop().await?;
        wait_leading(&b, "op-b").await?;
        scale_edge(&ns, 3).await?;
        wait_ready(&ns, "edge", "3/3").await?;
        ensure!(b.reconciles() >= 1);
        b.stop().await
    })
    .await
}

/// `kubectl get otlpp NAME` columns: NAME ACCEPTED REASON COLLECTORS AGE.
async fn pipeline_columns(ns: &TestNs, name: &str) -> anyhow::Result<Vec<String>> {
    let out = ns.kubectl(&["get", "otlpp", name, "--no-headers"], None).await?;
    Ok(out.split_whitespace().map(str::to_owned).collect())
}

/// Waits until `kubectl get otlpp NAME` shows `accepted` and `reason`; returns the columns.
async fn wait_pipeline(ns: &TestNs, name: &str, accepted: &str, reason: &str) -> anyhow::Result<Vec<String>> {
    wait_until(&format!("kubectl get otlpp {name} to show {accepted} {reason}"), WAIT, || async {
        let c = pipeline_columns(ns, name).await?;
        Ok((c.get(1).map(String::as_str) == Some(accepted) && c.get(2).map(String::as_str) == Some(reason))
            .then_some(c))
    })
    .await
}

async fn config_of(ns: &TestNs, collector: &str) -> anyhow::Result<String> {
    let cm: ConfigMap = get(ns, &format!("{collector}-collector")).await?.context("configmap")?;
    Ok(collector_yaml(&cm).context("collector.yaml")?.to_owned())
}

const SHOP_PIPELINE: &str = r#"apiVersion: otlpfleet.dev/v1alpha1
kind: CollectorPipeline
metadata: {name: shop}
spec:
  collectors: [edge, core]
  signals: [traces]
  processors:
    - attributes: {actions: [{key: team, action: upsert, value: shop}]}
    - batch: {timeout: 1s}
  exporters:
    - otlp: {endpoint: "http://tempo.shop:4317"}
"#;

#[tokio::test]
async fn a_collector_pipeline_is_rendered_reported_kept_when_broken_and_removed() -> anyhow::Result<()> {
    with_temp_ns("op-pipeline", |ns| async move {
        install_crd(&ns).await?;
        let op = Operator::start(&ns, "op-a");
        apply(&ns, &manifest(&ns.name)).await?;
        wait_ready(&ns, "edge", "2/2").await?;

        // `core` does not exist yet: edge runs the pipeline, the status says what is missing.
        apply(&ns, SHOP_PIPELINE).await?;
        wait_config(&ns, "traces/shop").await?;
        let yaml = config_of(&ns, "edge").await?;
        for needle in ["attributes/shop-0", "batch/shop-1", "otlp/shop-0", "http://tempo.shop:4317"] {
            ensure!(yaml.contains(needle), "{needle} not in the config:\n{yaml}");
        }
        let c = wait_pipeline(&ns, "shop", "False", "CollectorNotFound").await?;
        ensure!(c[3] == r#"["edge"]"#, "columns {c:?}");
        let p = ns.kubectl(&["get", "otlpp", "shop", "-o", "jsonpath={.status.conditions[0].message}"], None).await?;
        ensure!(p.contains(&format!("no OtlpCollector `core` in namespace `{}`", ns.name)), "message: {p}");

        // Creating `core` makes it Accepted in both.
        apply(&ns, &format!("apiVersion: otlpfleet.dev/v1alpha1\nkind: OtlpCollector\nmetadata: {{name: core, namespace: {}}}\nspec: {{}}\n", ns.name)).await?;
        let c = wait_pipeline(&ns, "shop", "True", "Rendered").await?;
        ensure!(c[3] == r#"["edge","core"]"#, "columns {c:?}");
        ensure!(config_of(&ns, "core").await?.contains("traces/shop"), "core runs the pipeline");

        // A broken edit is refused with the collector's reason; both keep the version they run.
        ns.kubectl(&["patch", "otlpp", "shop", "--type=merge", "-p", r#"{"spec":{"exporters":[{"otlp":{"endpoint":"tempo.shop:4317"}}]}}"#], None).await?;
        wait_pipeline(&ns, "shop", "False", "InvalidPipeline").await?;
        let p = ns.kubectl(&["get", "otlpp", "shop", "-o", "jsonpath={.status.conditions[0].message}"], None).await?;
        ensure!(p.contains("exporters.otlp/shop-0.endpoint"), "message: {p}");
        let cr = wait_condition(&ns, "PipelinesReady", "False").await?;
        let cond = condition(&cr, "PipelinesReady").context("PipelinesReady")?;
        ensure!(cond.message.contains("running their last accepted version: shop"), "message: {}", cond.message);
        op.wait_quiet().await?;
        ensure!(config_of(&ns, "edge").await?.contains("http://tempo.shop:4317"), "edge keeps the running version");

        // Deleting the pipeline takes it out of the config; traces go to the default exporter again.
        ns.kubectl(&["delete", "otlpp", "shop", "--wait=true"], None).await?;
        let gone = |cm: &ConfigMap| collector_yaml(cm).is_some_and(|y| !y.contains("shop") && y.contains("traces:"));
        wait_for(&ns, "edge-collector", "the pipeline to leave edge's config", WAIT, gone).await?;
        wait_for(&ns, "core-collector", "the pipeline to leave core's config", WAIT, gone).await?;
        wait_condition(&ns, "PipelinesReady", "True").await?;
        op.stop().await
    })
    .await
}
