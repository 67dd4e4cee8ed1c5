//! Objects cached in fixed-size slices: a Range request on a miss fetches
//! only the slices it needs (RFC 9110 section 14), each stored under its own
//! key. Every slice must carry the same validator and total length as the
//! first; a mismatch means the object changed between slices (RFC 9110
//! sections 8.8 and 13.1.5).

use std::sync::Arc;
use std::time::{Instant, SystemTime};

use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderValue};
use http::{Method, StatusCode};

use super::freshness::{Assessment, Override};
use super::store::{Selected, TenantStore};
use super::{vary_values, StoredBody, StoredResponse};
use crate::http::headers::strip_hop_by_hop;

/// One slice: its bytes and what it says of the whole object.
pub struct Slice {
    pub body: StoredBody,
    /// The whole object's length.
    pub total: u64,
    /// ETag, else Last-Modified: what must match across slices.
    pub validator: Option<HeaderValue>,
    pub headers: HeaderMap,
    pub from_cache: bool,
}

/// Why a slice cannot be had.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct SliceError(pub String);

/// The cache key of slice `n` of `key`.
fn slice_key(key: &str, n: u64) -> String {
    format!("{key}\u{0}slice:{n}")
}

/// The mark of a key whose origin answered a slice request without a range.
pub fn not_sliceable_key(key: &str) -> String {
    format!("{key}\u{0}no-slices")
}

/// Whether the origin of `key` is known not to answer ranges.
pub fn known_unsliceable(store: &TenantStore, key: &str) -> bool {
    store.is_uncacheable(&not_sliceable_key(key))
}

/// `a-b/total` from a Content-Range (RFC 9110 section 14.4).
fn content_range(headers: &HeaderMap) -> Option<(u64, u64, u64)> {
    let v = headers.get(header::CONTENT_RANGE)?.to_str().ok()?;
    let v = v.trim().strip_prefix("bytes ")?;
    let (range, total) = v.split_once('/')?;
    let (a, b) = range.split_once('-')?;
    Some((a.parse().ok()?, b.parse().ok()?, total.parse().ok()?))
}

fn validator(headers: &HeaderMap) -> Option<HeaderValue> {
    headers
        .get(header::ETAG)
        .or_else(|| headers.get(header::LAST_MODIFIED))
        .cloned()
}

/// The byte range slice `n` of `size` bytes covers, inclusive.
pub fn bounds(n: u64, size: u64) -> (u64, u64) {
    let start = n.saturating_mul(size);
    (start, start.saturating_add(size.saturating_sub(1)))
}

/// Slice `n` of `key` if the cache holds it fresh and whole.
pub fn cached(
    store: &TenantStore,
    key: &str,
    n: u64,
    request: &HeaderMap,
) -> Result<Option<Slice>, SliceError> {
    let Selected::Found(stored) = store.select(&slice_key(key, n), request) else {
        return Ok(None);
    };
    if !stored.is_fresh(Instant::now()) || !stored.body.is_complete() {
        return Ok(None);
    }
    let headers = stored.headers.to_map();
    let (_, _, total) = content_range(&headers).ok_or_else(|| SliceError("bad slice".into()))?;
    Ok(Some(Slice {
        body: stored.body.clone(),
        total,
        validator: validator(&headers),
        headers,
        from_cache: true,
    }))
}

/// An origin's answer to the request for slice `n`.
pub struct FetchedSlice {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Bytes,
    pub request_time: SystemTime,
}

/// Checks and stores slice `n` as the origin sent it. `Ok(None)`: the
/// origin answered without a range, so it does not do ranges (remembered
/// for a while, so later Range requests go the ordinary way at once).
pub fn store_fetched(
    store: &TenantStore,
    key: &str,
    (n, size): (u64, u64),
    request: &HeaderMap,
    ttl: Option<u32>,
    fetched: FetchedSlice,
) -> Result<Option<Slice>, SliceError> {
    if fetched.status != StatusCode::PARTIAL_CONTENT {
        store.mark_uncacheable(&not_sliceable_key(key));
        return Ok(None);
    }
    let (a, b, total) = content_range(&fetched.headers)
        .ok_or_else(|| SliceError("a 206 without Content-Range".into()))?;
    let (start, _) = bounds(n, size);
    if a != start || b < a {
        return Err(SliceError(format!(
            "asked for slice at {start}, got bytes {a}-{b}"
        )));
    }
    let mut headers = fetched.headers;
    strip_hop_by_hop(&mut headers);
    let freshness = Assessment {
        method: &Method::GET,
        request_headers: request,
        // A slice is stored under the rules of the whole response.
        status: StatusCode::OK,
        response_headers: &headers,
        request_time: fetched.request_time,
        response_time: SystemTime::now(),
        policy: ttl.map_or(Override::None, Override::Ttl),
    }
    .assess();
    let body = StoredBody::complete(fetched.body);
    if let Ok(freshness) = freshness {
        let vary = vary_values(&headers, request);
        let stored = StoredResponse::new(
            StatusCode::PARTIAL_CONTENT,
            &headers,
            body.clone(),
            freshness,
            vary,
            Vec::new(),
        );
        store.insert(&slice_key(key, n), Arc::new(stored));
    }
    Ok(Some(Slice {
        body,
        total,
        validator: validator(&headers),
        headers,
        from_cache: false,
    }))
}

/// Drops slices `0..=last` of `key`: the object changed while it was
/// fetched in slices, so none of them can be trusted.
pub fn drop_slices(store: &TenantStore, key: &str, last: u64) {
    for n in 0..=last {
        store.remove(&slice_key(key, n));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slice_bounds_saturate_at_the_end_of_the_u64_range() {
        assert_eq!(bounds(0, 1024), (0, 1023));
        assert_eq!(bounds(2, 1024), (2048, 3071));
        assert_eq!(bounds(u64::MAX / 1024, 1024).1, u64::MAX);
        assert_eq!(bounds(u64::MAX, 1024), (u64::MAX, u64::MAX));
    }

    #[test]
    fn content_ranges_parse_or_are_refused() {
        let mut h = HeaderMap::new();
        h.insert(
            header::CONTENT_RANGE,
            HeaderValue::from_static("bytes 0-9/100"),
        );
        assert_eq!(content_range(&h), Some((0, 9, 100)));
        h.insert(
            header::CONTENT_RANGE,
            HeaderValue::from_static("bytes */100"),
        );
        assert_eq!(content_range(&h), None);
    }
}
