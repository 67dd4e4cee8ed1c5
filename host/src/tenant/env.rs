//! The guest environment a tenant gives its policy's instances: its own
//! vars, cache store and declared backends, nothing else.

use std::time::Instant;

use bytes::Bytes;
use futures::future::BoxFuture;
use futures::FutureExt;

use super::Tenant;
use crate::config::LimitsConfig;
use crate::origin::OriginError;
use crate::runtime::{CachedObject, CallError, FetchError, GuestEnv, RateVerdict};

impl GuestEnv for Tenant {
    fn tenant_id(&self) -> &str {
        &self.id
    }

    fn limits(&self) -> LimitsConfig {
        self.limits
    }

    fn var(&self, key: &str) -> Option<String> {
        self.vars.get(key).cloned()
    }

    fn cache_peek(&self, key: &str) -> Option<CachedObject> {
        let now = Instant::now();
        self.store.peek(key).map(|stored| CachedObject {
            status: stored.status.as_u16(),
            age: stored.age(now).as_secs().min(u32::MAX as u64) as u32,
            fresh: stored.is_fresh(now),
        })
    }

    fn cache_purge(&self, key: &str) -> bool {
        self.store.remove(key)
    }

    fn backend_healthy(&self, backend: &str) -> bool {
        self.backends.get(backend).is_some_and(|b| b.healthy())
    }

    fn fetch(
        &self,
        backend: &str,
        request: http::Request<Bytes>,
    ) -> BoxFuture<'static, Result<http::Response<Bytes>, FetchError>> {
        let Some(backend) = self.backends.get(backend).cloned() else {
            let unknown = FetchError::UnknownBackend(backend.to_string());
            return futures::future::ready(Err(unknown)).boxed();
        };
        async move {
            backend
                .fetch_complete(request)
                .await
                .map_err(FetchError::from)
        }
        .boxed()
    }

    fn rate_check(
        &self,
        limiter: &str,
        _key: &str,
        _cost: u32,
        _dry_run: bool,
    ) -> Result<RateVerdict, CallError> {
        Err(CallError::Undeclared(limiter.to_string()))
    }

    fn counter_add(
        &self,
        counter: &str,
        _key: &str,
        _delta: u64,
        _dry_run: bool,
    ) -> BoxFuture<'static, Result<u64, CallError>> {
        futures::future::ready(Err(CallError::Undeclared(counter.to_string()))).boxed()
    }

    fn sign_url(&self, _path: &str, _expires_in: u32) -> Result<String, CallError> {
        Err(CallError::Undeclared("signed_urls".into()))
    }

    fn hmac_sha256(&self, secret: &str, _message: &[u8]) -> Result<[u8; 32], CallError> {
        Err(CallError::Undeclared(secret.to_string()))
    }
}

/// What a policy is told of an origin failure. (Here, where the engines
/// meet: `origin` knows nothing of guests, `runtime` nothing of origins.)
impl From<OriginError> for FetchError {
    fn from(error: OriginError) -> FetchError {
        match error {
            OriginError::Connect(detail) => FetchError::ConnectFailed(detail),
            OriginError::Tls(detail) => FetchError::Tls(detail),
            OriginError::Unavailable(detail) => FetchError::Unavailable(detail),
            OriginError::Timeout => FetchError::Timeout,
            e @ (OriginError::Invalid(_)
            | OriginError::RequestBody(_)
            | OriginError::TooLarge(_)) => FetchError::InvalidResponse(e.to_string()),
        }
    }
}
