//! `helm install` of helm/otlp-operator against the real control plane (its own cluster: this is a
//! separate test binary, so the CRD is absent until the chart installs it). The chart's RBAC is
//! proven by running the operator in-process as the chart's ServiceAccount (impersonation).

mod common;

use std::time::Duration;

use anyhow::{Context as _, ensure};
use common::{Operator, WAIT, get, manifest, wait_ready};
use e2e::{TestNs, wait_until, with_temp_ns};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{ConfigMap, Secret, Service};

const CRD: &str = "customresourcedefinition.apiextensions.k8s.io/otlpcollectors.otlpfleet.dev";

async fn helm(ns: &TestNs, args: &[&str]) -> anyhow::Result<String> {
    let out = ns.cluster.helm().args(args).output().await?;
    ensure!(out.status.success(), "helm {} failed: {}", args.join(" "), String::from_utf8_lossy(&out.stderr));
    Ok(String::from_utf8(out.stdout)?)
}

/// A client that acts as `system:serviceaccount:<ns>:<sa>`.
async fn impersonating(ns: &TestNs, sa: &str) -> anyhow::Result<kube::Client> {
    let kubeconfig = kube::config::Kubeconfig::read_from(ns.cluster.kubeconfig())?;
    let mut config =
        kube::Config::from_custom_kubeconfig(kubeconfig, &kube::config::KubeConfigOptions::default()).await?;
    config.auth_info.impersonate = Some(format!("system:serviceaccount:{}:{sa}", ns.name));
    Ok(kube::Client::try_from(config)?)
}

#[tokio::test]
async fn helm_install_creates_the_crd_and_an_operator_whose_rbac_suffices() -> anyhow::Result<()> {
    with_temp_ns("op-helm", |ns| async move {
        let chart = concat!(env!("CARGO_MANIFEST_DIR"), "/../helm/otlp-operator");
        // The release name is unique: with watchNamespace unset the chart makes a ClusterRole of that name.
        let release = ns.name.clone();
        let crd_before = ns.kubectl(&["get", CRD, "--ignore-not-found", "-o", "name"], None).await?;
        if ns.cluster.owned() {
            ensure!(crd_before.trim().is_empty(), "this binary's own cluster already has the CRD");
        }
        let result = async {
            helm(&ns, &["install", &release, chart, "-n", &ns.name, "--wait", "--timeout", "90s"]).await?;

            // The chart's crds/ were installed, and the CRD is served.
            ns.kubectl(&["wait", "--for=condition=Established", CRD, "--timeout=30s"], None).await?;
            let kinds = ns.kubectl(&["api-resources", "--api-group=otlpfleet.dev", "-o", "name"], None).await?;
            ensure!(kinds.contains("otlpcollectors.otlpfleet.dev"), "api-resources: {kinds}");

            // The operator Deployment: 2 replicas, Ready (kwok), the chart's image, args and ServiceAccount.
            let d: Deployment = get(&ns, &release).await?.context("operator deployment")?;
            let status = d.status.clone().unwrap_or_default();
            ensure!(status.ready_replicas == Some(2), "ready replicas: {status:?}");
            let pod = d.spec.template.spec.context("pod spec")?;
            ensure!(pod.service_account_name.as_deref() == Some(release.as_str()));
            let c = pod.containers.first().context("container")?;
            ensure!(
                c.image.as_deref() == Some(&*format!("ghcr.io/otlp-fleet/otlp-operator:{}", otlp_operator::VERSION)),
                "image {:?}",
                c.image
            );
            ensure!(
                c.args.as_deref().is_some_and(|a| a.first().map(String::as_str) == Some("run")),
                "args {:?}",
                c.args
            );
            ensure!(get::<Service>(&ns, &format!("{release}-metrics")).await?.is_some(), "metrics service");
            let pods = ns
                .kubectl(
                    &[
                        "get",
                        "pods",
                        "-l",
                        &format!("app.kubernetes.io/instance={release}"),
                        "-o",
                        "jsonpath={.items[*].status.conditions[?(@.type==\"Ready\")].status}",
                    ],
                    None,
                )
                .await?;
            ensure!(pods.split_whitespace().filter(|s| *s == "True").count() == 2, "pod Ready conditions: {pods}");

            // The chart's RBAC is enough: the operator, acting as the chart's ServiceAccount, takes its
            // Lease and reconciles the manifest to Ready with every child.
            let as_sa = impersonating(&ns, &release).await?;
            let op = Operator::start_with(as_sa, &ns, "op-helm");
            ns.kubectl(&["apply", "-f", "-"], Some(&manifest(&ns.name))).await?;
            wait_ready(&ns, "edge", "2/2").await?;
            wait_until("the operator to lead", WAIT, || async { Ok(op.is_leader().then_some(())) }).await?;
            ensure!(
                get::<ConfigMap>(&ns, "edge-collector").await?.is_some()
                    && get::<Secret>(&ns, "edge-collector-tls").await?.is_some()
            );
            let failures = op.metrics.encode();
            ensure!(
                !failures.contains("forbidden") && !failures.contains("error=\"kube_api\""),
                "failures: {failures}"
            );
            let events = ns.kubectl(&["get", "events", "--field-selector=reason=Created", "-o", "name"], None).await?;
            ensure!(!events.trim().is_empty(), "the operator's Events were not written");
            op.stop().await
        }
        .await;

        // Uninstall removes the operator and keeps the CRD (helm never deletes crds/).
        let uninstall = helm(&ns, &["uninstall", &release, "-n", &ns.name, "--wait", "--timeout", "60s"]).await;
        result?;
        uninstall?;
        wait_until("the operator Deployment to go", Duration::from_secs(60), || async {
            Ok(get::<Deployment>(&ns, &release).await?.is_none().then_some(()))
        })
        .await?;
        let crd = ns.kubectl(&["get", CRD, "-o", "name"], None).await?;
        ensure!(!crd.trim().is_empty(), "the CRD survives helm uninstall");
        Ok(())
    })
    .await
}
