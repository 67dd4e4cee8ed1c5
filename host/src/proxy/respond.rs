//! Building the responses the client gets.

use std::time::Instant;

use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderValue};
use http::{Method, Response, StatusCode};
use http_body_util::BodyExt;

use futures::StreamExt;
use http_body_util::StreamBody;
use hyper::body::Frame;

use super::{conditional, range};
use crate::cache::{CacheStatus, Detail, Fwd, StoredBody, StoredResponse, CACHE_STATUS};
use crate::http::headers::{strip_cache_targeted, strip_hop_by_hop, via_value};
use crate::http::{empty, full, ProxyBody, RequestInfo, SignatureVerdict};
use crate::runtime::{FetchError, SyntheticResponse};

/// A short text response made by the node itself.
pub fn plain(status: StatusCode, body: impl Into<Bytes>) -> Response<ProxyBody> {
    let mut r = Response::new(full(body));
    *r.status_mut() = status;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    r.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    r
}

/// 413 for a request body over the tenant's `max_body_mb` (RFC 9110
/// section 15.5.14); the connection closes, as the rest of the body is not
/// read.
pub fn body_too_large() -> Response<ProxyBody> {
    closing(plain(
        StatusCode::PAYLOAD_TOO_LARGE,
        "request body too large\n",
    ))
}

/// 408 for a request body that paused longer than
/// `server.body_read_timeout_ms` (RFC 9110 section 15.5.9); the connection
/// closes.
pub fn body_stalled() -> Response<ProxyBody> {
    closing(plain(
        StatusCode::REQUEST_TIMEOUT,
        "request body not received in time\n",
    ))
}

/// `response` with `Connection: close`: what the client still sends of its
/// body is not read.
fn closing(mut response: Response<ProxyBody>) -> Response<ProxyBody> {
    response
        .headers_mut()
        .insert(header::CONNECTION, HeaderValue::from_static("close"));
    response
}

/// A response a policy built.
pub fn synthetic(s: SyntheticResponse) -> Response<ProxyBody> {
    let Ok(status) = StatusCode::from_u16(s.status)
        .map_err(|_| ())
        .and_then(|st| {
            if (200..=599).contains(&st.as_u16()) {
                Ok(st)
            } else {
                Err(())
            }
        })
    else {
        return plain(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("policy answered an invalid status {}\n", s.status),
        );
    };
    let mut r = Response::new(full(s.body));
    *r.status_mut() = status;
    for (name, value) in s.headers {
        match (
            header::HeaderName::from_bytes(name.as_bytes()),
            HeaderValue::from_str(&value),
        ) {
            (Ok(n), Ok(v)) => {
                r.headers_mut().append(n, v);
            }
            _ => tracing::debug!("policy set an invalid header {name:?}; dropped"),
        }
    }
    strip_hop_by_hop(r.headers_mut());
    r.headers_mut().remove(header::CONTENT_LENGTH);
    r
}

/// Serves a stored response: `Age` (RFC 9111 section 5.1), `Cache-Status`,
/// and 304 for a matching conditional request (RFC 9110 section 13.2).
pub fn stored(
    info: &RequestInfo,
    stored: &StoredResponse,
    status: CacheStatus,
) -> Response<ProxyBody> {
    answer(info, stored, None, status)
}

/// A response a fill just stored, its head the backend's as fetched (the
/// fields the stored copy holds, without copying them back out of it).
pub fn fetched(
    info: &RequestInfo,
    stored: &StoredResponse,
    head: HeaderMap,
    status: CacheStatus,
) -> Response<ProxyBody> {
    answer(info, stored, Some(head), status)
}

/// A stored response as this request gets it; `head`: its fields, if
/// they are at hand, else copied from the store.
fn answer(
    info: &RequestInfo,
    stored: &StoredResponse,
    head: Option<HeaderMap>,
    status: CacheStatus,
) -> Response<ProxyBody> {
    let now = Instant::now();
    let cacheable_method = info.method == Method::GET || info.method == Method::HEAD;
    let mut headers;
    let (code, body) = if cacheable_method && conditional::not_modified(&info.headers, stored) {
        headers = conditional::not_modified_headers(&stored.headers);
        (StatusCode::NOT_MODIFIED, empty())
    } else {
        // Not a clone: see `StoredHead::to_map`.
        headers = head.unwrap_or_else(|| stored.headers.to_map());
        if info.method == Method::GET && stored.body.is_complete() {
            let len = stored.body.len();
            match range::evaluate(&info.headers, stored, len) {
                range::Ranges::Whole => (stored.status, whole(&stored.body)),
                range::Ranges::Unsatisfiable => {
                    headers.remove(header::CONTENT_LENGTH);
                    headers.insert(header::CONTENT_RANGE, value(&format!("bytes */{len}")));
                    (StatusCode::RANGE_NOT_SATISFIABLE, empty())
                }
                range::Ranges::Parts(parts) => (
                    StatusCode::PARTIAL_CONTENT,
                    partial(stored, &mut headers, &parts, len),
                ),
            }
        } else {
            (stored.status, whole(&stored.body))
        }
    };
    headers.insert(header::AGE, HeaderValue::from(stored.age(now).as_secs()));
    // Ranges are served from complete stored responses (RFC 9110 14.3).
    headers.insert(header::ACCEPT_RANGES, HeaderValue::from_static("bytes"));
    if stored.targeted {
        strip_cache_targeted(&mut headers);
    }
    let outcome = status.outcome();
    add_via_and_status(&mut headers, status);
    let mut r = Response::new(body);
    r.extensions_mut().insert(outcome);
    *r.status_mut() = code;
    *r.headers_mut() = headers;
    r
}

/// Appends the `key` parameter (RFC 9211 section 2.7) to Cache-Status.
pub(super) fn add_cache_status_key(headers: &mut HeaderMap, key: String) {
    let Some(current) = headers.get(CACHE_STATUS).and_then(|v| v.to_str().ok()) else {
        return;
    };
    let param = crate::cache::status_key_param(&key);
    if let Ok(v) = HeaderValue::from_str(&format!("{current}{param}")) {
        headers.insert(CACHE_STATUS, v);
    }
}

pub(super) fn value(text: &str) -> HeaderValue {
    HeaderValue::from_str(text).expect("ASCII header value")
}

/// The whole stored body: its chunks, following the fill if it is running.
fn whole(body: &StoredBody) -> ProxyBody {
    if let Some(bytes) = body.whole() {
        return full(bytes.clone());
    }
    match body {
        StoredBody::Fill(fill) if !fill.is_complete() => {
            StreamBody::new(fill.reader().map(|r| r.map(Frame::data))).boxed_unsync()
        }
        _ => chunks(body.slice(0, u64::MAX)),
    }
}

fn chunks(parts: Vec<Bytes>) -> ProxyBody {
    match parts.len() {
        0 => empty(),
        1 => full(parts.into_iter().next().unwrap_or_default()),
        _ => StreamBody::new(futures::stream::iter(
            parts.into_iter().map(|b| Ok(Frame::data(b))),
        ))
        .boxed_unsync(),
    }
}

/// A 206 body: one range with Content-Range, or several as
/// multipart/byteranges (RFC 9110 section 14.6).
fn partial(
    stored: &StoredResponse,
    headers: &mut HeaderMap,
    parts: &[(u64, u64)],
    len: u64,
) -> ProxyBody {
    headers.remove(header::CONTENT_LENGTH);
    if let [(start, end)] = parts {
        headers.insert(
            header::CONTENT_RANGE,
            value(&format!("bytes {start}-{}/{len}", end - 1)),
        );
        return chunks(stored.body.slice(*start, *end));
    }
    let boundary = format!(
        "outpost-{:016x}",
        std::ptr::addr_of!(*stored) as usize as u64 ^ len
    );
    let content_type = headers.remove(header::CONTENT_TYPE);
    headers.insert(
        header::CONTENT_TYPE,
        value(&format!("multipart/byteranges; boundary={boundary}")),
    );
    let mut out: Vec<Bytes> = Vec::new();
    for (start, end) in parts {
        let mut head = format!("\r\n--{boundary}\r\n");
        if let Some(ct) = content_type.as_ref().and_then(|v| v.to_str().ok()) {
            head.push_str(&format!("content-type: {ct}\r\n"));
        }
        head.push_str(&format!(
            "content-range: bytes {start}-{}/{len}\r\n\r\n",
            end - 1
        ));
        out.push(Bytes::from(head));
        out.extend(stored.body.slice(*start, *end));
    }
    out.push(Bytes::from(format!("\r\n--{boundary}--\r\n")));
    chunks(out)
}

/// A response streamed from a backend.
pub fn streamed(
    status: StatusCode,
    mut headers: HeaderMap,
    body: ProxyBody,
    cache: CacheStatus,
) -> Response<ProxyBody> {
    strip_hop_by_hop(&mut headers);
    let outcome = cache.outcome();
    finish(&mut headers, cache);
    let mut r = Response::new(body);
    r.extensions_mut().insert(outcome);
    *r.status_mut() = status;
    *r.headers_mut() = headers;
    r
}

/// Common to every response that came through the cache or a backend.
fn finish(headers: &mut HeaderMap, cache: CacheStatus) {
    strip_cache_targeted(headers);
    add_via_and_status(headers, cache);
}

fn add_via_and_status(headers: &mut HeaderMap, cache: CacheStatus) {
    headers.append(header::VIA, via_value(http::Version::HTTP_11));
    headers.insert(CACHE_STATUS, cache.to_header());
}

/// A backend that could not answer: 504 on timeout, else 502. `fwd` says
/// why the request had gone forward (RFC 9211 section 2.2).
pub fn origin_error(error: &FetchError, backend: &str, fwd: Fwd) -> Response<ProxyBody> {
    let (status, what) = match error {
        FetchError::Timeout => (StatusCode::GATEWAY_TIMEOUT, "timed out".to_string()),
        FetchError::ConnectFailed(_) => {
            (StatusCode::BAD_GATEWAY, "could not be reached".to_string())
        }
        FetchError::Tls(_) => (
            StatusCode::BAD_GATEWAY,
            "failed the TLS handshake".to_string(),
        ),
        // As Envoy answers "no healthy upstream": the backend is down for
        // now (RFC 9110 section 15.6.4).
        FetchError::Unavailable(_) => (
            StatusCode::SERVICE_UNAVAILABLE,
            "has no healthy member".to_string(),
        ),
        FetchError::InvalidResponse(_) => (
            StatusCode::BAD_GATEWAY,
            "sent an invalid response".to_string(),
        ),
        FetchError::UnknownBackend(name) => (
            StatusCode::BAD_GATEWAY,
            format!("is not declared (the policy asked for {name:?})"),
        ),
        FetchError::LimitExceeded => (
            StatusCode::BAD_GATEWAY,
            "was not tried: subrequest limit".to_string(),
        ),
    };
    let mut r = plain(status, format!("backend {backend:?} {what}\n"));
    let cache = CacheStatus::forwarded(fwd, None).detail(Detail::OriginError);
    r.extensions_mut().insert(cache.outcome());
    finish(r.headers_mut(), cache);
    r
}

/// The node's answer to a request whose signed-URL token failed, as
/// nginx's `secure_link` splits them: 403 for a missing or invalid token,
/// 410 for an expired one (RFC 9110 sections 15.5.4 and 15.5.11); `None`
/// for a request that may go on.
pub(super) fn signature_refused(verdict: SignatureVerdict) -> Option<Response<ProxyBody>> {
    match verdict {
        SignatureVerdict::NotChecked | SignatureVerdict::Valid => None,
        SignatureVerdict::Missing => Some(plain(
            StatusCode::FORBIDDEN,
            "this link needs a signature\n",
        )),
        SignatureVerdict::Invalid => Some(plain(StatusCode::FORBIDDEN, "invalid link signature\n")),
        SignatureVerdict::Expired => Some(plain(StatusCode::GONE, "this link has expired\n")),
    }
}
