//! Range requests on a cache miss: the object is fetched and cached in
//! fixed-size slices (`Range` requests to the origin, see `cache::slice`),
//! so a client asking for a few bytes of a multi-GiB file never waits for,
//! or makes the node hold, the whole object. Later slices are fetched as
//! the client reads; a slice that does not match the first (the object
//! changed) fails the response and drops the key's slices.

use bytes::Bytes;
use futures::Stream;
use http::header::{self, HeaderMap, HeaderValue};
use http::{Response, StatusCode};
use http_body_util::{BodyExt, StreamBody};
use hyper::body::Frame;

use super::exchange::Exchange;
use super::respond;
use super::route::Forward;
use crate::cache::slice::{self, FetchedSlice, Slice, SliceError};
use crate::cache::{CacheStatus, Detail, Fwd};
use crate::http::range::RangeSpec;
use crate::http::{BoxError, ProxyBody};
use crate::runtime::Lookup;

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

/// The part of the object a response covers: up to `end` of `total`
/// bytes, in slices of `size`.
#[derive(Debug, Clone, Copy)]
struct Span {
    end: u64,
    total: u64,
    size: u64,
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
        let span = Span {
            end: end.map_or(total, |e| e.saturating_add(1).min(total)),
            total,
            size,
        };
        let mut headers = slice.headers.clone();
        headers.remove(header::CONTENT_LENGTH);
        headers.insert(
            header::CONTENT_RANGE,
            respond::value(&format!("bytes {start}-{}/{total}", span.end - 1)),
        );
        headers.insert(header::CONTENT_LENGTH, HeaderValue::from(span.end - start));
        let status = if slice.from_cache {
            CacheStatus::forwarded(Fwd::UriMiss, None).detail(Detail::SliceHit)
        } else {
            CacheStatus::forwarded(Fwd::UriMiss, Some(206)).detail(Detail::Slice)
        };
        let offset = first * size;
        let head = slice
            .body
            .slice(start - offset, (span.end - offset).min(size));
        let head = futures::stream::iter(head.into_iter().map(|b| Ok(Frame::data(b))));
        let rest = self.later_slices(lookup, first + 1, span, slice);
        let body = StreamBody::new(futures::StreamExt::chain(head, rest)).boxed_unsync();
        SliceStart::Done(respond::streamed(
            StatusCode::PARTIAL_CONTENT,
            headers,
            body,
            status,
        ))
    }

    /// The slices after the first, fetched as the client reads, each
    /// checked against the first one's validator and length.
    fn later_slices(
        self,
        lookup: Lookup,
        next: u64,
        span: Span,
        first: Slice,
    ) -> impl Stream<Item = Result<Frame<Bytes>, BoxError>> {
        let last = (span.end - 1) / span.size;
        let expected = first.validator;
        futures::stream::unfold(Some((self, lookup, next)), move |state| {
            let expected = expected.clone();
            async move {
                let (mut exchange, lookup, n) = state?;
                if n > last {
                    return None;
                }
                let result = match exchange.slice(&lookup, n, span.size).await {
                    Ok(Some(s)) if s.validator == expected && s.total == span.total => {
                        let from = n * span.size;
                        let bytes: Vec<Bytes> = s.body.slice(0, (span.end - from).min(span.size));
                        Ok(bytes.concat().into())
                    }
                    Ok(_) => {
                        slice::drop_slices(&exchange.tenant.store, &lookup.key, last);
                        Err(Box::new(SliceError(
                            "the object changed while it was fetched in slices".into(),
                        )) as BoxError)
                    }
                    Err(e) => Err(Box::new(e) as BoxError),
                };
                let next = result.as_ref().ok().map(|_| (exchange, lookup, n + 1));
                Some((result.map(Frame::data), next))
            }
        })
    }

    /// Slice `n`, from the cache or the origin. `Ok(None)`: the origin
    /// answered without a range (it does not support them).
    async fn slice(
        &mut self,
        lookup: &Lookup,
        n: u64,
        size: u64,
    ) -> Result<Option<Slice>, SliceError> {
        let store = &self.tenant.store;
        if let Some(cached) = slice::cached(store, &lookup.key, n, &self.info.headers)? {
            return Ok(Some(cached));
        }
        let forward = Forward::Lookup {
            key: lookup.key.clone(),
            validators: None,
            range: Some(slice::bounds(n, size)),
        };
        let fetched = match self.fetch_route(&lookup.route, &forward, None).await {
            Ok(answer) => answer.fetched,
            Err(super::route::NoResponse::Failed { error, backend }) => {
                return Err(SliceError(format!("backend {backend:?} failed: {error}")))
            }
            Err(_) => {
                return Err(SliceError(
                    "the policy did not let the slice be fetched".into(),
                ))
            }
        };
        let partial = fetched.status == StatusCode::PARTIAL_CONTENT;
        let body = if partial {
            fetched
                .body
                .collect()
                .await
                .map_err(|e| SliceError(format!("slice body failed: {e}")))?
                .to_bytes()
        } else {
            Bytes::new()
        };
        let fetched = FetchedSlice {
            status: fetched.status,
            headers: fetched.headers,
            body,
            request_time: fetched.request_time,
        };
        let store = &self.tenant.store;
        slice::store_fetched(
            store,
            &lookup.key,
            (n, size),
            &self.info.headers,
            lookup.ttl,
            fetched,
        )
    }
}
