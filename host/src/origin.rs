//! Backends: where a tenant's requests go on a miss, over pooled HTTP/1.1
//! connections with connect and response timeouts.

use std::time::Duration;

use bytes::Bytes;
use http::uri::{Authority, PathAndQuery, Scheme};
use http::{HeaderValue, Request, Response, Uri};
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;

use crate::config::BackendConfig;
use crate::runtime::FetchError;

pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// The body type used between client, node and origin.
pub type ProxyBody = UnsyncBoxBody<Bytes, BoxError>;

/// Largest body a guest `fetch` may read.
const GUEST_FETCH_MAX_BODY: usize = 8 * 1024 * 1024;

/// A backend's base URL: `http://host:port[/prefix]`.
#[derive(Debug, Clone)]
pub struct BackendUrl {
    scheme: Scheme,
    authority: Authority,
    /// Path prefix without a trailing slash ("" for none).
    prefix: String,
}

impl BackendUrl {
    pub fn parse(url: &str) -> Result<BackendUrl, String> {
        let uri: Uri = url
            .parse()
            .map_err(|e| format!("{url:?} is not a URL: {e}"))?;
        match uri.scheme_str() {
            Some("http") => {}
            Some("https") => {
                return Err(format!(
                    "{url:?}: https backends are not supported yet; use http://"
                ))
            }
            _ => return Err(format!("{url:?} must start with http://")),
        }
        let authority = uri
            .authority()
            .cloned()
            .ok_or_else(|| format!("{url:?} has no host"))?;
        if authority.as_str().contains('@') {
            return Err(format!(
                "{url:?}: credentials in backend URLs are not supported"
            ));
        }
        if uri.query().is_some() {
            return Err(format!("{url:?}: a backend URL cannot have a query"));
        }
        let prefix = uri.path().trim_end_matches('/').to_string();
        Ok(BackendUrl {
            scheme: Scheme::HTTP,
            authority,
            prefix,
        })
    }

    /// The URI of `path_and_query` on this backend.
    pub fn uri_for(&self, path_and_query: &str) -> Uri {
        let pq = if self.prefix.is_empty() {
            PathAndQuery::try_from(path_and_query)
        } else {
            PathAndQuery::try_from(format!("{}{}", self.prefix, path_and_query))
        }
        .unwrap_or_else(|_| PathAndQuery::from_static("/"));
        Uri::builder()
            .scheme(self.scheme.clone())
            .authority(self.authority.clone())
            .path_and_query(pq)
            .build()
            .expect("parts of a valid URI")
    }

    pub fn authority(&self) -> &Authority {
        &self.authority
    }
}

/// One named backend of a tenant, with its own connection pool.
pub struct Backend {
    pub name: String,
    pub url: BackendUrl,
    /// Host header to send instead of the client's.
    pub host_header: Option<HeaderValue>,
    /// Time allowed for the response head, and between body chunks.
    pub response_timeout: Duration,
    client: Client<HttpConnector, ProxyBody>,
}

impl Backend {
    pub fn new(name: &str, config: &BackendConfig) -> Result<Backend, String> {
        let url = BackendUrl::parse(&config.url)?;
        let mut connector = HttpConnector::new();
        connector.set_connect_timeout(Some(Duration::from_millis(config.connect_timeout_ms)));
        connector.set_nodelay(true);
        let client = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(60))
            .pool_max_idle_per_host(256)
            .build(connector);
        let host_header = match &config.host_header {
            Some(h) => Some(
                HeaderValue::from_str(h).map_err(|_| format!("host_header {h:?} is invalid"))?,
            ),
            None => None,
        };
        Ok(Backend {
            name: name.to_string(),
            url,
            host_header,
            response_timeout: Duration::from_millis(config.response_timeout_ms),
            client,
        })
    }

    /// Sends a request and waits for the response head.
    pub async fn send(
        &self,
        request: Request<ProxyBody>,
    ) -> Result<Response<Incoming>, FetchError> {
        match tokio::time::timeout(self.response_timeout, self.client.request(request)).await {
            Err(_) => Err(FetchError::Timeout),
            Ok(Ok(response)) => Ok(response),
            Ok(Err(e)) => Err(classify(&e)),
        }
    }

    /// A guest's `fetch`: one complete request and response.
    pub async fn fetch_complete(
        &self,
        request: crate::runtime::FetchRequestWit,
    ) -> Result<crate::runtime::FetchResponseWit, FetchError> {
        let method = http::Method::from_bytes(request.method.as_bytes()).map_err(|_| {
            FetchError::InvalidResponse(format!("invalid method {:?}", request.method))
        })?;
        let path = if request.path_with_query.starts_with('/') {
            request.path_with_query
        } else {
            format!("/{}", request.path_with_query)
        };
        let mut builder = Request::builder()
            .method(method)
            .uri(self.url.uri_for(&path));
        for (name, value) in &request.headers {
            builder = builder.header(name.as_str(), value.as_str());
        }
        if let Some(host) = &self.host_header {
            builder = builder.header(http::header::HOST, host.clone());
        }
        let body = Full::new(Bytes::from(request.body))
            .map_err(|never| match never {})
            .boxed_unsync();
        let request = builder
            .body(body)
            .map_err(|e| FetchError::InvalidResponse(format!("invalid request: {e}")))?;
        let response = self.send(request).await?;
        let (parts, mut body) = response.into_parts();
        let mut collected = Vec::new();
        loop {
            let frame = match tokio::time::timeout(self.response_timeout, body.frame()).await {
                Err(_) => return Err(FetchError::Timeout),
                Ok(None) => break,
                Ok(Some(Err(e))) => return Err(FetchError::InvalidResponse(e.to_string())),
                Ok(Some(Ok(frame))) => frame,
            };
            if let Ok(data) = frame.into_data() {
                if collected.len() + data.len() > GUEST_FETCH_MAX_BODY {
                    return Err(FetchError::InvalidResponse(format!(
                        "body larger than the {GUEST_FETCH_MAX_BODY} bytes a policy may fetch"
                    )));
                }
                collected.extend_from_slice(&data);
            }
        }
        Ok(crate::runtime::FetchResponseWit {
            status: parts.status.as_u16(),
            headers: parts
                .headers
                .iter()
                .map(|(n, v)| (n.as_str().to_owned(), v.as_bytes().to_vec()))
                .collect(),
            body: collected,
        })
    }
}

/// Maps a client error to what a policy sees.
fn classify(error: &hyper_util::client::legacy::Error) -> FetchError {
    let text = error_chain(error);
    if error.is_connect() {
        if text.contains("timed out") {
            FetchError::Timeout
        } else {
            FetchError::ConnectFailed(text)
        }
    } else {
        FetchError::InvalidResponse(text)
    }
}

/// An error and its sources on one line.
pub fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}
