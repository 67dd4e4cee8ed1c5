//! TLS with rustls. Termination: the server settings every TLS listener
//! shares (TLS 1.2 and 1.3 only, ALPN `h2` and `http/1.1`, session
//! resumption by rotated tickets and a session cache), certificates read
//! and checked from PEM files, and the handshake of one connection. Towards
//! origins: the client settings of an https backend (`client.rs`).
//!
//! Which certificate a handshake gets is not decided here: a listener is
//! given a [`Certificates`] (the tenant table for the client listener, one
//! fixed certificate for the admin listener).

mod certificate;
mod client;

use std::sync::Arc;
use std::time::Duration;

use rustls::server::{ClientHello, ResolvesServerCert, ServerSessionMemoryCache};
use rustls::sign::CertifiedKey;
use tokio::net::TcpStream;
use tokio_rustls::server::TlsStream;

pub use certificate::load as load_certificate;
pub use client::{client_config, handshake_failure};

use crate::http::{CertificateOwner, TlsSession};

/// TLS 1.2 sessions remembered for resumption by session id; TLS 1.3
/// resumes by tickets, which need no server state.
const SESSION_CACHE_ENTRIES: usize = 16 * 1024;

/// ALPN protocol ids (RFC 7301), preferred first.
const ALPN_H2: &[u8] = b"h2";
const ALPN_HTTP1: &[u8] = b"http/1.1";

/// The cryptography in use (ring).
pub fn provider() -> rustls::crypto::CryptoProvider {
    rustls::crypto::ring::default_provider()
}

/// Chooses each handshake's certificate (by SNI) and says, afterwards,
/// whose certificate a name got, so requests can be checked against it.
pub trait Certificates: ResolvesServerCert {
    fn owner(&self, server_name: Option<&str>) -> CertificateOwner;
}

/// One certificate for every handshake (the admin listener's).
#[derive(Debug)]
pub struct Fixed(pub Arc<CertifiedKey>);

impl ResolvesServerCert for Fixed {
    fn resolve(&self, _: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.0.clone())
    }
}

impl Certificates for Fixed {
    fn owner(&self, _: Option<&str>) -> CertificateOwner {
        CertificateOwner::Default
    }
}

/// A TLS connection after its handshake.
pub struct Accepted {
    pub stream: TlsStream<TcpStream>,
    pub session: TlsSession,
    /// The client and the node agreed on HTTP/2 by ALPN (RFC 9113 section
    /// 3.2); otherwise the connection speaks HTTP/1.1.
    pub http2: bool,
}

/// Terminates TLS for one listener.
#[derive(Clone)]
pub struct Terminator {
    acceptor: tokio_rustls::TlsAcceptor,
    certificates: Arc<dyn Certificates>,
}

impl Terminator {
    /// A terminator choosing certificates with `certificates`.
    pub fn new(certificates: Arc<dyn Certificates>) -> Result<Terminator, rustls::Error> {
        let resolver: Arc<dyn ResolvesServerCert> = certificates.clone();
        let mut config = rustls::ServerConfig::builder_with_provider(Arc::new(provider()))
            .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])?
            .with_no_client_auth()
            .with_cert_resolver(resolver);
        config.alpn_protocols = vec![ALPN_H2.to_vec(), ALPN_HTTP1.to_vec()];
        // Ticket keys rotate every 6 hours; a ticket outlives one rotation.
        config.ticketer = rustls::crypto::ring::Ticketer::new()?;
        config.session_storage = ServerSessionMemoryCache::new(SESSION_CACHE_ENTRIES);
        Ok(Terminator {
            acceptor: tokio_rustls::TlsAcceptor::from(Arc::new(config)),
            certificates,
        })
    }

    /// Runs the handshake of `stream`, for at most `timeout`. `None` when
    /// it fails or times out (logged at debug: clients that give up or
    /// probe are common and not the node's problem).
    pub async fn handshake(&self, stream: TcpStream, timeout: Duration) -> Option<Accepted> {
        let peer = stream.peer_addr().ok();
        let stream = match tokio::time::timeout(timeout, self.acceptor.accept(stream)).await {
            Ok(Ok(stream)) => stream,
            Ok(Err(e)) => {
                tracing::debug!(?peer, "TLS handshake failed: {e}");
                return None;
            }
            Err(_) => {
                tracing::debug!(?peer, "TLS handshake timed out");
                return None;
            }
        };
        let (_, connection) = stream.get_ref();
        let server_name = connection.server_name().map(str::to_ascii_lowercase);
        let session = TlsSession {
            certificate: self.certificates.owner(server_name.as_deref()),
            server_name: server_name.map(String::into_boxed_str),
        };
        let http2 = connection.alpn_protocol() == Some(ALPN_H2);
        Some(Accepted {
            stream,
            session,
            http2,
        })
    }
}
