//! The `otlp-collector` binary as a user runs it: `validate`, SIGTERM under
//! load, `tap` against a live collector, and the default `run` logging JSON.
//!
//! Every collector here is a real child process. Ports are picked by binding
//! 127.0.0.1:0 and releasing them; a start that loses the race for a port is
//! retried with new ones. Children are killed if a test fails.

use std::collections::HashSet;
use std::fs::File;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_client::TraceServiceClient;
use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span};
use otlp_collector::config::Config;
use tokio::time::Instant;
use tonic::Code;
use tonic::transport::Channel;

const BIN: &str = env!("CARGO_BIN_EXE_otlp-collector");
/// How long any single condition may take on a loaded 2-core machine.
const DEADLINE: Duration = Duration::from_secs(30);

// ---------------------------------------------------------------- helpers

/// The binary with none of the environment overrides it reads inherited from the test's environment.
fn collector_cmd() -> Command {
    let mut cmd = Command::new(BIN);
    for var in [
        "COLLECTOR_CONFIG",
        "GRPC_HOST",
        "GRPC_PORT",
        "MAX_MESSAGE_LENGTH",
        "MAX_WORKERS",
        "SSL_CERT_FILE",
        "SSL_KEY_FILE",
        "SSL_CLIENT_CA_FILE",
        "OTLP_ENDPOINT",
    ] {
        cmd.env_remove(var);
    }
    cmd.env("RUST_LOG", "info").stdin(Stdio::null());
    cmd
}

/// A child process that is killed if the test ends (or panics) while it runs.
struct Proc {
    child: Child,
    name: &'static str,
    stderr: PathBuf,
}

impl Drop for Proc {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

impl Proc {
    /// Spawns `cmd` with stderr to `<dir>/<name>.stderr` (readable while it runs)
    /// and stdout to `<dir>/<name>.stdout` unless `cmd` already set it.
    fn spawn(mut cmd: Command, dir: &Path, name: &'static str, stdout_to_file: bool) -> Self {
        let stderr = dir.join(format!("{name}.stderr"));
        cmd.stderr(File::create(&stderr).expect("stderr file"));
        if stdout_to_file {
            cmd.stdout(File::create(dir.join(format!("{name}.stdout"))).expect("stdout file"));
        }
        let child = cmd.spawn().unwrap_or_else(|e| panic!("spawning {name}: {e}"));
        Self { child, name, stderr }
    }

    fn stderr(&self) -> String {
        std::fs::read_to_string(&self.stderr).unwrap_or_default()
    }

    fn exited(&mut self) -> Option<ExitStatus> {
        self.child.try_wait().expect("try_wait")
    }

    /// Waits for the process to exit, failing after `deadline`.
    async fn wait_exit(&mut self, deadline: Duration) -> ExitStatus {
        let until = Instant::now() + deadline;
        loop {
            if let Some(status) = self.exited() {
                return status;
            }
            assert!(
                Instant::now() < until,
                "{} did not exit within {deadline:?}; stderr:\n{}",
                self.name,
                self.stderr()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    fn sigterm(&self) {
        let status = Command::new("kill").arg("-TERM").arg(self.child.id().to_string()).status().expect("run kill");
        assert!(status.success(), "kill -TERM {} failed", self.child.id());
    }

    /// SIGTERM, then [`Proc::wait_exit`].
    async fn terminate(&mut self, deadline: Duration) -> ExitStatus {
        self.sigterm();
        self.wait_exit(deadline).await
    }
}

/// Polls `check` every 20 ms until it returns `Some`, failing after [`DEADLINE`].
async fn wait_for<T, Fut: Future<Output = Option<T>>>(what: &str, mut check: impl FnMut() -> Fut) -> T {
    let until = Instant::now() + DEADLINE;
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(Instant::now() < until, "timed out after {DEADLINE:?} waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn http_client() -> reqwest::Client {
    reqwest::Client::builder().no_proxy().timeout(Duration::from_secs(5)).build().expect("reqwest client")
}

/// Three distinct ports that were free a moment ago.
#[derive(Debug, Clone, Copy)]
struct Ports {
    grpc: u16,
    http: u16,
    telemetry: u16,
}

fn free_ports() -> Ports {
    let bind = || TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
    let (a, b, c) = (bind(), bind(), bind());
    let port = |l: &TcpListener| l.local_addr().unwrap().port();
    Ports { grpc: port(&a), http: port(&b), telemetry: port(&c) }
}

/// A running `otlp-collector run` child.
struct Running {
    proc: Proc,
    ports: Ports,
}

impl Running {
    fn grpc_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.ports.grpc)
    }

    fn telemetry_url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.ports.telemetry)
    }

    async fn metrics_text(&self) -> String {
        let resp = http_client().get(self.telemetry_url("/metrics")).send().await.expect("GET /metrics");
        resp.text().await.expect("metrics body")
    }

    /// Whether `/metrics` has exactly this line, e.g. `otlp_tap_subscribers 1`.
    async fn has_metric(&self, line: &str) -> bool {
        self.metrics_text().await.lines().any(|l| l == line)
    }

    /// Waits until `/metrics` has exactly this line.
    async fn wait_metric(&self, line: &str) {
        wait_for(&format!("`{line}` in /metrics"), || async { self.has_metric(line).await.then_some(()) }).await
    }
}

/// Starts `otlp-collector --config <dir>/config.yaml` with the YAML (and
/// environment) `setup` makes for the chosen ports, and waits for `/readyz`.
/// A start that fails to bind a port (another process took it after we
/// released it) is retried with fresh ports.
async fn start_collector(dir: &Path, setup: impl Fn(Ports) -> (String, Vec<(&'static str, String)>)) -> Running {
    let client = http_client();
    for attempt in 1..=5 {
        let ports = free_ports();
        let (yaml, env) = setup(ports);
        let config = dir.join("config.yaml");
        std::fs::write(&config, yaml).expect("write config");
        let mut cmd = collector_cmd();
        cmd.arg("--config").arg(&config).arg("run").envs(env);
        let mut proc = Proc::spawn(cmd, dir, "collector", true);
        let ready_url = format!("http://127.0.0.1:{}/readyz", ports.telemetry);
        let until = Instant::now() + DEADLINE;
        loop {
            if let Some(status) = proc.exited() {
                let stderr = proc.stderr();
                if stderr.contains("binding the") && attempt < 5 {
                    eprintln!("attempt {attempt}: a port was taken, retrying: {stderr}");
                    break;
                }
                panic!("the collector exited before it was ready ({status}):\n{stderr}");
            }
            if let Ok(resp) = client.get(&ready_url).send().await
                && resp.status() == reqwest::StatusCode::OK
            {
                return Running { proc, ports };
            }
            assert!(Instant::now() < until, "/readyz not OK within {DEADLINE:?}; stderr:\n{}", proc.stderr());
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    unreachable!("the loop returns or panics")
}

/// [`start_collector`] with only a config file (no environment overrides).
async fn start_with_config(dir: &Path, yaml: impl Fn(Ports) -> String) -> Running {
    start_collector(dir, |p| (yaml(p), vec![])).await
}

fn string_value(s: &str) -> Option<AnyValue> {
    Some(AnyValue { value: Some(any_value::Value::StringValue(s.to_owned())) })
}

fn resource_spans(service: &str, spans: Vec<Span>) -> ResourceSpans {
    ResourceSpans {
        resource: Some(Resource {
            attributes: vec![KeyValue {
                key: "service.name".into(),
                value: string_value(service),
                ..Default::default()
            }],
            ..Default::default()
        }),
        scope_spans: vec![ScopeSpans { spans, ..Default::default() }],
        ..Default::default()
    }
}

/// A request with one resource (`service.name` = `service`) holding `spans`.
fn request(service: &str, spans: Vec<Span>) -> ExportTraceServiceRequest {
    ExportTraceServiceRequest { resource_spans: vec![resource_spans(service, spans)] }
}

fn span(name: &str, span_id: [u8; 8]) -> Span {
    let mut trace_id = [0u8; 16];
    trace_id[..8].copy_from_slice(&span_id);
    trace_id[15] = 0x7f;
    Span {
        trace_id: trace_id.to_vec(),
        span_id: span_id.to_vec(),
        name: name.to_owned(),
        kind: 2,
        start_time_unix_nano: 1_700_000_000_000_000_000,
        end_time_unix_nano: 1_700_000_000_001_000_000,
        ..Default::default()
    }
}

fn client(url: &str) -> TraceServiceClient<Channel> {
    TraceServiceClient::new(Channel::from_shared(url.to_owned()).expect("url").connect_lazy())
}

/// Every trace request the file exporter wrote.
/// The trace lines of the file exporter's output; a line still being written
/// (no newline yet) is left for the next read.
fn written_traces(path: &Path) -> Vec<ExportTraceServiceRequest> {
    let Ok(text) = std::fs::read_to_string(path) else { return Vec::new() };
    let complete = text.rfind('\n').map_or("", |end| &text[..end]);
    complete
        .lines()
        .filter(|l| l.starts_with(r#"{"resourceSpans""#))
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("a trace line ({e}): {l}")))
        .collect()
}

fn spans_of(requests: &[ExportTraceServiceRequest]) -> impl Iterator<Item = (&ResourceSpans, &Span)> {
    requests
        .iter()
        .flat_map(|r| &r.resource_spans)
        .flat_map(|rs| rs.scope_spans.iter().flat_map(move |ss| ss.spans.iter().map(move |s| (rs, s))))
}

/// Waits until the file exporter wrote at least `n` spans to `path`; returns what it wrote.
async fn wait_spans(path: &Path, n: usize) -> Vec<ExportTraceServiceRequest> {
    wait_for(&format!("{n} spans in {}", path.display()), || async {
        let written = written_traces(path);
        (spans_of(&written).count() >= n).then_some(written)
    })
    .await
}

fn span_names(requests: &[ExportTraceServiceRequest]) -> Vec<String> {
    spans_of(requests).map(|(_, s)| s.name.clone()).collect()
}

fn service_name(rs: &ResourceSpans) -> Option<String> {
    let kv = rs.resource.as_ref()?.attributes.iter().find(|kv| kv.key == "service.name")?;
    match kv.value.as_ref()?.value.as_ref()? {
        any_value::Value::StringValue(s) => Some(s.clone()),
        _ => None,
    }
}

// ---------------------------------------------------------------- validate

fn validate(args: &[&str], file: &Path) -> std::process::Output {
    collector_cmd().arg("validate").args(args).arg(file).output().expect("run otlp-collector validate")
}

#[test]
fn validate_names_every_bad_key_and_exits_non_zero() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("bad.yaml");
    std::fs::write(
        &file,
        r#"
receivers:
  otlp:
    grpc: {endpont: "0.0.0.0:4317"}
processors:
  batch: {timeout: 1s, send_batch_sise: 10}
  sampler/tail: {}
exporters:
  debug: {}
  otlp: {endpoint: "localhost:4317"}
service:
  pipelines:
    traces: {processors: [batch], exporters: [debug]}
    spans: {exporters: [debug]}
telemetry: {}
"#,
    )
    .unwrap();
    let out = validate(&[], &file);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "a bad config fails validation; stderr:\n{stderr}");
    assert!(stderr.contains("bad.yaml"), "names the file:\n{stderr}");
    for needle in [
        "unknown field `endpont`",
        "processors.batch: unknown field `send_batch_sise`",
        "processors.sampler/tail: unknown processor type `sampler`",
        "exporters.otlp.endpoint: `localhost:4317` must start with http://",
        "service.pipelines.spans: the name must start with traces, metrics or logs",
        "telemetry: unknown key",
    ] {
        assert!(stderr.contains(needle), "missing {needle:?} in:\n{stderr}");
    }
    assert!(out.stdout.is_empty(), "nothing on stdout for an invalid file: {}", String::from_utf8_lossy(&out.stdout));
}

#[test]
fn validate_accepts_a_good_file_and_prints_yaml_that_validates_again() {
    let dir = tempfile::tempdir().unwrap();
    let good = dir.path().join("good.yaml");
    let yaml = format!(
        r#"
receivers:
  otlp:
    grpc: {{endpoint: "127.0.0.1:14317", max_connection_age: 5m}}
    http: null
processors:
  filter/health: {{exclude: {{names: [GET /healthz]}}}}
  batch: {{timeout: 2s, send_batch_size: 100, send_batch_max_size: 200}}
exporters:
  file: {{path: "{out}"}}
  otlp/upstream: {{endpoint: "http://upstream:4317", headers: {{x-tenant: a}}}}
service:
  telemetry: {{endpoint: "127.0.0.1:18888"}}
  pipelines:
    traces: {{processors: [filter/health, batch], exporters: [file, otlp/upstream]}}
    logs: {{processors: [batch], exporters: [file]}}
"#,
        out = dir.path().join("out.jsonl").display()
    );
    std::fs::write(&good, &yaml).unwrap();

    let out = validate(&[], &good);
    assert!(out.status.success(), "a good file validates: {}", String::from_utf8_lossy(&out.stderr));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(stdout.trim(), format!("{}: valid", good.display()));

    let printed = validate(&["--print"], &good);
    assert!(printed.status.success(), "{}", String::from_utf8_lossy(&printed.stderr));
    let printed_yaml = String::from_utf8(printed.stdout).expect("UTF-8 YAML");
    let again = dir.path().join("printed.yaml");
    std::fs::write(&again, &printed_yaml).unwrap();
    let out = validate(&[], &again);
    assert!(
        out.status.success(),
        "the printed YAML validates:\n{printed_yaml}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let reprinted = validate(&["--print"], &again);
    assert_eq!(String::from_utf8_lossy(&reprinted.stdout), printed_yaml, "printing is a fixed point");
    // And it is the same configuration as the file, with every default spelled out.
    assert_eq!(Config::from_yaml(&printed_yaml).unwrap(), Config::from_yaml(&yaml).unwrap());
    for needle in ["send_batch_size: 100", "x-tenant: a", "http: null", "max_connection_age: 5m"] {
        assert!(printed_yaml.contains(needle), "missing {needle:?} in:\n{printed_yaml}");
    }
}

// ---------------------------------------------------------------- SIGTERM

const LOAD_TASKS: u8 = 4;
const SPANS_PER_REQUEST: usize = 25;
/// SIGTERM is sent once this many spans were acknowledged.
const ACKED_BEFORE_SIGTERM: usize = 2_000;

#[derive(Debug)]
struct Failure {
    code: Code,
    message: String,
    /// The status came from the transport (connect, reset, GOAWAY), not from the server's answer.
    transport: bool,
    /// The failure arrived after SIGTERM was sent.
    after_sigterm: bool,
}

#[derive(Debug, Default)]
struct LoadReport {
    acked: Vec<Vec<u8>>,
    failures: Vec<Failure>,
}

/// Sends requests of [`SPANS_PER_REQUEST`] uniquely identified spans on its
/// own connection until `stop`; records acknowledged span ids and failures.
async fn load(
    task: u8,
    url: String,
    acked_total: Arc<AtomicUsize>,
    sigterm: Arc<OnceLock<Instant>>,
    stop: Arc<AtomicBool>,
) -> LoadReport {
    let mut client = client(&url);
    let mut report = LoadReport::default();
    let mut seq: u32 = 0;
    while !stop.load(Ordering::SeqCst) {
        let spans: Vec<Span> = (0..SPANS_PER_REQUEST as u16)
            .map(|i| {
                let [s0, s1, s2, s3] = seq.to_be_bytes();
                let [i0, i1] = i.to_be_bytes();
                span(&format!("load-{task}-{seq}-{i}"), [task + 1, s0, s1, s2, s3, i0, i1, 1])
            })
            .collect();
        seq += 1;
        let ids: Vec<Vec<u8>> = spans.iter().map(|s| s.span_id.clone()).collect();
        match client.export(request("load", spans)).await {
            Ok(resp) => {
                let partial = resp.into_inner().partial_success;
                assert!(partial.as_ref().is_none_or(|p| p.rejected_spans == 0), "valid spans rejected: {partial:?}");
                acked_total.fetch_add(ids.len(), Ordering::SeqCst);
                report.acked.extend(ids);
            }
            Err(status) => {
                report.failures.push(Failure {
                    code: status.code(),
                    message: status.message().to_owned(),
                    transport: std::error::Error::source(&status).is_some(),
                    after_sigterm: sigterm.get().is_some(),
                });
                // The collector is going away: back off instead of spinning on refused connects.
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
    }
    report
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_under_load_loses_no_acknowledged_span() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out.jsonl");
    let mut c = start_with_config(dir.path(), |p| {
        format!(
            r#"
receivers:
  otlp:
    grpc: {{endpoint: "127.0.0.1:{grpc}"}}
    http: null
processors:
  # Hold everything in memory until shutdown: nothing reaches the file by size or time first.
  batch: {{timeout: 5s, send_batch_size: 1000000, send_batch_max_size: 0}}
exporters:
  file: {{path: "{out}"}}
service:
  telemetry: {{endpoint: "127.0.0.1:{telemetry}"}}
  limits: {{shutdown_timeout: 15s}}
  pipelines:
    traces: {{processors: [batch], exporters: [file]}}
"#,
            grpc = p.grpc,
            telemetry = p.telemetry,
            out = out.display()
        )
    })
    .await;

    let acked_total = Arc::new(AtomicUsize::new(0));
    let sigterm = Arc::new(OnceLock::new());
    let stop = Arc::new(AtomicBool::new(false));
    let tasks: Vec<_> = (0..LOAD_TASKS)
        .map(|t| tokio::spawn(load(t, c.grpc_url(), acked_total.clone(), sigterm.clone(), stop.clone())))
        .collect();

    wait_for(&format!("{ACKED_BEFORE_SIGTERM} acknowledged spans"), || {
        let n = acked_total.load(Ordering::SeqCst);
        async move { (n >= ACKED_BEFORE_SIGTERM).then_some(()) }
    })
    .await;
    let acked_at_sigterm = acked_total.load(Ordering::SeqCst);
    let written_at_sigterm = spans_of(&written_traces(&out)).count();
    sigterm.set(Instant::now()).unwrap();
    let status = c.proc.terminate(Duration::from_secs(45)).await;
    let stderr = c.proc.stderr();
    assert!(status.success(), "SIGTERM is a clean exit, got {status}; stderr:\n{stderr}");
    stop.store(true, Ordering::SeqCst);
    let mut reports = Vec::new();
    for task in tasks {
        reports.push(tokio::time::timeout(DEADLINE, task).await.expect("load task ends").expect("load task"));
    }

    // The collector is gone: a new request is refused by the transport, visibly.
    let after = client(&c.grpc_url())
        .export(request("late", vec![span("late", [9; 8])]))
        .await
        .expect_err("no collector, no acknowledgement");
    assert_eq!(after.code(), Code::Unavailable, "{after:?}");

    let acked: Vec<&Vec<u8>> = reports.iter().flat_map(|r| &r.acked).collect();
    let failures: Vec<&Failure> = reports.iter().flat_map(|r| &r.failures).collect();
    let written = written_traces(&out);
    let written_ids: Vec<&Vec<u8>> = spans_of(&written).map(|(_, s)| &s.span_id).collect();
    let unique: HashSet<&Vec<u8>> = written_ids.iter().copied().collect();
    let mut failure_kinds: Vec<String> = failures
        .iter()
        .map(|f| format!("{:?}{}: {}", f.code, if f.transport { " (transport)" } else { "" }, f.message))
        .collect();
    failure_kinds.sort();
    failure_kinds.dedup();
    let summary = format!(
        "acked {} spans ({acked_at_sigterm} before SIGTERM, when {written_at_sigterm} were in the file); \
         written {}; {} failed requests: {failure_kinds:#?}",
        acked.len(),
        written_ids.len(),
        failures.len()
    );
    eprintln!("{summary}");

    assert_eq!(unique.len(), written_ids.len(), "no span written twice; {summary}");
    assert!(acked.len() <= written_ids.len(), "fewer spans written than acknowledged; {summary}");
    let missing: Vec<_> = acked.iter().filter(|id| !unique.contains(*id)).collect();
    assert!(
        missing.is_empty(),
        "{} acknowledged spans are not in the file; {summary}\nstderr:\n{stderr}",
        missing.len()
    );

    let before: Vec<_> = failures.iter().filter(|f| !f.after_sigterm).collect();
    assert!(before.is_empty(), "requests failed before SIGTERM: {before:?}");
    let silent: Vec<_> = failures.iter().filter(|f| !(f.code == Code::Unavailable || f.transport)).collect();
    assert!(silent.is_empty(), "a failure must be UNAVAILABLE or a connection error: {silent:?}");
    assert!(stderr.contains("SIGTERM received"), "the collector logs why it stops:\n{stderr}");
}

// ---------------------------------------------------------------- tap

fn file_exporter_yaml(p: Ports, out: &Path) -> String {
    format!(
        r#"
receivers:
  otlp:
    grpc: {{endpoint: "127.0.0.1:{grpc}", tap: true}}
    http: null
processors:
  batch: {{timeout: 50ms}}
exporters:
  file: {{path: "{out}"}}
service:
  telemetry: {{endpoint: "127.0.0.1:{telemetry}"}}
  limits: {{shutdown_timeout: 5s}}
  pipelines:
    traces: {{processors: [batch], exporters: [file]}}
"#,
        grpc = p.grpc,
        telemetry = p.telemetry,
        out = out.display()
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tap_prints_only_the_matching_live_spans_and_exits_after_count() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out.jsonl");
    let c = start_with_config(dir.path(), |p| file_exporter_yaml(p, &out)).await;

    let mut cmd = collector_cmd();
    cmd.args([
        "tap",
        "--addr",
        &c.grpc_url(),
        "--signal",
        "traces",
        "--match",
        "service.name=checkout",
        "--count",
        "1",
    ])
    .stdout(Stdio::piped());
    let mut tap = Proc::spawn(cmd, dir.path(), "tap", false);

    // Only data accepted after the subscription reaches the tap.
    wait_for("the tap to subscribe (otlp_tap_subscribers 1)", || {
        let c = &c;
        let exited = tap.exited();
        let stderr = tap.stderr();
        async move {
            assert!(exited.is_none(), "the tap exited early ({exited:?}):\n{stderr}");
            c.has_metric("otlp_tap_subscribers 1").await.then_some(())
        }
    })
    .await;

    let mut grpc = client(&c.grpc_url());
    // First a request with no checkout span at all, then one that mixes services.
    grpc.export(request("cart", vec![span("cart-op-0", [1; 8])])).await.expect("export cart");
    grpc.export(ExportTraceServiceRequest {
        resource_spans: vec![
            resource_spans("cart", vec![span("cart-op-1", [2; 8])]),
            resource_spans("checkout", vec![span("checkout-op-0", [3; 8]), span("checkout-op-1", [4; 8])]),
        ],
    })
    .await
    .expect("export mixed");

    let status = tap.wait_exit(DEADLINE).await;
    assert!(status.success(), "the tap exits 0 after --count 1 ({status}):\n{}", tap.stderr());
    let mut stdout = String::new();
    std::io::Read::read_to_string(tap.child.stdout.as_mut().expect("piped stdout"), &mut stdout).unwrap();
    let lines: Vec<&str> = stdout.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(lines.len(), 1, "one OTLP-JSON line:\n{stdout}");
    let event: ExportTraceServiceRequest =
        serde_json::from_str(lines[0]).unwrap_or_else(|e| panic!("OTLP-JSON traces ({e}): {}", lines[0]));
    let spans: Vec<(Option<String>, String)> =
        spans_of(std::slice::from_ref(&event)).map(|(rs, s)| (service_name(rs), s.name.clone())).collect();
    assert_eq!(
        spans,
        vec![(Some("checkout".into()), "checkout-op-0".into()), (Some("checkout".into()), "checkout-op-1".into())],
        "only the checkout spans: {}",
        lines[0]
    );

    // The tap only watched: everything still reached the exporter.
    let written = wait_spans(&out, 4).await;
    assert_eq!(spans_of(&written).count(), 4, "every span exactly once");
}

// ---------------------------------------------------------------- default run

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn default_run_logs_each_batch_as_a_json_line_on_stderr() {
    let dir = tempfile::tempdir().unwrap();
    // Only the ports that would collide between parallel tests are set; the
    // gRPC port comes from GRPC_HOST/GRPC_PORT, and the pipelines, the debug
    // exporter and JSON logging are the defaults.
    let mut c = start_collector(dir.path(), |p| {
        let yaml = format!(
            "receivers: {{otlp: {{http: {{endpoint: \"127.0.0.1:{}\"}}}}}}\nservice: {{telemetry: {{endpoint: \"127.0.0.1:{}\"}}}}\n",
            p.http, p.telemetry
        );
        (yaml, vec![("GRPC_HOST", "127.0.0.1".to_owned()), ("GRPC_PORT", p.grpc.to_string())])
    })
    .await;

    let spans = vec![span("default-0", [5; 8]), span("default-1", [6; 8]), span("default-2", [7; 8])];
    client(&c.grpc_url()).export(request("default-run", spans)).await.expect("export to the port from GRPC_PORT");

    let line: serde_json::Value = wait_for("a `batch received` log line", || {
        let stderr = c.proc.stderr();
        async move {
            stderr
                .lines()
                .filter(|l| l.contains("batch received"))
                .map(|l| {
                    serde_json::from_str::<serde_json::Value>(l)
                        .unwrap_or_else(|e| panic!("a JSON log line ({e}): {l}"))
                })
                .next()
        }
    })
    .await;
    assert_eq!(line["message"], "batch received", "{line}");
    assert_eq!(line["level"], "INFO", "{line}");
    assert_eq!(line["exporter"], "debug", "{line}");
    assert_eq!(line["signal"], "traces", "{line}");
    assert_eq!(line["items"], 3, "{line}");

    let status = c.proc.terminate(DEADLINE).await;
    assert!(status.success(), "{status}:\n{}", c.proc.stderr());
    let stdout = std::fs::read_to_string(dir.path().join("collector.stdout")).unwrap();
    assert!(stdout.is_empty(), "logs go to stderr, stdout stays empty:\n{stdout}");
}

/// Replaces a file the way editors and ConfigMap updates do: write aside, rename over.
fn replace_file(path: &Path, content: &str) {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, content).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_changed_config_file_is_applied_without_a_restart_and_a_bad_one_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let first = dir.path().join("first.jsonl");
    let second = dir.path().join("second.jsonl");
    let c = start_with_config(dir.path(), |p| file_exporter_yaml(p, &first)).await;
    let mut client = client(&c.grpc_url());
    client.export(request("svc", vec![span("before", [1; 8])])).await.unwrap();

    let config = dir.path().join("config.yaml");
    let yaml = file_exporter_yaml(c.ports, &second)
        .replace(
            "processors:\n",
            "processors:\n  attributes/tag: {actions: [{key: reloaded, action: insert, value: yes}]}\n",
        )
        .replace("processors: [batch]", "processors: [attributes/tag, batch]");
    replace_file(&config, &yaml);
    c.wait_metric("otlp_config_reloads_total 1").await;
    client.export(request("svc", vec![span("after", [2; 8])])).await.unwrap();
    let after = wait_spans(&second, 1).await;
    let (_, s) = spans_of(&after).next().unwrap();
    assert_eq!(s.name, "after");
    assert!(s.attributes.iter().any(|kv| kv.key == "reloaded"), "the new processor applies");
    assert_eq!(span_names(&wait_spans(&first, 1).await), ["before"]);

    // A broken file is refused; the running configuration stays.
    replace_file(&config, "receivers: {otlp: {grpc: {endpont: 1}}}\n");
    c.wait_metric("otlp_config_reload_failures_total 1").await;
    assert!(c.proc.stderr().contains("unknown field `endpont`"), "the error names the key:\n{}", c.proc.stderr());
    client.export(request("svc", vec![span("still", [3; 8])])).await.unwrap();
    let written = wait_spans(&second, 2).await;
    assert_eq!(spans_of(&written).count(), 2, "the span after the refused reload, once");
}

/// `otlp_memory_resident_bytes` from `/metrics`, once the collector has read it.
async fn resident_bytes(c: &Running) -> u64 {
    wait_for("otlp_memory_resident_bytes in /metrics", || async {
        let text = c.metrics_text().await;
        let value = text.lines().find_map(|l| l.strip_prefix("otlp_memory_resident_bytes "))?;
        value.trim().parse().ok().filter(|&v| v > 0)
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_memory_limit_counts_the_whole_process() {
    const MIB: u64 = 1024 * 1024;
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out.jsonl");
    let c = start_with_config(dir.path(), |p| {
        file_exporter_yaml(p, &out)
            .replace("http: null", "http: null\n    max_message_bytes: 8388608")
            .replace("limits: {", "limits: {memory_limit_mib: 16, ")
    })
    .await;
    // The process itself (code, runtime, connections) holds more than 9 MiB,
    // so telemetry has less than 16 - 9 - 2 (margin) = 5 MiB of the limit.
    let resident = resident_bytes(&c).await;
    assert!(resident > 9 * MIB, "the process is only {resident} bytes; the test needs more than 9 MiB");

    let mut client = client(&c.grpc_url());
    let big =
        request("big", (0..80_000u64).map(|i| span("a span of a six megabyte request", i.to_be_bytes())).collect());
    assert!(prost::Message::encoded_len(&big) as u64 > 6 * MIB);
    let refused = client.export(big).await.expect_err("more than telemetry's share of the limit");
    assert_eq!(refused.code(), Code::ResourceExhausted, "{refused:?}");

    client.export(request("small", vec![span("after", [1; 8])])).await.expect("a small request fits");
    let written = wait_spans(&out, 1).await;
    assert_eq!(span_names(&written), ["after"]);
}
