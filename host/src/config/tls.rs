//! The TLS parts of the schema: the TLS listener, and the certificate
//! files a tenant or the admin listener presents.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use super::validate::check;
use super::FieldError;

/// `[server.tls]`: a TLS listener beside the plain one (TLS 1.2 and 1.3,
/// ALPN `h2` and `http/1.1`).
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ServerTlsConfig {
    pub listen: SocketAddr,
    /// The default certificate chain (PEM): served when the client's SNI
    /// names no tenant with a certificate of its own, or no name at all.
    /// Without one such handshakes fail. Goes with `key`.
    pub cert: Option<PathBuf>,
    /// The default certificate's private key (PEM: PKCS#8, PKCS#1 or SEC1).
    pub key: Option<PathBuf>,
    /// A DER-encoded OCSP response stapled to the default certificate.
    pub ocsp: Option<PathBuf>,
}

impl ServerTlsConfig {
    /// The default certificate's files, when both are set.
    pub fn default_certificate(&self) -> Option<CertificateFiles> {
        Some(CertificateFiles {
            cert: self.cert.clone()?,
            key: self.key.clone()?,
            ocsp: self.ocsp.clone(),
        })
    }
}

/// A certificate chain and its key, as PEM files (relative paths are
/// resolved against the config file's directory). Re-read on every config
/// change, so a certificate replaced on disk is served after a reload.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct CertificateFiles {
    /// The chain, leaf first (PEM `CERTIFICATE` blocks).
    pub cert: PathBuf,
    /// The private key (PEM: PKCS#8, PKCS#1 or SEC1).
    pub key: PathBuf,
    /// A DER-encoded OCSP response to staple.
    pub ocsp: Option<PathBuf>,
}

impl CertificateFiles {
    /// The same files with relative paths resolved against `base_dir`.
    pub fn resolved(&self, base_dir: &Path) -> CertificateFiles {
        CertificateFiles {
            cert: base_dir.join(&self.cert),
            key: base_dir.join(&self.key),
            ocsp: self.ocsp.as_ref().map(|p| base_dir.join(p)),
        }
    }
}

/// `[tenant.backends.NAME.tls]`: how an https backend is verified and
/// what it is shown.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct BackendTlsConfig {
    /// Trust only the CAs in this PEM file (default: the Mozilla roots).
    pub ca: Option<PathBuf>,
    /// A client certificate chain (PEM) for origins that ask for one
    /// (mTLS). Goes with `key`.
    pub cert: Option<PathBuf>,
    /// The client certificate's private key (PEM).
    pub key: Option<PathBuf>,
    /// The name sent as SNI and checked against the origin's certificate
    /// (default: the URL's host).
    pub server_name: Option<String>,
}

impl BackendTlsConfig {
    /// Checks what serde cannot; the error names the field under `tls.`.
    pub(super) fn validate(&self) -> Result<(), FieldError> {
        check(
            self.cert.is_some() == self.key.is_some(),
            "tls.cert",
            || "cert and key go together: set both or neither".into(),
        )?;
        if let Some(name) = &self.server_name {
            check(
                rustls_pki_types::ServerName::try_from(name.as_str()).is_ok(),
                "tls.server_name",
                || format!("{name:?} is not a DNS name or IP address"),
            )?;
        }
        Ok(())
    }
}
