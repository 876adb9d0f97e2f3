//! Helpers shared by the operator's e2e test binaries.
#![allow(dead_code)]

use std::sync::Arc;
use std::time::Duration;

use e2e::{TestNs, wait_until};
use kube::{Api, Resource};
use otlp_operator::controller::{self, RunConfig};
use otlp_operator::leader::LeaseConfig;
use otlp_operator::metrics::Metrics;
use serde::de::DeserializeOwned;
use tokio::sync::OnceCell;
use tokio_util::sync::CancellationToken;

pub const WAIT: Duration = Duration::from_secs(60);

pub const MANIFEST: &str = "apiVersion: otlpfleet.dev/v1alpha1
kind: OtlpCollector
metadata: {name: edge, namespace: telemetry}
spec:
  replicas: 2
  tls: {mode: MutualTLS}
  autoscaling: {minReplicas: 2, maxReplicas: 6, targetCPUUtilization: 70}
";

/// The manifest, in the test's namespace.
pub fn manifest(ns: &str) -> String {
    MANIFEST.replace("namespace: telemetry", &format!("namespace: {ns}"))
}

static CRD: OnceCell<()> = OnceCell::const_new();

/// Installs the committed CRDs (as a user would, `kubectl apply -f crds/`) once per test binary.
pub async fn install_crd(ns: &TestNs) -> anyhow::Result<()> {
    CRD.get_or_try_init(|| async {
        let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../crds");
        ns.kubectl(&["apply", "--server-side", "--force-conflicts", "-f", dir], None).await?;
        for crd in ["crd/otlpcollectors.otlpfleet.dev", "crd/collectorpipelines.otlpfleet.dev"] {
            ns.kubectl(&["wait", "--for=condition=Established", crd, "--timeout=30s"], None).await?;
        }
        anyhow::Ok(())
    })
    .await?;
    Ok(())
}

/// One in-process operator instance.
pub struct Operator {
    shutdown: CancellationToken,
    task: tokio::task::JoinHandle<otlp_operator::Result<()>>,
    pub metrics: Arc<Metrics>,
}

impl Operator {
    pub fn start(ns: &TestNs, identity: &str) -> Self {
        Self::start_with(ns.client.clone(), ns, identity)
    }

    /// An instance using `client` (e.g. one that impersonates a ServiceAccount).
    pub fn start_with(client: kube::Client, ns: &TestNs, identity: &str) -> Self {
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
        let task = tokio::spawn(controller::run(client, config, metrics.clone(), shutdown.clone()));
        Self { shutdown, task, metrics }
    }

    pub fn reconciles(&self) -> u64 {
        self.metrics.reconciles.get()
    }

    pub fn is_leader(&self) -> bool {
        self.metrics.leader.get() == 1
    }

    /// Waits until every reconcile that started has finished and none started for a second.
    pub async fn wait_quiet(&self) -> anyhow::Result<()> {
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

    pub async fn stop(self) -> anyhow::Result<()> {
        self.shutdown.cancel();
        self.task.await??;
        Ok(())
    }
}

pub async fn get<K>(ns: &TestNs, name: &str) -> anyhow::Result<Option<K>>
where
    K: Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>
        + Clone
        + DeserializeOwned
        + std::fmt::Debug,
{
    Ok(Api::<K>::namespaced(ns.client.clone(), &ns.name).get_opt(name).await?)
}

/// `kubectl get otlpc NAME` columns: NAME READY PHASE VERSION TLS CERT-EXPIRY AGE.
pub async fn columns(ns: &TestNs, name: &str) -> anyhow::Result<Vec<String>> {
    let out = ns.kubectl(&["get", "otlpc", name, "--no-headers"], None).await?;
    Ok(out.split_whitespace().map(str::to_owned).collect())
}

pub async fn wait_ready(ns: &TestNs, name: &str, ready: &str) -> anyhow::Result<Vec<String>> {
    wait_until(&format!("kubectl get otlpc {name} to show {ready} Running"), WAIT, || async {
        let c = columns(ns, name).await?;
        Ok((c.get(1).map(String::as_str) == Some(ready) && c.get(2).map(String::as_str) == Some("Running"))
            .then_some(c))
    })
    .await
}
