//! The guest environment a tenant gives its policy's instances: its own
//! vars, cache store and declared backends, nothing else.

use std::time::Instant;

use bytes::Bytes;
use futures::future::BoxFuture;
use futures::FutureExt;

use super::Tenant;
use crate::config::LimitsConfig;
use crate::origin::OriginError;
use crate::pop::marker::CountOp;
use crate::ratelimit::Verdict;
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
        key: &str,
        cost: u32,
        dry_run: bool,
    ) -> Result<RateVerdict, CallError> {
        let l = self
            .limiters
            .get(limiter)
            .ok_or_else(|| CallError::Undeclared(limiter.to_string()))?;
        if dry_run {
            return Ok(RateVerdict::Allow);
        }
        Ok(match l.check(key, cost, Instant::now()) {
            Verdict::Allow => RateVerdict::Allow,
            Verdict::Deny { retry_after_s } => RateVerdict::Deny { retry_after_s },
        })
    }

    fn counter_add(
        &self,
        counter: &str,
        key: &str,
        delta: u64,
        dry_run: bool,
    ) -> BoxFuture<'static, Result<u64, CallError>> {
        let Some(local) = self.counters.get(counter) else {
            let undeclared = CallError::Undeclared(counter.to_string());
            return futures::future::ready(Err(undeclared)).boxed();
        };
        let owner = self
            .pop
            .as_ref()
            .and_then(|pop| Some((pop.clone(), pop.counter_owner(&self.id, counter, key)?)));
        let result = match owner {
            _ if dry_run => Ok(delta),
            None => Ok(local.add(key, delta, unix_now())),
            Some((pop, peer)) => {
                let op = CountOp {
                    tenant: self.id.to_string(),
                    counter: counter.to_string(),
                    key: key.to_string(),
                    delta,
                };
                return async move {
                    pop.count_at(&peer, op)
                        .await
                        .map_err(|e| CallError::Unavailable(e.to_string()))
                }
                .boxed();
            }
        };
        futures::future::ready(result).boxed()
    }

    fn sign_url(&self, path: &str, expires_in: u32) -> Result<String, CallError> {
        let urls = self
            .signed_urls
            .as_ref()
            .ok_or_else(|| CallError::Undeclared("signed_urls".into()))?;
        let now = unix_now();
        urls.sign(path, now + u64::from(expires_in), now, None)
            .map_err(CallError::Invalid)
    }

    fn hmac_sha256(&self, secret: &str, message: &[u8]) -> Result<[u8; 32], CallError> {
        let key = self
            .secrets
            .get(secret)
            .ok_or_else(|| CallError::Undeclared(secret.to_string()))?;
        Ok(crate::signed_url::hmac_sha256(key, message))
    }
}

/// Seconds since the Unix epoch: what tokens and counters' resets count in.
pub(crate) fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
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
