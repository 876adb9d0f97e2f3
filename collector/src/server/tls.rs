//! Server TLS with rustls: TLS 1.3 by default, optional mutual TLS, and
//! certificate files that are watched and swapped without a restart.
//!
//! The files are watched as a Kubernetes Secret volume updates them (see
//! `crate::watch`). A new set of files takes effect only if it parses and the key matches the
//! certificate; otherwise the previous material keeps serving, the failure is
//! logged and counted, and `/healthz` reports it. Each handshake uses the
//! material current at its start: open connections carry on untouched.

use std::sync::{Arc, RwLock};
use std::time::Duration;

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use rustls::ServerConfig;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use std::sync::atomic::AtomicU64;
use tokio_util::sync::CancellationToken;

use crate::config::{TlsConfig, TlsVersion};

/// How often the files are re-read even without a change notification.
const POLL: Duration = Duration::from_secs(30);

/// Which protocols a listener offers in ALPN.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Alpn {
    /// gRPC: HTTP/2 only.
    H2,
    /// OTLP/HTTP: HTTP/2 or HTTP/1.1.
    H2Http11,
}

#[derive(Debug)]
struct Material {
    files: Vec<Vec<u8>>,
    grpc: Arc<ServerConfig>,
    http: Arc<ServerConfig>,
    not_after: i64,
}

#[derive(Debug)]
pub struct Tls {
    config: TlsConfig,
    current: RwLock<Arc<Material>>,
    last_error: RwLock<Option<String>>,
    failures: Counter,
    not_after: Gauge<f64, AtomicU64>,
}

impl Tls {
    /// Loads the files; the collector does not start without valid material.
    pub fn load(config: &TlsConfig, failures: Counter, not_after: Gauge<f64, AtomicU64>) -> anyhow::Result<Arc<Self>> {
        let material = build(config, read_files(config)?).map_err(anyhow::Error::msg)?;
        not_after.set(material.not_after as f64);
        Ok(Arc::new(Self {
            config: config.clone(),
            current: RwLock::new(Arc::new(material)),
            last_error: RwLock::new(None),
            failures,
            not_after,
        }))
    }

    pub fn handshake_timeout(&self) -> Duration {
        self.config.handshake_timeout
    }

    /// The rustls config for the next handshake.
    pub fn server_config(&self, alpn: Alpn) -> Arc<ServerConfig> {
        let m = self.current.read().expect("tls lock").clone();
        match alpn {
            Alpn::H2 => m.grpc.clone(),
            Alpn::H2Http11 => m.http.clone(),
        }
    }

    /// The last reload failure, while the previous material is still serving.
    pub fn problem(&self) -> Option<String> {
        self.last_error.read().expect("tls lock").clone()
    }

    /// Re-reads the files; swaps the material if they changed and are valid.
    /// Returns whether new material took effect.
    pub fn reload(&self) -> bool {
        let result = read_files(&self.config).map_err(|e| format!("{e:#}")).and_then(|files| {
            if files == self.current.read().expect("tls lock").files {
                return Ok(None);
            }
            build(&self.config, files).map(Some)
        });
        match result {
            Ok(None) => false,
            Ok(Some(material)) => {
                self.not_after.set(material.not_after as f64);
                *self.current.write().expect("tls lock") = Arc::new(material);
                *self.last_error.write().expect("tls lock") = None;
                tracing::info!(cert = %self.config.cert_file, "TLS material reloaded");
                true
            }
            Err(e) => {
                let mut last = self.last_error.write().expect("tls lock");
                // Count and log each distinct failure once, not on every poll.
                if last.as_deref() != Some(e.as_str()) {
                    self.failures.inc();
                    tracing::error!(error = %e, "TLS reload failed; still serving the previous certificate");
                    *last = Some(e);
                }
                false
            }
        }
    }

    /// Reloads whenever the files may have changed, until `stop`.
    pub fn watch(self: &Arc<Self>, stop: CancellationToken) -> anyhow::Result<()> {
        let mut ticks = crate::watch::watch_files(&self.files(), POLL, stop)?;
        let tls = self.clone();
        tokio::spawn(async move {
            while ticks.recv().await.is_some() {
                tls.reload();
            }
        });
        Ok(())
    }

    fn files(&self) -> Vec<&str> {
        let mut f = vec![self.config.cert_file.as_str(), self.config.key_file.as_str()];
        f.extend(self.config.client_ca_file.as_deref());
        f
    }
}

fn read_files(config: &TlsConfig) -> anyhow::Result<Vec<Vec<u8>>> {
    let read = |path: &str| std::fs::read(path).map_err(|e| anyhow::anyhow!("reading {path}: {e}"));
    let mut files = vec![read(&config.cert_file)?, read(&config.key_file)?];
    if let Some(ca) = &config.client_ca_file {
        files.push(read(ca)?);
    }
    Ok(files)
}

fn build(config: &TlsConfig, files: Vec<Vec<u8>>) -> Result<Material, String> {
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(&files[0])
        .collect::<Result<_, _>>()
        .map_err(|e| format!("{}: {e}", config.cert_file))?;
    let leaf = chain.first().ok_or_else(|| format!("{}: no certificate in the file", config.cert_file))?;
    let not_after = x509_parser::parse_x509_certificate(leaf)
        .map_err(|e| format!("{}: {e}", config.cert_file))?
        .1
        .validity()
        .not_after
        .timestamp();
    let key = PrivateKeyDer::from_pem_slice(&files[1]).map_err(|e| format!("{}: {e}", config.key_file))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let versions: &[&rustls::SupportedProtocolVersion] = match config.min_version {
        TlsVersion::V1_3 => &[&rustls::version::TLS13],
        TlsVersion::V1_2 => &[&rustls::version::TLS13, &rustls::version::TLS12],
    };
    let builder = ServerConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(versions)
        .map_err(|e| format!("TLS versions: {e}"))?;
    let builder = match (&config.client_ca_file, files.get(2)) {
        (Some(path), Some(pem)) => {
            let mut roots = rustls::RootCertStore::empty();
            for ca in CertificateDer::pem_slice_iter(pem) {
                roots.add(ca.map_err(|e| format!("{path}: {e}"))?).map_err(|e| format!("{path}: {e}"))?;
            }
            if roots.is_empty() {
                return Err(format!("{path}: no CA certificate in the file"));
            }
            let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone())
                .build()
                .map_err(|e| format!("{path}: {e}"))?;
            builder.with_client_cert_verifier(verifier)
        }
        _ => builder.with_no_client_auth(),
    };
    check_key(&provider, &chain, &key)
        .map_err(|e| format!("{} does not match {}: {e}", config.key_file, config.cert_file))?;
    let mut grpc = builder.with_single_cert(chain, key).map_err(|e| format!("{}: {e}", config.cert_file))?;
    let mut http = grpc.clone();
    grpc.alpn_protocols = vec![b"h2".to_vec()];
    http.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Material { files, grpc: Arc::new(grpc), http: Arc::new(http), not_after })
}

fn check_key(
    provider: &CryptoProvider,
    chain: &[CertificateDer<'static>],
    key: &PrivateKeyDer<'static>,
) -> Result<(), String> {
    let signing = provider.key_provider.load_private_key(key.clone_key()).map_err(|e| e.to_string())?;
    rustls::sign::CertifiedKey::new(chain.to_vec(), signing).keys_match().map_err(|e| e.to_string())
}

/// Who a client is, from its certificate or else its address.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ClientIdentity(pub String);

impl ClientIdentity {
    /// The first URI SAN (e.g. a SPIFFE id), else the first DNS SAN, else the
    /// subject CN of the client certificate.
    pub fn from_certificate(der: &[u8]) -> Option<Self> {
        use x509_parser::extensions::GeneralName;
        let (_, cert) = x509_parser::parse_x509_certificate(der).ok()?;
        let sans: Vec<GeneralName> =
            cert.subject_alternative_name().ok().flatten().map(|s| s.value.general_names.clone()).unwrap_or_default();
        let uri = sans.iter().find_map(|n| if let GeneralName::URI(u) = n { Some(*u) } else { None });
        let dns = sans.iter().find_map(|n| if let GeneralName::DNSName(d) = n { Some(*d) } else { None });
        let cn = cert.subject().iter_common_name().next().and_then(|cn| cn.as_str().ok());
        uri.or(dns).or(cn).map(|s| ClientIdentity(s.to_owned()))
    }

    pub fn from_addr(addr: std::net::SocketAddr) -> Self {
        ClientIdentity(format!("ip:{}", addr.ip()))
    }
}

impl std::fmt::Display for ClientIdentity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}
