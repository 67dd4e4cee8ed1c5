//! The TLS listener's certificates come from the tenant table: SNI is
//! routed exactly as a Host header is, and the handshake gets that
//! tenant's certificate, or the default one.

use std::sync::Arc;

use arc_swap::ArcSwap;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;

use super::TenantTable;
use crate::http::CertificateOwner;

/// Certificates by SNI from the live tenant table: a certificate replaced
/// by a reload is used from the next handshake on, while connections
/// already made keep the one they got.
pub struct SniCertificates(pub Arc<ArcSwap<TenantTable>>);

impl std::fmt::Debug for SniCertificates {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SniCertificates")
    }
}

impl ResolvesServerCert for SniCertificates {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        let name = hello.server_name().map(str::to_ascii_lowercase);
        let table = self.0.load();
        let (_, certificate) = table.certificate(name.as_deref())?;
        Some(certificate.clone())
    }
}

impl crate::tls::Certificates for SniCertificates {
    /// Asked right after the handshake, of the table in force then: only a
    /// reload landing between the two (microseconds) can make this answer
    /// differ from the certificate the handshake got, and then only for
    /// that connection and a tenant whose certificate the reload changed.
    fn owner(&self, server_name: Option<&str>) -> CertificateOwner {
        self.0
            .load()
            .certificate(server_name)
            .map_or(CertificateOwner::Default, |(owner, _)| owner)
    }
}
