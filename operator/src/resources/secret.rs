//! Certificates: the built-in CA and the serving certificate for the Service DNS names.
//!
//! Certificates are random, so "desired" reuses what the Secrets already hold while it is still
//! right: the serving certificate is kept until its renew moment, or until the DNS names, the
//! validity or the CA change (the `issued-for` annotation records a hash of them).

use std::collections::BTreeMap;

use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use kube::ResourceExt as _;
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair, KeyUsagePurpose,
};
use time::OffsetDateTime;

use super::configmap::{CA_CERT, CLIENT_CA_CERT, TLS_CERT, TLS_KEY};
use super::{Observed, SpecError, child_meta, labels, parse_duration, stable_hash};
use crate::api::{CertificateStatus, OtlpCollector, TlsMode};
use crate::{Error, Result};

/// Lifetime of the built-in CA.
pub const CA_VALIDITY_SECS: i64 = 10 * 365 * 24 * 3600;
/// Certificates start this long before "now", against clock skew.
const BACKDATE_SECS: i64 = 300;

/// Why a serving certificate was issued by this build.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Issued {
    /// There was none.
    First,
    /// The renew moment came.
    Renewal,
    /// DNS names, validity or CA changed.
    Changed,
}

/// The Secrets for TLS and the certificate's status.
#[derive(Debug, Clone)]
pub struct Certificates {
    pub secrets: Vec<Secret>,
    pub status: CertificateStatus,
    pub issued: Option<Issued>,
}

/// The DNS names the serving certificate is valid for: the Service and the headless Service.
pub fn dns_names(cr: &OtlpCollector) -> Vec<String> {
    let ns = cr.namespace().unwrap_or_default();
    let mut names = Vec::new();
    for svc in [labels::collector(cr), labels::headless(cr)] {
        names.push(svc.clone());
        names.push(format!("{svc}.{ns}"));
        names.push(format!("{svc}.{ns}.svc"));
        names.push(format!("{svc}.{ns}.svc.cluster.local"));
    }
    names.push(format!("*.{}.{ns}.svc", labels::headless(cr)));
    names.push(format!("*.{}.{ns}.svc.cluster.local", labels::headless(cr)));
    names
}

/// The CA (reused or created), the serving certificate (reused or issued) and their Secrets.
pub fn certificates(cr: &OtlpCollector, observed: &Observed, now: Timestamp) -> Result<Certificates> {
    let tls = &cr.spec.tls;
    let validity = parse_duration("tls.validity", &tls.validity)?;
    let renew_before = parse_duration("tls.renewBefore", &tls.renew_before)?;
    let mut secrets = Vec::new();

    let external = tls.issuer.as_ref().and_then(|i| i.secret_name.clone());
    let (ca_pem, ca_key_pem) = match &external {
        Some(name) => {
            let secret = observed.issuer_secret.as_ref().ok_or_else(|| missing(name, "not found"))?;
            (key_str(secret, name, TLS_CERT)?, key_str(secret, name, TLS_KEY)?)
        }
        None => {
            let existing = observed.ca_secret.as_ref().and_then(|s| {
                let cert = key_str(s, "", TLS_CERT).ok()?;
                let key = key_str(s, "", TLS_KEY).ok()?;
                // Only a pair that still works is reused.
                Issuer::from_ca_cert_pem(&cert, KeyPair::from_pem(&key).ok()?).ok()?;
                Some((cert, key, s.annotations().get(labels::ANN_NOT_AFTER).cloned()))
            });
            let (cert, key, not_after) = match existing {
                Some(pair) => pair,
                None => {
                    let (cert, key, not_after) = issue_ca(cr, now)?;
                    (cert, key, Some(not_after))
                }
            };
            secrets.push(ca_secret(cr, &cert, &key, not_after)?);
            (cert, key)
        }
    };

    let client_ca = match (&tls.mode, &tls.client_ca) {
        (TlsMode::MutualTLS, Some(client_ca)) => {
            let secret =
                observed.client_ca_secret.as_ref().ok_or_else(|| missing(&client_ca.secret_name, "not found"))?;
            Some(key_str(secret, &client_ca.secret_name, &client_ca.key)?)
        }
        (TlsMode::MutualTLS, None) => Some(ca_pem.clone()),
        _ => None,
    };

    let names = dns_names(cr);
    let issued_for = stable_hash(&[names.join(",").as_bytes(), tls.validity.as_bytes(), ca_pem.as_bytes()]);
    let reusable = observed.tls_secret.as_ref().and_then(|s| {
        let ann = s.annotations();
        if ann.get(labels::ANN_ISSUED_FOR) != Some(&issued_for) {
            return None;
        }
        let not_after: Timestamp = ann.get(labels::ANN_NOT_AFTER)?.parse().ok()?;
        let renew_at: Timestamp = ann.get(labels::ANN_RENEW_AT)?.parse().ok()?;
        (renew_at > now).then_some(())?;
        Some((key_str(s, "", TLS_CERT).ok()?, key_str(s, "", TLS_KEY).ok()?, not_after, renew_at))
    });
    let (cert, key, not_after, renew_at, issued) = match reusable {
        Some((cert, key, not_after, renew_at)) => (cert, key, not_after, renew_at, None),
        None => {
            let not_after = add_secs(now, validity.as_secs(), "tls.validity", &tls.validity)?;
            let before = i64::try_from(renew_before.as_secs()).unwrap_or(i64::MAX);
            let renew_at =
                not_after.as_second().checked_sub(before).and_then(|s| Timestamp::from_second(s).ok()).ok_or_else(
                    || Error::Spec(SpecError::Duration { field: "tls.renewBefore", value: tls.renew_before.clone() }),
                )?;
            let (cert, key) = issue_serving(&names, &ca_pem, &ca_key_pem, now, not_after)?;
            let why = match &observed.tls_secret {
                None => Issued::First,
                Some(s) if s.annotations().get(labels::ANN_ISSUED_FOR) == Some(&issued_for) => Issued::Renewal,
                Some(_) => Issued::Changed,
            };
            (cert, key, not_after, renew_at, Some(why))
        }
    };

    let mut data = BTreeMap::from([
        (TLS_CERT.to_owned(), bytes(&cert)),
        (TLS_KEY.to_owned(), bytes(&key)),
        (CA_CERT.to_owned(), bytes(&ca_pem)),
    ]);
    if let Some(client_ca) = &client_ca {
        data.insert(CLIENT_CA_CERT.to_owned(), bytes(client_ca));
    }
    let mut meta = child_meta(cr, labels::tls_secret(cr), "certificate")?;
    meta.annotations = Some(BTreeMap::from([
        (labels::ANN_ISSUED_FOR.to_owned(), issued_for),
        (labels::ANN_NOT_AFTER.to_owned(), not_after.to_string()),
        (labels::ANN_RENEW_AT.to_owned(), renew_at.to_string()),
    ]));
    secrets.push(Secret {
        metadata: meta,
        type_: Some("kubernetes.io/tls".into()),
        data: Some(data),
        ..Secret::default()
    });

    Ok(Certificates {
        secrets,
        status: CertificateStatus {
            not_after: Time(not_after),
            renew_at: Time(renew_at),
            secret_name: labels::tls_secret(cr),
        },
        issued,
    })
}

fn missing(name: &str, problem: &str) -> Error {
    Error::Spec(SpecError::Secret { name: name.to_owned(), problem: problem.to_owned() })
}

fn key_str(secret: &Secret, name: &str, key: &str) -> Result<String> {
    let value =
        secret.data.as_ref().and_then(|d| d.get(key)).ok_or_else(|| missing(name, &format!("has no key `{key}`")))?;
    String::from_utf8(value.0.clone()).map_err(|_| missing(name, &format!("`{key}` is not PEM text")))
}

fn bytes(s: &str) -> ByteString {
    ByteString(s.as_bytes().to_vec())
}

fn add_secs(t: Timestamp, secs: u64, field: &'static str, value: &str) -> Result<Timestamp> {
    let secs = i64::try_from(secs).ok().and_then(|s| t.as_second().checked_add(s));
    secs.and_then(|s| Timestamp::from_second(s).ok())
        .ok_or_else(|| Error::Spec(SpecError::Duration { field, value: value.to_owned() }))
}

fn odt(t: Timestamp) -> OffsetDateTime {
    OffsetDateTime::from_unix_timestamp(t.as_second()).unwrap_or(OffsetDateTime::UNIX_EPOCH)
}

/// Now, truncated to whole seconds (annotations and certificates carry seconds).
pub fn now_seconds() -> Timestamp {
    Timestamp::from_second(Timestamp::now().as_second()).unwrap_or(Timestamp::UNIX_EPOCH)
}

/// A new self-signed CA: (cert PEM, key PEM, notAfter RFC 3339).
pub fn issue_ca(cr: &OtlpCollector, now: Timestamp) -> Result<(String, String, String)> {
    let mut params = CertificateParams::new(Vec::<String>::new())?;
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.distinguished_name.push(DnType::CommonName, format!("{} otlp-collector CA", cr.name_any()));
    params.distinguished_name.push(DnType::OrganizationName, "otlp-fleet");
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign, KeyUsagePurpose::DigitalSignature];
    let not_after = Timestamp::from_second(now.as_second() + CA_VALIDITY_SECS).unwrap_or(now);
    params.not_before = odt(now) - time::Duration::seconds(BACKDATE_SECS);
    params.not_after = odt(not_after);
    let key = KeyPair::generate()?;
    let cert = params.self_signed(&key)?;
    Ok((cert.pem(), key.serialize_pem(), not_after.to_string()))
}

/// A serving certificate for `names`, signed by the CA: (cert PEM, key PEM).
pub fn issue_serving(
    names: &[String],
    ca_pem: &str,
    ca_key_pem: &str,
    now: Timestamp,
    not_after: Timestamp,
) -> Result<(String, String)> {
    let issuer = Issuer::from_ca_cert_pem(ca_pem, KeyPair::from_pem(ca_key_pem)?)?;
    let mut params = CertificateParams::new(names.to_vec())?;
    if let Some(first) = names.first() {
        params.distinguished_name.push(DnType::CommonName, first.clone());
    }
    params.use_authority_key_identifier_extension = true;
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    params.not_before = odt(now) - time::Duration::seconds(BACKDATE_SECS);
    params.not_after = odt(not_after);
    let key = KeyPair::generate()?;
    let cert = params.signed_by(&key, &issuer)?;
    Ok((cert.pem(), key.serialize_pem()))
}

/// The built-in CA's Secret (`kubernetes.io/tls`, plus `ca.crt`).
fn ca_secret(cr: &OtlpCollector, cert: &str, key: &str, not_after: Option<String>) -> Result<Secret> {
    let mut meta = child_meta(cr, labels::ca_secret(cr), "ca")?;
    meta.annotations = not_after.map(|n| BTreeMap::from([(labels::ANN_NOT_AFTER.to_owned(), n)]));
    Ok(Secret {
        metadata: meta,
        type_: Some("kubernetes.io/tls".into()),
        data: Some(BTreeMap::from([
            (TLS_CERT.to_owned(), bytes(cert)),
            (TLS_KEY.to_owned(), bytes(key)),
            (CA_CERT.to_owned(), bytes(cert)),
        ])),
        ..Secret::default()
    })
}
