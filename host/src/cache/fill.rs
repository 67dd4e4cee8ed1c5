//! What a backend's response to a lookup becomes: a refreshed stored
//! response (a 304 to our validators, RFC 9111 section 4.3.4), a stale copy
//! instead of an error (RFC 5861 section 4), a new stored response filled
//! while it is served, or a response streamed past the cache with the
//! reason it was not stored (RFC 9111 section 3).

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use bytes::{Bytes, BytesMut};
use futures::StreamExt;
use http::header::{self, HeaderMap};
use http::{Method, StatusCode};
use http_body_util::{BodyExt, BodyStream, StreamBody};
use hyper::body::Frame;

use super::coalesce::{FillGuard, FillOutcome};
use super::freshness::{Assessment, Freshness, NotStored, Override};
use super::status::{CacheStatus, Detail, Fwd};
use super::store::TenantStore;
use super::stored::{merge_not_modified, surrogate_keys};
use super::{vary_values, SharedBody, StoredBody, StoredResponse};
use crate::http::headers::strip_hop_by_hop;
use crate::http::{error_chain, ProxyBody};

/// How the policy wants a backend response stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoreMode {
    /// By its headers (RFC 9111), with the lookup's TTL if it set one, and
    /// these purge tags besides its own.
    Rfc { ttl: Option<u32>, tags: Vec<String> },
    /// For this TTL with these tags, whatever the headers say.
    Force { ttl: u32, tags: Vec<String> },
    /// Not at all.
    NoStore,
}

impl StoreMode {
    fn policy(&self) -> Override {
        match self {
            StoreMode::Force { ttl, .. } => Override::Force(*ttl),
            StoreMode::Rfc { ttl: Some(ttl), .. } => Override::Ttl(*ttl),
            _ => Override::None,
        }
    }
}

/// A backend response head with its body still to come.
pub struct Fetched {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: ProxyBody,
    /// When the request was sent (RFC 9111 section 4.2.3 `request_time`).
    pub request_time: SystemTime,
    /// Whether the request carried the stale copy's validators.
    pub revalidating: bool,
}

/// Bodies up to this size are read whole before the response starts, as
/// nginx buffers them: the client then gets head and body in one write
/// instead of the head alone while the body is on its way (a third write
/// and packet per miss), and the object is stored complete.
const READ_WHOLE_BYTES: u64 = 32 * 1024;

/// Where a fill goes and under which rules.
pub struct Fill<'a> {
    pub store: &'a TenantStore,
    pub key: &'a str,
    /// The tenant, for log lines.
    pub tenant: &'a str,
    pub request_headers: &'a HeaderMap,
    /// The stored copy the lookup found stale, if any.
    pub stale: Option<Arc<StoredResponse>>,
    pub mode: StoreMode,
    /// Largest body stored.
    pub max_object_bytes: u64,
    pub fwd: Fwd,
}

/// What the client gets.
pub enum Filled {
    /// A response now in the store (new, or refreshed by a 304), with the
    /// head it was stored from when it is the backend's answer (sent as it
    /// came rather than rebuilt from the stored copy).
    Stored(Arc<StoredResponse>, CacheStatus, Option<HeaderMap>),
    /// A stored-shaped response that is not in the store: a 304 refresh
    /// the rules or the policy would not keep, or the stale copy served
    /// instead of an error.
    Served(Arc<StoredResponse>, CacheStatus),
    /// Sent as it came, not stored.
    Streamed {
        status: StatusCode,
        headers: HeaderMap,
        body: ProxyBody,
        cache_status: CacheStatus,
    },
    /// The body failed before it could be stored.
    Failed(String),
}

impl Filled {
    /// What requests waiting for this fill learn.
    fn outcome(&self) -> FillOutcome {
        match self {
            Filled::Stored(stored, ..) => FillOutcome::Stored(stored.clone()),
            // Waiters retry: their own fetch may do better.
            Filled::Failed(_) => FillOutcome::Abandoned,
            Filled::Served(..) | Filled::Streamed { .. } => FillOutcome::NotStored,
        }
    }
}

impl Fill<'_> {
    /// Turns a backend response into what the client gets, storing what
    /// may be stored; the fill's waiters (`lead`) learn the outcome once.
    pub async fn complete(self, fetched: Fetched, lead: Option<FillGuard>) -> Filled {
        let filled = self.decide(fetched, lead.is_some()).await;
        if let Some(lead) = lead {
            lead.finish(filled.outcome());
        }
        filled
    }

    /// `leading`: this request led the fill (it did not pass because of a
    /// hit-for-miss mark, nor stop waiting for another's fill).
    async fn decide(self, fetched: Fetched, leading: bool) -> Filled {
        let now = Instant::now();
        if fetched.status == StatusCode::NOT_MODIFIED && fetched.revalidating {
            if let Some(stale) = self.stale.clone() {
                return self.refresh(&stale, &fetched);
            }
        }
        // RFC 5861 section 4: a 5xx may be replaced by a stale copy.
        if matches!(self.mode, StoreMode::Rfc { .. })
            && matches!(fetched.status.as_u16(), 500 | 502 | 503 | 504)
        {
            if let Some(stale) = stale_if_error(self.stale.as_ref(), now) {
                let status = stale_status(stale, now, Some(fetched.status));
                return Filled::Served(stale.clone(), status);
            }
        }
        match self.storable(&fetched) {
            Ok(freshness) => self.store_new(fetched, freshness).await,
            Err(reason) => {
                // Marked by the fill that found out, as Varnish's
                // hit-for-miss object comes from that miss alone: the
                // passes it lets through do not renew it (a moka insert
                // each), so one request leads again once it expires.
                if leading {
                    self.store.mark_uncacheable(self.key);
                }
                let status = self
                    .forwarded(Some(fetched.status))
                    .detail(Detail::NotStored(reason));
                streamed(fetched.status, fetched.headers, fetched.body, status)
            }
        }
    }

    /// Section 3 (or the policy's override): how long it may be kept.
    fn storable(&self, fetched: &Fetched) -> Result<Freshness, NotStored> {
        if self.mode == StoreMode::NoStore {
            return Err(NotStored::Policy);
        }
        Assessment {
            method: &Method::GET,
            request_headers: self.request_headers,
            status: fetched.status,
            response_headers: &fetched.headers,
            request_time: fetched.request_time,
            response_time: SystemTime::now(),
            policy: self.mode.policy(),
        }
        .assess()
    }

    /// RFC 9111 section 4.3.4: a 304 to our validators freshens the stored
    /// response with the new header fields.
    fn refresh(&self, stale: &Arc<StoredResponse>, fetched: &Fetched) -> Filled {
        let merged = merge_not_modified(stale, &fetched.headers);
        let assessed = Assessment {
            method: &Method::GET,
            request_headers: self.request_headers,
            status: stale.status,
            response_headers: &merged,
            request_time: fetched.request_time,
            response_time: SystemTime::now(),
            policy: self.mode.policy(),
        }
        .assess();
        let keep = assessed.is_ok() && self.mode != StoreMode::NoStore;
        let refreshed = Arc::new(StoredResponse::new(
            stale.status,
            &merged,
            stale.body.clone(),
            assessed.unwrap_or(stale.freshness),
            stale.vary.to_vec(),
            stale.tags.to_vec(),
        ));
        let status = CacheStatus::forwarded(Fwd::Stale, Some(fetched.status.as_u16()))
            .stored(refreshed.ttl(Instant::now()));
        if keep {
            self.store.insert(self.key, refreshed.clone());
            Filled::Stored(refreshed, status, None)
        } else {
            Filled::Served(refreshed, status)
        }
    }

    /// Stores a new response: at once when its length is known and over
    /// [`READ_WHOLE_BYTES`] (its body filled by a task of its own, so this
    /// client, coalesced waiters and later hits all read it as it arrives,
    /// and the fill completes even if this client goes away), after reading
    /// it when it is smaller or its length is not known; too large ones are
    /// streamed.
    async fn store_new(self, fetched: Fetched, freshness: Freshness) -> Filled {
        let Fetched {
            status,
            mut headers,
            body,
            ..
        } = fetched;
        strip_hop_by_hop(&mut headers);
        let vary = vary_values(&headers, self.request_headers);
        let mut tags = match &self.mode {
            StoreMode::Force { tags, .. } | StoreMode::Rfc { tags, .. } => tags.clone(),
            StoreMode::NoStore => Vec::new(),
        };
        tags.extend(surrogate_keys(&headers));
        let head = |body| StoredResponse::new(status, &headers, body, freshness, vary, tags);
        let too_large = self
            .forwarded(Some(status))
            .detail(Detail::NotStored(NotStored::TooLarge));
        match content_length(&headers) {
            Some(len) if len > self.max_object_bytes => streamed(status, headers, body, too_large),
            Some(len) if len > READ_WHOLE_BYTES => {
                let shared = SharedBody::filling(Some(len));
                let stored = Arc::new(head(StoredBody::Fill(shared.clone())));
                self.store.insert(self.key, stored.clone());
                let target = FillTarget {
                    store: self.store.clone(),
                    key: self.key.into(),
                    tenant: self.tenant.into(),
                    stored: stored.clone(),
                };
                tokio::spawn(fill_body(body, shared, target));
                self.stored(stored, headers)
            }
            _ => match collect(body, self.max_object_bytes).await {
                Collected::Complete(bytes) => {
                    let stored = Arc::new(head(StoredBody::complete(bytes)));
                    self.store.insert(self.key, stored.clone());
                    self.stored(stored, headers)
                }
                Collected::TooLarge(body) => streamed(status, headers, body, too_large),
                Collected::Failed(error) => {
                    tracing::warn!(
                        tenant = self.tenant,
                        key = self.key,
                        "origin body failed: {error}"
                    );
                    Filled::Failed(error)
                }
            },
        }
    }

    fn stored(&self, stored: Arc<StoredResponse>, head: HeaderMap) -> Filled {
        let status = self
            .forwarded(Some(stored.status))
            .stored(stored.ttl(Instant::now()));
        Filled::Stored(stored, status, Some(head))
    }

    fn forwarded(&self, status: Option<StatusCode>) -> CacheStatus {
        CacheStatus::forwarded(self.fwd, status.map(|s| s.as_u16()))
    }
}

fn streamed(
    status: StatusCode,
    headers: HeaderMap,
    body: ProxyBody,
    cache_status: CacheStatus,
) -> Filled {
    Filled::Streamed {
        status,
        headers,
        body,
        cache_status,
    }
}

/// The stale copy that `stale-if-error` lets the cache serve now instead
/// of an error (RFC 5861 section 4).
fn stale_if_error(
    stale: Option<&Arc<StoredResponse>>,
    now: Instant,
) -> Option<&Arc<StoredResponse>> {
    stale.filter(|s| s.within_stale_if_error(now))
}

/// The stale copy a route that got no response may serve instead of an
/// error, with its `Cache-Status`: within `stale-if-error` (RFC 5861
/// section 4); or, when no backend could be reached (`unreachable`: why,
/// as the origin error metrics name it), within `window` past its
/// freshness, as a cache disconnected from the origin may (RFC 9111
/// section 4.2.4, see [`StoredResponse::within_stale_if_unreachable`]).
pub fn stale_on_failure<'a>(
    stale: Option<&'a Arc<StoredResponse>>,
    now: Instant,
    unreachable: Option<&'static str>,
    window: Duration,
) -> Option<(&'a Arc<StoredResponse>, CacheStatus)> {
    let stale = stale?;
    if stale.within_stale_if_error(now) {
        return Some((stale, stale_status(stale, now, None)));
    }
    let why = unreachable.filter(|_| stale.within_stale_if_unreachable(now, window))?;
    let status = stale_status(stale, now, None).detail(Detail::StaleUnreachable(why));
    Some((stale, status))
}

/// `Cache-Status` of a stale copy served instead of a backend's answer.
pub fn stale_status(
    stored: &StoredResponse,
    now: Instant,
    fwd_status: Option<StatusCode>,
) -> CacheStatus {
    CacheStatus::forwarded(Fwd::Stale, fwd_status.map(|s| s.as_u16()))
        .ttl(stored.ttl(now))
        .detail(Detail::StaleServed)
}

/// Where a body being filled lives, to drop it if the fill fails.
struct FillTarget {
    store: TenantStore,
    key: Box<str>,
    tenant: Box<str>,
    stored: Arc<StoredResponse>,
}

/// Copies an origin body into a stored response. A body that fails (the
/// origin engine ends one that stalls with an error) fails every reader
/// (never a clean end of a truncated body) and is removed from the cache.
async fn fill_body(mut origin: ProxyBody, body: Arc<SharedBody>, target: FillTarget) {
    let failure = loop {
        match origin.frame().await {
            None => {
                body.finish();
                return;
            }
            Some(Err(e)) => break error_chain(&*e),
            Some(Ok(frame)) => {
                if let Ok(data) = frame.into_data() {
                    body.push(data);
                }
            }
        }
    };
    tracing::warn!(
        tenant = &*target.tenant,
        key = &*target.key,
        "cache fill failed: {failure}"
    );
    body.fail(&failure);
    target.store.remove_variant(&target.key, &target.stored);
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

/// A body read for storing.
enum Collected {
    Complete(Bytes),
    /// Over the size limit: the whole body, what was read first.
    TooLarge(ProxyBody),
    Failed(String),
}

/// Reads a body up to `limit` bytes.
async fn collect(mut body: ProxyBody, limit: u64) -> Collected {
    let mut chunks: Vec<Bytes> = Vec::new();
    let mut size: u64 = 0;
    loop {
        let frame = match body.frame().await {
            None => break,
            Some(Err(e)) => return Collected::Failed(error_chain(&*e)),
            Some(Ok(frame)) => frame,
        };
        if let Ok(data) = frame.into_data() {
            size += data.len() as u64;
            chunks.push(data);
            if size > limit {
                let head = futures::stream::iter(chunks.into_iter().map(|b| Ok(Frame::data(b))));
                let rest = BodyStream::new(body);
                return Collected::TooLarge(StreamBody::new(head.chain(rest)).boxed_unsync());
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
