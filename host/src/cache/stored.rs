//! A response held by the cache.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use http::header::{self, HeaderName, HeaderValue};
use http::{HeaderMap, StatusCode};

use super::body::StoredBody;
use super::freshness::Freshness;
use super::head::StoredHead;
use crate::http::headers::{has_cache_targeted, is_hop_by_hop};

/// A stored response: head, body and the facts needed to compute its age
/// and freshness at any later time.
#[derive(Debug)]
pub struct StoredResponse {
    pub status: StatusCode,
    /// End-to-end header fields as received from the origin.
    pub headers: StoredHead,
    pub body: StoredBody,
    /// When it was stored (the `response_time` of RFC 9111 section 4.2.3).
    pub stored_at: Instant,
    pub freshness: Freshness,
    /// The request's values of the fields the response varies on (section
    /// 4.1), normalised; `None` where the request lacked the field.
    pub vary: Box<[(HeaderName, Option<String>)]>,
    /// Surrogate keys: the policy's, `Surrogate-Key` and `Cache-Tag`.
    pub tags: Box<[String]>,
    /// Soft-purged: stale from now on, but still there for stale serving.
    pub soft_purged: AtomicBool,
    /// Whether `headers` hold fields for this cache only, which are
    /// stripped from every response (see `has_cache_targeted`).
    pub targeted: bool,
}

impl StoredResponse {
    /// A response as the cache keeps it, stored now. `headers` are copied
    /// into storage of their own (see `StoredHead`), so the entry's
    /// memory is what its weight says.
    pub fn new(
        status: StatusCode,
        headers: &HeaderMap,
        body: StoredBody,
        freshness: Freshness,
        vary: Vec<(HeaderName, Option<String>)>,
        tags: Vec<String>,
    ) -> StoredResponse {
        StoredResponse {
            status,
            headers: StoredHead::of(headers),
            body,
            stored_at: Instant::now(),
            freshness,
            vary: vary.into_boxed_slice(),
            tags: tags.into_boxed_slice(),
            soft_purged: AtomicBool::new(false),
            targeted: has_cache_targeted(headers),
        }
    }

    /// `current_age` (RFC 9111 section 4.2.3).
    pub fn age(&self, now: Instant) -> Duration {
        self.freshness
            .initial_age()
            .saturating_add(now.saturating_duration_since(self.stored_at))
    }

    /// Fresh and reusable without revalidation (section 4.2).
    pub fn is_fresh(&self, now: Instant) -> bool {
        !self.freshness.always_revalidate
            && !self.soft_purged.load(Ordering::Relaxed)
            && self.age(now) < self.freshness.lifetime()
    }

    /// Marks the response stale (a soft purge).
    pub fn expire(&self) {
        self.soft_purged.store(true, Ordering::Relaxed);
    }

    /// Seconds of freshness left; negative when stale (RFC 9211 `ttl`).
    pub fn ttl(&self, now: Instant) -> i64 {
        if self.soft_purged.load(Ordering::Relaxed) {
            return self.ttl_unpurged(now).min(0);
        }
        self.ttl_unpurged(now)
    }

    fn ttl_unpurged(&self, now: Instant) -> i64 {
        let secs = |d: Duration| i64::try_from(d.as_secs()).unwrap_or(i64::MAX);
        secs(self.freshness.lifetime()).saturating_sub(secs(self.age(now)))
    }

    /// How long past its lifetime it is.
    fn staleness(&self, now: Instant) -> Duration {
        self.age(now).saturating_sub(self.freshness.lifetime())
    }

    /// May be served while a refresh runs (RFC 5861 section 3).
    pub fn within_stale_while_revalidate(&self, now: Instant) -> bool {
        !self.freshness.never_stale
            && !self.freshness.always_revalidate
            && self.staleness(now) < self.freshness.stale_while_revalidate()
    }

    /// May be served stale when the origin fails: within `stale-if-error`
    /// (RFC 5861 section 4), or by the policy's explicit choice, but never
    /// against `must-revalidate` and friends (RFC 9111 section 4.2.4).
    pub fn may_serve_stale(&self) -> bool {
        !self.freshness.never_stale
    }

    /// May be served to a client that accepts `max_stale` seconds of
    /// staleness (`max-stale`, RFC 9111 section 5.2.1.2).
    pub fn may_serve_stale_for(&self, now: Instant, max_stale: u64) -> bool {
        self.may_serve_stale()
            && !self.freshness.always_revalidate
            && self.staleness(now) <= Duration::from_secs(max_stale)
    }

    /// Within the `stale-if-error` window.
    pub fn within_stale_if_error(&self, now: Instant) -> bool {
        self.may_serve_stale() && self.staleness(now) < self.freshness.stale_if_error()
    }

    /// May be served when no backend can be reached, within `window` past
    /// its freshness: a cache disconnected from the origin may serve stale
    /// (RFC 9111 section 4.2.4), except against `must-revalidate`,
    /// `proxy-revalidate` and `s-maxage` (sections 5.2.2.2, 5.2.2.8,
    /// 5.2.2.10) and `no-cache` (section 5.2.2.4), which ask for a
    /// validation before any reuse.
    pub fn within_stale_if_unreachable(&self, now: Instant, window: Duration) -> bool {
        self.may_serve_stale() && !self.freshness.always_revalidate && self.staleness(now) < window
    }

    /// Whether a request selects this response (RFC 9111 section 4.1).
    pub fn matches_vary(&self, request: &HeaderMap) -> bool {
        self.vary
            .iter()
            .all(|(name, value)| normalised(request, name).as_deref() == value.as_deref())
    }

    pub fn etag(&self) -> Option<HeaderValue> {
        self.headers.get(&http::header::ETAG)
    }

    pub fn last_modified(&self) -> Option<HeaderValue> {
        self.headers.get(&http::header::LAST_MODIFIED)
    }

    /// Bytes this response costs the cache (see `weight`).
    pub fn weight(&self) -> u32 {
        super::weight::response(self).min(u64::from(u32::MAX)) as u32
    }
}

/// The request's values of the fields a response varies on.
pub fn vary_values(response: &HeaderMap, request: &HeaderMap) -> Vec<(HeaderName, Option<String>)> {
    let mut out = Vec::new();
    for value in response.get_all(http::header::VARY) {
        let Ok(value) = value.to_str() else { continue };
        for name in value.split(',').map(str::trim).filter(|n| !n.is_empty()) {
            if let Ok(name) = HeaderName::from_bytes(name.to_ascii_lowercase().as_bytes()) {
                if !out.iter().any(|(n, _)| *n == name) {
                    let v = normalised(request, &name);
                    out.push((name, v));
                }
            }
        }
    }
    out
}

/// All values of a field, combined and with whitespace around commas
/// removed (RFC 9111 section 4.1 allows such normalisation).
fn normalised(headers: &HeaderMap, name: &HeaderName) -> Option<String> {
    let mut values = headers.get_all(name).iter().peekable();
    values.peek()?;
    let joined: Vec<String> = values
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| {
            v.split(',')
                .map(|p| p.trim().to_string())
                .collect::<Vec<_>>()
        })
        .collect();
    Some(joined.join(","))
}

/// Purge tags from `Surrogate-Key` (space-separated) and `Cache-Tag`
/// (comma-separated).
pub fn surrogate_keys(headers: &HeaderMap) -> Vec<String> {
    let values = |name| {
        headers
            .get_all(name)
            .into_iter()
            .filter_map(|v| v.to_str().ok())
    };
    let mut tags: Vec<String> = values("surrogate-key")
        .flat_map(str::split_whitespace)
        .map(str::to_owned)
        .collect();
    tags.extend(
        values("cache-tag")
            .flat_map(|v| v.split(','))
            .map(str::trim)
            .filter(|t| !t.is_empty())
            .map(str::to_owned),
    );
    tags
}

/// RFC 9111 section 3.2: the stored header fields updated with those of a
/// 304, except the ones describing the body.
pub fn merge_not_modified(stale: &StoredResponse, update: &HeaderMap) -> HeaderMap {
    let mut merged = stale.headers.to_map();
    let mut replaced: Vec<&HeaderName> = Vec::new();
    for (name, value) in update {
        if matches!(
            name.as_str(),
            "content-length" | "content-encoding" | "transfer-encoding" | "content-range"
        ) || is_hop_by_hop(name)
        {
            continue;
        }
        if !replaced.contains(&name) {
            merged.remove(name);
            replaced.push(name);
        }
        merged.append(name.clone(), value.clone());
    }
    // The stored Age no longer applies: the 304 carries the current one.
    if !update.contains_key(header::AGE) {
        merged.remove(header::AGE);
    }
    merged
}

/// A complete stored response with these fields and body, fresh for
/// `lifetime`, for tests of the rules that read stored responses.
#[cfg(test)]
pub(crate) fn test_response(
    status: StatusCode,
    headers: HeaderMap,
    body: &'static [u8],
    lifetime: Duration,
) -> StoredResponse {
    StoredResponse::new(
        status,
        &headers,
        StoredBody::complete(bytes::Bytes::from_static(body)),
        Freshness::new(lifetime, Duration::ZERO),
        Vec::new(),
        Vec::new(),
    )
}

/// A stored 200 with these fields, fresh for a minute: what the rules
/// answering from the cache are tested against.
#[cfg(test)]
pub(crate) fn test_ok(headers: HeaderMap) -> StoredResponse {
    test_response(StatusCode::OK, headers, b"x", Duration::from_secs(60))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::http::arbitrary::any_value;
    use http::HeaderValue;
    use proptest::prelude::*;

    fn headers(fields: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (n, v) in fields {
            h.append(
                HeaderName::from_bytes(n.as_bytes()).unwrap(),
                HeaderValue::from_str(v).unwrap(),
            );
        }
        h
    }

    #[test]
    fn surrogate_keys_split_on_spaces_and_cache_tags_on_commas() {
        let h = headers(&[("surrogate-key", "a  b"), ("cache-tag", "c, ,d")]);
        assert_eq!(surrogate_keys(&h), ["a", "b", "c", "d"]);
    }

    #[test]
    fn a_304_replaces_fields_but_not_those_of_the_body() {
        let stale = test_response(
            StatusCode::OK,
            headers(&[
                ("etag", "\"1\""),
                ("content-length", "5"),
                ("age", "30"),
                ("x-a", "old"),
            ]),
            b"hello",
            Duration::from_secs(1),
        );
        let merged = merge_not_modified(
            &stale,
            &headers(&[
                ("x-a", "new"),
                ("content-length", "0"),
                ("connection", "close"),
            ]),
        );
        assert_eq!(merged["x-a"], "new");
        assert_eq!(merged["content-length"], "5");
        assert!(!merged.contains_key("connection"));
        assert!(
            !merged.contains_key("age"),
            "the stored Age no longer applies"
        );
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(1024))]

        /// RFC 9111 section 4.1: any Vary and any request field values.
        #[test]
        fn any_vary_and_request_fields_select_without_panic(
            vary in any_value(),
            first in any_value(),
            second in any_value(),
        ) {
            let mut response = HeaderMap::new();
            response.insert(http::header::VARY, vary);
            let mut request = HeaderMap::new();
            request.append(http::header::ACCEPT_ENCODING, first);
            request.append(http::header::ACCEPT_ENCODING, second);
            let values = vary_values(&response, &request);
            let mut stored = test_response(StatusCode::OK, response, b"", Duration::ZERO);
            stored.vary = values.into();
            prop_assert!(stored.matches_vary(&request));
        }
    }
}
