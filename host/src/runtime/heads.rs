//! The request and response heads a guest reads through WIT resources.
//!
//! Both wrap the host's own parsed heads behind an `Arc`, so handing a head
//! to a guest copies nothing; a getter copies only the field it returns.

use std::sync::Arc;

use http::HeaderMap;

use crate::http::{RequestInfo, ResponseInfo};

/// The `request-head` resource.
pub struct RequestHead(pub Arc<RequestInfo>);

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
