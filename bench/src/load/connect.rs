//! Opening a connection to the endpoint: TCP with TCP_NODELAY, then TLS 1.3
//! (rustls, ring; optional client certificate) for https:// or when a CA
//! is given.

use std::io;
use std::path::Path;
use std::sync::Arc;

use ::http::Uri;
use ::http::uri::{Authority, Scheme};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;
use tokio_util::either::Either;

use super::{Error, Options, Protocol};

/// A connection's byte stream: plain TCP or TLS over TCP.
pub(super) type Io = Either<TcpStream, TlsStream<TcpStream>>;

/// Why a connection could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    #[error("tcp or tls")]
    Io(#[from] io::Error),
    #[error("http/2 handshake")]
    H2(#[from] h2::Error),
    #[error("http/1.1 handshake")]
    Http1(#[from] hyper::Error),
}

/// Where to connect and how; opens any number of connections.
pub(super) struct Connector {
    /// The host as `TcpStream::connect` takes it (no IPv6 brackets).
    host: String,
    port: u16,
    /// `https` whenever TLS is on.
    pub(super) scheme: Scheme,
    pub(super) authority: Authority,
    tls: Option<(TlsConnector, ServerName<'static>)>,
}

impl Connector {
    pub(super) fn new(options: &Options) -> Result<Self, Error> {
        let bad = |reason: &str| Error::Endpoint { endpoint: options.endpoint.clone(), reason: reason.to_owned() };
        let uri: Uri = options.endpoint.parse().map_err(|_| bad("not a URL"))?;
        let authority = uri.authority().cloned().ok_or_else(|| bad("no host"))?;
        let https = match uri.scheme_str() {
            Some("http") => false,
            Some("https") => true,
            _ => return Err(bad("the scheme must be http:// or https://")),
        };
        let port = authority.port_u16().unwrap_or(if https { 443 } else { 80 });
        let host = authority.host().trim_start_matches('[').trim_end_matches(']').to_owned();
        if !(https || options.ca.is_some()) {
            return Ok(Self { host, port, scheme: Scheme::HTTP, authority, tls: None });
        }
        let alpn = match options.protocol {
            Protocol::Grpc => b"h2".to_vec(),
            Protocol::Http => b"http/1.1".to_vec(),
        };
        let client = options.cert.as_deref().zip(options.key.as_deref());
        let config = tls_config(options.ca.as_deref(), client, alpn)?;
        let name = ServerName::try_from(options.server_name.clone())
            .map_err(|_| bad(&format!("--server-name {} is not a DNS name or IP address", options.server_name)))?;
        Ok(Self {
            host,
            port,
            scheme: Scheme::HTTPS,
            authority,
            tls: Some((TlsConnector::from(Arc::new(config)), name)),
        })
    }

    /// Whether connections use TLS.
    pub(super) fn tls(&self) -> bool {
        self.tls.is_some()
    }

    pub(super) async fn open(&self) -> Result<Io, io::Error> {
        let tcp = TcpStream::connect((self.host.as_str(), self.port)).await?;
        tcp.set_nodelay(true)?;
        match &self.tls {
            None => Ok(Either::Left(tcp)),
            Some((tls, name)) => Ok(Either::Right(tls.connect(name.clone(), tcp).await?)),
        }
    }
}

/// TLS 1.3 only, the server verified by `ca` (else by the system's roots),
/// a client certificate when given.
fn tls_config(ca: Option<&Path>, client: Option<(&Path, &Path)>, alpn: Vec<u8>) -> Result<rustls::ClientConfig, Error> {
    fn pem(path: &Path) -> impl Fn(rustls::pki_types::pem::Error) -> Error + '_ {
        move |source| Error::Pem { path: path.to_owned(), source }
    }
    let mut roots = rustls::RootCertStore::empty();
    match ca {
        Some(ca) => {
            for cert in CertificateDer::pem_file_iter(ca).map_err(pem(ca))? {
                roots.add(cert.map_err(pem(ca))?).map_err(Error::Tls)?;
            }
        }
        // Unreadable system certificates are skipped, as tonic's native roots do.
        None => _ = roots.add_parsable_certificates(rustls_native_certs::load_native_certs().certs),
    }
    let builder = rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(Error::Tls)?
        .with_root_certificates(roots);
    let mut config = match client {
        Some((cert, key)) => {
            let chain = CertificateDer::pem_file_iter(cert)
                .map_err(pem(cert))?
                .collect::<Result<Vec<_>, _>>()
                .map_err(pem(cert))?;
            let key_der = PrivateKeyDer::from_pem_file(key).map_err(pem(key))?;
            builder.with_client_auth_cert(chain, key_der).map_err(Error::Tls)?
        }
        None => builder.with_no_client_auth(),
    };
    config.alpn_protocols = vec![alpn];
    Ok(config)
}
