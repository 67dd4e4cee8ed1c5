//! Unit-testing a policy with plain `cargo test` on the host target: build
//! the request (and backend responses) from parts, call your hooks, assert
//! on the decisions. Nothing here needs wasm or a node.
//!
//! ```
//! use outpost_guest::testing::{attempt, TestRequest, TestResponse};
//! use outpost_guest::{Decision, Policy, Request, ResponseDecision, Route};
//!
//! struct Api;
//!
//! impl Policy for Api {
//!     fn on_request(req: &Request) -> Decision {
//!         Decision::lookup(req.path(), Route::to("origin")).with_ttl(60)
//!     }
//! }
//!
//! let req = TestRequest::get("/a?b=1").header("user-agent", "test");
//! assert_eq!(
//!     Api::on_request(&req.as_request()),
//!     Decision::lookup("/a", Route::to("origin")).with_ttl(60)
//! );
//! let outcome = TestResponse::new(503).outcome();
//! assert_eq!(
//!     Api::on_response(&req.as_request(), &attempt("origin"), &outcome),
//!     ResponseDecision::Default
//! );
//! ```
//!
//! On the host target the [`crate::host`] capabilities answer from a
//! per-thread test environment instead of a node: [`set_var`] gives
//! `host::config` its values, [`reply`] scripts what `host::fetch` gets from
//! a backend, [`fetched`] and [`logged`] tell what the policy asked for;
//! [`declare_limiter`] and [`deny`] script `host::rate_check`,
//! [`declare_counter`] and [`set_counter`] back `host::counter_add` and
//! `counter_get` with exact in-memory totals, [`enable_signing`] and
//! [`set_secret`] stand in for `host::sign_url` and `host::hmac_sha256`,
//! and [`TestRequest::signature`] sets the signed-URL verdict.
//! Every test runs on its own thread, so tests do not see each other's.

use alloc::string::{String, ToString};
use alloc::vec::Vec;

use crate::{Attempt, FetchError, OriginResponse, Outcome, Request};

/// A request head built from parts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TestRequest {
    pub(crate) method: String,
    pub(crate) scheme: String,
    pub(crate) authority: String,
    pub(crate) path: String,
    pub(crate) query: Option<String>,
    pub(crate) headers: Vec<(String, Vec<u8>)>,
    pub(crate) client_addr: String,
    pub(crate) signature: crate::Signature,
}

impl TestRequest {
    /// A request for `target` (a path with an optional `?query`) on
    /// `example.com` over http, from 127.0.0.1.
    pub fn new(method: &str, target: &str) -> TestRequest {
        let (path, query) = match target.split_once('?') {
            Some((p, q)) => (p, Some(q.to_string())),
            None => (target, None),
        };
        TestRequest {
            method: method.to_string(),
            scheme: "http".into(),
            authority: "example.com".into(),
            path: if path.is_empty() {
                "/".into()
            } else {
                path.to_string()
            },
            query,
            headers: Vec::new(),
            client_addr: "127.0.0.1".into(),
            signature: crate::Signature::NotChecked,
        }
    }

    /// A `GET` of `target`.
    pub fn get(target: &str) -> TestRequest {
        TestRequest::new("GET", target)
    }

    /// The authority (lowercased, as the node passes it).
    pub fn authority(mut self, authority: &str) -> TestRequest {
        self.authority = authority.to_ascii_lowercase();
        self
    }

    /// `http` or `https`.
    pub fn scheme(mut self, scheme: &str) -> TestRequest {
        self.scheme = scheme.to_string();
        self
    }

    /// Adds a header field (the name is lowercased, as on the wire).
    pub fn header(mut self, name: &str, value: &str) -> TestRequest {
        self.headers
            .push((name.to_ascii_lowercase(), value.as_bytes().to_vec()));
        self
    }

    /// The client's address.
    pub fn client_addr(mut self, addr: &str) -> TestRequest {
        self.client_addr = addr.to_string();
        self
    }

    /// The verdict of the node's signed-URL check this request gets
    /// ([`crate::Signature::NotChecked`] unless set).
    pub fn signature(mut self, verdict: crate::Signature) -> TestRequest {
        self.signature = verdict;
        self
    }

    /// The request as a policy's hooks receive it.
    pub fn as_request(&self) -> Request<'_> {
        Request::from_parts(self)
    }

    pub(crate) fn values<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a [u8]> + 'a {
        self.headers
            .iter()
            .filter(move |(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_slice())
    }
}

/// A backend response head built from parts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TestResponse {
    pub(crate) status: u16,
    pub(crate) headers: Vec<(String, Vec<u8>)>,
}

impl TestResponse {
    pub fn new(status: u16) -> TestResponse {
        TestResponse {
            status,
            headers: Vec::new(),
        }
    }

    /// Adds a header field.
    pub fn header(mut self, name: &str, value: &str) -> TestResponse {
        self.headers
            .push((name.to_ascii_lowercase(), value.as_bytes().to_vec()));
        self
    }

    /// The attempt's outcome as the response hook receives it.
    pub fn outcome(self) -> Outcome {
        Outcome::Response(OriginResponse {
            head: crate::types::ResponseSource::Parts(self),
        })
    }

    pub(crate) fn get_header(&self, name: &str) -> Option<String> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .and_then(|(_, v)| String::from_utf8(v.clone()).ok())
    }
}

/// An attempt at the route's only backend, `backend`, with no stale copy.
pub fn attempt(backend: &str) -> Attempt {
    Attempt {
        backend: backend.to_string(),
        index: 0,
        remaining: 0,
        stale_available: false,
        member: None,
        failed_members: Vec::new(),
    }
}

/// An attempt whose backend gave no response.
pub fn failed(error: FetchError) -> Outcome {
    Outcome::Error(error)
}

#[cfg(not(target_arch = "wasm32"))]
pub use native::{
    declare_counter, declare_limiter, deny, enable_signing, fetched, logged, reply, set_counter,
    set_secret, set_unhealthy, set_var,
};

/// The test environment behind `crate::host` on the host target.
#[cfg(not(target_arch = "wasm32"))]
mod native {
    extern crate std;

    use alloc::collections::BTreeMap;
    use alloc::string::{String, ToString};
    use alloc::vec::Vec;
    use core::cell::RefCell;

    use crate::host::{CallError, FetchRequest, FetchResponse, RateVerdict};
    use crate::FetchError;

    #[derive(Default)]
    struct Env {
        vars: BTreeMap<String, String>,
        replies: BTreeMap<String, Result<FetchResponse, FetchError>>,
        fetched: Vec<(String, FetchRequest)>,
        logged: Vec<String>,
        unhealthy: Vec<String>,
        /// Declared limiters, and the (limiter, key) pairs scripted to be
        /// denied with their retry-after.
        limiters: Vec<String>,
        denied: BTreeMap<(String, String), u32>,
        /// Declared counters and their totals by (counter, key).
        counters: Vec<String>,
        totals: BTreeMap<(String, String), u64>,
        signing: bool,
        secrets: BTreeMap<String, Vec<u8>>,
    }

    std::thread_local! {
        static ENV: RefCell<Env> = RefCell::new(Env::default());
    }

    /// Gives `host::config(key)` a value on this thread.
    pub fn set_var(key: &str, value: &str) {
        ENV.with(|e| {
            e.borrow_mut()
                .vars
                .insert(key.to_string(), value.to_string())
        });
    }

    /// Makes `host::backend_healthy(backend)` answer false on this thread
    /// (every backend is healthy otherwise).
    pub fn set_unhealthy(backend: &str) {
        ENV.with(|e| e.borrow_mut().unhealthy.push(backend.to_string()));
    }

    pub(crate) fn healthy(backend: &str) -> bool {
        ENV.with(|e| !e.borrow().unhealthy.iter().any(|b| b == backend))
    }

    /// What `host::fetch` to `backend` gets on this thread. Backends without
    /// a reply answer `FetchError::UnknownBackend`.
    pub fn reply(backend: &str, response: Result<FetchResponse, FetchError>) {
        ENV.with(|e| e.borrow_mut().replies.insert(backend.to_string(), response));
    }

    /// Every `host::fetch` made on this thread: backend and request.
    pub fn fetched() -> Vec<(String, FetchRequest)> {
        ENV.with(|e| e.borrow().fetched.clone())
    }

    /// Every line logged on this thread, as `level: message`.
    pub fn logged() -> Vec<String> {
        ENV.with(|e| e.borrow().logged.clone())
    }

    /// Declares a limiter on this thread: `host::rate_check` on it allows
    /// every key that [`deny`] did not script (an undeclared one answers
    /// `CallError::Undeclared`, as on a node).
    pub fn declare_limiter(limiter: &str) {
        ENV.with(|e| e.borrow_mut().limiters.push(limiter.to_string()));
    }

    /// Makes `host::rate_check(limiter, key, _)` deny with this retry-after
    /// on this thread (and declares the limiter).
    pub fn deny(limiter: &str, key: &str, retry_after: u32) {
        declare_limiter(limiter);
        ENV.with(|e| {
            e.borrow_mut()
                .denied
                .insert((limiter.to_string(), key.to_string()), retry_after)
        });
    }

    /// Declares a counter on this thread: `host::counter_add` and
    /// `host::counter_get` keep its totals in memory, exactly.
    pub fn declare_counter(counter: &str) {
        ENV.with(|e| e.borrow_mut().counters.push(counter.to_string()));
    }

    /// Sets a counter's total for a key on this thread (and declares it).
    pub fn set_counter(counter: &str, key: &str, total: u64) {
        declare_counter(counter);
        ENV.with(|e| {
            e.borrow_mut()
                .totals
                .insert((counter.to_string(), key.to_string()), total)
        });
    }

    /// Lets `host::sign_url` sign on this thread: it answers
    /// `{path}?exp=+{expires_in}&sig=test` (`&` if the path has a query),
    /// a stand-in a test can compare, not a link a node accepts.
    pub fn enable_signing() {
        ENV.with(|e| e.borrow_mut().signing = true);
    }

    /// Declares a secret on this thread. `host::hmac_sha256` under it then
    /// answers a stand-in digest of 32 bytes that depends on the secret
    /// and the message (equal inputs, equal digests), not a real HMAC.
    pub fn set_secret(name: &str, value: &[u8]) {
        ENV.with(|e| {
            e.borrow_mut()
                .secrets
                .insert(name.to_string(), value.to_vec())
        });
    }

    pub(crate) fn rate_check(
        limiter: &str,
        key: &str,
        _cost: u32,
    ) -> Result<RateVerdict, CallError> {
        ENV.with(|e| {
            let env = e.borrow();
            if !env.limiters.iter().any(|l| l == limiter) {
                return Err(CallError::Undeclared(limiter.to_string()));
            }
            Ok(
                match env.denied.get(&(limiter.to_string(), key.to_string())) {
                    Some(&retry_after) => RateVerdict::Deny { retry_after },
                    None => RateVerdict::Allow,
                },
            )
        })
    }

    pub(crate) fn counter_add(counter: &str, key: &str, delta: u64) -> Result<u64, CallError> {
        ENV.with(|e| {
            let mut env = e.borrow_mut();
            if !env.counters.iter().any(|c| c == counter) {
                return Err(CallError::Undeclared(counter.to_string()));
            }
            let total = env
                .totals
                .entry((counter.to_string(), key.to_string()))
                .or_insert(0);
            *total = total.saturating_add(delta);
            Ok(*total)
        })
    }

    pub(crate) fn sign_url(path: &str, expires_in: u32) -> Result<String, CallError> {
        ENV.with(|e| {
            if !e.borrow().signing {
                return Err(CallError::Undeclared("signed_urls".into()));
            }
            let sep = if path.contains('?') { '&' } else { '?' };
            Ok(alloc::format!("{path}{sep}exp=+{expires_in}&sig=test"))
        })
    }

    pub(crate) fn hmac(secret: &str, message: &[u8]) -> Result<Vec<u8>, CallError> {
        ENV.with(|e| {
            let env = e.borrow();
            let Some(key) = env.secrets.get(secret) else {
                return Err(CallError::Undeclared(secret.to_string()));
            };
            // FNV-1a over key and message, spread over 32 bytes.
            let mut digest = Vec::with_capacity(32);
            let mut h: u64 = 0xcbf2_9ce4_8422_2325;
            for round in 0..4u8 {
                for &b in key.iter().chain([0xff, round].iter()).chain(message) {
                    h = (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
                }
                digest.extend_from_slice(&h.to_le_bytes());
            }
            Ok(digest)
        })
    }

    pub(crate) fn var(key: &str) -> Option<String> {
        ENV.with(|e| e.borrow().vars.get(key).cloned())
    }

    pub(crate) fn log(level: &str, message: &str) {
        ENV.with(|e| {
            e.borrow_mut()
                .logged
                .push(alloc::format!("{level}: {message}"))
        });
    }

    pub(crate) fn fetch(backend: &str, request: FetchRequest) -> Result<FetchResponse, FetchError> {
        ENV.with(|e| {
            let mut env = e.borrow_mut();
            env.fetched.push((backend.to_string(), request));
            env.replies
                .get(backend)
                .cloned()
                .unwrap_or_else(|| Err(FetchError::UnknownBackend(backend.to_string())))
        })
    }
}

#[cfg(not(target_arch = "wasm32"))]
pub(crate) use native::{
    counter_add as native_counter_add, fetch as native_fetch, healthy as native_healthy,
    hmac as native_hmac, log as native_log, rate_check as native_rate_check,
    sign_url as native_sign_url, var as native_var,
};

#[cfg(all(test, not(target_arch = "wasm32")))]
mod tests {
    use super::*;
    use crate::host::{self, FetchRequest, FetchResponse};

    #[test]
    fn host_calls_answer_from_the_test_environment() {
        set_var("greeting", "hello");
        assert_eq!(host::config("greeting").as_deref(), Some("hello"));
        assert_eq!(host::config("other"), None);
        host::warn("careful");
        assert_eq!(logged(), ["warn: careful"]);
        assert!(host::backend_healthy("api"));
        set_unhealthy("api");
        assert!(!host::backend_healthy("api"));
        reply(
            "api",
            Ok(FetchResponse {
                status: 200,
                headers: Vec::new(),
                body: b"{}".to_vec(),
            }),
        );
        let request = FetchRequest::new("POST", "/v1")
            .header("content-type", "application/json")
            .body("{}");
        assert_eq!(host::fetch("api", request.clone()).unwrap().status, 200);
        assert_eq!(
            host::fetch("other", "/"),
            Err(FetchError::UnknownBackend("other".into()))
        );
        assert_eq!(fetched()[0], ("api".to_string(), request));
        assert_eq!(fetched()[1].1, FetchRequest::get("/"));
    }

    #[test]
    fn request_parts_read_like_a_request_head() {
        let parts = TestRequest::new("PUT", "/a/b?x=1&y")
            .authority("Example.COM:8080")
            .header("Accept", "text/html")
            .header("accept", "*/*");
        let req = parts.as_request();
        assert_eq!(
            (req.method(), req.path(), req.query()),
            ("PUT".into(), "/a/b".into(), Some("x=1&y".into()))
        );
        assert_eq!(
            (req.authority(), req.host()),
            ("example.com:8080".into(), "example.com".into())
        );
        assert_eq!(req.header("ACCEPT").as_deref(), Some("text/html"));
        assert_eq!(req.header_values("accept").len(), 2);
        assert_eq!(req.path_with_query(), "/a/b?x=1&y");
        let outcome = TestResponse::new(304).header("ETag", "\"v\"").outcome();
        match outcome {
            Outcome::Response(r) => assert_eq!(
                (r.status(), r.header("etag").as_deref()),
                (304, Some("\"v\""))
            ),
            Outcome::Error(e) => panic!("{e:?}"),
        }
    }
}
