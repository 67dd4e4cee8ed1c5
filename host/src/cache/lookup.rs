//! Answering a request from the cache: freshness and the request's own
//! directives (RFC 9111 sections 4.2 and 5.2.1), `max-stale`,
//! `only-if-cached`, stale-while-revalidate (RFC 5861 section 3), and
//! joining another request's fill of the same key (coalescing).

use std::sync::Arc;
use std::time::Instant;

use http::HeaderMap;

use super::coalesce::{wait, FillGuard, FillOutcome, Role};
use super::directives::Directives;
use super::status::Fwd;
use super::store::{Selected, TenantStore};
use super::{CacheKey, HttpCache, StoredResponse};

/// Coalescing rounds before a request fetches on its own: a leader that
/// goes away lets its waiters try again, but not forever.
const ROUNDS: usize = 3;

/// What the cache can do for a request.
#[derive(Debug)]
pub enum Lookup {
    /// A stored response the request may have as it is.
    Hit(Arc<StoredResponse>),
    /// A stale response served now while it is refreshed in the background
    /// (RFC 5861 section 3); `refresh` is set when this request leads the
    /// refresh.
    StaleWhileRevalidate {
        stored: Arc<StoredResponse>,
        refresh: Option<FillGuard>,
    },
    /// `only-if-cached` with nothing usable: 504 (RFC 9111 section 5.2.1.7).
    OnlyIfCachedMiss,
    /// Served from a fill that another request led.
    Collapsed(Arc<StoredResponse>),
    /// The request must go forward. `stale` is the stored copy to
    /// revalidate or fall back on; `lead` is set when this request leads
    /// the key's fill (others wait for it).
    Miss {
        stale: Option<Arc<StoredResponse>>,
        lead: Option<FillGuard>,
        fwd: Fwd,
    },
}

/// The request's cache directives (RFC 9111 section 5.2.1, and `Pragma`,
/// section 5.4).
#[derive(Debug, Clone)]
pub struct RequestDirectives {
    cc: Directives,
    /// `Pragma: no-cache` without any Cache-Control.
    pragma_no_cache: bool,
}

impl RequestDirectives {
    pub fn of(headers: &HeaderMap) -> RequestDirectives {
        let cc = Directives::parse(headers.get_all(http::header::CACHE_CONTROL));
        let pragma_no_cache = cc.is_empty()
            && headers
                .get_all(http::header::PRAGMA)
                .iter()
                .any(|v| v.to_str().is_ok_and(|v| v.contains("no-cache")));
        RequestDirectives {
            cc,
            pragma_no_cache,
        }
    }

    /// Whether the request's directives allow reusing a fresh `stored`:
    /// `no-cache`, `max-age` and `min-fresh` (sections 5.2.1.4, 5.2.1.1,
    /// 5.2.1.3).
    fn allows_fresh(&self, stored: &StoredResponse, now: Instant) -> bool {
        if self.cc.no_cache || self.pragma_no_cache {
            return false;
        }
        let age = stored.age(now).as_secs();
        if self.cc.max_age.is_some_and(|max| age > max) {
            return false;
        }
        self.cc
            .min_fresh
            .is_none_or(|min| stored.ttl(now) >= i64::try_from(min).unwrap_or(i64::MAX))
    }

    /// `max-stale` (section 5.2.1.2): the client accepts this staleness.
    fn accepts_stale(&self, stored: &StoredResponse, now: Instant) -> bool {
        !self.cc.no_cache
            && self
                .cc
                .max_stale
                .is_some_and(|max| stored.may_serve_stale_for(now, max))
    }

    /// Whether a stale copy may be served while it is refreshed: only to a
    /// request without directives of its own (RFC 5861 section 3).
    fn allows_stale_while_revalidate(&self) -> bool {
        self.cc.is_empty()
    }
}

/// What `stored` can do for a request with these directives, if anything
/// without going forward.
fn reuse(stored: &Arc<StoredResponse>, directives: &RequestDirectives, now: Instant) -> Reuse {
    if (stored.is_fresh(now) && directives.allows_fresh(stored, now))
        || directives.accepts_stale(stored, now)
    {
        return Reuse::Hit;
    }
    if directives.cc.only_if_cached {
        return Reuse::OnlyIfCachedMiss;
    }
    if stored.within_stale_while_revalidate(now) && directives.allows_stale_while_revalidate() {
        return Reuse::StaleWhileRevalidate;
    }
    Reuse::Forward
}

enum Reuse {
    Hit,
    OnlyIfCachedMiss,
    StaleWhileRevalidate,
    Forward,
}

/// Looks `key` up for a request with these header fields, joining or
/// leading the key's fill on a miss. Waits at most `cache.coalesce_wait`
/// for another request's fill.
pub async fn lookup(
    cache: &HttpCache,
    store: &TenantStore,
    key: &str,
    tenant: &Arc<str>,
    request: &HeaderMap,
) -> Lookup {
    let directives = RequestDirectives::of(request);
    let mut stale = None;
    let mut vary_miss = false;
    for _round in 0..ROUNDS {
        let now = Instant::now();
        match store.select(key, request) {
            Selected::Found(stored) => match reuse(&stored, &directives, now) {
                Reuse::Hit => return Lookup::Hit(stored),
                Reuse::OnlyIfCachedMiss => return Lookup::OnlyIfCachedMiss,
                Reuse::StaleWhileRevalidate => {
                    let refresh = match cache.join_fill(&CacheKey::new(tenant, key)) {
                        Role::Leader(guard) => Some(guard),
                        Role::Waiter(_) => None,
                    };
                    return Lookup::StaleWhileRevalidate { stored, refresh };
                }
                Reuse::Forward => stale = Some(stored),
            },
            Selected::VaryMiss | Selected::Miss if directives.cc.only_if_cached => {
                return Lookup::OnlyIfCachedMiss;
            }
            Selected::VaryMiss => vary_miss = true,
            Selected::Miss => {}
        }
        if store.is_uncacheable(key) {
            // Hit-for-miss: the last answer was not cacheable, so do not
            // queue behind another request's fetch.
            break;
        }
        match cache.join_fill(&CacheKey::new(tenant, key)) {
            Role::Leader(guard) => return miss(stale, Some(guard), vary_miss),
            Role::Waiter(rx) => match tokio::time::timeout(cache.coalesce_wait, wait(rx)).await {
                Ok(FillOutcome::Stored(stored)) if stored.matches_vary(request) => {
                    return Lookup::Collapsed(stored);
                }
                Ok(FillOutcome::Abandoned) => continue,
                // Uncacheable, another variant, or a wait that took too
                // long: fetch for this request alone.
                _ => break,
            },
        }
    }
    miss(stale, None, vary_miss)
}

fn miss(stale: Option<Arc<StoredResponse>>, lead: Option<FillGuard>, vary_miss: bool) -> Lookup {
    let fwd = match (&stale, vary_miss) {
        (Some(_), _) => Fwd::Stale,
        (None, true) => Fwd::VaryMiss,
        (None, false) => Fwd::UriMiss,
    };
    Lookup::Miss { stale, lead, fwd }
}
