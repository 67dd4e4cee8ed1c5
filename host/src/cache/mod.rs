//! The HTTP cache: an in-memory store bounded by bytes (moka with a
//! weigher), namespaced by tenant, with request coalescing.
//!
//! Freshness and storability follow RFC 9111 for a shared cache
//! ([`freshness`]); the directive parser is in [`directives`].

mod coalesce;
pub mod directives;
pub mod freshness;
mod stored;

use std::sync::Arc;
use std::time::{Duration, Instant};

use moka::sync::Cache;

pub use coalesce::{wait as wait_for_fill, FillGuard, FillOutcome, Role};
pub use freshness::{Assessment, Freshness, NotStored, Override};
pub use stored::{vary_values, StoredResponse};

use crate::config::CacheConfig;
use crate::tenant::Tenant;

/// A cache key: the tenant's namespace and the key its policy chose. A
/// tenant can only ever build keys in its own namespace.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct CacheKey {
    tenant: Arc<str>,
    /// The tenant's namespace generation (see `Tenant::purge_all`).
    generation: u64,
    key: Box<str>,
}

impl CacheKey {
    /// The key `key` in `tenant`'s current namespace.
    pub fn new(tenant: &Tenant, key: &str) -> CacheKey {
        CacheKey {
            tenant: tenant.id.clone(),
            generation: tenant.cache_generation(),
            key: key.into(),
        }
    }

    pub fn key(&self) -> &str {
        &self.key
    }
}

pub struct HttpCache {
    store: Cache<CacheKey, Arc<Variants>>,
    coalescer: Arc<coalesce::Coalescer>,
    /// Largest body stored, in bytes.
    pub max_object_bytes: u64,
    /// Extra time a response is kept after it turns stale.
    pub stale_retention: Duration,
    /// How long a waiter waits for a fill before fetching itself.
    pub coalesce_wait: Duration,
}

/// Variants kept per key; the oldest goes when a new one arrives.
const MAX_VARIANTS: usize = 16;

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

/// Keeps each key until its longest-lived variant's freshness ends, plus
/// the stale retention (or its RFC 5861 windows, if longer).
struct Retention(Duration);

impl Retention {
    fn of(&self, value: &StoredResponse) -> Duration {
        let f = &value.freshness;
        let remaining = f.lifetime.saturating_sub(f.initial_age);
        remaining + self.0.max(f.stale_while_revalidate).max(f.stale_if_error)
    }
}

impl moka::Expiry<CacheKey, Arc<Variants>> for Retention {
    fn expire_after_create(
        &self,
        _key: &CacheKey,
        value: &Arc<Variants>,
        _now: Instant,
    ) -> Option<Duration> {
        value.list.iter().map(|v| self.of(v)).max()
    }

    fn expire_after_update(
        &self,
        key: &CacheKey,
        value: &Arc<Variants>,
        now: Instant,
        _current: Option<Duration>,
    ) -> Option<Duration> {
        self.expire_after_create(key, value, now)
    }
}

impl HttpCache {
    pub fn new(config: &CacheConfig) -> HttpCache {
        let stale_retention = Duration::from_secs(config.stale_retention_s);
        let store = Cache::builder()
            .max_capacity(config.max_size_mb * 1024 * 1024)
            .weigher(|_key: &CacheKey, value: &Arc<Variants>| {
                value
                    .list
                    .iter()
                    .fold(0u32, |sum, v| sum.saturating_add(v.weight()))
            })
            .expire_after(Retention(stale_retention))
            .build();
        HttpCache {
            store,
            coalescer: Arc::default(),
            max_object_bytes: config.max_object_mb * 1024 * 1024,
            stale_retention,
            coalesce_wait: Duration::from_millis(config.coalesce_wait_ms),
        }
    }

    /// The stored response a request with these header fields selects.
    pub fn select(&self, key: &CacheKey, request: &http::HeaderMap) -> Selected {
        match self.store.get(key) {
            None => Selected::Miss,
            Some(variants) => match variants.list.iter().find(|v| v.matches_vary(request)) {
                Some(v) => Selected::Found(v.clone()),
                None => Selected::VaryMiss,
            },
        }
    }

    /// Stores a response, replacing the variant with the same secondary key.
    pub fn insert(&self, key: CacheKey, value: Arc<StoredResponse>) {
        let mut list = vec![value.clone()];
        if let Some(existing) = self.store.get(&key) {
            list.extend(
                existing
                    .list
                    .iter()
                    .filter(|v| v.vary != value.vary)
                    .take(MAX_VARIANTS - 1)
                    .cloned(),
            );
        }
        self.store.insert(key, Arc::new(Variants { list }));
    }

    /// The newest response under a key, for a guest's `cache-lookup`.
    pub fn peek(&self, tenant: &Tenant, key: &str) -> Option<Arc<StoredResponse>> {
        self.store
            .get(&CacheKey::new(tenant, key))
            .and_then(|v| v.list.first().cloned())
    }

    /// Removes a key with all its variants; true if something was there.
    pub fn purge(&self, tenant: &Tenant, key: &str) -> bool {
        self.store.remove(&CacheKey::new(tenant, key)).is_some()
    }

    /// Joins or starts the fill of a key.
    pub fn join_fill(&self, key: &CacheKey) -> Role {
        self.coalescer.join(key)
    }
}
