//! The README's configuration examples work when pasted.

mod common;

use otlp_collector::config::Config;

/// The fenced code blocks of `markdown` in language `lang`.
fn fenced_blocks(markdown: &str, lang: &str) -> Vec<String> {
    let open = format!("```{lang}");
    let mut blocks = Vec::new();
    let mut current: Option<String> = None;
    for line in markdown.lines() {
        match (&mut current, line.trim_start()) {
            (None, l) if l == open => current = Some(String::new()),
            (Some(_), "```") => blocks.push(current.take().expect("open block")),
            (Some(block), _) => {
                block.push_str(line);
                block.push('\n');
            }
            _ => {}
        }
    }
    blocks
}

#[test]
fn every_yaml_example_in_the_readme_is_a_valid_config() {
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).unwrap();
    let blocks = fenced_blocks(&readme, "yaml");
    assert!(blocks.len() >= 3, "found {} yaml blocks", blocks.len());
    for block in &blocks {
        if let Err(e) = Config::from_yaml(block) {
            panic!("README example does not validate:\n{block}\n{e}");
        }
    }
}

#[test]
fn the_readme_shows_the_real_default_config() {
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).unwrap();
    let shown = fenced_blocks(&readme, "yaml")
        .into_iter()
        .find(|b| b.contains("max_concurrent_streams"))
        .expect("the default config block");
    let mut shown = Config::from_yaml(&shown).unwrap();
    // The block comments out max_connection_age (off by default); everything else must match.
    shown.receivers.otlp.grpc.as_mut().unwrap().max_connection_age = None;
    assert_eq!(shown, Config::default());
}

/// The README's openssl commands make certificates the collector accepts, and
/// the client's identity is the URI SAN they put in it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_readme_certificate_commands_work() {
    use otlp_collector::config::{AccessConfig, AccessDefault, AccessRule, Config, TlsConfig};
    use otlp_collector::signal::Signal;

    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).unwrap();
    let block =
        fenced_blocks(&readme, "sh").into_iter().find(|b| b.contains("openssl req -x509")).expect("the openssl block");
    let dir = tempfile::tempdir().unwrap();
    let out = std::process::Command::new("bash")
        .args(["-euo", "pipefail", "-c", &block])
        .current_dir(dir.path())
        .output()
        .unwrap();
    assert!(out.status.success(), "the README's openssl commands failed:\n{}", String::from_utf8_lossy(&out.stderr));
    let path = |f: &str| dir.path().join(f).display().to_string();

    let mut config = Config::from_yaml(&common::config_yaml(&dir.path().join("out.jsonl"), "", "")).unwrap();
    config.receivers.otlp.tls = Some(TlsConfig {
        cert_file: path("tls.crt"),
        key_file: path("tls.key"),
        client_ca_file: Some(path("ca.crt")),
        ..Default::default()
    });
    config.service.access = AccessConfig {
        default: AccessDefault::Deny,
        rules: vec![AccessRule {
            identities: vec!["spiffe://cluster.local/ns/shop/sa/checkout".into()],
            signals: vec![Signal::Traces],
        }],
    };
    let c =
        common::TestCollector::start_config(config, dir.path().join("out.jsonl"), tempfile::tempdir().unwrap()).await;

    // The README's curl line, pointed at this collector's port.
    let url = format!("https://localhost:{}/v1/traces", c.collector.http_addr.unwrap().port());
    let curl = |signal_url: String, body: &str| {
        let out = std::process::Command::new("curl")
            .args(["-sS", "--cacert", &path("ca.crt"), "--cert", &path("client.crt"), "--key", &path("client.key")])
            .args(["-H", "content-type: application/json", "-w", " %{http_code}", &signal_url, "-d", body])
            .output()
            .expect("curl is installed");
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr)
    };
    assert_eq!(curl(url.clone(), r#"{"resourceSpans":[]}"#), "{} 200");
    // The same identity may not send logs: the ACL saw the URI SAN.
    let denied = curl(url.replace("/v1/traces", "/v1/logs"), r#"{"resourceLogs":[]}"#);
    assert_eq!(
        denied,
        r#"{"code":7,"message":"client `spiffe://cluster.local/ns/shop/sa/checkout` may not send logs"} 403"#
    );
    c.collector.shutdown().await;
}
