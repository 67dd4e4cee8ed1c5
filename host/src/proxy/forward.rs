//! Going to the backends of a route, and what happens to their answer.

use std::sync::Arc;
use std::time::{Instant, SystemTime};

use bytes::{Bytes, BytesMut};
use futures::StreamExt;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, BodyStream, StreamBody};
use hyper::body::{Frame, Incoming};

use super::respond::{self, CacheStatus, Fwd};
use super::Exchange;
use crate::cache::{
    Assessment, CacheKey, FillGuard, FillOutcome, NotStored, Override, SharedBody, StoredResponse,
};
use crate::http::headers::{strip_hop_by_hop, via_value};
use crate::http::{BoxError, ProxyBody, ResponseInfo};
use crate::origin::Backend;
use crate::runtime::{
    Attempt, FetchError, GuestFailure, HeaderEdit, OutcomeForGuest, ResponseDecision, Route,
    SyntheticResponse,
};

/// How the policy wants a backend response stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum StoreMode {
    /// By its headers (RFC 9111).
    Rfc,
    /// For this TTL with these tags, whatever the headers say.
    Force { ttl: u32, tags: Vec<String> },
    /// Not at all.
    NoStore,
}

/// A backend response head with its body still to come.
pub(crate) struct OriginResponse {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Incoming,
    pub backend: Arc<Backend>,
    /// When the request was sent (RFC 9111 section 4.2.3 `request_time`).
    pub request_time: SystemTime,
    /// Whether the request carried the stale copy's validators.
    pub revalidating: bool,
}

/// What a route produced.
pub(crate) enum RouteResult {
    Response(OriginResponse, StoreMode),
    /// The policy chose the stale copy (only when one is usable).
    ServeStale(Option<StatusCode>),
    Synthetic(SyntheticResponse),
    Failed {
        error: FetchError,
        backend: String,
    },
    GuestFailed(GuestFailure),
}

impl Exchange {
    /// Tries the route's backends in order, consulting the response hook
    /// after each attempt.
    pub(super) async fn fetch_route(
        &mut self,
        route: &Route,
        stale: Option<&Arc<StoredResponse>>,
        lookup: bool,
    ) -> RouteResult {
        let Some(last) = route.backends.len().checked_sub(1) else {
            return RouteResult::Failed {
                error: FetchError::UnknownBackend("(none)".into()),
                backend: "(route without backends)".into(),
            };
        };
        let stale_available = stale.is_some_and(|s| s.may_serve_stale());
        for (index, name) in route.backends.iter().enumerate() {
            let attempt = Attempt {
                backend: name.clone(),
                index: index as u32,
                remaining: (last - index) as u32,
                stale_available,
            };
            let outcome = match self.tenant.backends.get(name).cloned() {
                None => Err(FetchError::UnknownBackend(name.clone())),
                Some(backend) => self.send(&backend, route, stale, lookup).await,
            };
            let for_guest = match &outcome {
                Ok((info, _)) => OutcomeForGuest::Response(info.clone()),
                Err(e) => OutcomeForGuest::Error(e.clone()),
            };
            let decision = match self.session().await {
                Ok(session) => session.on_response(attempt, for_guest).await,
                Err(f) => Err(f),
            };
            let decision = match decision {
                Ok(d) => d,
                Err(f) => return RouteResult::GuestFailed(f),
            };
            // A request body can be sent once: no retry after it is gone.
            let can_retry = index < last
                && self
                    .body
                    .as_ref()
                    .is_none_or(http_body::Body::is_end_stream);
            let status = outcome.as_ref().ok().map(|(info, _)| {
                StatusCode::from_u16(info.status).unwrap_or(StatusCode::BAD_GATEWAY)
            });
            match decision {
                ResponseDecision::Respond(s) => return RouteResult::Synthetic(s),
                ResponseDecision::TryNext if can_retry => continue,
                ResponseDecision::ServeStale if stale_available => {
                    return RouteResult::ServeStale(status)
                }
                ResponseDecision::Default
                | ResponseDecision::TryNext
                | ResponseDecision::ServeStale
                    if outcome.is_err() && can_retry =>
                {
                    continue
                }
                _ => {}
            }
            return match outcome {
                Err(error) => RouteResult::Failed {
                    error,
                    backend: name.clone(),
                },
                Ok((info, partial)) => {
                    let headers = Arc::try_unwrap(info)
                        .map(|i| i.headers)
                        .unwrap_or_else(|shared| shared.headers.clone());
                    let response = OriginResponse { headers, ..partial };
                    let mode = match decision {
                        ResponseDecision::Store(o) => StoreMode::Force {
                            ttl: o.ttl,
                            tags: o.tags,
                        },
                        ResponseDecision::NoStore => StoreMode::NoStore,
                        _ => StoreMode::Rfc,
                    };
                    RouteResult::Response(response, mode)
                }
            };
        }
        unreachable!("the loop returns on its last backend")
    }

    /// One attempt: build the request, send it, split the response head so
    /// the guest can read it without a copy.
    async fn send(
        &mut self,
        backend: &Arc<Backend>,
        route: &Route,
        stale: Option<&Arc<StoredResponse>>,
        lookup: bool,
    ) -> Result<(Arc<ResponseInfo>, OriginResponse), FetchError> {
        let (request, revalidating) = self.origin_request(backend, route, stale, lookup);
        let request_time = SystemTime::now();
        let response = backend.send(request).await.map_err(FetchError::from)?;
        let (parts, body) = response.into_parts();
        let info = Arc::new(ResponseInfo {
            status: parts.status.as_u16(),
            headers: parts.headers,
        });
        let partial = OriginResponse {
            status: parts.status,
            headers: HeaderMap::new(),
            body,
            backend: backend.clone(),
            request_time,
            revalidating,
        };
        Ok((info, partial))
    }

    /// The request sent to a backend: the client's, minus hop-by-hop fields,
    /// plus Via and X-Forwarded-For, with the policy's edits. A lookup asks
    /// for the whole representation with GET (HEAD and ranges are answered
    /// from the stored response) and revalidates a stale copy with its
    /// validators (RFC 9111 section 4.3.1).
    fn origin_request(
        &mut self,
        backend: &Backend,
        route: &Route,
        stale: Option<&Arc<StoredResponse>>,
        lookup: bool,
    ) -> (Request<ProxyBody>, bool) {
        let info = &self.info;
        let mut headers = info.headers.clone();
        strip_hop_by_hop(&mut headers);
        let mut revalidating = false;
        let method = if lookup {
            for name in [
                header::IF_NONE_MATCH,
                header::IF_MODIFIED_SINCE,
                header::IF_RANGE,
                header::RANGE,
            ] {
                headers.remove(name);
            }
            if let Some((first, last)) = self.slice_range {
                headers.insert(
                    header::RANGE,
                    respond::value(&format!("bytes={first}-{last}")),
                );
            }
            if let Some(stale) = stale {
                if let Some(etag) = stale.etag() {
                    headers.insert(header::IF_NONE_MATCH, etag.clone());
                    revalidating = true;
                }
                if let Some(modified) = stale.last_modified() {
                    headers.insert(header::IF_MODIFIED_SINCE, modified.clone());
                    revalidating = true;
                }
            }
            Method::GET
        } else {
            info.method.clone()
        };
        let host = backend
            .host_header
            .clone()
            .or_else(|| HeaderValue::from_str(&info.authority).ok());
        if let Some(host) = host {
            headers.insert(header::HOST, host);
        }
        headers.append(header::VIA, via_value(http::Version::HTTP_11));
        let forwarded_for = match headers.get("x-forwarded-for").and_then(|v| v.to_str().ok()) {
            Some(previous) => format!("{previous}, {}", info.client_ip),
            None => info.client_ip.to_string(),
        };
        if let Ok(v) = HeaderValue::from_str(&forwarded_for) {
            headers.insert("x-forwarded-for", v);
        }
        headers.insert(
            "x-forwarded-proto",
            HeaderValue::from_static(info.scheme.as_str()),
        );
        apply_edits(&mut headers, &route.request_headers);

        let body = if lookup {
            crate::http::empty()
        } else {
            match self.body.take() {
                Some(b) => b.map_err(|e| Box::new(e) as BoxError).boxed_unsync(),
                None => crate::http::empty(),
            }
        };
        let mut request = Request::new(body);
        *request.method_mut() = method;
        *request.uri_mut() = backend.url.uri_for(info.path_and_query());
        *request.headers_mut() = headers;
        (request, revalidating)
    }
}

/// Applies a policy's header edits; invalid names or values are skipped.
fn apply_edits(headers: &mut HeaderMap, edits: &[HeaderEdit]) {
    for edit in edits {
        let (name, value) = match edit {
            HeaderEdit::Set(n, v) | HeaderEdit::Append(n, v) => (n, Some(v)),
            HeaderEdit::Remove(n) => (n, None),
        };
        let Ok(name) = HeaderName::from_bytes(name.to_ascii_lowercase().as_bytes()) else {
            continue;
        };
        match (edit, value.map(|v| HeaderValue::from_str(v))) {
            (HeaderEdit::Set(..), Some(Ok(v))) => {
                headers.insert(name, v);
            }
            (HeaderEdit::Append(..), Some(Ok(v))) => {
                headers.append(name, v);
            }
            (HeaderEdit::Remove(_), _) => {
                headers.remove(name);
            }
            _ => tracing::debug!("policy header edit for {name} has an invalid value; skipped"),
        }
    }
}

/// The end of a lookup's fetch: store, revalidate, fall back to stale, or
/// forward as is. Waiters on `guard` learn the outcome.
pub(super) async fn finish_lookup(
    exchange: Exchange,
    result: RouteResult,
    ttl: Option<u32>,
    key: CacheKey,
    stale: Option<Arc<StoredResponse>>,
    guard: Option<FillGuard>,
    fwd: Fwd,
) -> Response<ProxyBody> {
    let finish = |guard: Option<FillGuard>, outcome: FillOutcome| {
        if let Some(g) = guard {
            g.finish(outcome)
        }
    };
    let cache = exchange.ctx.cache.clone();
    let now = Instant::now();
    let usable_stale = stale.as_ref().filter(|s| s.may_serve_stale());
    match result {
        RouteResult::Synthetic(s) => {
            finish(guard, FillOutcome::NotStored);
            respond::synthetic(s)
        }
        RouteResult::GuestFailed(f) => {
            finish(guard, FillOutcome::NotStored);
            exchange.guest_failed(f)
        }
        RouteResult::ServeStale(status) => {
            finish(guard, FillOutcome::NotStored);
            let stale = usable_stale.expect("ServeStale only with a usable copy");
            respond::stored(
                &exchange.info,
                stale,
                CacheStatus::served_stale(stale, now, status),
            )
        }
        RouteResult::Failed { error, backend } => {
            finish(guard, FillOutcome::NotStored);
            exchange
                .ctx
                .metrics
                .count("origin_errors", &exchange.tenant.id, error.as_str());
            // RFC 5861 section 4: stale-if-error.
            match stale.as_ref().filter(|s| s.within_stale_if_error(now)) {
                Some(s) => {
                    respond::stored(&exchange.info, s, CacheStatus::served_stale(s, now, None))
                }
                None => respond::origin_error(&error, &backend),
            }
        }
        RouteResult::Response(origin, mode) => {
            let response_time = SystemTime::now();
            // RFC 9111 section 4.3.4: a 304 to our validators refreshes the
            // stored response.
            if origin.status == StatusCode::NOT_MODIFIED && origin.revalidating {
                if let Some(stale) = &stale {
                    let merged = merge_not_modified(stale, &origin.headers);
                    let assessed = Assessment {
                        method: &Method::GET,
                        request_headers: &exchange.info.headers,
                        status: stale.status,
                        response_headers: &merged,
                        request_time: origin.request_time,
                        response_time,
                        policy: override_for(&mode, ttl),
                    }
                    .assess();
                    let targeted = crate::http::headers::has_cache_targeted(&merged);
                    let refreshed = Arc::new(StoredResponse {
                        status: stale.status,
                        headers: crate::http::headers::owned_copy(&merged),
                        body: stale.body.clone(),
                        stored_at: Instant::now(),
                        freshness: assessed.unwrap_or(stale.freshness),
                        vary: stale.vary.clone(),
                        tags: stale.tags.clone(),
                        soft_purged: Default::default(),
                        targeted,
                    });
                    if assessed.is_ok() && mode != StoreMode::NoStore {
                        exchange.tenant.store.insert(key.key(), refreshed.clone());
                        finish(guard, FillOutcome::Stored(refreshed.clone()));
                    } else {
                        finish(guard, FillOutcome::NotStored);
                    }
                    let status = CacheStatus::forwarded(
                        Fwd::Stale,
                        Some(origin.status),
                        Some(refreshed.ttl(Instant::now())),
                        None,
                    );
                    return respond::stored(&exchange.info, &refreshed, status);
                }
            }
            // RFC 5861 section 4: a 5xx may be replaced by a stale copy.
            if mode == StoreMode::Rfc && matches!(origin.status.as_u16(), 500 | 502 | 503 | 504) {
                if let Some(s) = stale.as_ref().filter(|s| s.within_stale_if_error(now)) {
                    finish(guard, FillOutcome::NotStored);
                    return respond::stored(
                        &exchange.info,
                        s,
                        CacheStatus::served_stale(s, now, Some(origin.status)),
                    );
                }
            }
            let verdict = match &mode {
                StoreMode::NoStore => Err("policy"),
                _ => Assessment {
                    method: &Method::GET,
                    request_headers: &exchange.info.headers,
                    status: origin.status,
                    response_headers: &origin.headers,
                    request_time: origin.request_time,
                    response_time,
                    policy: override_for(&mode, ttl),
                }
                .assess()
                .map_err(NotStored::as_str),
            };
            let fwd = if stale.is_some() { Fwd::Stale } else { fwd };
            let freshness = match verdict {
                Ok(f) => f,
                Err(reason) => {
                    finish(guard, FillOutcome::NotStored);
                    exchange.tenant.store.mark_uncacheable(key.key());
                    let status =
                        CacheStatus::forwarded(fwd, Some(origin.status), None, Some(reason));
                    let body = origin
                        .body
                        .map_err(|e| Box::new(e) as BoxError)
                        .boxed_unsync();
                    return respond::streamed(origin.status, origin.headers, body, status);
                }
            };
            let limit = exchange
                .tenant
                .config
                .max_object_mb
                .map_or(cache.max_object_bytes, |mb| mb * 1024 * 1024);
            let mut headers = origin.headers;
            strip_hop_by_hop(&mut headers);
            let vary = crate::cache::vary_values(&headers, &exchange.info.headers);
            let mut tags = match mode {
                StoreMode::Force { tags, .. } => tags,
                _ => Vec::new(),
            };
            tags.extend(surrogate_keys(&headers));
            let stored_head = |body: Arc<SharedBody>| StoredResponse {
                status: origin.status,
                headers: crate::http::headers::owned_copy(&headers),
                body,
                stored_at: Instant::now(),
                freshness,
                vary: vary.clone(),
                tags: tags.clone(),
                soft_purged: Default::default(),
                targeted: crate::http::headers::has_cache_targeted(&headers),
            };
            let tenant = exchange.tenant.clone();
            match content_length(&headers) {
                Some(len) if len > limit => {
                    // Larger than any object kept: streamed, not stored.
                    finish(guard, FillOutcome::NotStored);
                    let status =
                        CacheStatus::forwarded(fwd, Some(origin.status), None, Some("too-large"));
                    let body = origin
                        .body
                        .map_err(|e| Box::new(e) as BoxError)
                        .boxed_unsync();
                    respond::streamed(origin.status, headers, body, status)
                }
                Some(len) => {
                    // Stored at once and filled by a task of its own: this
                    // client, coalesced waiters and later hits all read the
                    // body as it arrives, and the fill completes even if
                    // this client goes away.
                    let body = SharedBody::filling(Some(len));
                    let stored = Arc::new(stored_head(body.clone()));
                    tenant.store.insert(key.key(), stored.clone());
                    finish(guard, FillOutcome::Stored(stored.clone()));
                    let idle = origin.backend.response_timeout;
                    tokio::spawn(fill(origin.body, body, tenant, key, stored.clone(), idle));
                    let status = CacheStatus::forwarded(
                        fwd,
                        Some(origin.status),
                        Some(stored.ttl(Instant::now())),
                        None,
                    );
                    respond::stored(&exchange.info, &stored, status)
                }
                // No length announced: read up to the limit, then decide.
                None => match collect(origin.body, limit, origin.backend.response_timeout).await {
                    Collected::Complete(bytes) => {
                        let stored = Arc::new(stored_head(SharedBody::complete(bytes)));
                        tenant.store.insert(key.key(), stored.clone());
                        finish(guard, FillOutcome::Stored(stored.clone()));
                        let status = CacheStatus::forwarded(
                            fwd,
                            Some(origin.status),
                            Some(stored.ttl(Instant::now())),
                            None,
                        );
                        respond::stored(&exchange.info, &stored, status)
                    }
                    Collected::TooLarge { head, rest } => {
                        finish(guard, FillOutcome::NotStored);
                        let body = StreamBody::new(
                            futures::stream::iter(head.into_iter().map(|b| Ok(Frame::data(b))))
                                .chain(
                                    BodyStream::new(rest)
                                        .map(|r| r.map_err(|e| Box::new(e) as BoxError)),
                                ),
                        )
                        .boxed_unsync();
                        let status = CacheStatus::forwarded(
                            fwd,
                            Some(origin.status),
                            None,
                            Some("too-large"),
                        );
                        respond::streamed(origin.status, headers, body, status)
                    }
                    Collected::Failed(error) => {
                        // Dropping the guard wakes waiters with `Abandoned`.
                        drop(guard);
                        tracing::warn!(tenant = &*tenant.id, backend = %origin.backend.name, "origin body failed: {error}");
                        respond::origin_error(
                            &FetchError::InvalidResponse(error),
                            &origin.backend.name,
                        )
                    }
                },
            }
        }
    }
}

/// Copies an origin body into a stored response. A body that fails or
/// stalls fails every reader and is removed from the cache.
async fn fill(
    mut origin: Incoming,
    body: Arc<SharedBody>,
    tenant: Arc<crate::tenant::Tenant>,
    key: CacheKey,
    stored: Arc<StoredResponse>,
    idle: std::time::Duration,
) {
    let failure = loop {
        match tokio::time::timeout(idle, origin.frame()).await {
            Err(_) => break "timed out reading the origin body".to_string(),
            Ok(None) => {
                body.finish();
                return;
            }
            Ok(Some(Err(e))) => break crate::http::error_chain(&e),
            Ok(Some(Ok(frame))) => {
                if let Ok(data) = frame.into_data() {
                    body.push(data);
                }
            }
        }
    };
    tracing::warn!(
        tenant = &*tenant.id,
        key = key.key(),
        "cache fill failed: {failure}"
    );
    body.fail(&failure);
    tenant.store.remove_variant(key.key(), &stored);
}

/// The announced body length, if valid.
fn content_length(headers: &HeaderMap) -> Option<u64> {
    headers
        .get(header::CONTENT_LENGTH)?
        .to_str()
        .ok()?
        .trim()
        .parse()
        .ok()
}

/// Purge tags from `Surrogate-Key` (space-separated) and `Cache-Tag`
/// (comma-separated).
fn surrogate_keys(headers: &HeaderMap) -> Vec<String> {
    let mut tags = Vec::new();
    for v in headers
        .get_all("surrogate-key")
        .iter()
        .filter_map(|v| v.to_str().ok())
    {
        tags.extend(v.split_whitespace().map(str::to_owned));
    }
    for v in headers
        .get_all("cache-tag")
        .iter()
        .filter_map(|v| v.to_str().ok())
    {
        tags.extend(
            v.split(',')
                .map(str::trim)
                .filter(|t| !t.is_empty())
                .map(str::to_owned),
        );
    }
    tags
}

/// The end of a pass: stream the response; invalidate after an unsafe
/// request succeeded (RFC 9111 section 4.4).
pub(super) async fn finish_pass(
    exchange: Exchange,
    result: RouteResult,
    invalidate: Option<CacheKey>,
) -> Response<ProxyBody> {
    match result {
        RouteResult::Synthetic(s) => respond::synthetic(s),
        RouteResult::GuestFailed(f) => exchange.guest_failed(f),
        RouteResult::ServeStale(_) => unreachable!("a pass has no stale copy"),
        RouteResult::Failed { error, backend } => {
            exchange
                .ctx
                .metrics
                .count("origin_errors", &exchange.tenant.id, error.as_str());
            respond::origin_error(&error, &backend)
        }
        RouteResult::Response(origin, _) => {
            if let Some(key) = invalidate {
                if origin.status.is_success() || origin.status.is_redirection() {
                    exchange.tenant.store.remove(key.key());
                }
            }
            super::invalidate::after_unsafe(
                &exchange.ctx.runtime,
                &exchange.tenant,
                &exchange.info,
                origin.status,
                &origin.headers,
            )
            .await;
            let body = origin
                .body
                .map_err(|e| Box::new(e) as BoxError)
                .boxed_unsync();
            let status = CacheStatus::forwarded(Fwd::Request, Some(origin.status), None, None);
            respond::streamed(origin.status, origin.headers, body, status)
        }
    }
}

fn override_for(mode: &StoreMode, ttl: Option<u32>) -> Override {
    match (mode, ttl) {
        (StoreMode::Force { ttl, .. }, _) => Override::Force(*ttl),
        (_, Some(ttl)) => Override::Ttl(ttl),
        _ => Override::None,
    }
}

/// RFC 9111 section 3.2: the stored header fields updated with those of a
/// 304, except the ones describing the body.
fn merge_not_modified(stale: &StoredResponse, update: &HeaderMap) -> HeaderMap {
    let mut merged = stale.headers.clone();
    let mut replaced: Vec<&HeaderName> = Vec::new();
    for (name, value) in update {
        if matches!(
            name.as_str(),
            "content-length" | "content-encoding" | "transfer-encoding" | "content-range"
        ) || crate::http::headers::is_hop_by_hop(name)
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

/// A body read for storing.
enum Collected {
    Complete(Bytes),
    /// Over the size limit: what was read, and the rest still to stream.
    TooLarge {
        head: Vec<Bytes>,
        rest: Incoming,
    },
    Failed(String),
}

/// Reads a body up to `limit` bytes, each frame within `idle`.
async fn collect(mut body: Incoming, limit: u64, idle: std::time::Duration) -> Collected {
    let mut chunks: Vec<Bytes> = Vec::new();
    let mut size: u64 = 0;
    loop {
        let frame = match tokio::time::timeout(idle, body.frame()).await {
            Err(_) => return Collected::Failed("timed out reading the body".into()),
            Ok(None) => break,
            Ok(Some(Err(e))) => return Collected::Failed(crate::http::error_chain(&e)),
            Ok(Some(Ok(frame))) => frame,
        };
        if let Ok(data) = frame.into_data() {
            size += data.len() as u64;
            chunks.push(data);
            if size > limit {
                return Collected::TooLarge {
                    head: chunks,
                    rest: body,
                };
            }
        }
    }
    if chunks.len() == 1 {
        return Collected::Complete(chunks.pop().unwrap_or_default());
    }
    let mut all = BytesMut::with_capacity(size as usize);
    for c in chunks {
        all.extend_from_slice(&c);
    }
    Collected::Complete(all.freeze())
}
