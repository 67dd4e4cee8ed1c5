//! A certificate chain and its key read from PEM files, checked at load so
//! that what would only fail handshakes later is a config error naming the
//! file: a key that does not match, a certificate that has expired or is
//! not yet valid, or one that does not cover a host it is served for.

use std::path::Path;
use std::sync::Arc;

use rustls::sign::CertifiedKey;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use x509_parser::extensions::GeneralName;

use crate::config::{CertificateFiles, FieldError};

/// Loads `files` (paths already resolved) for a certificate served to
/// `hosts` (host patterns as tenants list them; `*` is not checked).
/// Errors name the field (`cert`, `key` or `ocsp`) and the file.
pub fn load(files: &CertificateFiles, hosts: &[String]) -> Result<Arc<CertifiedKey>, FieldError> {
    let cert_error =
        |message: String| FieldError::new("cert", format!("{}: {message}", files.cert.display()));
    let chain = read_chain(&files.cert).map_err(cert_error)?;
    let key = PrivateKeyDer::from_pem_file(&files.key).map_err(|e| {
        FieldError::new(
            "key",
            format!(
                "{}: no private key read: {}",
                files.key.display(),
                pem_error(e)
            ),
        )
    })?;
    let mut certified =
        CertifiedKey::from_der(chain, key, &super::provider()).map_err(|e| match e {
            rustls::Error::InconsistentKeys(_) => FieldError::new(
                "key",
                format!(
                    "{} is not the key of the certificate in {}",
                    files.key.display(),
                    files.cert.display()
                ),
            ),
            other => FieldError::new("key", format!("{}: {other}", files.key.display())),
        })?;
    check_leaf(&certified.cert[0], hosts).map_err(cert_error)?;
    if let Some(ocsp) = &files.ocsp {
        let response = std::fs::read(ocsp)
            .map_err(|e| FieldError::new("ocsp", format!("{}: {e}", ocsp.display())))?;
        certified.ocsp = Some(response);
    }
    Ok(Arc::new(certified))
}

/// Every `CERTIFICATE` block of a PEM file, in file order (a chain: leaf
/// first); an error when there is none.
pub(super) fn read_chain(path: &Path) -> Result<Vec<CertificateDer<'static>>, String> {
    let chain = CertificateDer::pem_file_iter(path)
        .map_err(pem_error)?
        .collect::<Result<Vec<_>, _>>()
        .map_err(pem_error)?;
    if chain.is_empty() {
        return Err("no PEM CERTIFICATE block in the file".into());
    }
    Ok(chain)
}

fn pem_error(e: rustls_pki_types::pem::Error) -> String {
    match e {
        rustls_pki_types::pem::Error::Io(e) => e.to_string(),
        rustls_pki_types::pem::Error::NoItemsFound => "no PEM block of the expected kind".into(),
        other => format!("not valid PEM: {other}"),
    }
}

/// The leaf is valid now and names every host it is served for (RFC 6125
/// section 6.4, as webpki checks it when a client connects).
fn check_leaf(leaf: &CertificateDer<'_>, hosts: &[String]) -> Result<(), String> {
    let (_, parsed) = x509_parser::parse_x509_certificate(leaf)
        .map_err(|e| format!("not an X.509 certificate: {e}"))?;
    let validity = parsed.validity();
    let now = x509_parser::time::ASN1Time::now();
    if now > validity.not_after {
        return Err(format!("the certificate expired on {}", validity.not_after));
    }
    if now < validity.not_before {
        return Err(format!(
            "the certificate is not valid before {}",
            validity.not_before
        ));
    }
    let webpki_leaf = rustls::server::ParsedCertificate::try_from(leaf)
        .map_err(|e| format!("not a usable certificate: {e}"))?;
    for host in hosts.iter().filter(|h| *h != "*") {
        // A wildcard host needs a certificate valid for any name under it:
        // one name under it stands for all.
        let probe = match host.strip_prefix("*.") {
            Some(parent) => format!("outpost-wildcard-probe.{parent}"),
            None => host.clone(),
        };
        let covered = ServerName::try_from(probe.as_str())
            .is_ok_and(|name| rustls::client::verify_server_name(&webpki_leaf, &name).is_ok());
        if !covered {
            return Err(format!(
                "the certificate is not valid for host {host:?} (it names {})",
                dns_names(&parsed)
            ));
        }
    }
    Ok(())
}

/// The DNS names a certificate's subjectAltName lists, for error messages.
fn dns_names(cert: &x509_parser::certificate::X509Certificate<'_>) -> String {
    let names: Vec<String> = match cert.subject_alternative_name() {
        Ok(Some(san)) => san
            .value
            .general_names
            .iter()
            .filter_map(|n| match n {
                GeneralName::DNSName(d) => Some(format!("{d:?}")),
                _ => None,
            })
            .collect(),
        _ => Vec::new(),
    };
    if names.is_empty() {
        "no DNS name".into()
    } else {
        names.join(", ")
    }
}
