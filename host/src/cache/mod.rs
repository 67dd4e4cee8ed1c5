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

/// A cache key: the tenant's namespace and the key its policy chose. A
/// tenant can only ever build keys in its own namespace.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct CacheKey {
    tenant: Arc<str>,
    key: Box<str>,
}

impl CacheKey {
    pub fn new(tenant: &Arc<str>, key: &str) -> CacheKey {
        CacheKey {
            tenant: tenant.clone(),
            key: key.into(),
        }
    }

    pub fn key(&self) -> &str {
        &self.key
    }
}

pub struct HttpCache {
    store: Cache<CacheKey, Arc<StoredResponse>>,
    coalescer: Arc<coalesce::Coalescer>,
    /// Largest body stored, in bytes.
    pub max_object_bytes: u64,
    /// Extra time a response is kept after it turns stale.
    pub stale_retention: Duration,
    /// How long a waiter waits for a fill before fetching itself.
    pub coalesce_wait: Duration,
}

/// Keeps each entry until its freshness ends plus the stale retention (or
/// its RFC 5861 windows, if longer).
struct Retention(Duration);

impl moka::Expiry<CacheKey, Arc<StoredResponse>> for Retention {
    fn expire_after_create(
        &self,
        _key: &CacheKey,
        value: &Arc<StoredResponse>,
        _now: Instant,
    ) -> Option<Duration> {
        let f = &value.freshness;
        let remaining = f.lifetime.saturating_sub(f.initial_age);
        Some(remaining + self.0.max(f.stale_while_revalidate).max(f.stale_if_error))
    }

    fn expire_after_update(
        &self,
        key: &CacheKey,
        value: &Arc<StoredResponse>,
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
            .weigher(|_key: &CacheKey, value: &Arc<StoredResponse>| value.weight())
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

    pub fn get(&self, key: &CacheKey) -> Option<Arc<StoredResponse>> {
        self.store.get(key)
    }

    pub fn insert(&self, key: CacheKey, value: Arc<StoredResponse>) {
        self.store.insert(key, value);
    }

    /// Looks a key up for a guest's `cache-lookup`.
    pub fn peek(&self, tenant: &Arc<str>, key: &str) -> Option<Arc<StoredResponse>> {
        self.store.get(&CacheKey::new(tenant, key))
    }

    /// Removes a key; true if something was there.
    pub fn purge(&self, tenant: &Arc<str>, key: &str) -> bool {
        self.store.remove(&CacheKey::new(tenant, key)).is_some()
    }

    /// Joins or starts the fill of a key.
    pub fn join_fill(&self, key: &CacheKey) -> Role {
        self.coalescer.join(key)
    }
}
