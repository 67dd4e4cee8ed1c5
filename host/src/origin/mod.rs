//! Backends: where a tenant's requests go on a miss, over pooled HTTP/1.1
//! connections (plain, or TLS for an https URL) with connect and response
//! timeouts.
//!
//! An engine: it speaks HTTP and reports its own [`OriginError`]s; what a
//! policy is told of them is decided above.

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

/// One named backend of a tenant, with its own connection pool.
pub struct Backend {
    pub name: String,
    pub url: BackendUrl,
    /// Host header to send instead of the client's.
    pub host_header: Option<HeaderValue>,
    /// Time allowed for the response head, and between body chunks.
    pub response_timeout: Duration,
    /// The name an https backend's certificate is checked against.
    server_name: String,
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
        let server_name = tls
            .and_then(|t| t.server_name.clone())
            .unwrap_or_else(|| config.url.host().to_string());
        let client_config = crate::tls::client_config(tls, base_dir)?;
        let resolver = FixedServerNameResolver::new(
            rustls_pki_types::ServerName::try_from(server_name.clone())
                .map_err(|e| FieldError::new("url", format!("{server_name:?}: {e}")))?,
        );
        let https = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(client_config)
            .https_or_http()
            .with_server_name_resolver(resolver)
            .enable_http1()
            .wrap_connector(connector);
        let client = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(60))
            .pool_max_idle_per_host(256)
            .build(https);
        Ok(Backend {
            name: name.to_string(),
            url: config.url.clone(),
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

    /// Sends a request and waits for the response head.
    pub async fn send(
        &self,
        request: Request<ProxyBody>,
    ) -> Result<Response<Incoming>, OriginError> {
        match tokio::time::timeout(self.response_timeout, self.client.request(request)).await {
            Err(_) => Err(OriginError::Timeout),
            Ok(Ok(response)) => Ok(response),
            Ok(Err(e)) => Err(classify(&e, &self.server_name)),
        }
    }

    /// One complete exchange (a guest's `fetch`): the request's URI is the
    /// path and query on this backend; the body is read whole, up to
    /// [`SUBREQUEST_MAX_BODY`].
    pub async fn fetch_complete(
        &self,
        request: Request<Bytes>,
    ) -> Result<Response<Bytes>, OriginError> {
        let (mut parts, body) = request.into_parts();
        let target = parts
            .uri
            .path_and_query()
            .map_or("/", |pq| pq.as_str())
            .to_string();
        parts.uri = self.url.uri_for(&target);
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
