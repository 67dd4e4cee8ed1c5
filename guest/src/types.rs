//! The policy-facing types: small, owned Rust values that the SDK converts
//! to and from the WIT types in `convert.rs`.

use alloc::format;
use alloc::string::{String, ToString};
use alloc::vec;
use alloc::vec::Vec;

use crate::bindings::outpost::edge::types as wit;

/// The head of the client's request. In a policy every getter asks the
/// host, so read a field once and keep it if you need it several times. In
/// a unit test, build one with [`crate::testing::TestRequest`].
pub struct Request<'a> {
    head: RequestSource<'a>,
}

/// Where a request head's fields come from.
#[derive(Clone, Copy)]
enum RequestSource<'a> {
    /// The host, through the `request-head` resource.
    Host(&'a wit::RequestHead),
    /// Parts given by a test.
    Parts(&'a crate::testing::TestRequest),
}

impl<'a> Request<'a> {
    pub(crate) fn new(head: &'a wit::RequestHead) -> Self {
        Request {
            head: RequestSource::Host(head),
        }
    }

    pub(crate) fn from_parts(parts: &'a crate::testing::TestRequest) -> Self {
        Request {
            head: RequestSource::Parts(parts),
        }
    }

    /// The method, e.g. `GET`.
    pub fn method(&self) -> String {
        match self.head {
            RequestSource::Host(h) => h.method(),
            RequestSource::Parts(p) => p.method.clone(),
        }
    }

    /// `http` or `https`.
    pub fn scheme(&self) -> String {
        match self.head {
            RequestSource::Host(h) => h.scheme(),
            RequestSource::Parts(p) => p.scheme.clone(),
        }
    }

    /// The authority as the client sent it (lowercase, port kept).
    pub fn authority(&self) -> String {
        match self.head {
            RequestSource::Host(h) => h.authority(),
            RequestSource::Parts(p) => p.authority.clone(),
        }
    }

    /// The host name: the authority without its port.
    pub fn host(&self) -> String {
        let authority = self.authority();
        strip_port(&authority).to_string()
    }

    /// The path without the query, e.g. `/a/b`.
    pub fn path(&self) -> String {
        match self.head {
            RequestSource::Host(h) => h.path(),
            RequestSource::Parts(p) => p.path.clone(),
        }
    }

    /// The query without the `?`, if the target has one.
    pub fn query(&self) -> Option<String> {
        match self.head {
            RequestSource::Host(h) => h.query(),
            RequestSource::Parts(p) => p.query.clone(),
        }
    }

    /// Path and query as in the request line, e.g. `/a?b=1`.
    pub fn path_with_query(&self) -> String {
        match self.query() {
            Some(q) => format!("{}?{}", self.path(), q),
            None => self.path(),
        }
    }

    /// The first value of a header (case-insensitive), if it is UTF-8.
    pub fn header(&self, name: &str) -> Option<String> {
        match self.head {
            RequestSource::Host(h) => h.header(name),
            RequestSource::Parts(p) => p
                .values(name)
                .next()
                .and_then(|v| String::from_utf8(v.to_vec()).ok()),
        }
    }

    /// Every value of a header, as raw bytes.
    pub fn header_values(&self, name: &str) -> Vec<Vec<u8>> {
        match self.head {
            RequestSource::Host(h) => h.header_values(name),
            RequestSource::Parts(p) => p.values(name).map(<[u8]>::to_vec).collect(),
        }
    }

    /// All header fields (lowercase names). Copies every field: prefer
    /// [`Request::header`].
    pub fn headers(&self) -> Vec<(String, Vec<u8>)> {
        match self.head {
            RequestSource::Host(h) => h.headers(),
            RequestSource::Parts(p) => p.headers.clone(),
        }
    }

    /// The client's IP address as text.
    pub fn client_addr(&self) -> String {
        match self.head {
            RequestSource::Host(h) => h.client_addr(),
            RequestSource::Parts(p) => p.client_addr.clone(),
        }
    }

    /// What the node's signed-URL check found (`[tenant.signed_urls]`),
    /// checked before the policy runs. With the tenant's default
    /// `on_invalid = "deny"`, only [`Signature::Valid`] and
    /// [`Signature::NotChecked`] reach a policy: the node answers the
    /// others with 403 or 410 itself.
    pub fn signature(&self) -> Signature {
        match self.head {
            RequestSource::Host(h) => h.signature().into(),
            RequestSource::Parts(p) => p.signature,
        }
    }
}

/// The verdict of the node's signed-URL check on a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Signature {
    /// The tenant checks no signature on this path.
    #[default]
    NotChecked,
    /// Signed with one of the tenant's keys and within its validity.
    Valid,
    /// The path needs a token and there is none (the node's answer: 403).
    Missing,
    /// Malformed, wrongly signed, or not valid yet (403).
    Invalid,
    /// Correctly signed but past its expiry (410).
    Expired,
}

/// Strips a `:port` suffix from an authority, leaving IPv6 literals intact.
fn strip_port(authority: &str) -> &str {
    if authority.starts_with('[') {
        return authority.split_inclusive(']').next().unwrap_or(authority);
    }
    authority.split(':').next().unwrap_or(authority)
}

/// A response made by the policy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Response {
    /// An empty response with this status.
    pub fn new(status: u16) -> Self {
        Response {
            status,
            headers: Vec::new(),
            body: Vec::new(),
        }
    }

    /// A `text/plain` response.
    pub fn text(status: u16, body: impl Into<String>) -> Self {
        Response::new(status)
            .header("content-type", "text/plain; charset=utf-8")
            .body(body.into().into_bytes())
    }

    /// Adds a header field.
    pub fn header(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.headers.push((name.into(), value.into()));
        self
    }

    /// Sets the body.
    pub fn body(mut self, body: impl Into<Vec<u8>>) -> Self {
        self.body = body.into();
        self
    }
}

/// An edit of a header section (of the forwarded request, of the client's
/// response, or of what is stored).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum HeaderEdit {
    Set(String, String),
    Append(String, String),
    Remove(String),
}

/// The backends a request goes to, in order, and the edits made to it.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Route {
    pub(crate) backends: Vec<String>,
    pub(crate) edits: Vec<HeaderEdit>,
    pub(crate) hash_key: Option<String>,
    /// `None`: the policy's [`Policy::RESPONSE_HOOK`](crate::Policy::RESPONSE_HOOK).
    pub(crate) response_hook: Option<bool>,
    pub(crate) target: Option<String>,
    pub(crate) response_edits: Vec<HeaderEdit>,
}

impl Route {
    /// A route to one backend declared in the tenant's config.
    pub fn to(backend: impl Into<String>) -> Self {
        Route {
            backends: vec![backend.into()],
            ..Route::default()
        }
    }

    /// Whether the host calls [`Policy::on_response`](crate::Policy::on_response)
    /// after this route's attempts, overriding the policy's
    /// [`Policy::RESPONSE_HOOK`](crate::Policy::RESPONSE_HOOK) for this
    /// decision: a policy that inspects the answers of some backends only
    /// asks for the hook on the routes to them.
    pub fn response_hook(mut self, call: bool) -> Self {
        self.response_hook = Some(call);
        self
    }

    /// What a backend with `balance = "hash"` hashes to pick a member,
    /// instead of the cache key: requests with the same hash key go to the
    /// same member (e.g. a user id, so one user's requests meet one warm
    /// origin cache).
    pub fn hash_key(mut self, key: impl Into<String>) -> Self {
        self.hash_key = Some(key.into());
        self
    }

    /// Adds a backend to try after the previous ones (when the response hook
    /// answers [`ResponseDecision::TryNext`], or by default on a connection
    /// error).
    pub fn then(mut self, backend: impl Into<String>) -> Self {
        self.backends.push(backend.into());
        self
    }

    /// Replaces a header of the forwarded request.
    pub fn set_header(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.edits.push(HeaderEdit::Set(name.into(), value.into()));
        self
    }

    /// Adds a header value to the forwarded request.
    pub fn append_header(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.edits
            .push(HeaderEdit::Append(name.into(), value.into()));
        self
    }

    /// Removes a header from the forwarded request.
    pub fn remove_header(mut self, name: impl Into<String>) -> Self {
        self.edits.push(HeaderEdit::Remove(name.into()));
        self
    }

    /// Sends the backend this path and query (starting with `/`) instead
    /// of the client's: `Route::to("billing").rewrite("/invoices?id=3")`.
    /// The `Host` sent still follows the backend's config, and the cache
    /// key is still the one the [`Decision`] names: key on
    /// [`Request::path_with_query`] for the client's URL, or on
    /// [`Route::forwarded_target`] for this one.
    pub fn rewrite(mut self, path_with_query: impl Into<String>) -> Self {
        self.target = Some(path_with_query.into());
        self
    }

    /// Sends the client's path without `prefix` (and its query as is), as
    /// nginx's `proxy_pass http://b/;` does in a `location /prefix/`:
    /// `/billing/invoices?id=3` with prefix `/billing` goes to the backend
    /// as `/invoices?id=3`. A path that does not start with `prefix` is
    /// sent as it is; one that is only the prefix is sent as `/`.
    pub fn strip_prefix(self, req: &Request, prefix: &str) -> Self {
        let path = req.path();
        let Some(rest) = path.strip_prefix(prefix.trim_end_matches('/')) else {
            return self;
        };
        if !(rest.is_empty() || rest.starts_with('/')) {
            // `/billingx` is not under `/billing`.
            return self;
        }
        let rest = if rest.is_empty() { "/" } else { rest };
        let target = match req.query() {
            Some(q) => format!("{rest}?{q}"),
            None => rest.to_string(),
        };
        self.rewrite(target)
    }

    /// The path and query the backend is sent: the rewritten one, or the
    /// client's.
    pub fn forwarded_target(&self, req: &Request) -> String {
        self.target.clone().unwrap_or_else(|| req.path_with_query())
    }

    /// Replaces a header of the response the client receives, whatever its
    /// source (hit, miss, stale, revalidated, the node's own error). What
    /// is stored is not changed, and a cache hit runs no policy code to
    /// apply it. Framing and connection fields (`content-length`,
    /// `transfer-encoding`, `connection`, ...) cannot be edited.
    pub fn set_response_header(
        mut self,
        name: impl Into<String>,
        value: impl Into<String>,
    ) -> Self {
        self.response_edits
            .push(HeaderEdit::Set(name.into(), value.into()));
        self
    }

    /// Adds a header value to the response the client receives.
    pub fn append_response_header(
        mut self,
        name: impl Into<String>,
        value: impl Into<String>,
    ) -> Self {
        self.response_edits
            .push(HeaderEdit::Append(name.into(), value.into()));
        self
    }

    /// Removes a header from the response the client receives (e.g.
    /// `server`).
    pub fn remove_response_header(mut self, name: impl Into<String>) -> Self {
        self.response_edits.push(HeaderEdit::Remove(name.into()));
        self
    }
}

/// What the host does with a client request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Answer at once.
    Respond(Response),
    /// Serve from the cache under `key`; on a miss fetch from `route` and
    /// store. `ttl` (seconds) overrides the response's own freshness.
    Lookup {
        key: String,
        ttl: Option<u32>,
        route: Route,
    },
    /// Forward without touching the cache.
    Pass(Route),
}

impl Decision {
    /// Answer with this response.
    pub fn respond(response: Response) -> Self {
        Decision::Respond(response)
    }

    /// Look `key` up in the cache, fetching from `route` on a miss.
    pub fn lookup(key: impl Into<String>, route: Route) -> Self {
        Decision::Lookup {
            key: key.into(),
            ttl: None,
            route,
        }
    }

    /// Forward to `route` without caching.
    pub fn pass(route: Route) -> Self {
        Decision::Pass(route)
    }

    /// Overrides the freshness lifetime of what a lookup stores.
    pub fn with_ttl(self, seconds: u32) -> Self {
        match self {
            Decision::Lookup { key, route, .. } => Decision::Lookup {
                key,
                ttl: Some(seconds),
                route,
            },
            other => other,
        }
    }
}

/// The backend attempt the response hook is called for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attempt {
    /// The backend's name.
    pub backend: String,
    /// Its position in the route, from 0.
    pub index: u32,
    /// How many backends of the route remain after it.
    pub remaining: u32,
    /// Whether a stale cached copy exists for [`ResponseDecision::ServeStale`].
    pub stale_available: bool,
    /// The member of the backend's pool that answered (its URL), if one did.
    pub member: Option<String>,
    /// Members of the backend tried before, in order, and why each failed.
    pub failed_members: Vec<(String, FetchError)>,
}

/// Why a backend gave no response.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum FetchError {
    ConnectFailed(String),
    /// The TLS handshake failed; the text says why.
    Tls(String),
    /// No member of the backend's pool may take a request; nothing was sent.
    Unavailable(String),
    Timeout,
    InvalidResponse(String),
    UnknownBackend(String),
    LimitExceeded,
}

/// The head of a backend's response. In a unit test, build one with
/// [`crate::testing::TestResponse`].
pub struct OriginResponse {
    pub(crate) head: ResponseSource,
}

/// Where a response head's fields come from.
pub(crate) enum ResponseSource {
    Host(wit::ResponseHead),
    Parts(crate::testing::TestResponse),
}

impl OriginResponse {
    /// The status code.
    pub fn status(&self) -> u16 {
        match &self.head {
            ResponseSource::Host(h) => h.status(),
            ResponseSource::Parts(p) => p.status,
        }
    }

    /// The first value of a header (case-insensitive), if it is UTF-8.
    pub fn header(&self, name: &str) -> Option<String> {
        match &self.head {
            ResponseSource::Host(h) => h.header(name),
            ResponseSource::Parts(p) => p.get_header(name),
        }
    }

    /// All header fields.
    pub fn headers(&self) -> Vec<(String, Vec<u8>)> {
        match &self.head {
            ResponseSource::Host(h) => h.headers(),
            ResponseSource::Parts(p) => p.headers.clone(),
        }
    }
}

/// What one backend attempt produced.
pub enum Outcome {
    Response(OriginResponse),
    Error(FetchError),
}

impl Outcome {
    /// Whether the attempt failed: no response, or a 5xx.
    pub fn is_failure(&self) -> bool {
        match self {
            Outcome::Response(r) => r.status() >= 500,
            Outcome::Error(_) => true,
        }
    }
}

/// How a response is stored: [`StoreOptions::new`] keeps the RFC 9111
/// rules (stored only if its headers allow, for the lifetime they give),
/// [`StoreOptions::ttl`] overrides them.
///
/// ```
/// use outpost_guest::{ResponseDecision, StoreOptions};
///
/// // Tag it for purging and keep cookies out of the cache, but let the
/// // origin's Cache-Control decide.
/// let d = ResponseDecision::Store(StoreOptions::new().tag("product-7").remove_header("set-cookie"));
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct StoreOptions {
    pub(crate) ttl: Option<u32>,
    pub(crate) tags: Vec<String>,
    pub(crate) edits: Vec<HeaderEdit>,
}

impl StoreOptions {
    /// Stored as RFC 9111 allows, for the lifetime the headers give.
    pub fn new() -> Self {
        StoreOptions::default()
    }

    /// Stored for `seconds` whatever the headers say.
    pub fn ttl(mut self, seconds: u32) -> Self {
        self.ttl = Some(seconds);
        self
    }

    /// Adds a purge tag (surrogate key), besides the response's own.
    pub fn tag(mut self, tag: impl Into<String>) -> Self {
        self.tags.push(tag.into());
        self
    }

    /// Replaces a header of what is stored (and sent to this client).
    pub fn set_header(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.edits.push(HeaderEdit::Set(name.into(), value.into()));
        self
    }

    /// Adds a header value to what is stored.
    pub fn append_header(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.edits
            .push(HeaderEdit::Append(name.into(), value.into()));
        self
    }

    /// Removes a header before storing (e.g. `set-cookie`).
    pub fn remove_header(mut self, name: impl Into<String>) -> Self {
        self.edits.push(HeaderEdit::Remove(name.into()));
        self
    }
}

/// What the host does with a backend attempt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ResponseDecision {
    /// RFC 9111 defaults.
    Default,
    /// Store as these options say.
    Store(StoreOptions),
    /// Send to the client, do not store.
    NoStore,
    /// Try the route's next backend.
    TryNext,
    /// Send the stale cached copy if there is one.
    ServeStale,
    /// Answer with this response instead.
    Respond(Response),
}
