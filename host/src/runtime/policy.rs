//! The host's own types for what a policy decides and what it is told.
//!
//! They mirror the `outpost:edge` WIT records but carry no ABI: the
//! generated bindings stay inside `runtime` (converted in `convert.rs`), and
//! the rest of the node compares, clones and prints these.

/// A response built by the policy, sent to the client as is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SyntheticResponse {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

/// An edit of the request the host forwards to a backend.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HeaderEdit {
    /// Replace every value of a header with this one.
    Set(String, String),
    /// Add a value, keeping existing ones.
    Append(String, String),
    /// Remove every value of a header.
    Remove(String),
}

/// Where and how the host forwards a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    /// Names of the tenant's backends, tried in order.
    pub backends: Vec<String>,
    /// Edits of the forwarded request's header fields.
    pub request_headers: Vec<HeaderEdit>,
    /// What a `hash` pool hashes instead of the cache key (0.2 policies).
    pub hash_key: Option<String>,
    /// Whether the response hook runs after this route's attempts (always
    /// for policies before 0.3, which could not say).
    pub response_hook: bool,
    /// The path and query sent instead of the client's (0.3).
    pub forward_target: Option<String>,
    /// Edits of the response the client receives, whatever its source
    /// (0.3).
    pub response_headers: Vec<HeaderEdit>,
}

impl Route {
    /// A route to `backends` with nothing else set: what a policy before
    /// 0.3 could not say is at its default.
    pub fn to(backends: Vec<String>) -> Route {
        Route {
            backends,
            request_headers: Vec::new(),
            hash_key: None,
            response_hook: true,
            forward_target: None,
            response_headers: Vec::new(),
        }
    }
}

/// A cache lookup followed, on a miss, by a fetch from the route.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lookup {
    /// The key inside the tenant's own namespace.
    pub key: String,
    /// Overrides the freshness lifetime (seconds).
    pub ttl: Option<u32>,
    pub route: Route,
}

/// What the host does with a client request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    Respond(SyntheticResponse),
    Lookup(Lookup),
    Pass(Route),
}

impl Decision {
    /// The decision in a few words, for the dev server's request log.
    pub fn summary(&self) -> String {
        match self {
            Decision::Respond(s) => format!("respond {}", s.status),
            Decision::Pass(route) => format!("pass backends={}", route.backends.join(",")),
            Decision::Lookup(l) => {
                let ttl = l.ttl.map(|t| format!(" ttl={t}")).unwrap_or_default();
                format!(
                    "lookup key={:?} backends={}{ttl}",
                    l.key,
                    l.route.backends.join(",")
                )
            }
        }
    }
}

/// Why a backend gave no response, as the policy is told.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FetchError {
    #[error("connection failed: {0}")]
    ConnectFailed(String),
    /// The TLS handshake failed (the certificate, or the origin's TLS).
    #[error("tls: {0}")]
    Tls(String),
    /// No member of the backend's pool may take a request.
    #[error("no healthy member ({0})")]
    Unavailable(String),
    #[error("timed out")]
    Timeout,
    #[error("invalid response: {0}")]
    InvalidResponse(String),
    #[error("unknown backend {0:?}")]
    UnknownBackend(String),
    #[error("subrequest limit reached")]
    LimitExceeded,
}

impl FetchError {
    /// Whether no backend gave a response head: refused, TLS failed, no
    /// healthy member, timed out, or broke off (or answered no valid HTTP)
    /// before the head. The cache is then as disconnected from the origin
    /// as RFC 9111 section 4.2.4 means.
    pub fn is_unreachable(&self) -> bool {
        matches!(
            self,
            FetchError::ConnectFailed(_)
                | FetchError::Tls(_)
                | FetchError::Unavailable(_)
                | FetchError::Timeout
                | FetchError::InvalidResponse(_)
        )
    }

    /// A short stable name for metrics and logs.
    pub fn as_str(&self) -> &'static str {
        match self {
            FetchError::ConnectFailed(_) => "connect",
            FetchError::Tls(_) => "tls",
            FetchError::Unavailable(_) => "unavailable",
            FetchError::Timeout => "timeout",
            FetchError::InvalidResponse(_) => "invalid",
            FetchError::UnknownBackend(_) => "unknown_backend",
            FetchError::LimitExceeded => "limit",
        }
    }
}

/// The context of one backend attempt, given to the response hook.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attempt {
    pub backend: String,
    pub index: u32,
    pub remaining: u32,
    pub stale_available: bool,
    /// The pool member that answered, if one did.
    pub member: Option<String>,
    /// Members tried before it, and why each failed.
    pub failed_members: Vec<(String, FetchError)>,
}

/// How the host stores a response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoreOptions {
    /// A lifetime that overrides the headers; `None`: stored only as RFC
    /// 9111 allows.
    pub ttl: Option<u32>,
    /// Purge tags added to the response's own.
    pub tags: Vec<String>,
    /// Edits of the response before it is stored.
    pub headers: Vec<HeaderEdit>,
}

/// What the host does with a backend attempt's outcome.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ResponseDecision {
    Default,
    Store(StoreOptions),
    NoStore,
    TryNext,
    ServeStale,
    Respond(SyntheticResponse),
}

/// What the tenant's cache holds under a key (`cache-lookup`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CachedObject {
    pub status: u16,
    pub age: u32,
    pub fresh: bool,
}

/// A rate limiter's answer (`rate-check`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RateVerdict {
    /// Within the limit; the cost was counted.
    Allow,
    /// Over it; seconds until the key is let through again (at least 1).
    Deny { retry_after_s: u32 },
}

/// Why a call on a named limiter, counter, secret or signing key failed:
/// an answer the policy handles, never a trap.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CallError {
    /// The tenant declares nothing of this name.
    #[error("{0:?} is not declared by the tenant")]
    Undeclared(String),
    /// The node keeping the key could not be reached; nothing was counted.
    #[error("unavailable: {0}")]
    Unavailable(String),
    /// An argument the call cannot take.
    #[error("invalid: {0}")]
    Invalid(String),
}
