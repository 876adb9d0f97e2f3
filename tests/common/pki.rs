//! Certificates for TLS tests, made with rcgen: a CA, server certificates for
//! localhost and 127.0.0.1, client certificates with SPIFFE URI SANs.

use std::net::{IpAddr, Ipv4Addr};
use std::path::Path;

use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair, SanType, SerialNumber};

pub struct Ca {
    issuer: CertifiedIssuer<'static, KeyPair>,
}

pub struct Pem {
    pub cert: String,
    pub key: String,
}

impl Ca {
    pub fn new(name: &str) -> Self {
        let mut params = CertificateParams::default();
        params.distinguished_name.push(DnType::CommonName, name);
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let issuer = CertifiedIssuer::self_signed(params, KeyPair::generate().unwrap()).unwrap();
        Self { issuer }
    }

    pub fn pem(&self) -> String {
        self.issuer.pem()
    }

    fn issue(&self, mut params: CertificateParams) -> Pem {
        let key = KeyPair::generate().unwrap();
        params.not_before = rcgen::date_time_ymd(2025, 1, 1);
        params.not_after = rcgen::date_time_ymd(2035, 1, 1);
        let cert = params.signed_by(&key, &self.issuer).unwrap();
        Pem { cert: cert.pem(), key: key.serialize_pem() }
    }

    /// A serving certificate for localhost and 127.0.0.1 with a chosen serial.
    pub fn server(&self, serial: u64) -> Pem {
        let mut params = CertificateParams::new(vec!["localhost".to_owned()]).unwrap();
        params.subject_alt_names.push(SanType::IpAddress(IpAddr::V4(Ipv4Addr::LOCALHOST)));
        params.serial_number = Some(SerialNumber::from(serial));
        self.issue(params)
    }

    /// A client certificate whose identity is the URI SAN `uri`.
    pub fn client(&self, uri: &str) -> Pem {
        let mut params = CertificateParams::default();
        params.distinguished_name.push(DnType::CommonName, "ignored-when-a-uri-san-exists");
        params.subject_alt_names.push(SanType::URI(uri.try_into().unwrap()));
        self.issue(params)
    }
}

/// Writes the files the way a Kubernetes Secret volume lays them out:
/// `dir/<name>` → `..data/<name>`, `..data` → a timestamped directory.
/// Calling it again swaps `..data` atomically, as the kubelet does.
pub fn write_secret_volume(dir: &Path, version: &str, files: &[(&str, &str)]) {
    let real = dir.join(format!("..{version}"));
    std::fs::create_dir_all(&real).unwrap();
    for (name, content) in files {
        std::fs::write(real.join(name), content).unwrap();
    }
    let tmp = dir.join("..data_tmp");
    let _ = std::fs::remove_file(&tmp);
    std::os::unix::fs::symlink(format!("..{version}"), &tmp).unwrap();
    std::fs::rename(&tmp, dir.join("..data")).unwrap();
    for (name, _) in files {
        let link = dir.join(name);
        if std::fs::symlink_metadata(&link).is_err() {
            std::os::unix::fs::symlink(format!("..data/{name}"), &link).unwrap();
        }
    }
}

/// A Secret volume holding a serving certificate (serial 1, for localhost and
/// 127.0.0.1) and its CA, as the operator writes it.
pub struct TlsSecret {
    pub dir: tempfile::TempDir,
    pub ca: Ca,
}

impl TlsSecret {
    pub fn new(ca_name: &str) -> Self {
        let ca = Ca::new(ca_name);
        let dir = tempfile::tempdir().unwrap();
        let server = ca.server(1);
        write_secret_volume(
            dir.path(),
            "v1",
            &[("tls.crt", &server.cert), ("tls.key", &server.key), ("ca.crt", &ca.pem())],
        );
        Self { dir, ca }
    }

    /// The path of a file in the volume.
    pub fn path(&self, file: &str) -> String {
        self.dir.path().join(file).display().to_string()
    }

    /// The collector's TLS settings for this volume; with `mtls`, clients
    /// must present a certificate of the CA.
    pub fn tls_config(&self, mtls: bool) -> otlp_collector::config::TlsConfig {
        otlp_collector::config::TlsConfig {
            cert_file: self.path("tls.crt"),
            key_file: self.path("tls.key"),
            client_ca_file: mtls.then(|| self.path("ca.crt")),
            ..Default::default()
        }
    }
}
