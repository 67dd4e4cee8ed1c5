//! One tenant's objects: a moka cache bounded by the tenant's byte quota,
//! the tag index for purges by surrogate key, and the hit-for-miss marks.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use moka::notification::RemovalCause;
use moka::sync::Cache;

use super::StoredResponse;
use crate::metrics::Counter;

/// Variants kept per key; the oldest goes when a new one arrives.
const MAX_VARIANTS: usize = 16;

/// Keys remembered as uncacheable at once.
const HIT_FOR_MISS_KEYS: u64 = 10_000;

/// The responses stored under one key: one per combination of the request
/// fields they vary on (RFC 9111 section 4.1), newest first.
pub struct Variants {
    list: Vec<Arc<StoredResponse>>,
}

/// What a lookup found under a key.
pub enum Selected {
    /// A stored response this request selects.
    Found(Arc<StoredResponse>),
    /// Responses exist for the key, but for other values of the fields
    /// they vary on.
    VaryMiss,
    Miss,
}

/// tag -> keys carrying it. (A store is cloned as a handle: its parts
/// are shared.)
type TagIndex = Arc<Mutex<HashMap<Box<str>, HashSet<Box<str>>>>>;

#[derive(Clone)]
pub struct TenantStore {
    entries: Cache<Box<str>, Arc<Variants>>,
    /// Keys pushed out to make room (not expired, purged or replaced).
    evictions: Arc<Counter>,
    tags: TagIndex,
    hit_for_miss: Cache<Box<str>, ()>,
}

/// Keeps each key until its longest-lived variant's freshness ends, plus
/// the stale retention (or its RFC 5861 windows, if longer).
struct Retention(Duration);

impl Retention {
    fn of(&self, value: &StoredResponse) -> Duration {
        let f = &value.freshness;
        let remaining = f.lifetime.saturating_sub(f.initial_age);
        // Bounded: moka adds this to an `Instant`.
        remaining
            .saturating_add(self.0.max(f.stale_while_revalidate).max(f.stale_if_error))
            .min(super::freshness::MAX_DELTA.saturating_mul(2))
    }
}

impl moka::Expiry<Box<str>, Arc<Variants>> for Retention {
    fn expire_after_create(
        &self,
        _key: &Box<str>,
        value: &Arc<Variants>,
        _now: Instant,
    ) -> Option<Duration> {
        value.list.iter().map(|v| self.of(v)).max()
    }

    fn expire_after_update(
        &self,
        key: &Box<str>,
        value: &Arc<Variants>,
        now: Instant,
        _current: Option<Duration>,
    ) -> Option<Duration> {
        self.expire_after_create(key, value, now)
    }
}

/// What a key and its variants cost (see `weight`). moka's weigher is
/// handed `&K`, hence the `&Box<str>`.
#[allow(clippy::borrowed_box)]
fn weigh(key: &Box<str>, value: &Arc<Variants>) -> u32 {
    let tags = value.list.iter().map(|v| v.tags.len()).sum();
    let key = super::weight::key(key, value.list.len(), tags);
    value
        .list
        .iter()
        .fold(key.min(u64::from(u32::MAX)) as u32, |sum, v| {
            sum.saturating_add(v.weight())
        })
}

impl TenantStore {
    /// A store holding at most `quota_bytes` of responses.
    pub fn new(quota_bytes: u64, stale_retention: Duration, hit_for_miss: Duration) -> TenantStore {
        let tags: TagIndex = Arc::default();
        let index = tags.clone();
        let evictions = Arc::new(Counter::default());
        let evicted = evictions.clone();
        let entries = Cache::builder()
            .max_capacity(quota_bytes)
            .weigher(weigh)
            .expire_after(Retention(stale_retention))
            .eviction_listener(move |key: Arc<Box<str>>, value: Arc<Variants>, cause| {
                // A replaced entry's key is still there (with new tags).
                if cause != RemovalCause::Replaced {
                    unindex(&index, &key, &value);
                }
                if cause == RemovalCause::Size {
                    evicted.inc();
                }
            })
            .build();
        let hit_for_miss = Cache::builder()
            .max_capacity(HIT_FOR_MISS_KEYS)
            .time_to_live(hit_for_miss)
            .build();
        TenantStore {
            entries,
            evictions,
            tags,
            hit_for_miss,
        }
    }

    /// (keys stored, bytes they are charged, keys evicted for room so far),
    /// for `/metrics`; moka's counts lag its pending work a little.
    pub fn usage(&self) -> (u64, u64, u64) {
        (
            self.entries.entry_count(),
            self.entries.weighted_size(),
            self.evictions.get(),
        )
    }

    /// The stored response a request with these header fields selects.
    pub fn select(&self, key: &str, request: &http::HeaderMap) -> Selected {
        match self.entries.get(key) {
            None => Selected::Miss,
            Some(variants) => match variants.list.iter().find(|v| v.matches_vary(request)) {
                Some(v) => Selected::Found(v.clone()),
                None => Selected::VaryMiss,
            },
        }
    }

    /// Stores a response, replacing the variant with the same secondary key.
    pub fn insert(&self, key: &str, value: Arc<StoredResponse>) {
        let mut list = vec![value.clone()];
        if let Some(existing) = self.entries.get(key) {
            list.extend(
                existing
                    .list
                    .iter()
                    .filter(|v| v.vary != value.vary)
                    .take(MAX_VARIANTS - 1)
                    .cloned(),
            );
        }
        if !value.tags.is_empty() {
            let mut tags = self.tags.lock().unwrap_or_else(|p| p.into_inner());
            for tag in &value.tags {
                tags.entry(tag.as_str().into())
                    .or_default()
                    .insert(key.into());
            }
        }
        self.hit_for_miss.invalidate(key);
        self.entries.insert(key.into(), Arc::new(Variants { list }));
        // Apply the byte bound now rather than at moka's next maintenance:
        // an insert is a miss, already paying for an origin fetch.
        self.entries.run_pending_tasks();
    }

    /// Removes `value` from the key's variants if it is still there (a
    /// fill that failed after its head was stored).
    pub fn remove_variant(&self, key: &str, value: &Arc<StoredResponse>) {
        if let Some(existing) = self.entries.get(key) {
            if existing.list.iter().any(|v| Arc::ptr_eq(v, value)) {
                let list: Vec<_> = existing
                    .list
                    .iter()
                    .filter(|v| !Arc::ptr_eq(v, value))
                    .cloned()
                    .collect();
                if list.is_empty() {
                    self.entries.invalidate(key);
                } else {
                    self.entries.insert(key.into(), Arc::new(Variants { list }));
                }
            }
        }
    }

    /// The newest response under a key.
    pub fn peek(&self, key: &str) -> Option<Arc<StoredResponse>> {
        self.entries.get(key).and_then(|v| v.list.first().cloned())
    }

    /// Removes a key with all its variants; true if something was there.
    pub fn remove(&self, key: &str) -> bool {
        self.entries.remove(key).is_some()
    }

    /// Purges every key carrying `tag`: removed, or only marked stale when
    /// `soft` (still served by stale-while-revalidate or stale-if-error).
    /// Returns the number of keys.
    pub fn purge_tag(&self, tag: &str, soft: bool) -> usize {
        let keys = {
            let mut tags = self.tags.lock().unwrap_or_else(|p| p.into_inner());
            if soft {
                tags.get(tag).cloned().unwrap_or_default()
            } else {
                tags.remove(tag).unwrap_or_default()
            }
        };
        for key in &keys {
            if soft {
                if let Some(variants) = self.entries.get(&**key) {
                    variants.list.iter().for_each(|v| v.expire());
                }
            } else {
                self.entries.invalidate(&**key);
            }
        }
        keys.len()
    }

    /// Marks a key's variants stale without removing them.
    pub fn expire(&self, key: &str) -> bool {
        match self.entries.get(key) {
            Some(variants) => {
                variants.list.iter().for_each(|v| v.expire());
                true
            }
            None => false,
        }
    }

    /// Drops everything, in constant time (moka invalidates lazily).
    pub fn clear(&self) {
        self.entries.invalidate_all();
        self.tags.lock().unwrap_or_else(|p| p.into_inner()).clear();
        self.hit_for_miss.invalidate_all();
    }

    /// Remembers that a key's answer was not cacheable, so for a while its
    /// requests go to the origin in parallel instead of queueing behind one
    /// another's fills.
    pub fn mark_uncacheable(&self, key: &str) {
        self.hit_for_miss.insert(key.into(), ());
    }

    pub fn is_uncacheable(&self, key: &str) -> bool {
        self.hit_for_miss.contains_key(key)
    }

    /// Bytes held (approximate: moka's pending work may lag).
    pub fn weighted_size(&self) -> u64 {
        self.entries.run_pending_tasks();
        self.entries.weighted_size()
    }
}

fn unindex(index: &TagIndex, key: &str, value: &Variants) {
    let mut tags = index.lock().unwrap_or_else(|p| p.into_inner());
    for tag in value.list.iter().flat_map(|v| v.tags.iter()) {
        if let Some(keys) = tags.get_mut(tag.as_str()) {
            keys.remove(key);
            if keys.is_empty() {
                tags.remove(tag.as_str());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::{HeaderMap, HeaderValue, StatusCode};

    fn store() -> TenantStore {
        TenantStore::new(1 << 20, Duration::from_secs(60), Duration::from_secs(10))
    }

    fn response(vary: &[(&str, Option<&str>)], tags: &[&str]) -> Arc<StoredResponse> {
        let mut r = crate::cache::test_response(
            StatusCode::OK,
            HeaderMap::new(),
            b"body",
            Duration::from_secs(60),
        );
        r.vary = vary
            .iter()
            .map(|(n, v)| {
                (
                    http::HeaderName::from_bytes(n.as_bytes()).unwrap(),
                    v.map(str::to_owned),
                )
            })
            .collect();
        r.tags = tags.iter().map(|t| t.to_string()).collect();
        Arc::new(r)
    }

    fn request(accept_encoding: Option<&'static str>) -> HeaderMap {
        let mut h = HeaderMap::new();
        if let Some(v) = accept_encoding {
            h.insert("accept-encoding", HeaderValue::from_static(v));
        }
        h
    }

    #[test]
    fn variants_are_selected_by_the_fields_they_vary_on() {
        let store = store();
        store.insert("k", response(&[("accept-encoding", Some("gzip"))], &[]));
        store.insert("k", response(&[("accept-encoding", None)], &[]));
        assert!(matches!(
            store.select("k", &request(Some("gzip"))),
            Selected::Found(_)
        ));
        assert!(matches!(
            store.select("k", &request(None)),
            Selected::Found(_)
        ));
        assert!(matches!(
            store.select("k", &request(Some("br"))),
            Selected::VaryMiss
        ));
        assert!(matches!(
            store.select("other", &request(None)),
            Selected::Miss
        ));
    }

    #[test]
    fn a_tag_purge_removes_or_expires_every_key_carrying_it() {
        let store = store();
        store.insert("a", response(&[], &["product-1"]));
        store.insert("b", response(&[], &["product-1", "list"]));
        store.insert("c", response(&[], &["list"]));
        assert_eq!(store.purge_tag("list", true), 2);
        let now = Instant::now();
        assert!(!store.peek("c").unwrap().is_fresh(now), "soft: kept, stale");
        assert_eq!(store.purge_tag("product-1", false), 2);
        assert!(store.peek("a").is_none() && store.peek("b").is_none());
        assert!(store.peek("c").is_some());
    }

    #[test]
    fn a_failed_fill_removes_only_its_own_variant() {
        let store = store();
        let failed = response(&[("accept-encoding", Some("gzip"))], &[]);
        store.insert("k", response(&[("accept-encoding", None)], &[]));
        store.insert("k", failed.clone());
        store.remove_variant("k", &failed);
        assert!(matches!(
            store.select("k", &request(Some("gzip"))),
            Selected::VaryMiss
        ));
        assert!(matches!(
            store.select("k", &request(None)),
            Selected::Found(_)
        ));
    }

    #[test]
    fn storing_a_key_clears_its_hit_for_miss_mark() {
        let store = store();
        store.mark_uncacheable("k");
        assert!(store.is_uncacheable("k"));
        store.insert("k", response(&[], &[]));
        assert!(!store.is_uncacheable("k"));
    }

    #[test]
    fn the_store_stays_within_its_quota() {
        let store = TenantStore::new(64 * 1024, Duration::from_secs(60), Duration::from_secs(1));
        for i in 0..1000 {
            store.insert(&format!("k{i}"), response(&[], &[]));
        }
        assert!(
            store.weighted_size() <= 64 * 1024,
            "{}",
            store.weighted_size()
        );
    }
}
