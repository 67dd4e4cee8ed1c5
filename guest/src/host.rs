//! Capabilities the node offers a policy: logging, tenant config values,
//! the tenant's cache, and fetches to the tenant's declared backends.

use alloc::string::{String, ToString};
use alloc::vec::Vec;

use crate::bindings::outpost::edge::host as wit;
use crate::FetchError;

/// Writes a debug line to the node's log.
pub fn debug(message: &str) {
    wit::log(wit::LogLevel::Debug, message)
}

/// Writes an info line to the node's log.
pub fn info(message: &str) {
    wit::log(wit::LogLevel::Info, message)
}

/// Writes a warning to the node's log.
pub fn warn(message: &str) {
    wit::log(wit::LogLevel::Warn, message)
}

/// Writes an error line to the node's log.
pub fn error(message: &str) {
    wit::log(wit::LogLevel::Error, message)
}

/// A value from the tenant's `vars` table in the node config.
pub fn config(key: &str) -> Option<String> {
    wit::config_get(key)
}

/// What the tenant's cache holds under a key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CachedObject {
    pub status: u16,
    pub age: u32,
    pub fresh: bool,
}

/// Looks a key up in the tenant's cache without changing it.
pub fn cache_lookup(key: &str) -> Option<CachedObject> {
    wit::cache_lookup(key).map(|c| CachedObject { status: c.status, age: c.age, fresh: c.fresh })
}

/// Removes a key from the tenant's cache; true if something was removed.
pub fn cache_purge(key: &str) -> bool {
    wit::cache_purge(key)
}

/// A complete backend response.
#[derive(Debug, Clone)]
pub struct FetchResponse {
    pub status: u16,
    pub headers: Vec<(String, Vec<u8>)>,
    pub body: Vec<u8>,
}

/// Sends a `GET` for `path_with_query` to one of the tenant's backends and
/// waits for the whole response.
pub fn fetch(backend: &str, path_with_query: &str) -> Result<FetchResponse, FetchError> {
    let request = wit::FetchRequest {
        method: "GET".to_string(),
        path_with_query: path_with_query.to_string(),
        headers: Vec::new(),
        body: Vec::new(),
    };
    wit::fetch(backend, &request)
        .map(|r| FetchResponse { status: r.status, headers: r.headers, body: r.body })
        .map_err(FetchError::from)
}
