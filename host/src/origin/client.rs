//! The HTTP clients of one backend, one per member: a connector that dials
//! the member whatever authority the request names, TLS for https members
//! with the SNI of the member (or the backend's `server_name`), and the
//! protocol the backend speaks.
//!
//! A member that may speak HTTP/1 has its requests sent over connections
//! driven in the request's own task ([`super::h1`]), kept per member, so
//! every Host a tenant serves shares them (the Host field travels in the
//! head). HTTP/2 (`h2c`, or an https member whose ALPN chooses it) goes
//! through hyper-util's pooled client, keyed by the request URI's scheme
//! and authority: the Host the origin is asked for, which HTTP/2 sends as
//! `:authority` (RFC 9113 section 8.3.1), so those connections are kept per
//! Host.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use http::{Request, Response, Uri};
use hyper::body::Incoming;
use hyper_rustls::{FixedServerNameResolver, HttpsConnector};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use rustls::ClientConfig;
use rustls_pki_types::ServerName;
use tower_service::Service;

use super::counted::Counted;
use super::h1::{Failure, H1Pool, Lease};
use super::member::MemberStats;
use super::OriginError;
use crate::config::{BackendConfig, BackendUrl, FieldError, Protocol};
use crate::http::{error_chain, ProxyBody};

type HttpClient = Client<HttpsConnector<Dial>, ProxyBody>;

/// An attempt that got no response head: why, and the request itself if
/// it went out on no connection (its body untouched), for another member.
pub(super) struct Unanswered {
    pub error: OriginError,
    pub unsent: Option<Box<Request<ProxyBody>>>,
}

/// The client of one member, and how its requests are addressed.
pub(super) struct MemberClient {
    /// HTTP/2, and HTTP/1 when `h1` is not there.
    http: HttpClient,
    /// Connections driven in the request's task, for a member that may
    /// speak HTTP/1.
    h1: Option<Arc<H1Pool>>,
    /// Whether a connection may speak HTTP/2: prior knowledge (`h2c`), or
    /// an https member whose ALPN may agree on it.
    may_speak_h2: bool,
    /// The name the member's certificate is checked against, for errors.
    server_name: String,
}

impl MemberClient {
    /// The URI a request for `target` is sent to `member` with: the
    /// member's scheme and path prefix; as authority the member's own for
    /// an HTTP/1-only member, else the Host the origin is asked for, if
    /// there is one (what HTTP/2 sends as `:authority`).
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

    /// Sends `request` (its URI from [`Self::request_uri`]) and waits for
    /// the response head. An HTTP/1 connection comes with the response
    /// while its body is unread.
    pub async fn send(
        &self,
        request: Request<ProxyBody>,
    ) -> Result<(Response<Incoming>, Option<Lease>), Unanswered> {
        let failed = |error| Unanswered {
            error,
            unsent: None,
        };
        let request = match &self.h1 {
            Some(h1) if !h1.speaks_h2() => match h1.send(request).await {
                Ok(answer) => return Ok(answer),
                Err(Failure::SpeaksH2(request)) => *request,
                Err(Failure::Dial(e, request)) => {
                    return Err(Unanswered {
                        error: self.dial_failed(&*e),
                        unsent: Some(request),
                    })
                }
                Err(Failure::Http(e)) => return Err(failed(exchange_failed(&e))),
            },
            _ => request,
        };
        match self.http.request(request).await {
            Ok(response) => Ok((response, None)),
            Err(e) if e.is_connect() => Err(failed(self.dial_failed(&e))),
            Err(e) => Err(failed(exchange_failed(&e))),
        }
    }

    /// Sorts why a connection could not be made: the TLS handshake, the
    /// connect timeout (an `io::Error` of kind `TimedOut` in the chain,
    /// told by its kind, not its text), or the connection.
    fn dial_failed(&self, error: &(dyn std::error::Error + 'static)) -> OriginError {
        if let Some(tls) = crate::tls::handshake_failure(error, &self.server_name) {
            return OriginError::Tls(tls);
        }
        let mut cause = Some(error);
        while let Some(e) = cause {
            if e.downcast_ref::<std::io::Error>()
                .is_some_and(|io| io.kind() == std::io::ErrorKind::TimedOut)
            {
                return OriginError::Timeout;
            }
            cause = e.source();
        }
        OriginError::Connect(error_chain(error))
    }
}

/// Why an exchange on an open connection failed: the request body (to
/// hyper a user error caused by the body's own), or the member.
fn exchange_failed(error: &(dyn std::error::Error + 'static)) -> OriginError {
    let mut cause = Some(error);
    while let Some(e) = cause {
        let body_failed = |h: &hyper::Error| h.is_user() && std::error::Error::source(h).is_some();
        if e.downcast_ref::<hyper::Error>().is_some_and(body_failed) {
            return OriginError::RequestBody(error_chain(error));
        }
        cause = e.source();
    }
    OriginError::Invalid(error_chain(error))
}

/// Idle connections kept per member and Host (HTTP/2).
const POOL_MAX_IDLE: usize = 256;

/// Dials one member (TCP, with the connect timeout), whatever the URI.
#[derive(Clone)]
pub(super) struct Dial {
    tcp: HttpConnector,
    member: Uri,
    /// Counts the connections open.
    stats: Arc<MemberStats>,
}

pub(super) type Tcp = <HttpConnector as Service<Uri>>::Response;
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
    if config.protocol == Protocol::H2c {
        stats.speaks_h2.store(true, Ordering::Relaxed);
    }
    let dial = Dial {
        tcp,
        member: member.uri_for("/"),
        stats: stats.clone(),
    };
    let name = config
        .tls
        .as_ref()
        .and_then(|t| t.server_name.clone())
        .unwrap_or_else(|| member.host().to_string());
    // Checked by `BackendConfig::validate` (or a URL's host).
    let server_name = ServerName::try_from(name.clone())
        .map_err(|e| FieldError::new("tls.server_name", e.to_string()))?;
    let builder = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(tls.clone())
        .https_or_http()
        .with_server_name_resolver(FixedServerNameResolver::new(server_name));
    let https = match config.protocol {
        // ALPN offers h2 and http/1.1; the pool speaks what was agreed.
        Protocol::Auto => builder.enable_all_versions().wrap_connector(dial),
        Protocol::Http1 | Protocol::H2c => builder.enable_http1().wrap_connector(dial),
    };
    let idle_timeout = Duration::from_millis(config.keepalive_idle_ms);
    let h1 = (config.protocol != Protocol::H2c).then(|| {
        Arc::new(H1Pool::new(
            https.clone(),
            member.uri_for("/"),
            idle_timeout,
            stats.clone(),
        ))
    });
    let mut client = Client::builder(TokioExecutor::new());
    client
        .pool_idle_timeout(idle_timeout)
        .pool_max_idle_per_host(POOL_MAX_IDLE);
    if config.protocol == Protocol::H2c {
        // RFC 9113 section 3.3: HTTP/2 with prior knowledge.
        client.http2_only(true);
    }
    Ok(MemberClient {
        http: client.build(https),
        h1,
        may_speak_h2: config.protocol == Protocol::H2c
            || (config.protocol == Protocol::Auto && member.is_https()),
        server_name: name,
    })
}
