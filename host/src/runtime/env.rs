//! What a guest's host calls reach: the environment its tenant gives it.
//!
//! `runtime` defines the capabilities; the `tenant` layer implements them
//! over its own backends, cache store and vars. A guest can therefore reach
//! only what its tenant holds, and the runtime knows nothing of tenants.

use std::sync::Arc;

use bytes::Bytes;
use futures::future::BoxFuture;

use super::policy::{CachedObject, CallError, FetchError, RateVerdict};
use crate::config::LimitsConfig;

/// The capabilities behind the `outpost:edge/host` imports, scoped to one
/// tenant.
pub trait GuestEnv: Send + Sync {
    /// The tenant's id, for log lines.
    fn tenant_id(&self) -> &str;
    /// The limits every instance of the tenant runs under.
    fn limits(&self) -> LimitsConfig;
    /// `config-get`: a value of the tenant's `vars`.
    fn var(&self, key: &str) -> Option<String>;
    /// `cache-lookup`: what the tenant's cache holds under a key.
    fn cache_peek(&self, key: &str) -> Option<CachedObject>;
    /// `cache-purge`: removes a key of the tenant's cache.
    fn cache_purge(&self, key: &str) -> bool;
    /// `backend-healthy`: whether a declared backend has a member that may
    /// take a request; `false` for an undeclared name.
    fn backend_healthy(&self, backend: &str) -> bool;
    /// `fetch`: one complete exchange with a backend the tenant declared.
    /// The request's URI is the path and query to ask for.
    fn fetch(
        &self,
        backend: &str,
        request: http::Request<Bytes>,
    ) -> BoxFuture<'static, Result<http::Response<Bytes>, FetchError>>;
    /// `rate-check`: counts `cost` against `key` on a declared limiter.
    /// With `dry_run` (smoke calls, previews) nothing is counted and a
    /// declared limiter allows.
    fn rate_check(
        &self,
        limiter: &str,
        key: &str,
        cost: u32,
        dry_run: bool,
    ) -> Result<RateVerdict, CallError>;
    /// `counter-add` (`delta` > 0) and `counter-get` (`delta` = 0) on a
    /// declared counter, at the node that keeps the key. With `dry_run`
    /// nothing leaves the node or is counted: the answer is `delta`.
    fn counter_add(
        &self,
        counter: &str,
        key: &str,
        delta: u64,
        dry_run: bool,
    ) -> BoxFuture<'static, Result<u64, CallError>>;
    /// `sign-url`: `path` signed with the tenant's current signing key.
    fn sign_url(&self, path: &str, expires_in: u32) -> Result<String, CallError>;
    /// `hmac-sha256` under a declared secret.
    fn hmac_sha256(&self, secret: &str, message: &[u8]) -> Result<[u8; 32], CallError>;
}

/// What one instance's host calls may reach.
#[derive(Clone)]
pub struct GuestContext {
    pub env: Arc<dyn GuestEnv>,
    /// The module version running, for log lines.
    pub version: Arc<str>,
    /// Smoke calls, previews and key lookups: no subrequest leaves the node
    /// and the cache is not changed.
    pub offline: bool,
    /// A request another POP member forwarded after running this policy on
    /// it: that run counted it, so here `rate-check` counts nothing (and
    /// allows) and `counter-add` only reads the total, which includes it.
    pub replayed: bool,
}

/// Decides whether a running request hook may go on at its next tick.
/// The tenant layer implements it to hold a tenant to its share of guest
/// CPU while the hooks it already started are running, not only when the
/// next one starts.
pub trait Pacer: Send + Sync {
    /// Asked at each tick. `None`: run on. `Some(wait)`: the hook stops
    /// here until `wait` resolves; `true` then lets it go on, `false` cuts
    /// it (the request gets [`super::GuestFailure::CpuShare`]).
    fn pause(self: Arc<Self>) -> Option<BoxFuture<'static, bool>>;
}
