//! What the node knows about the connection a request arrived on.

use std::net::IpAddr;
use std::sync::Arc;

use super::Scheme;

/// The client connection of a request.
#[derive(Debug, Clone)]
pub struct Connection {
    pub client_ip: IpAddr,
    /// Set when the connection came in on the TLS listener.
    pub tls: Option<Arc<TlsSession>>,
}

/// A TLS connection's handshake, as far as requests care.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsSession {
    /// The SNI name the client sent, lowercased.
    pub server_name: Option<Box<str>>,
    /// Whose certificate the handshake presented.
    pub certificate: CertificateOwner,
}

/// Whose certificate a TLS connection was made with: a tenant's own, or
/// the node's default one (shared by every tenant without its own).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CertificateOwner {
    Default,
    Tenant(Arc<str>),
}

impl Connection {
    /// A plain-HTTP connection from `client_ip`.
    pub fn plain(client_ip: IpAddr) -> Connection {
        Connection {
            client_ip,
            tls: None,
        }
    }

    /// The scheme requests on this connection have.
    pub fn scheme(&self) -> Scheme {
        match self.tls {
            Some(_) => Scheme::Https,
            None => Scheme::Http,
        }
    }
}
