//! The control plane behaves like a real cluster: Deployments get Ready pods on kwok nodes, scale and are
//! garbage-collected; the HPA controller enforces min/max; a CRD with status and scale subresources works
//! with `kubectl get/scale/wait`; namespaces are finalised.

use std::time::Duration;

use anyhow::{Context as _, ensure};
use e2e::{TestNs, wait_until, with_temp_ns};
use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet};
use k8s_openapi::api::core::v1::{Namespace, Pod};
use kube::Api;
use kube::api::ListParams;

const WAIT: Duration = Duration::from_secs(60);

fn deployment(name: &str, replicas: u32) -> String {
    format!(
        r#"{{"apiVersion": "apps/v1", "kind": "Deployment",
  "metadata": {{"name": "{name}"}},
  "spec": {{"replicas": {replicas}, "selector": {{"matchLabels": {{"app": "{name}"}}}},
    "template": {{"metadata": {{"labels": {{"app": "{name}"}}}},
      "spec": {{"containers": [{{"name": "main", "image": "registry.invalid/pause:1",
        "resources": {{"requests": {{"cpu": "10m", "memory": "16Mi"}}}}}}]}}}}}}}}"#
    )
}

fn pod_ready(p: &Pod) -> bool {
    p.metadata.deletion_timestamp.is_none()
        && p.status
            .as_ref()
            .and_then(|s| s.conditions.as_ref())
            .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

/// Wait until the pods labelled `app=<app>` are exactly `n`, all Ready on kwok nodes; return them.
async fn wait_ready_pods(ns: &TestNs, app: &str, n: usize) -> anyhow::Result<Vec<Pod>> {
    let pods: Api<Pod> = Api::namespaced(ns.client.clone(), &ns.name);
    let lp = ListParams::default().labels(&format!("app={app}"));
    wait_until(&format!("{n} Ready pods of {app}"), WAIT, || async {
        let list = pods.list(&lp).await?.items;
        let ready = list.iter().filter(|p| pod_ready(p)).count();
        if list.len() == n && ready == n { Ok(Some(list)) } else { anyhow::bail!("{} pods, {ready} Ready", list.len()) }
    })
    .await
}

#[tokio::test(flavor = "multi_thread")]
async fn deployment_gets_ready_pods_scales_and_is_garbage_collected() -> anyhow::Result<()> {
    with_temp_ns("deploy", |ns| async move {
        ns.kubectl(&["apply", "-f", "-"], Some(&deployment("web", 2))).await?;
        ns.kubectl(&["wait", "--for=condition=Available", "deployment/web", "--timeout=60s"], None).await?;
        let pods = wait_ready_pods(&ns, "web", 2).await?;
        for p in &pods {
            let node = p.spec.as_ref().and_then(|s| s.node_name.as_deref()).unwrap_or_default();
            ensure!(node.starts_with("kwok-node-"), "pod scheduled on {node:?}");
            let ip = p.status.as_ref().and_then(|s| s.pod_ip.as_deref()).unwrap_or_default();
            ensure!(!ip.is_empty(), "kwok gave the pod no IP");
        }

        ns.kubectl(&["scale", "deployment/web", "--replicas=5"], None).await?;
        wait_ready_pods(&ns, "web", 5).await?;
        // Scale-down deletes pods with a grace period; kwok's pod-delete stage finalises them.
        ns.kubectl(&["scale", "deployment/web", "--replicas=1"], None).await?;
        wait_ready_pods(&ns, "web", 1).await?;

        let rs: Api<ReplicaSet> = Api::namespaced(ns.client.clone(), &ns.name);
        let pods: Api<Pod> = Api::namespaced(ns.client.clone(), &ns.name);
        let lp = ListParams::default().labels("app=web");
        let owned = rs.list(&lp).await?.items;
        ensure!(owned.len() == 1, "expected 1 ReplicaSet, found {}", owned.len());
        let owner = owned[0].metadata.owner_references.as_deref().unwrap_or_default();
        ensure!(
            owner.iter().any(|o| o.kind == "Deployment" && o.name == "web"),
            "ReplicaSet not owned by the Deployment"
        );

        // kubectl deletes with background propagation: the garbage collector removes ReplicaSet and pods.
        ns.kubectl(&["delete", "deployment/web", "--wait=true"], None).await?;
        wait_until("ReplicaSets and pods of web to be garbage-collected", WAIT, || async {
            let (r, p) = (rs.list(&lp).await?.items.len(), pods.list(&lp).await?.items.len());
            if r == 0 && p == 0 { Ok(Some(())) } else { anyhow::bail!("{r} ReplicaSets, {p} pods left") }
        })
        .await
    })
    .await
}

#[tokio::test(flavor = "multi_thread")]
async fn hpa_controller_enforces_min_and_max() -> anyhow::Result<()> {
    with_temp_ns("hpa", |ns| async move {
        ns.kubectl(&["apply", "-f", "-"], Some(&deployment("api", 1))).await?;
        let hpa = r#"{"apiVersion": "autoscaling/v2", "kind": "HorizontalPodAutoscaler",
  "metadata": {"name": "api"},
  "spec": {"scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "api"},
    "minReplicas": 3, "maxReplicas": 5,
    "metrics": [{"type": "Resource", "resource": {"name": "cpu", "target": {"type": "Utilization", "averageUtilization": 50}}}]}}"#;
        ns.kubectl(&["apply", "-f", "-"], Some(hpa)).await?;

        let deployments: Api<Deployment> = Api::namespaced(ns.client.clone(), &ns.name);
        let replicas = |want: i32| {
            let deployments = deployments.clone();
            async move {
                let d = deployments.get("api").await?;
                let got = d.spec.replicas.unwrap_or(1);
                if got == want { Ok(Some(())) } else { anyhow::bail!("spec.replicas={got}") }
            }
        };
        // Below min: the HPA controller raises the Deployment to minReplicas (no metrics API needed).
        wait_until("the HPA to raise replicas to min 3", WAIT, || replicas(3)).await?;
        wait_ready_pods(&ns, "api", 3).await?;
        // Above max: it lowers the Deployment to maxReplicas.
        ns.kubectl(&["scale", "deployment/api", "--replicas=8"], None).await?;
        wait_until("the HPA to lower replicas to max 5", WAIT, || replicas(5)).await?;
        wait_ready_pods(&ns, "api", 5).await?;

        let got = ns.kubectl(&["get", "hpa", "api", "-o", "jsonpath={.status.desiredReplicas}"], None).await?;
        ensure!(got == "5", "hpa status.desiredReplicas={got:?}");
        Ok(())
    })
    .await
}

#[tokio::test(flavor = "multi_thread")]
async fn crd_with_status_and_scale_subresources_works_with_kubectl() -> anyhow::Result<()> {
    with_temp_ns("crd", |ns| async move {
        // CRDs are cluster-scoped: a group per test namespace keeps parallel runs apart.
        let group = format!("{}.e2e.otlp-fleet.dev", ns.name);
        let crd_name = format!("widgets.{group}");
        let crd = format!(
            r#"{{"apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
  "metadata": {{"name": "{crd_name}"}},
  "spec": {{"group": "{group}", "scope": "Namespaced",
    "names": {{"plural": "widgets", "singular": "widget", "kind": "Widget", "listKind": "WidgetList"}},
    "versions": [{{"name": "v1", "served": true, "storage": true,
      "subresources": {{"status": {{}}, "scale": {{"specReplicasPath": ".spec.replicas", "statusReplicasPath": ".status.replicas", "labelSelectorPath": ".status.selector"}}}},
      "additionalPrinterColumns": [{{"name": "Replicas", "type": "integer", "jsonPath": ".spec.replicas"}},
        {{"name": "Ready", "type": "string", "jsonPath": ".status.conditions[?(@.type==\"Ready\")].status"}}],
      "schema": {{"openAPIV3Schema": {{"type": "object", "properties": {{
        "spec": {{"type": "object", "properties": {{"replicas": {{"type": "integer", "minimum": 0}}}}}},
        "status": {{"type": "object", "properties": {{
          "replicas": {{"type": "integer"}}, "selector": {{"type": "string"}},
          "conditions": {{"type": "array", "x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["type"],
            "items": {{"type": "object", "required": ["type", "status"], "properties": {{
              "type": {{"type": "string"}}, "status": {{"type": "string"}}, "reason": {{"type": "string"}},
              "message": {{"type": "string"}}, "lastTransitionTime": {{"type": "string", "format": "date-time"}},
              "observedGeneration": {{"type": "integer"}}}}}}}}}}}}}}}}}}}}]}}}}"#
        );
        let result = async {
            ns.kubectl(&["apply", "-f", "-"], Some(&crd)).await?;
            ns.kubectl(&["wait", "--for=condition=Established", &format!("crd/{crd_name}"), "--timeout=30s"], None)
                .await?;
            let resource = format!("widgets.{group}");
            let widget = format!(r#"{{"apiVersion": "{group}/v1", "kind": "Widget", "metadata": {{"name": "w1"}}, "spec": {{"replicas": 1}}}}"#);
            // Discovery of the new group can lag Established by a moment in kubectl's cache: retry on a deadline.
            wait_until("kubectl to apply a Widget", Duration::from_secs(30), || async {
                ns.kubectl(&["apply", "-f", "-"], Some(&widget)).await.map(Some)
            })
            .await?;
            let table = ns.kubectl(&["get", &resource], None).await?;
            ensure!(table.contains("REPLICAS") && table.contains("w1"), "kubectl get printed:\n{table}");

            ns.kubectl(&["scale", &format!("{resource}/w1"), "--replicas=4"], None).await?;
            let spec = ns.kubectl(&["get", &resource, "w1", "-o", "jsonpath={.spec.replicas}"], None).await?;
            ensure!(spec == "4", "spec.replicas after kubectl scale: {spec:?}");

            // Start `kubectl wait` first, then set the condition through the status subresource.
            let mut wait = ns.cluster.kubectl();
            wait.args(["-n", &ns.name, "wait", "--for=condition=Ready", &format!("{resource}/w1"), "--timeout=30s"]);
            let waiter = tokio::spawn(async move { wait.output().await });
            let status = r#"{"status": {"replicas": 4, "selector": "app=w1",
              "conditions": [{"type": "Ready", "status": "True", "reason": "Test", "message": "set by the test",
                              "lastTransitionTime": "2026-01-01T00:00:00Z"}]}}"#;
            ns.kubectl(&["patch", &resource, "w1", "--subresource=status", "--type=merge", "-p", status], None).await?;
            let out = waiter.await??;
            ensure!(out.status.success(), "kubectl wait failed: {}", String::from_utf8_lossy(&out.stderr));

            let scale = ns.kubectl(&["get", &resource, "w1", "--subresource=scale", "-o", "jsonpath={.status.replicas}"], None).await?;
            ensure!(scale == "4", "scale subresource status.replicas: {scale:?}");
            let table = ns.kubectl(&["get", &resource, "w1"], None).await?;
            ensure!(table.contains("True"), "Ready column missing:\n{table}");
            // A status write through the main resource is ignored once the status subresource is on.
            ns.kubectl(&["patch", &resource, "w1", "--type=merge", "-p", r#"{"status": {"replicas": 9}}"#], None).await?;
            let scale = ns.kubectl(&["get", &resource, "w1", "-o", "jsonpath={.status.replicas}"], None).await?;
            ensure!(scale == "4", "status changed through the main resource: {scale:?}");
            Ok(())
        }
        .await;
        ns.kubectl(&["delete", "crd", &crd_name, "--wait=false"], None).await.context("deleting the CRD")?;
        result
    })
    .await
}

#[tokio::test(flavor = "multi_thread")]
async fn deleted_namespaces_are_finalised() -> anyhow::Result<()> {
    let cluster = e2e::Cluster::shared_async().await?;
    let client = cluster.client().await?;
    let name = format!("e2e-nsdel-{}", std::process::id());
    let yaml = format!(
        "apiVersion: v1\nkind: Namespace\nmetadata: {{name: {name}}}\n---\napiVersion: v1\nkind: ConfigMap\nmetadata: {{name: c, namespace: {name}}}\ndata: {{k: v}}\n"
    );
    e2e::run_kubectl(cluster, None, &["apply", "-f", "-"], Some(&yaml)).await?;
    e2e::run_kubectl(cluster, None, &["delete", "namespace", &name, "--wait=false"], None).await?;
    let namespaces: Api<Namespace> = Api::all(client);
    wait_until("the namespace controller to finalise the namespace", WAIT, || async {
        match namespaces.get_opt(&name).await? {
            None => Ok(Some(())),
            Some(ns) => anyhow::bail!("phase {:?}", ns.status.and_then(|s| s.phase)),
        }
    })
    .await
}

#[tokio::test(flavor = "multi_thread")]
async fn helm_installs_and_uninstalls_a_chart() -> anyhow::Result<()> {
    with_temp_ns("helm", |ns| async move {
        let dir = std::env::temp_dir().join(format!("otlp-fleet-{}", ns.name));
        std::fs::create_dir_all(&dir)?;
        let helm = |args: Vec<String>| {
            let mut cmd = ns.cluster.helm();
            cmd.args(&args).current_dir(&dir);
            async move {
                let out = cmd.output().await?;
                ensure!(
                    out.status.success(),
                    "helm {} failed: {}",
                    args.join(" "),
                    String::from_utf8_lossy(&out.stderr)
                );
                Ok(String::from_utf8(out.stdout)?)
            }
        };
        let s = |v: &[&str]| v.iter().map(|a| a.to_string()).collect::<Vec<_>>();
        let result = async {
            helm(s(&["create", "demo"])).await?;
            helm(s(&["install", "demo", "./demo", "-n", &ns.name, "--wait", "--timeout", "60s"])).await?;
            let ready =
                ns.kubectl(&["get", "deployment", "demo", "-o", "jsonpath={.status.readyReplicas}"], None).await?;
            ensure!(ready == "1", "readyReplicas={ready:?}");
            helm(s(&["uninstall", "demo", "-n", &ns.name, "--wait", "--timeout", "60s"])).await?;
            let left = ns.kubectl(&["get", "deployments,services", "-o", "name"], None).await?;
            ensure!(left.trim().is_empty(), "left after uninstall: {left}");
            Ok(())
        }
        .await;
        std::fs::remove_dir_all(&dir)?;
        result
    })
    .await
}
