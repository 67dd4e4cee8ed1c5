//! The HTTP clients of one backend, one per member: a connector that dials
//! the member whatever authority the request names, TLS for https members
//! with the SNI of the member (or the backend's `server_name`), the
//! protocol the backend speaks, and the member's pool of idle connections.
//!
//! The pool is keyed by the request URI's scheme and authority. A member
//! that speaks HTTP/1 only gets its own authority there, so every Host a
//! tenant serves shares one pool of connections to it; the Host field
//! travels in the head. A member that may speak HTTP/2 gets the Host the
//! origin is asked for, which HTTP/2 sends as `:authority` (RFC 9113
//! section 8.3.1), so its connections are kept per Host.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use http::Uri;
use hyper_rustls::{FixedServerNameResolver, HttpsConnector};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use rustls::ClientConfig;
use rustls_pki_types::ServerName;
use tower_service::Service;

use super::counted::Counted;
use super::member::MemberStats;
use crate::config::{BackendConfig, BackendUrl, FieldError, Protocol};
use crate::http::ProxyBody;

pub(super) type HttpClient = Client<HttpsConnector<Dial>, ProxyBody>;

/// The client of one member, and how its requests are addressed.
pub(super) struct MemberClient {
    pub http: HttpClient,
    /// Whether a connection may speak HTTP/2: prior knowledge (`h2c`), or
    /// an https member whose ALPN may agree on it.
    may_speak_h2: bool,
}

impl MemberClient {
    /// The URI a request for `target` is sent to `member` with: the
    /// member's scheme and path prefix; as authority the member's own for
    /// an HTTP/1-only member (one pool of connections whatever the Host),
    /// else the Host the origin is asked for, if there is one.
    pub fn request_uri(
        &self,
        member: &BackendUrl,
        target: &str,
        host: Option<&http::HeaderValue>,
    ) -> Uri {
        let uri = member.uri_for(target);
        if !self.may_speak_h2 {
            return uri;
        }
        let Some(authority) = host
            .and_then(|h| h.to_str().ok())
            .and_then(|h| h.parse::<http::uri::Authority>().ok())
        else {
            return uri;
        };
        let mut parts = uri.into_parts();
        parts.authority = Some(authority);
        Uri::from_parts(parts).unwrap_or_else(|_| member.uri_for(target))
    }
}

/// Idle connections kept per member.
const POOL_MAX_IDLE: usize = 256;

/// Dials one member (TCP, with the connect timeout), whatever the URI.
#[derive(Clone)]
pub(super) struct Dial {
    tcp: HttpConnector,
    member: Uri,
    /// Counts the connections open.
    stats: Arc<MemberStats>,
}

type Tcp = <HttpConnector as Service<Uri>>::Response;
type Dialing = Pin<Box<dyn Future<Output = Result<Counted<Tcp>, ConnectError>> + Send>>;
type ConnectError = <HttpConnector as Service<Uri>>::Error;

impl Service<Uri> for Dial {
    type Response = Counted<Tcp>;
    type Error = ConnectError;
    type Future = Dialing;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.tcp.poll_ready(cx)
    }

    fn call(&mut self, _request_uri: Uri) -> Self::Future {
        let connecting = self.tcp.call(self.member.clone());
        let stats = self.stats.clone();
        Box::pin(async move { Ok(Counted::new(connecting.await?, stats)) })
    }
}

/// The client of `member` of a (validated) backend; `tls` is the backend's
/// rustls settings (read once for all members).
pub(super) fn build(
    config: &BackendConfig,
    member: &BackendUrl,
    stats: Arc<MemberStats>,
    tls: &ClientConfig,
) -> Result<MemberClient, FieldError> {
    let mut tcp = HttpConnector::new();
    tcp.set_connect_timeout(Some(Duration::from_millis(config.connect_timeout_ms)));
    tcp.set_nodelay(true);
    tcp.enforce_http(false);
    let dial = Dial {
        tcp,
        member: member.uri_for("/"),
        stats,
    };
    let name = config
        .tls
        .as_ref()
        .and_then(|t| t.server_name.clone())
        .unwrap_or_else(|| member.host().to_string());
    // Checked by `BackendConfig::validate` (or a URL's host).
    let name = ServerName::try_from(name)
        .map_err(|e| FieldError::new("tls.server_name", e.to_string()))?;
    let builder = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(tls.clone())
        .https_or_http()
        .with_server_name_resolver(FixedServerNameResolver::new(name));
    let https = match config.protocol {
        // ALPN offers h2 and http/1.1; the pool speaks what was agreed.
        Protocol::Auto => builder.enable_all_versions().wrap_connector(dial),
        Protocol::Http1 | Protocol::H2c => builder.enable_http1().wrap_connector(dial),
    };
    let mut client = Client::builder(TokioExecutor::new());
    client
        .pool_idle_timeout(Duration::from_millis(config.keepalive_idle_ms))
        .pool_max_idle_per_host(POOL_MAX_IDLE);
    if config.protocol == Protocol::H2c {
        // RFC 9113 section 3.3: HTTP/2 with prior knowledge.
        client.http2_only(true);
    }
    Ok(MemberClient {
        http: client.build(https),
        may_speak_h2: config.protocol == Protocol::H2c
            || (config.protocol == Protocol::Auto && member.is_https()),
    })
}
