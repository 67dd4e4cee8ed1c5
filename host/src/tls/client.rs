//! TLS towards origins: whom an https backend is trusted by (the Mozilla
//! roots, or the backend's own CA file), the client certificate it is
//! shown (mTLS), and what a failed handshake is called in a log line.

use std::path::Path;
use std::sync::Arc;

use rustls::client::ResolvesClientCert;
use rustls::sign::CertifiedKey;
use rustls::{CertificateError, ClientConfig, RootCertStore, SignatureScheme};

use crate::config::{BackendTlsConfig, CertificateFiles, FieldError};

/// The rustls client settings of one backend (TLS 1.2 and 1.3). Errors
/// name the field under `tls.` and the file.
pub fn client_config(
    tls: Option<&BackendTlsConfig>,
    base_dir: &Path,
) -> Result<ClientConfig, FieldError> {
    let mut roots = RootCertStore::empty();
    match tls.and_then(|t| t.ca.as_ref()) {
        None => roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned()),
        Some(ca) => {
            let path = base_dir.join(ca);
            let error = |message: String| {
                FieldError::new("tls.ca", format!("{}: {message}", path.display()))
            };
            for cert in super::certificate::read_chain(&path).map_err(error)? {
                roots
                    .add(cert)
                    .map_err(|e| error(format!("not a usable CA certificate: {e}")))?;
            }
        }
    }
    let builder = ClientConfig::builder_with_provider(Arc::new(super::provider()))
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(|e| FieldError::new("tls", e.to_string()))?
        .with_root_certificates(roots);
    let client = match tls.and_then(|t| Some((t.cert.as_ref()?, t.key.as_ref()?))) {
        None => return Ok(builder.with_no_client_auth()),
        Some((cert, key)) => {
            let files = CertificateFiles {
                cert: cert.clone(),
                key: key.clone(),
                ocsp: None,
            };
            super::load_certificate(&files.resolved(base_dir), &[]).map_err(|e| e.within("tls."))?
        }
    };
    Ok(builder.with_client_cert_resolver(Arc::new(ClientCertificate(client))))
}

/// The one client certificate a backend is shown.
#[derive(Debug)]
struct ClientCertificate(Arc<CertifiedKey>);

impl ResolvesClientCert for ClientCertificate {
    fn resolve(&self, _: &[&[u8]], _: &[SignatureScheme]) -> Option<Arc<CertifiedKey>> {
        Some(self.0.clone())
    }

    fn has_certs(&self) -> bool {
        true
    }
}

/// What went wrong in a TLS handshake with an origin, if `error` (or an
/// error it wraps) is one, in words for a log line and the response hook:
/// `certificate not valid for "x"`, `certificate expired`, ...
pub fn handshake_failure(
    error: &(dyn std::error::Error + 'static),
    server_name: &str,
) -> Option<String> {
    let mut next = Some(error);
    while let Some(e) = next {
        if let Some(tls) = e.downcast_ref::<rustls::Error>() {
            return Some(describe(tls, server_name));
        }
        // io::Error's `source` skips the error it wraps: look inside.
        next = match e
            .downcast_ref::<std::io::Error>()
            .and_then(|io| io.get_ref())
        {
            Some(inner) => Some(inner as &(dyn std::error::Error + 'static)),
            None => e.source(),
        };
    }
    None
}

fn describe(error: &rustls::Error, server_name: &str) -> String {
    match error {
        rustls::Error::InvalidCertificate(c) => match c {
            CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. } => {
                format!("certificate not valid for {server_name:?}")
            }
            CertificateError::Expired | CertificateError::ExpiredContext { .. } => {
                "certificate expired".into()
            }
            CertificateError::NotValidYet | CertificateError::NotValidYetContext { .. } => {
                "certificate not valid yet".into()
            }
            CertificateError::UnknownIssuer => "certificate issued by an unknown authority".into(),
            other => format!("invalid certificate: {other:?}"),
        },
        rustls::Error::AlertReceived(alert) => {
            format!("the origin refused the handshake: {alert:?}")
        }
        other => other.to_string(),
    }
}
