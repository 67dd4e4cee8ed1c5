//! Backends: where a tenant's requests go on a miss, over pooled HTTP/1.1
//! connections (plain, or TLS for an https URL) with connect and response
//! timeouts.
//!
//! An engine: it speaks HTTP and reports its own [`OriginError`]s; what a
//! policy is told of them is decided above.

mod balance;

use std::path::Path;
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderValue, Request, Response};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_rustls::{FixedServerNameResolver, HttpsConnector};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;

use crate::config::{BackendConfig, BackendUrl, FieldError};
use crate::http::{error_chain, ProxyBody};
use balance::RoundRobin;

/// Largest body a guest `fetch` may read.
pub const SUBREQUEST_MAX_BODY: usize = 8 * 1024 * 1024;

/// Why a backend gave no (complete) response.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OriginError {
    /// The connection could not be made.
    #[error("connection failed: {0}")]
    Connect(String),
    /// Connecting, the response head or a body chunk took longer than the
    /// backend's timeout.
    #[error("timed out")]
    Timeout,
    /// The TLS handshake failed: what about the certificate or the origin.
    #[error("tls: {0}")]
    Tls(String),
    /// The backend answered something that is not valid HTTP, or broke off.
    #[error("invalid response: {0}")]
    Invalid(String),
    /// A complete body was asked for and this one is larger.
    #[error("body larger than the {0} bytes allowed")]
    TooLarge(usize),
}

/// One named backend of a tenant: its members (one, or a pool) and its
/// own connection pool, which keeps connections per member.
pub struct Backend {
    pub name: String,
    members: Vec<BackendUrl>,
    balancer: RoundRobin,
    /// Host header to send instead of the client's.
    pub host_header: Option<HeaderValue>,
    /// Time allowed for the response head, and between body chunks.
    pub response_timeout: Duration,
    /// The name an https backend's certificate is checked against, when
    /// set; otherwise each member's host.
    server_name: Option<String>,
    client: Client<HttpsConnector<HttpConnector>, ProxyBody>,
}

impl Backend {
    /// A backend from its (validated) config; relative TLS file paths are
    /// resolved against `base_dir`. The error names the field under the
    /// backend (`tls.ca`, ...).
    pub fn new(name: &str, config: &BackendConfig, base_dir: &Path) -> Result<Backend, FieldError> {
        let mut connector = HttpConnector::new();
        connector.set_connect_timeout(Some(Duration::from_millis(config.connect_timeout_ms)));
        connector.set_nodelay(true);
        connector.enforce_http(false);
        let tls = config.tls.as_ref();
        let server_name = tls.and_then(|t| t.server_name.clone());
        let builder = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(crate::tls::client_config(tls, base_dir)?)
            .https_or_http();
        let builder = match &server_name {
            // Checked by `TenantConfig::validate`.
            Some(name) => match rustls_pki_types::ServerName::try_from(name.clone()) {
                Ok(name) => builder.with_server_name_resolver(FixedServerNameResolver::new(name)),
                Err(e) => return Err(FieldError::new("tls.server_name", e.to_string())),
            },
            None => builder,
        };
        let https = builder.enable_http1().wrap_connector(connector);
        let client = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(60))
            .pool_max_idle_per_host(256)
            .build(https);
        let members = config.members();
        let weights: Vec<u32> = members.iter().map(|m| m.weight).collect();
        Ok(Backend {
            name: name.to_string(),
            members: members.into_iter().map(|m| m.url).collect(),
            balancer: RoundRobin::new(&weights),
            // Checked by `TenantConfig::validate`.
            host_header: config
                .host_header
                .as_deref()
                .and_then(|h| HeaderValue::from_str(h).ok()),
            response_timeout: Duration::from_millis(config.response_timeout_ms),
            server_name,
            client,
        })
    }

    /// Sends a request (its URI: the path and query on the backend) to a
    /// member and waits for the response head. A member that cannot be
    /// connected to (nothing was sent) is skipped for the next one, for
    /// any method, when the request has no body to send again.
    pub async fn send(
        &self,
        request: Request<ProxyBody>,
    ) -> Result<Response<Incoming>, OriginError> {
        let (mut parts, body) = request.into_parts();
        let target = parts
            .uri
            .path_and_query()
            .map_or("/", |pq| pq.as_str())
            .to_string();
        let replayable = http_body::Body::is_end_stream(&body);
        let mut body = Some(body);
        let order = self.balancer.order();
        let mut result = Err(OriginError::Connect("no member".into()));
        for (attempt, &i) in order.iter().enumerate() {
            let member = &self.members[i];
            let mut request = Request::new(body.take().unwrap_or_else(crate::http::empty));
            *request.method_mut() = parts.method.clone();
            *request.uri_mut() = member.uri_for(&target);
            let next = attempt + 1 < order.len() && replayable;
            // Copied only while another attempt may need them.
            *request.headers_mut() = if next {
                parts.headers.clone()
            } else {
                std::mem::take(&mut parts.headers)
            };
            result = self.send_to(member, request).await;
            match &result {
                Err(e @ (OriginError::Connect(_) | OriginError::Tls(_))) if next => {
                    tracing::debug!(backend = &*self.name, member = %member, "trying the next member: {e}");
                }
                _ => break,
            }
        }
        result
    }

    async fn send_to(
        &self,
        member: &BackendUrl,
        request: Request<ProxyBody>,
    ) -> Result<Response<Incoming>, OriginError> {
        match tokio::time::timeout(self.response_timeout, self.client.request(request)).await {
            Err(_) => Err(OriginError::Timeout),
            Ok(Ok(response)) => Ok(response),
            Ok(Err(e)) => {
                let name = self.server_name.as_deref().unwrap_or(member.host());
                Err(classify(&e, name))
            }
        }
    }

    /// One complete exchange (a guest's `fetch`): the request's URI is the
    /// path and query on this backend; the body is read whole, up to
    /// [`SUBREQUEST_MAX_BODY`].
    pub async fn fetch_complete(
        &self,
        request: Request<Bytes>,
    ) -> Result<Response<Bytes>, OriginError> {
        // `send` keeps only the URI's path and query.
        let (mut parts, body) = request.into_parts();
        if let Some(host) = &self.host_header {
            parts.headers.insert(http::header::HOST, host.clone());
        }
        let body = Full::new(body)
            .map_err(|never| match never {})
            .boxed_unsync();
        let response = self.send(Request::from_parts(parts, body)).await?;
        let (parts, mut body) = response.into_parts();
        let mut collected = Vec::new();
        loop {
            let frame = match tokio::time::timeout(self.response_timeout, body.frame()).await {
                Err(_) => return Err(OriginError::Timeout),
                Ok(None) => break,
                Ok(Some(Err(e))) => return Err(OriginError::Invalid(error_chain(&e))),
                Ok(Some(Ok(frame))) => frame,
            };
            if let Ok(data) = frame.into_data() {
                if collected.len() + data.len() > SUBREQUEST_MAX_BODY {
                    return Err(OriginError::TooLarge(SUBREQUEST_MAX_BODY));
                }
                collected.extend_from_slice(&data);
            }
        }
        Ok(Response::from_parts(parts, Bytes::from(collected)))
    }
}

/// Sorts a client error into what went wrong.
fn classify(error: &hyper_util::client::legacy::Error, server_name: &str) -> OriginError {
    if let Some(tls) = crate::tls::handshake_failure(error, server_name) {
        return OriginError::Tls(tls);
    }
    let text = error_chain(error);
    if error.is_connect() {
        if text.contains("timed out") {
            OriginError::Timeout
        } else {
            OriginError::Connect(text)
        }
    } else {
        OriginError::Invalid(text)
    }
}
