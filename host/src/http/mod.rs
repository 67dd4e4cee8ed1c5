//! The HTTP vocabulary every layer shares: the request and response heads
//! the host parses once, the body type between client, node and origin, and
//! the header rules of an intermediary ([`headers`]).
//!
//! A leaf: it knows nothing of tenants, policies or the cache.

mod client_body;
mod connection;
pub mod headers;
pub mod hex;
pub mod range;
pub mod request_id;
pub mod trace_context;

pub use client_body::{watched, BodyFailure, BodyLimits, BodyWatch};
pub use connection::{CertificateOwner, Connection, TlsSession};
pub use request_id::RequestId;
pub use trace_context::TraceContext;

use std::net::IpAddr;

use bytes::Bytes;
use http::{HeaderMap, Method, Uri};
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Empty, Full};

/// Any error a body or a connection can end with.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// The body type used between client, node and origin.
pub type ProxyBody = UnsyncBoxBody<Bytes, BoxError>;

/// A body of these bytes.
pub fn full(bytes: impl Into<Bytes>) -> ProxyBody {
    Full::new(bytes.into())
        .map_err(|never| match never {})
        .boxed_unsync()
}

/// An empty body.
pub fn empty() -> ProxyBody {
    Empty::new().map_err(|never| match never {}).boxed_unsync()
}

/// Any body as a [`ProxyBody`].
pub fn boxed<B>(body: B) -> ProxyBody
where
    B: http_body::Body<Data = Bytes> + Send + 'static,
    B::Error: std::error::Error + Send + Sync + 'static,
{
    body.map_err(|e| Box::new(e) as BoxError).boxed_unsync()
}

/// The `http` or `https` scheme a client used to reach the node.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scheme {
    Http,
    Https,
}

impl Scheme {
    pub fn as_str(self) -> &'static str {
        match self {
            Scheme::Http => "http",
            Scheme::Https => "https",
        }
    }
}

/// What the host knows about a client request: its head, parsed once and
/// shared (behind an `Arc`) with the policy, the cache and the origin path.
#[derive(Debug)]
pub struct RequestInfo {
    pub method: Method,
    pub uri: Uri,
    pub headers: HeaderMap,
    pub scheme: Scheme,
    /// Lowercased authority (Host header or `:authority`), port kept.
    pub authority: String,
    pub client_ip: IpAddr,
    /// Sent to origins as `X-Request-Id` and logged.
    pub request_id: RequestId,
    /// Its W3C trace: the origin is told the node's span as its parent.
    pub trace: TraceContext,
    /// Forwarded by another node of the POP to this one, the key's owner:
    /// served here, never forwarded again.
    pub from_pop_member: bool,
    /// What the tenant's signed-URL check found (made before the policy
    /// runs; the token's parameters are already gone from `uri`).
    pub signature: SignatureVerdict,
}

/// The verdict of a tenant's signed-URL check on a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SignatureVerdict {
    /// The tenant checks no signature on this path.
    #[default]
    NotChecked,
    Valid,
    /// A checked path without a token: 403.
    Missing,
    /// A malformed, wrongly signed or not-yet-valid token: 403.
    Invalid,
    /// A correctly signed token past its expiry: 410.
    Expired,
}

impl SignatureVerdict {
    /// A short stable name for metrics and logs.
    pub fn as_str(self) -> &'static str {
        match self {
            SignatureVerdict::NotChecked => "not_checked",
            SignatureVerdict::Valid => "valid",
            SignatureVerdict::Missing => "missing",
            SignatureVerdict::Invalid => "invalid",
            SignatureVerdict::Expired => "expired",
        }
    }

    /// The verdict `as_str` names.
    pub fn parse(name: &str) -> Option<SignatureVerdict> {
        [
            SignatureVerdict::NotChecked,
            SignatureVerdict::Valid,
            SignatureVerdict::Missing,
            SignatureVerdict::Invalid,
            SignatureVerdict::Expired,
        ]
        .into_iter()
        .find(|v| v.as_str() == name)
    }
}

impl RequestInfo {
    /// A head made by the node itself (smoke calls, URL purges): no fields,
    /// from the loopback address.
    pub fn internal(method: Method, uri: Uri, authority: &str) -> RequestInfo {
        RequestInfo {
            method,
            uri,
            headers: HeaderMap::new(),
            scheme: Scheme::Http,
            authority: authority.to_ascii_lowercase(),
            client_ip: IpAddr::from([127, 0, 0, 1]),
            request_id: RequestId::generate(),
            trace: TraceContext::start(),
            from_pop_member: false,
            signature: SignatureVerdict::NotChecked,
        }
    }

    /// Path and query of the request target (`/` if the target has none).
    pub fn path_and_query(&self) -> &str {
        self.uri
            .path_and_query()
            .map(|pq| pq.as_str())
            .unwrap_or("/")
    }

    /// A copy in storage of its own: a parsed head shares its buffer with
    /// the connection's read buffer, so keeping the head itself would keep
    /// kilobytes alive per copy (see [`headers::owned_copy`]).
    pub fn owned_copy(&self) -> RequestInfo {
        let uri = Uri::try_from(self.uri.to_string()).unwrap_or_else(|_| self.uri.clone());
        RequestInfo {
            method: self.method.clone(),
            uri,
            headers: headers::owned_copy(&self.headers),
            scheme: self.scheme,
            authority: self.authority.clone(),
            client_ip: self.client_ip,
            request_id: self.request_id.clone(),
            trace: self.trace.clone(),
            from_pop_member: self.from_pop_member,
            signature: self.signature,
        }
    }
}

/// What the host knows about a backend response head.
#[derive(Debug)]
pub struct ResponseInfo {
    pub status: u16,
    pub headers: HeaderMap,
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

/// Strategies for property tests: what a client or an origin can put on
/// the wire.
#[cfg(test)]
pub(crate) mod arbitrary {
    use proptest::prelude::*;

    /// Any field value hyper accepts from the wire: visible ASCII, space,
    /// tab and obs-text (RFC 9110 section 5.5), up to 96 bytes.
    pub fn field_value() -> impl Strategy<Value = http::HeaderValue> {
        let byte = prop_oneof![8 => 0x20u8..0x7f, 1 => 0x80u8..=0xff, 1 => Just(b'\t')];
        prop::collection::vec(byte, 0..96).prop_filter_map("a valid field value", |bytes| {
            http::HeaderValue::from_bytes(&bytes).ok()
        })
    }

    /// Field values more likely to reach the parsers' corners: digits,
    /// separators, quotes and the words the parsers look for.
    pub fn structured_value() -> impl Strategy<Value = http::HeaderValue> {
        let token = prop_oneof![
            Just("max-age".to_string()),
            Just("s-maxage".to_string()),
            Just("no-cache".to_string()),
            Just("bytes".to_string()),
            Just("W/".to_string()),
            Just("*".to_string()),
            "[0-9]{1,25}",
            "[ ,;=\"\\\\-]{1,3}",
            "[a-zA-Z]{1,8}",
        ];
        prop::collection::vec(token, 0..12).prop_filter_map("a valid field value", |parts| {
            http::HeaderValue::from_str(&parts.concat()).ok()
        })
    }

    /// One of the two.
    pub fn any_value() -> impl Strategy<Value = http::HeaderValue> {
        prop_oneof![field_value(), structured_value()]
    }
}
