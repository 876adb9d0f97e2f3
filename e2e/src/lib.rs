//! A real Kubernetes control plane for tests: start or reuse it, hand out a client and a fresh namespace.
//!
//! The control plane (etcd, kube-apiserver, kube-controller-manager, kube-scheduler, kwok) is run by the
//! `e2e/cluster` script from binaries built out of the Go module proxy (`e2e/tools/build-all.sh`).
//!
//! - `OTLP_FLEET_KUBECONFIG=<path>` makes every test binary reuse a running cluster (e.g. one from
//!   `e2e/cluster up`), which it never stops.
//! - Otherwise the first test of a test binary runs `e2e/cluster up --name test-<pid> --owner-pid <pid>`
//!   (building missing binaries first); the cluster's watchdog runs `e2e/cluster down` as soon as the test
//!   binary exits, whether it passed, failed or was killed.
#![forbid(unsafe_code)]

use std::future::Future;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use k8s_openapi::api::core::v1::Namespace;
use kube::api::{DeleteParams, ObjectMeta, PostParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Api, Client, Config};

/// Environment variable naming the kubeconfig of a running cluster to reuse.
pub const KUBECONFIG_ENV: &str = "OTLP_FLEET_KUBECONFIG";
/// Label put on every namespace the harness creates.
pub const TEST_NS_LABEL: &str = "otlp-fleet.dev/e2e";

/// A running control plane: where its kubeconfig is and which tool binaries go with it.
#[derive(Debug)]
pub struct Cluster {
    kubeconfig: PathBuf,
    kubectl: PathBuf,
    helm: PathBuf,
    owned: bool,
}

static SHARED: OnceLock<Result<Cluster, String>> = OnceLock::new();

/// The directory holding `cluster` and `tools/`.
pub fn e2e_dir() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// Read one `NAME=value` line of `tools/versions.sh` after the script expanded it.
fn tool_paths() -> anyhow::Result<(PathBuf, PathBuf)> {
    let out = std::process::Command::new("bash")
        .arg("-c")
        .arg(r#". "$1/tools/versions.sh" && echo "$K8S_BIN" && echo "$HELM_BIN""#)
        .arg("bash")
        .arg(e2e_dir())
        .output()
        .context("running bash to read e2e/tools/versions.sh")?;
    if !out.status.success() {
        bail!("reading e2e/tools/versions.sh failed: {}", String::from_utf8_lossy(&out.stderr));
    }
    let text = String::from_utf8(out.stdout)?;
    let mut lines = text.lines();
    let k8s = PathBuf::from(lines.next().context("no K8S_BIN")?);
    let helm = PathBuf::from(lines.next().context("no HELM_BIN")?);
    Ok((k8s.join("kubectl"), helm.join("helm")))
}

impl Cluster {
    /// The process-wide cluster: reused from `OTLP_FLEET_KUBECONFIG`, or started (once per process) by
    /// `e2e/cluster up`. Blocks while starting; a failure is returned to every caller with the script's output.
    pub fn shared() -> anyhow::Result<&'static Cluster> {
        SHARED
            .get_or_init(|| Cluster::start_or_reuse().map_err(|e| format!("{e:#}")))
            .as_ref()
            .map_err(|e| anyhow::anyhow!("the e2e control plane is unavailable: {e}"))
    }

    /// Async form of [`Cluster::shared`] that does not block the runtime.
    pub async fn shared_async() -> anyhow::Result<&'static Cluster> {
        tokio::task::spawn_blocking(Cluster::shared).await?
    }

    fn start_or_reuse() -> anyhow::Result<Cluster> {
        let (kubectl, helm) = tool_paths()?;
        if let Some(path) = std::env::var_os(KUBECONFIG_ENV).filter(|p| !p.is_empty()) {
            let kubeconfig = PathBuf::from(path);
            if !kubeconfig.is_file() {
                bail!("{KUBECONFIG_ENV}={} is not a file", kubeconfig.display());
            }
            return Ok(Cluster { kubeconfig, kubectl, helm, owned: false });
        }
        let pid = std::process::id();
        let started = Instant::now();
        let out = std::process::Command::new("bash")
            .arg(e2e_dir().join("cluster"))
            .args(["up", "--name", &format!("test-{pid}"), "--owner-pid", &pid.to_string()])
            .stdin(Stdio::null())
            .stderr(Stdio::inherit())
            .output()
            .context("running e2e/cluster up")?;
        if !out.status.success() {
            bail!(
                "`e2e/cluster up` failed ({}); see its output above. Build the binaries with `bash e2e/tools/build-all.sh`",
                out.status
            );
        }
        let stdout = String::from_utf8(out.stdout)?;
        let kubeconfig = PathBuf::from(stdout.lines().last().context("e2e/cluster up printed no kubeconfig path")?);
        eprintln!("e2e: control plane up in {:.1}s ({})", started.elapsed().as_secs_f64(), kubeconfig.display());
        Ok(Cluster { kubeconfig, kubectl, helm, owned: true })
    }

    pub fn kubeconfig(&self) -> &Path {
        &self.kubeconfig
    }

    /// Whether this process started the cluster (and its watchdog stops it when the process exits).
    pub fn owned(&self) -> bool {
        self.owned
    }

    /// A fresh client. Make one per test: a client is bound to the tokio runtime it was first used on.
    pub async fn client(&self) -> anyhow::Result<Client> {
        let kc = Kubeconfig::read_from(&self.kubeconfig)?;
        let config = Config::from_custom_kubeconfig(kc, &KubeConfigOptions::default()).await?;
        Ok(Client::try_from(config)?)
    }

    /// `kubectl` of the cluster's Kubernetes version, pointed at the cluster.
    pub fn kubectl(&self) -> tokio::process::Command {
        let mut cmd = tokio::process::Command::new(&self.kubectl);
        cmd.env("KUBECONFIG", &self.kubeconfig).stdin(Stdio::null()).kill_on_drop(true);
        cmd
    }

    /// `helm` (built by `e2e/tools/build-helm.sh`), pointed at the cluster.
    pub fn helm(&self) -> tokio::process::Command {
        let mut cmd = tokio::process::Command::new(&self.helm);
        cmd.env("KUBECONFIG", &self.kubeconfig).stdin(Stdio::null()).kill_on_drop(true);
        cmd
    }
}

/// A temporary namespace on the shared cluster, with a client. Made by [`with_temp_ns`].
pub struct TestNs {
    pub client: Client,
    pub name: String,
    pub cluster: &'static Cluster,
}

impl TestNs {
    /// Run `kubectl -n <ns> ARGS`, optionally feeding `stdin`; fail with stderr when it fails, else return stdout.
    pub async fn kubectl(&self, args: &[&str], stdin: Option<&str>) -> anyhow::Result<String> {
        run_kubectl(self.cluster, Some(&self.name), args, stdin).await
    }

    /// Everything worth seeing when a test failed.
    pub async fn dump(&self) -> String {
        let mut out = String::new();
        for args in [
            &["get", "all,hpa,events", "-o", "wide"][..],
            &["get", "pods,replicasets,deployments,hpa", "-o", "yaml"][..],
        ] {
            out.push_str(&format!("$ kubectl -n {} {}\n", self.name, args.join(" ")));
            match self.kubectl(args, None).await {
                Ok(s) => out.push_str(&s),
                Err(e) => out.push_str(&format!("{e:#}\n")),
            }
        }
        out
    }
}

/// Run kubectl against `cluster` (in namespace `ns`, if given).
pub async fn run_kubectl(
    cluster: &Cluster,
    ns: Option<&str>,
    args: &[&str],
    stdin: Option<&str>,
) -> anyhow::Result<String> {
    use tokio::io::AsyncWriteExt as _;
    let mut cmd = cluster.kubectl();
    if let Some(ns) = ns {
        cmd.args(["-n", ns]);
    }
    cmd.args(args).stdout(Stdio::piped()).stderr(Stdio::piped());
    if stdin.is_some() {
        cmd.stdin(Stdio::piped());
    }
    let mut child = cmd.spawn().with_context(|| format!("spawning {}", cluster.kubectl.display()))?;
    if let (Some(input), Some(mut pipe)) = (stdin, child.stdin.take()) {
        pipe.write_all(input.as_bytes()).await?;
        drop(pipe);
    }
    let out = child.wait_with_output().await?;
    if !out.status.success() {
        bail!("kubectl {} failed ({}): {}", args.join(" "), out.status, String::from_utf8_lossy(&out.stderr).trim());
    }
    Ok(String::from_utf8(out.stdout)?)
}

/// Start or reuse the shared cluster, create a fresh namespace, run `test` in it, dump the namespace on
/// failure and delete it afterwards. Returns the test's result.
pub async fn with_temp_ns<F, Fut>(prefix: &str, test: F) -> anyhow::Result<()>
where
    F: FnOnce(TestNs) -> Fut,
    Fut: Future<Output = anyhow::Result<()>>,
{
    let cluster = Cluster::shared_async().await?;
    let client = cluster.client().await?;
    let namespaces: Api<Namespace> = Api::all(client.clone());
    let ns = Namespace {
        metadata: ObjectMeta {
            generate_name: Some(format!("{prefix}-")),
            labels: Some([(TEST_NS_LABEL.to_string(), "true".to_string())].into()),
            ..ObjectMeta::default()
        },
        ..Namespace::default()
    };
    let created = namespaces.create(&PostParams::default(), &ns).await.context("creating the test namespace")?;
    let name = created.metadata.name.context("created namespace has no name")?;
    let handle = TestNs { client: client.clone(), name: name.clone(), cluster };
    let dump_handle = TestNs { client, name: name.clone(), cluster };
    let result = test(handle).await;
    if let Err(e) = &result {
        eprintln!("e2e: test in namespace {name} failed: {e:#}\n{}", dump_handle.dump().await);
    }
    if let Err(e) = namespaces.delete(&name, &DeleteParams::default()).await {
        eprintln!("e2e: deleting namespace {name}: {e}");
    }
    result
}

/// Poll `check` until it returns `Some`, failing with `what` and the last error once `timeout` has passed.
/// The poll interval is short (100 ms); the deadline is what bounds the wait.
pub async fn wait_until<T, F, Fut>(what: &str, timeout: Duration, mut check: F) -> anyhow::Result<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = anyhow::Result<Option<T>>>,
{
    let deadline = Instant::now() + timeout;
    let mut last = String::from("condition not met");
    loop {
        match check().await {
            Ok(Some(v)) => return Ok(v),
            Ok(None) => {}
            Err(e) => last = format!("{e:#}"),
        }
        if Instant::now() >= deadline {
            bail!("timed out after {timeout:?} waiting for {what}: {last}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
