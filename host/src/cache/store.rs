//! One tenant's objects (on the shelves of `shelves`: its quota, and what
//! it borrows beyond it from the node), the tag index for purges by
//! surrogate key, and the hit-for-miss marks.

use std::sync::Arc;
use std::time::Duration;

use moka::sync::Cache;
use serde::Serialize;

use super::ledger::Ledger;
use super::shelves::{Shelves, TagIndex};
use super::StoredResponse;

/// Variants kept per key; the oldest goes when a new one arrives.
const MAX_VARIANTS: usize = 16;

/// Keys remembered as uncacheable at once.
const HIT_FOR_MISS_KEYS: u64 = 10_000;

/// What a lookup found under a key.
pub enum Selected {
    /// A stored response this request selects.
    Found(Arc<StoredResponse>),
    /// Responses exist for the key, but for other values of the fields
    /// they vary on.
    VaryMiss,
    Miss,
}

#[derive(Clone)]
pub struct TenantStore {
    shelves: Arc<Shelves>,
    tags: TagIndex,
    hit_for_miss: Cache<Box<str>, ()>,
}

/// What a tenant's store holds.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct Usage {
    /// Keys stored.
    pub objects: u64,
    /// Bytes they are charged (see `weight`), borrowed ones included.
    pub bytes: u64,
    /// Bytes the tenant is guaranteed however full the node.
    pub guaranteed: u64,
    /// Keys pushed out to make room so far.
    pub evictions: u64,
}

impl TenantStore {
    /// A store guaranteed `quota_bytes` of the node's cache, and lent more
    /// while the node has room.
    pub fn new(
        ledger: &Arc<Ledger>,
        quota_bytes: u64,
        stale_retention: Duration,
        hit_for_miss: Duration,
    ) -> TenantStore {
        let tags: TagIndex = Arc::default();
        let shelves = Shelves::new(ledger, quota_bytes, stale_retention, &tags);
        let hit_for_miss = Cache::builder()
            .max_capacity(HIT_FOR_MISS_KEYS)
            .time_to_live(hit_for_miss)
            .build();
        TenantStore {
            shelves,
            tags,
            hit_for_miss,
        }
    }

    /// The bytes the tenant is guaranteed, however full the node; set again
    /// on every reload, as the quotas are shared out again.
    pub fn set_guarantee(&self, bytes: u64) {
        self.shelves.set_guarantee(bytes);
    }

    /// What the store holds, for `/metrics` and the status page; moka's key
    /// counts lag its pending work a little.
    pub fn usage(&self) -> Usage {
        let (objects, bytes, guaranteed, evictions) = self.shelves.usage();
        Usage {
            objects,
            bytes,
            guaranteed,
            evictions,
        }
    }

    /// The stored response a request with these header fields selects.
    pub fn select(&self, key: &str, request: &http::HeaderMap) -> Selected {
        match self.shelves.find(key) {
            None => Selected::Miss,
            Some(found) => match found.variants.list.iter().find(|v| v.matches_vary(request)) {
                Some(v) => Selected::Found(v.clone()),
                None => Selected::VaryMiss,
            },
        }
    }

    /// Stores a response, replacing the variant with the same secondary key.
    pub fn insert(&self, key: &str, value: Arc<StoredResponse>) {
        let existing = self.shelves.find(key);
        let mut list = vec![value.clone()];
        if let Some(existing) = &existing {
            list.extend(
                existing
                    .variants
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
        self.shelves.put(key, list, existing);
    }

    /// Removes `value` from the key's variants if it is still there (a
    /// fill that failed after its head was stored).
    pub fn remove_variant(&self, key: &str, value: &Arc<StoredResponse>) {
        let Some(found) = self.shelves.find(key) else {
            return;
        };
        let list = &found.variants.list;
        if !list.iter().any(|v| Arc::ptr_eq(v, value)) {
            return;
        }
        let rest: Vec<_> = list
            .iter()
            .filter(|v| !Arc::ptr_eq(v, value))
            .cloned()
            .collect();
        if rest.is_empty() {
            self.remove(key);
        } else {
            self.shelves.put(key, rest, Some(found));
        }
    }

    /// The newest response under a key.
    pub fn peek(&self, key: &str) -> Option<Arc<StoredResponse>> {
        self.shelves
            .find(key)
            .and_then(|f| f.variants.list.first().cloned())
    }

    /// Removes a key with all its variants; true if something was there.
    pub fn remove(&self, key: &str) -> bool {
        self.shelves.remove(key)
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
        let mut purged = 0;
        for key in &keys {
            let Some(found) = self.shelves.find(key).filter(|f| f.variants.carries(tag)) else {
                continue;
            };
            purged += 1;
            if soft {
                found.variants.list.iter().for_each(|v| v.expire());
            } else {
                self.remove(key);
            }
        }
        purged
    }

    /// Marks a key's variants stale without removing them.
    pub fn expire(&self, key: &str) -> bool {
        match self.shelves.find(key) {
            Some(found) => {
                found.variants.list.iter().for_each(|v| v.expire());
                true
            }
            None => false,
        }
    }

    /// Drops everything, in constant time.
    pub fn clear(&self) {
        self.shelves.clear();
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

    /// Bytes held, once moka's pending work is done.
    pub fn weighted_size(&self) -> u64 {
        self.shelves.settle();
        self.usage().bytes
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cache::shelves::Variants;
    use http::{HeaderMap, HeaderValue, StatusCode};
    use std::time::Instant;

    fn store() -> TenantStore {
        store_on(&Ledger::new(1 << 20), 1 << 20)
    }

    fn store_on(ledger: &Arc<Ledger>, quota: u64) -> TenantStore {
        TenantStore::new(
            ledger,
            quota,
            Duration::from_secs(60),
            Duration::from_secs(10),
        )
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

    fn fill(store: &TenantStore, prefix: &str, n: usize, tags: &[&str]) {
        for i in 0..n {
            store.insert(&format!("{prefix}{i}"), response(&[], tags));
        }
    }

    #[test]
    fn a_store_alone_borrows_the_idle_node_and_stays_within_it() {
        let ledger = Ledger::new(256 * 1024);
        let store = store_on(&ledger, 64 * 1024);
        fill(&store, "k", 1000, &["all"]);
        let held = store.weighted_size();
        assert!(held > 200 * 1024 && held <= 256 * 1024, "{held}");
        assert_eq!(ledger.used(), held);
        let usage = store.usage();
        let keys = usage.objects;
        assert!(keys > 100 && usage.evictions > 0, "{usage:?}");
        let borrowed = (0..1000)
            .filter(|i| store.peek(&format!("k{i}")).is_some())
            .count() as u64;
        assert_eq!(borrowed, keys, "objects on either shelf are found");
        assert_eq!(store.purge_tag("all", false) as u64, keys);
        assert_eq!(store.weighted_size(), 0);
        assert_eq!(ledger.used(), 0);
    }

    #[test]
    fn a_tenant_within_its_guarantee_takes_lent_bytes_back_and_no_more() {
        let ledger = Ledger::new(256 * 1024);
        let (a, b) = (store_on(&ledger, 128 * 1024), store_on(&ledger, 128 * 1024));
        fill(&b, "b", 1000, &[]);
        assert!(b.weighted_size() > 200 * 1024);
        fill(&a, "a", 1000, &[]);
        let (a_held, b_held) = (a.weighted_size(), b.weighted_size());
        let object = u64::from(Variants::new("a1", vec![response(&[], &[])]).weight);
        assert!(a_held + b_held <= 256 * 1024, "{a_held} + {b_held}");
        for held in [a_held, b_held] {
            assert!(
                held + object >= 128 * 1024,
                "{a_held} {b_held}: one below its guarantee"
            );
        }
    }

    #[test]
    fn a_smaller_guarantee_is_given_back_when_the_node_is_full() {
        let ledger = Ledger::new(128 * 1024);
        let (a, b) = (store_on(&ledger, 128 * 1024), store_on(&ledger, 0));
        fill(&a, "a", 1000, &[]);
        a.set_guarantee(64 * 1024);
        b.set_guarantee(64 * 1024);
        fill(&b, "b", 1000, &[]);
        let (a_held, b_held) = (a.weighted_size(), b.weighted_size());
        assert!(a_held + b_held <= 128 * 1024, "{a_held} + {b_held}");
        assert!(
            b_held >= 60 * 1024 && a_held >= 60 * 1024,
            "{a_held} {b_held}"
        );
    }

    #[test]
    fn a_dropped_store_returns_its_bytes_to_the_node() {
        let ledger = Ledger::new(1 << 20);
        fill(&store_on(&ledger, 1 << 20), "k", 10, &[]);
        assert_eq!(ledger.used(), 0);
    }
}
