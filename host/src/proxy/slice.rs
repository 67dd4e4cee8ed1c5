//! Range requests on a cache miss: the object is fetched and cached in
//! fixed-size slices (`Range` requests to the origin), so a client asking
//! for a few bytes of a multi-GiB file never waits for, or makes the node
//! hold, the whole object. Every slice must carry the same validator as the
//! first; a mismatch (the object changed between slices) fails the response
//! and drops the key's slices (RFC 9110 section 14.4 and 13.1.5).

use std::sync::Arc;
use std::time::{Instant, SystemTime};

use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderValue};
use http::{Method, Response, StatusCode};
use http_body_util::{BodyExt, StreamBody};
use hyper::body::Frame;

use super::forward::RouteResult;
use super::respond::{self, CacheStatus, Fwd};
use super::Exchange;
use crate::cache::{Assessment, Override, Selected, SharedBody, StoredResponse};
use crate::http::range::RangeSpec;
use crate::http::{BoxError, ProxyBody};
use crate::runtime::Lookup;

/// One cached slice: its bytes and what it says of the whole object.
struct Slice {
    body: Arc<SharedBody>,
    total: u64,
    /// ETag, else Last-Modified: what must match across slices.
    validator: Option<HeaderValue>,
    headers: HeaderMap,
    from_cache: bool,
}

#[derive(Debug, thiserror::Error)]
#[error("{0}")]
struct SliceError(String);

/// The cache key of slice `n` of `key`.
fn slice_key(key: &str, n: u64) -> String {
    format!("{key}\u{0}slice:{n}")
}

/// Marks a key whose origin answered a slice request without a range.
pub(super) fn not_sliceable_key(key: &str) -> String {
    format!("{key}\u{0}no-slices")
}

/// `a-b/total` from a Content-Range.
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

/// A single `bytes=a-b` or `bytes=a-` range (no suffix, no list), the
/// form slicing serves; (start, inclusive end).
pub(super) fn single_range(headers: &HeaderMap) -> Option<(u64, Option<u64>)> {
    if headers.contains_key(header::IF_RANGE) {
        return None;
    }
    let value = headers.get(header::RANGE)?.to_str().ok()?;
    match crate::http::range::parse_specs(value)?.as_slice() {
        [RangeSpec::FromTo(start, end)] => Some((*start, Some(*end))),
        [RangeSpec::From(start)] => Some((*start, None)),
        _ => None,
    }
}

/// What the first slice fetch told us.
pub(super) enum SliceStart {
    /// Serve this response.
    Done(Response<ProxyBody>),
    /// The origin does not do ranges: go the ordinary way.
    NotSliceable(Exchange),
}

impl Exchange {
    /// Answers `bytes=start-end` (end inclusive, `None` for open-ended) from
    /// slices of `size` bytes.
    pub(super) async fn sliced(
        mut self,
        lookup: Lookup,
        start: u64,
        end: Option<u64>,
        size: u64,
    ) -> SliceStart {
        let first = start / size;
        let slice = match self.slice(&lookup, first, size).await {
            Ok(Some(s)) => s,
            Ok(None) => return SliceStart::NotSliceable(self),
            Err(e) => {
                return SliceStart::Done(respond::plain(StatusCode::BAD_GATEWAY, format!("{e}\n")))
            }
        };
        let total = slice.total;
        if start >= total {
            let mut r = respond::plain(StatusCode::RANGE_NOT_SATISFIABLE, "");
            r.headers_mut().insert(
                header::CONTENT_RANGE,
                respond::value(&format!("bytes */{total}")),
            );
            return SliceStart::Done(r);
        }
        let end = end.map_or(total, |e| e.saturating_add(1).min(total));
        let last = (end - 1) / size;
        let mut headers = slice.headers.clone();
        headers.remove(header::CONTENT_LENGTH);
        headers.insert(
            header::CONTENT_RANGE,
            respond::value(&format!("bytes {start}-{}/{total}", end - 1)),
        );
        headers.insert(header::CONTENT_LENGTH, HeaderValue::from(end - start));
        let status = if slice.from_cache {
            CacheStatus::forwarded(Fwd::UriMiss, None, None, Some("slice-hit"))
        } else {
            CacheStatus::forwarded(
                Fwd::UriMiss,
                Some(StatusCode::PARTIAL_CONTENT),
                None,
                Some("slice"),
            )
        };

        // The first slice is in hand; later ones are fetched as the client
        // reads, each checked against the first one's validator.
        let expected = slice.validator.clone();
        let first_part = slice
            .body
            .slice(start - first * size, (end - first * size).min(size));
        let state = (self, lookup, first + 1);
        let rest = futures::stream::unfold(Some(state), move |state| {
            let expected = expected.clone();
            async move {
                let (mut exchange, lookup, n) = state?;
                if n > last {
                    return None;
                }
                let result = match exchange.slice(&lookup, n, size).await {
                    Ok(Some(s)) if s.validator == expected && s.total == total => {
                        let from = n * size;
                        let bytes: Vec<Bytes> = s.body.slice(0, (end - from).min(size));
                        Ok(bytes.concat().into())
                    }
                    Ok(_) => {
                        // The object changed between slices: none of them
                        // can be trusted.
                        for k in 0..=last {
                            exchange.tenant.store.remove(&slice_key(&lookup.key, k));
                        }
                        Err(Box::new(SliceError(
                            "the object changed while it was fetched in slices".into(),
                        )) as BoxError)
                    }
                    Err(e) => Err(Box::new(e) as BoxError),
                };
                let next = result.as_ref().ok().map(|_| (exchange, lookup, n + 1));
                Some((result.map(Frame::data), next))
            }
        });
        let head = futures::stream::iter(first_part.into_iter().map(|b| Ok(Frame::data(b))));
        let body = StreamBody::new(futures::StreamExt::chain(head, rest)).boxed_unsync();
        SliceStart::Done(respond::streamed(
            StatusCode::PARTIAL_CONTENT,
            headers,
            body,
            status,
        ))
    }

    /// Slice `n`, from the cache or the origin. `Ok(None)`: the origin
    /// answered without a range (it does not support them).
    async fn slice(
        &mut self,
        lookup: &Lookup,
        n: u64,
        size: u64,
    ) -> Result<Option<Slice>, SliceError> {
        let key = slice_key(&lookup.key, n);
        let now = Instant::now();
        if let Selected::Found(stored) = self.tenant.store.select(&key, &self.info.headers) {
            if stored.is_fresh(now) && stored.body.is_complete() {
                let (_, _, total) =
                    content_range(&stored.headers).ok_or_else(|| SliceError("bad slice".into()))?;
                return Ok(Some(Slice {
                    body: stored.body.clone(),
                    total,
                    validator: validator(&stored.headers),
                    headers: stored.headers.clone(),
                    from_cache: true,
                }));
            }
        }
        self.slice_range = Some((n * size, n.saturating_add(1).saturating_mul(size) - 1));
        let result = self.fetch_route(&lookup.route, None, true).await;
        self.slice_range = None;
        let origin = match result {
            RouteResult::Response(origin, _) => origin,
            RouteResult::Failed { error, backend } => {
                return Err(SliceError(format!("backend {backend:?} failed: {error:?}")))
            }
            _ => {
                return Err(SliceError(
                    "the policy did not let the slice be fetched".into(),
                ))
            }
        };
        if origin.status != StatusCode::PARTIAL_CONTENT {
            // Remember it for a while, so later Range requests go the
            // ordinary way at once instead of asking twice.
            self.tenant
                .store
                .mark_uncacheable(&not_sliceable_key(&lookup.key));
            return Ok(None);
        }
        let (a, b, total) = content_range(&origin.headers)
            .ok_or_else(|| SliceError("a 206 without Content-Range".into()))?;
        if a != n * size || b < a {
            return Err(SliceError(format!(
                "asked for slice at {}, got bytes {a}-{b}",
                n * size
            )));
        }
        let bytes = origin
            .body
            .collect()
            .await
            .map_err(|e| SliceError(format!("slice body failed: {e}")))?
            .to_bytes();
        let mut headers = origin.headers;
        crate::http::headers::strip_hop_by_hop(&mut headers);
        let freshness = Assessment {
            method: &Method::GET,
            request_headers: &self.info.headers,
            // A slice is stored under the rules of the whole response.
            status: StatusCode::OK,
            response_headers: &headers,
            request_time: origin.request_time,
            response_time: SystemTime::now(),
            policy: lookup.ttl.map_or(Override::None, Override::Ttl),
        }
        .assess();
        let body = SharedBody::complete(bytes);
        if let Ok(freshness) = freshness {
            let stored = StoredResponse {
                status: StatusCode::PARTIAL_CONTENT,
                headers: crate::http::headers::owned_copy(&headers),
                body: body.clone(),
                stored_at: Instant::now(),
                freshness,
                vary: crate::cache::vary_values(&headers, &self.info.headers),
                tags: Vec::new(),
                soft_purged: Default::default(),
                targeted: crate::http::headers::has_cache_targeted(&headers),
            };
            self.tenant.store.insert(&key, Arc::new(stored));
        }
        Ok(Some(Slice {
            body,
            total,
            validator: validator(&headers),
            headers,
            from_cache: false,
        }))
    }
}
