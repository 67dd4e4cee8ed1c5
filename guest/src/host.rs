//! Capabilities the node offers a policy: logging, tenant config values,
//! the tenant's cache, its backends' health, fetches to the tenant's
//! declared backends, rate limits, counters, signed links and HMACs under
//! the tenant's secrets.
//!
//! The node reuses a request hook's decision for later requests that read
//! the same request fields and config values, without running the policy
//! again. A decision that calls [`log`](info), [`cache_lookup`],
//! [`cache_purge`], [`backend_healthy`], [`fetch`], [`rate_check`],
//! [`counter_add`], [`counter_get`], [`sign_url`] or [`hmac_sha256`] is
//! never reused: each of them may answer differently next time (a rate
//! limit, a counter) or has an effect. So the policy runs on every request
//! that takes such a path, cache hits included; keep these calls on the
//! paths that need them.
//!
//! In a policy these call the node. In a unit test on the host target they
//! answer from the test environment of [`crate::testing`].

use alloc::string::{String, ToString};
use alloc::vec::Vec;

#[cfg(target_arch = "wasm32")]
use crate::bindings::outpost::edge::host as wit;
use crate::FetchError;

fn log(level: &str, message: &str) {
    #[cfg(target_arch = "wasm32")]
    {
        let level = match level {
            "debug" => wit::LogLevel::Debug,
            "info" => wit::LogLevel::Info,
            "warn" => wit::LogLevel::Warn,
            _ => wit::LogLevel::Error,
        };
        wit::log(level, message)
    }
    #[cfg(not(target_arch = "wasm32"))]
    crate::testing::native_log(level, message)
}

/// Writes a debug line to the node's log.
pub fn debug(message: &str) {
    log("debug", message)
}

/// Writes an info line to the node's log.
pub fn info(message: &str) {
    log("info", message)
}

/// Writes a warning to the node's log.
pub fn warn(message: &str) {
    log("warn", message)
}

/// Writes an error line to the node's log.
pub fn error(message: &str) {
    log("error", message)
}

/// A value from the tenant's `vars` table in the node config.
pub fn config(key: &str) -> Option<String> {
    #[cfg(target_arch = "wasm32")]
    return wit::config_get(key);
    #[cfg(not(target_arch = "wasm32"))]
    crate::testing::native_var(key)
}

/// What the tenant's cache holds under a key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CachedObject {
    pub status: u16,
    pub age: u32,
    pub fresh: bool,
}

/// Looks a key up in the tenant's cache without changing it. (Nothing is
/// cached in a unit test.)
pub fn cache_lookup(key: &str) -> Option<CachedObject> {
    #[cfg(target_arch = "wasm32")]
    return wit::cache_lookup(key).map(|c| CachedObject {
        status: c.status,
        age: c.age,
        fresh: c.fresh,
    });
    #[cfg(not(target_arch = "wasm32"))]
    {
        let _ = key;
        None
    }
}

/// Removes a key from the tenant's cache; true if something was removed.
pub fn cache_purge(key: &str) -> bool {
    #[cfg(target_arch = "wasm32")]
    return wit::cache_purge(key);
    #[cfg(not(target_arch = "wasm32"))]
    {
        let _ = key;
        false
    }
}

/// Whether a backend of the tenant has a member that may take a request
/// now (probes pass, not taken out after failures); false for a name the
/// tenant did not declare. In a unit test every backend is healthy unless
/// [`crate::testing::set_unhealthy`] says otherwise.
pub fn backend_healthy(backend: &str) -> bool {
    #[cfg(target_arch = "wasm32")]
    return wit::backend_healthy(backend);
    #[cfg(not(target_arch = "wasm32"))]
    crate::testing::native_healthy(backend)
}

/// A request to one of the tenant's backends. `"/path".into()` is a GET.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FetchRequest {
    pub method: String,
    /// Path and query, e.g. `/config.json?v=2`.
    pub path_with_query: String,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl FetchRequest {
    /// A `GET` of `path_with_query`.
    pub fn get(path_with_query: &str) -> FetchRequest {
        FetchRequest::new("GET", path_with_query)
    }

    /// A request with this method and target, no fields, no body.
    pub fn new(method: &str, path_with_query: &str) -> FetchRequest {
        FetchRequest {
            method: method.to_string(),
            path_with_query: path_with_query.to_string(),
            headers: Vec::new(),
            body: Vec::new(),
        }
    }

    /// Adds a header field.
    pub fn header(mut self, name: &str, value: &str) -> FetchRequest {
        self.headers.push((name.to_string(), value.to_string()));
        self
    }

    /// Sets the body.
    pub fn body(mut self, body: impl Into<Vec<u8>>) -> FetchRequest {
        self.body = body.into();
        self
    }
}

impl From<&str> for FetchRequest {
    fn from(path_with_query: &str) -> FetchRequest {
        FetchRequest::get(path_with_query)
    }
}

/// A complete backend response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FetchResponse {
    pub status: u16,
    pub headers: Vec<(String, Vec<u8>)>,
    pub body: Vec<u8>,
}

/// Sends a request to one of the tenant's backends and waits for the whole
/// response: `fetch("config", "/flags.json")` for a GET, or a
/// [`FetchRequest`] with a method, fields and a body. Counts against the
/// tenant's subrequest limit.
pub fn fetch(backend: &str, request: impl Into<FetchRequest>) -> Result<FetchResponse, FetchError> {
    let request = request.into();
    #[cfg(target_arch = "wasm32")]
    {
        let request = wit::FetchRequest {
            method: request.method,
            path_with_query: request.path_with_query,
            headers: request.headers,
            body: request.body,
        };
        wit::fetch(backend, &request)
            .map(|r| FetchResponse {
                status: r.status,
                headers: r.headers,
                body: r.body,
            })
            .map_err(FetchError::from)
    }
    #[cfg(not(target_arch = "wasm32"))]
    crate::testing::native_fetch(backend, request)
}

/// Why a call on a named limiter, counter, secret or signing key failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CallError {
    /// The tenant's config declares nothing of this name.
    Undeclared(String),
    /// The node that keeps the counter's key could not be reached; nothing
    /// was counted.
    Unavailable(String),
    /// An argument the call cannot take (e.g. a path without a leading `/`).
    Invalid(String),
}

/// A rate limiter's answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RateVerdict {
    /// Within the limit; the cost was counted.
    Allow,
    /// Over the limit: seconds (at least 1) until the key is let through
    /// again, for a `Retry-After` field.
    Deny { retry_after: u32 },
}

#[cfg(target_arch = "wasm32")]
impl From<wit::CallError> for CallError {
    fn from(e: wit::CallError) -> Self {
        match e {
            wit::CallError::Undeclared(name) => CallError::Undeclared(name),
            wit::CallError::Unavailable(why) => CallError::Unavailable(why),
            wit::CallError::Invalid(why) => CallError::Invalid(why),
        }
    }
}

/// Counts `cost` against `key` on the tenant's limiter `limiter`
/// (`[tenant.limiters.NAME]`, with nginx `limit_req ... nodelay`
/// semantics): `Allow`, or `Deny` with the seconds to wait. Node-local.
pub fn rate_check(limiter: &str, key: &str, cost: u32) -> Result<RateVerdict, CallError> {
    #[cfg(target_arch = "wasm32")]
    return match wit::rate_check(limiter, key, cost) {
        Ok(wit::RateVerdict::Allow) => Ok(RateVerdict::Allow),
        Ok(wit::RateVerdict::Deny(retry_after)) => Ok(RateVerdict::Deny { retry_after }),
        Err(e) => Err(e.into()),
    };
    #[cfg(not(target_arch = "wasm32"))]
    crate::testing::native_rate_check(limiter, key, cost)
}

/// Adds `delta` to `key` of the tenant's counter `counter`
/// (`[tenant.counters.NAME]`) and returns the new total, exact across the
/// POP.
pub fn counter_add(counter: &str, key: &str, delta: u64) -> Result<u64, CallError> {
    #[cfg(target_arch = "wasm32")]
    return wit::counter_add(counter, key, delta).map_err(CallError::from);
    #[cfg(not(target_arch = "wasm32"))]
    crate::testing::native_counter_add(counter, key, delta)
}

/// The current total of `key` of the tenant's counter `counter` (0 if never
/// counted).
pub fn counter_get(counter: &str, key: &str) -> Result<u64, CallError> {
    #[cfg(target_arch = "wasm32")]
    return wit::counter_get(counter, key).map_err(CallError::from);
    #[cfg(not(target_arch = "wasm32"))]
    crate::testing::native_counter_add(counter, key, 0)
}

/// A link to `path` (with an optional query) signed with the tenant's
/// current key, valid for `expires_in` seconds: what the node's signed-URL
/// check accepts. `Undeclared("signed_urls")` if the tenant signs none.
pub fn sign_url(path: &str, expires_in: u32) -> Result<String, CallError> {
    #[cfg(target_arch = "wasm32")]
    return wit::sign_url(path, expires_in).map_err(CallError::from);
    #[cfg(not(target_arch = "wasm32"))]
    crate::testing::native_sign_url(path, expires_in)
}

/// HMAC-SHA256 of `message` under the tenant's secret `secret`; the policy
/// never sees the secret. (In a unit test: a stand-in digest, see
/// [`crate::testing::set_secret`].)
pub fn hmac_sha256(secret: &str, message: &[u8]) -> Result<Vec<u8>, CallError> {
    #[cfg(target_arch = "wasm32")]
    return wit::hmac_sha256(secret, message).map_err(CallError::from);
    #[cfg(not(target_arch = "wasm32"))]
    crate::testing::native_hmac(secret, message)
}
