//! Capabilities the node offers a policy: logging, tenant config values,
//! the tenant's cache, its backends' health, and fetches to the tenant's
//! declared backends.
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
    return wit::cache_lookup(key).map(|c| CachedObject { status: c.status, age: c.age, fresh: c.fresh });
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
            .map(|r| FetchResponse { status: r.status, headers: r.headers, body: r.body })
            .map_err(FetchError::from)
    }
    #[cfg(not(target_arch = "wasm32"))]
    crate::testing::native_fetch(backend, request)
}
