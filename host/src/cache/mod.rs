//! The HTTP cache: in-memory, bounded by bytes (moka with a weigher), one
//! store per tenant so a tenant can neither read nor evict another's
//! objects, with request coalescing across all of them.
//!
//! The RFC 9111 rules for a shared cache live here, one concern a file:
//! response directives ([`directives`]), storability and freshness
//! ([`freshness`]), answering a request and coalescing ([`lookup`]), what a
//! backend's answer becomes (304 merge, stale-if-error, the fill: [`fill`]),
//! objects in slices ([`slice`]), and `Cache-Status` (RFC 9211). Bodies are
//! [`SharedBody`]s that readers follow while they fill; the per-tenant
//! store with its tag index is in [`store`], and the node's bytes that the
//! tenants share (each its quota, lending what it leaves unused) in
//! [`Ledger`].

pub mod body;
mod coalesce;
pub mod directives;
pub mod fill;
pub mod freshness;
pub mod head;
mod ledger;
pub mod lookup;
mod shelves;
pub mod slice;
mod status;
pub mod store;
mod stored;
mod weight;

use std::sync::Arc;
use std::time::Duration;

pub use body::{SharedBody, StoredBody};
pub use coalesce::{FillGuard, FillOutcome, Role};
pub use freshness::NotStored;
pub use ledger::Ledger;
pub use status::{key_param as status_key_param, CacheStatus, Detail, Fwd, CACHE_STATUS};
pub use store::TenantStore;
#[cfg(test)]
pub(crate) use stored::{test_ok, test_response};
pub use stored::{vary_values, StoredResponse};

use crate::config::CacheConfig;

/// A key in the coalescing table: the tenant and the key its policy chose.
/// A tenant can only ever build keys in its own namespace.
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

/// Node-wide cache settings and the coalescing table; the objects live in
/// each tenant's [`TenantStore`] (`Tenant::store`), which callers use
/// directly.
pub struct HttpCache {
    coalescer: Arc<coalesce::Coalescer>,
    /// Largest body stored, in bytes.
    pub max_object_bytes: u64,
    /// How long a waiter waits for a fill before fetching itself.
    pub coalesce_wait: Duration,
    /// Size of the slices Range misses are fetched and cached in.
    pub slice_bytes: u64,
}

impl HttpCache {
    pub fn new(config: &CacheConfig) -> HttpCache {
        HttpCache {
            coalescer: Arc::default(),
            max_object_bytes: config.max_object_mb * 1024 * 1024,
            coalesce_wait: Duration::from_millis(config.coalesce_wait_ms),
            slice_bytes: config.slice_kb.max(1) * 1024,
        }
    }

    /// Joins or starts the fill of a key.
    pub fn join_fill(&self, key: &CacheKey) -> Role {
        self.coalescer.join(key)
    }
}
