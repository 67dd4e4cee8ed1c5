//! The request and response heads a guest reads through WIT resources.
//!
//! Both wrap the host's own parsed heads behind an `Arc`, so handing a head
//! to a guest copies nothing; a getter copies only the field it returns.

use std::net::IpAddr;
use std::sync::Arc;

use http::{HeaderMap, Method, Uri};

/// What the host knows about a client request, shared with the guest.
#[derive(Debug)]
pub struct RequestInfo {
    pub method: Method,
    pub uri: Uri,
    pub headers: HeaderMap,
    /// `http` or `https`.
    pub scheme: &'static str,
    /// Lowercased authority (Host header or `:authority`), port kept.
    pub authority: String,
    pub client_ip: IpAddr,
}

impl RequestInfo {
    /// Path and query of the request target (`/` if the target has none).
    pub fn path_and_query(&self) -> &str {
        self.uri
            .path_and_query()
            .map(|pq| pq.as_str())
            .unwrap_or("/")
    }
}

/// The `request-head` resource.
pub struct RequestHead(pub Arc<RequestInfo>);

/// What the host knows about a backend response, shared with the guest.
#[derive(Debug)]
pub struct ResponseInfo {
    pub status: u16,
    pub headers: HeaderMap,
}

/// The `response-head` resource.
pub struct ResponseHead(pub Arc<ResponseInfo>);

/// First value of a header as UTF-8 text.
pub(crate) fn header_str(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
}

/// Every field, lowercase names and raw values.
pub(crate) fn all_headers(headers: &HeaderMap) -> Vec<(String, Vec<u8>)> {
    headers
        .iter()
        .map(|(n, v)| (n.as_str().to_owned(), v.as_bytes().to_vec()))
        .collect()
}
