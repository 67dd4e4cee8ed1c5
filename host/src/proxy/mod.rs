//! The request path: tenant, policy, cache, origin, response.
//!
//! 1. Find the tenant from the authority; unknown hosts get 404.
//! 2. Instantiate the tenant's policy and call its request hook.
//! 3. Answer synthetically, pass to a backend, or look the key up in the
//!    cache, joining or leading a coalesced fill on a miss.
//! 4. After each backend attempt, the response hook decides: store, don't,
//!    try the next backend, serve stale, or answer synthetically.

mod conditional;
mod forward;
mod invalidate;
mod range;
mod respond;
mod slice;

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Instant;

use http::{Method, Request, Response, StatusCode};
use hyper::body::Incoming;

use arc_swap::ArcSwap;

use crate::cache::directives::Directives;
use crate::cache::{CacheKey, FillGuard, FillOutcome, HttpCache, Role, Selected, StoredResponse};
use crate::http::headers;
use crate::http::{ProxyBody, RequestInfo, Scheme};
use crate::metrics::Metrics;
use crate::runtime::memo::DecisionMemo;
use crate::runtime::{
    Decision, GuestContext, GuestFailure, GuestSession, Lookup, PolicyModule, Runtime,
};
use crate::tenant::{Tenant, TenantTable};

/// What the request path reads: an immutable view of the node, except for
/// the tenant table, which the control plane swaps whole. A hit takes no
/// lock.
pub struct Context {
    pub tenants: ArcSwap<TenantTable>,
    pub cache: Arc<HttpCache>,
    pub runtime: Arc<Runtime>,
    pub metrics: Metrics,
    /// Log every request with its policy decision (the dev server does).
    pub trace_requests: bool,
}

pub use respond::CacheStatus;
use respond::Fwd;

fn fwd(vary_miss: bool) -> Fwd {
    if vary_miss {
        Fwd::VaryMiss
    } else {
        Fwd::UriMiss
    }
}

/// Serves one client request. Never fails: every problem is a response.
pub async fn handle(
    ctx: Arc<Context>,
    request: Request<Incoming>,
    client_ip: IpAddr,
) -> Response<ProxyBody> {
    let mut response = handle_tenant(ctx, request, client_ip).await;
    // RFC 9211 on every response: those the node made itself (synthetic
    // answers, errors) say so.
    if !response.headers().contains_key("cache-status") {
        response.headers_mut().insert(
            "cache-status",
            http::HeaderValue::from_static("Outpost; detail=generated"),
        );
    }
    response
}

async fn handle_tenant(
    ctx: Arc<Context>,
    request: Request<Incoming>,
    client_ip: IpAddr,
) -> Response<ProxyBody> {
    ctx.metrics.requests.inc();
    if request.method() == Method::CONNECT {
        // A reverse proxy does not open tunnels (RFC 9110 section 9.3.6).
        let mut r = respond::plain(StatusCode::METHOD_NOT_ALLOWED, "CONNECT is not supported\n");
        r.headers_mut().insert(
            http::header::ALLOW,
            http::HeaderValue::from_static("GET, HEAD, POST, PUT, DELETE, PATCH, OPTIONS"),
        );
        return r;
    }
    let authority = match authority_of(&request) {
        Ok(a) => a,
        Err(message) => return respond::plain(StatusCode::BAD_REQUEST, message),
    };
    let tenant = match ctx.tenants.load().find(headers::host_of(&authority)) {
        Some(t) => t.clone(),
        None => return respond::plain(StatusCode::NOT_FOUND, "unknown host\n"),
    };

    let (parts, body) = request.into_parts();
    let info = Arc::new(RequestInfo {
        method: parts.method,
        uri: parts.uri,
        headers: parts.headers,
        scheme: Scheme::Http,
        authority,
        client_ip,
    });
    tenant.recent.record(&info);
    let (module, arm) = tenant.module_for(&info);
    let trace = ctx.trace_requests.then(|| info.clone());
    let (response, decision) = run_policy(ctx.clone(), tenant.clone(), module, info, body).await;

    let failed = response.status().is_server_error();
    if let Some(canary) = &*tenant.canary.load() {
        canary.record(arm, failed);
        if let Some(reason) = canary.abort_reason() {
            let current = tenant.canary.load();
            if current
                .as_ref()
                .is_some_and(|c| std::ptr::eq(&**c, &**canary))
            {
                tenant.canary.store(None);
                tracing::warn!(
                    tenant = &*tenant.id,
                    version = &*canary.module.version,
                    "canary aborted: {reason}"
                );
                ctx.metrics
                    .count("canary_aborts", &tenant.id, "auto_rollback");
            }
        }
    }
    if let Some(info) = trace {
        let cache = response
            .headers()
            .get("cache-status")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("-");
        tracing::info!(
            target: "outpost::request",
            tenant = &*tenant.id,
            "{} {}{} -> {} [{}] {}",
            info.method,
            info.authority,
            info.path_and_query(),
            response.status().as_u16(),
            decision,
            cache
        );
    }
    response
}

/// Runs the tenant's policy for one request and carries out its decision.
/// Returns the response and a one-line summary of the decision.
///
/// The paths a cache hit does not take (instantiating, fetching, slicing)
/// are boxed futures: inline, their state would make the hit path's future
/// kilobytes large, copied on every request.
async fn run_policy(
    ctx: Arc<Context>,
    tenant: Arc<Tenant>,
    module: Arc<PolicyModule>,
    info: Arc<RequestInfo>,
    body: Incoming,
) -> (Response<ProxyBody>, String) {
    let recalled = memo_of(&tenant, &module).and_then(|m| m.recall(&info, &tenant.vars));
    let mut exchange = Exchange {
        ctx,
        tenant,
        info,
        module,
        session: None,
        body: Some(body),
        permit: None,
        recalled: None,
        slice_range: None,
    };
    let decision = match recalled {
        Some((decision, false)) => {
            exchange.ctx.metrics.memo_hits.inc();
            let owned = Decision::clone(&decision);
            exchange.recalled = Some(decision);
            owned
        }
        // No memo, or a memoized request picked to check the memo: the
        // guest decides, and the check compares.
        other => {
            exchange.recalled = other.map(|(decision, _)| decision);
            match Box::pin(exchange.start_session()).await {
                Ok(decision) => decision,
                Err(failure) => {
                    // A check that found no free instance is skipped: the
                    // memo's decision stands.
                    let skipped = matches!(
                        failure,
                        GuestFailure::ConcurrencyLimit(_) | GuestFailure::Unavailable(_)
                    );
                    match exchange.recalled.as_deref().filter(|_| skipped) {
                        Some(decision) => decision.clone(),
                        None => {
                            let summary = failure.as_str().to_string();
                            return (exchange.guest_failed(failure), summary);
                        }
                    }
                }
            }
        }
    };
    let summary = if exchange.ctx.trace_requests {
        let memoized = if exchange.session.is_none() {
            " (memo)"
        } else {
            ""
        };
        format!("{}{memoized}", decision.summary())
    } else {
        String::new()
    };
    // RFC 9211 `key`, for tenants that turned debugging on.
    let debug_key = match &decision {
        Decision::Lookup(l) if exchange.tenant.config.debug_cache_key => Some(l.key.clone()),
        _ => None,
    };

    let response = match decision {
        Decision::Respond(synthetic) => respond::synthetic(synthetic),
        Decision::Pass(route) => Box::pin(exchange.pass(route, None)).await,
        Decision::Lookup(lookup) => {
            if matches!(exchange.info.method, Method::GET | Method::HEAD) {
                exchange.lookup(lookup).await
            } else {
                // RFC 9111 section 4.4: a successful unsafe request
                // invalidates what is stored under the target's key.
                let key = CacheKey::new(&exchange.tenant.id, &lookup.key);
                Box::pin(exchange.pass(lookup.route, Some(key))).await
            }
        }
    };
    let mut response = response;
    if let Some(key) = debug_key {
        respond::add_cache_status_key(response.headers_mut(), &key);
    }
    (response, summary)
}

/// The decision memo a request of `tenant` on `module` uses, if any. Tenants
/// that reuse instances have none: their decisions may depend on what an
/// instance kept from earlier requests.
fn memo_of<'a>(tenant: &Tenant, module: &'a PolicyModule) -> Option<&'a DecisionMemo> {
    let config = &tenant.config;
    module
        .memo
        .as_ref()
        .filter(|_| config.memoize_decisions && !config.reuse_instances)
}

/// The authority the client asked for (RFC 9112 section 3.2, RFC 9113
/// section 8.3.1): the request target's authority if it has one, else the
/// single Host header. Lowercased.
fn authority_of(request: &Request<Incoming>) -> Result<String, &'static str> {
    if let Some(authority) = request.uri().authority() {
        return Ok(authority.as_str().to_ascii_lowercase());
    }
    let mut hosts = request.headers().get_all(http::header::HOST).iter();
    match (hosts.next(), hosts.next()) {
        (Some(host), None) => match host.to_str() {
            Ok(h) if !h.is_empty() && h.parse::<http::uri::Authority>().is_ok() => {
                Ok(h.to_ascii_lowercase())
            }
            _ => Err("invalid Host header\n"),
        },
        (Some(_), Some(_)) => Err("more than one Host header\n"),
        (None, _) => Err("missing Host header\n"),
    }
}

/// A guest failed: a 5xx for this request, a log line and a metric.
fn guest_failed(
    ctx: &Context,
    tenant: &Tenant,
    version: &str,
    failure: GuestFailure,
) -> Response<ProxyBody> {
    tracing::warn!(
        tenant = &*tenant.id,
        version,
        reason = failure.as_str(),
        "policy failed: {failure}"
    );
    ctx.metrics
        .count("guest_failures", &tenant.id, failure.as_str());
    let status = match failure {
        GuestFailure::Unavailable(_) | GuestFailure::ConcurrencyLimit(_) => {
            StatusCode::SERVICE_UNAVAILABLE
        }
        _ => StatusCode::INTERNAL_SERVER_ERROR,
    };
    let mut response = respond::plain(status, format!("policy error: {}\n", failure.as_str()));
    response.headers_mut().insert(
        "x-outpost-error",
        http::HeaderValue::from_static(failure.as_str()),
    );
    response
}

/// One client request in flight after its policy decided.
pub(crate) struct Exchange {
    ctx: Arc<Context>,
    tenant: Arc<Tenant>,
    info: Arc<RequestInfo>,
    /// The module version deciding this request.
    module: Arc<PolicyModule>,
    /// The request's instance: started before the request hook, or only
    /// when the response hook is needed if the decision came from the memo.
    session: Option<GuestSession>,
    /// The client's request body, until a backend attempt takes it.
    body: Option<Incoming>,
    /// The tenant's concurrency slot, held while the instance lives.
    permit: Option<tokio::sync::OwnedSemaphorePermit>,
    /// The memo's decision for this request, checked against the guest's
    /// whenever the guest runs.
    recalled: Option<Arc<Decision>>,
    /// Set while fetching one slice of an object (see `slice`).
    slice_range: Option<(u64, u64)>,
}

impl Drop for Exchange {
    /// The instance goes back to the tenant's idle pool when it reuses
    /// instances; otherwise it is dropped (its pool slot returns).
    fn drop(&mut self) {
        if let Some(session) = self.session.take() {
            self.tenant.put_idle(session);
        }
    }
}

impl Exchange {
    fn version(&self) -> &Arc<str> {
        &self.module.version
    }

    /// Takes a concurrency slot, starts (or reuses) an instance and runs
    /// the request hook in it, feeding and checking the decision memo.
    async fn start_session(&mut self) -> Result<Decision, GuestFailure> {
        let tenant = &self.tenant;
        let permit = tenant
            .instances
            .clone()
            .try_acquire_owned()
            .map_err(|_| GuestFailure::ConcurrencyLimit(tenant.limits.max_concurrent))?;
        let reused = tenant
            .take_idle(&self.module.version)
            .and_then(|mut s| s.reuse(self.info.clone()).ok().map(|()| s));
        let mut session = match reused {
            Some(s) => s,
            None => {
                let ctx = GuestContext {
                    env: tenant.clone(),
                    version: self.module.version.clone(),
                    offline: false,
                };
                GuestSession::start(&self.ctx.runtime, &self.module, ctx, self.info.clone()).await?
            }
        };
        let memo = memo_of(tenant, &self.module).filter(|m| m.is_enabled());
        if memo.is_some() {
            session.record_reads();
        }
        // Held from here, so a failed hook still returns the slot on drop.
        self.permit = Some(permit);
        let decision = session.on_request().await;
        let reads = session.take_reads();
        self.session = Some(session);
        let decision = decision?;
        if let Some(memo) = memo {
            match &self.recalled {
                Some(recalled) if **recalled != decision => {
                    memo.disable();
                    tracing::warn!(
                        tenant = &*tenant.id,
                        version = &*self.module.version,
                        "decision memo disabled for this version: the policy decided \
                         differently for a request with the same inputs"
                    );
                    self.ctx
                        .metrics
                        .count("decision_memo_mismatches", &tenant.id, "mismatch");
                }
                Some(_) => {}
                None => {
                    if let Some(reads) = reads {
                        memo.remember(reads, &self.info, &tenant.vars, &decision);
                    }
                }
            }
        }
        Ok(decision)
    }

    /// The request's instance for the response hook. A request decided by
    /// the memo gets one now, and the request hook runs in it first: the
    /// response hook always runs in the instance that made the decision.
    async fn session(&mut self) -> Result<&mut GuestSession, GuestFailure> {
        if self.session.is_none() {
            Box::pin(self.start_session()).await?;
        }
        Ok(self
            .session
            .as_mut()
            .expect("start_session leaves a session"))
    }

    /// A guest failed: a 5xx for this request, a log line and a metric.
    fn guest_failed(&self, failure: GuestFailure) -> Response<ProxyBody> {
        guest_failed(&self.ctx, &self.tenant, self.version(), failure)
    }

    /// A cache lookup; on a miss, lead or join the fill of the key.
    async fn lookup(mut self, lookup: Lookup) -> Response<ProxyBody> {
        // The coalescing key is built only on a miss: a hit needs none.
        let new_key =
            |exchange: &Exchange, lookup: &Lookup| CacheKey::new(&exchange.tenant.id, &lookup.key);
        let cache = self.ctx.cache.clone();
        // A Range on a miss is served from slices, not the whole object.
        if self.info.method == Method::GET {
            if let Some((start, end)) = slice::single_range(&self.info.headers) {
                let whole = self.tenant.store.select(&lookup.key, &self.info.headers);
                let sliceable = !self
                    .tenant
                    .store
                    .is_uncacheable(&slice::not_sliceable_key(&lookup.key));
                if sliceable && !matches!(whole, Selected::Found(_)) {
                    let size = cache.slice_bytes;
                    match Box::pin(self.sliced(lookup.clone(), start, end, size)).await {
                        slice::SliceStart::Done(response) => return response,
                        slice::SliceStart::NotSliceable(exchange) => self = exchange,
                    }
                }
            }
        }
        let request_cc = Directives::parse(self.info.headers.get_all(http::header::CACHE_CONTROL));
        let mut stale: Option<Arc<StoredResponse>> = None;
        let mut vary_miss = false;
        for _round in 0..3 {
            let now = Instant::now();
            match self.tenant.store.select(&lookup.key, &self.info.headers) {
                Selected::Found(stored) => {
                    if stored.is_fresh(now)
                        && request_allows(&request_cc, &self.info.headers, &stored, now)
                    {
                        return respond::stored(
                            &self.info,
                            &stored,
                            CacheStatus::hit(&stored, now),
                        );
                    }
                    // RFC 9111 section 5.2.1.2: the client accepts this
                    // much staleness.
                    if !request_cc.no_cache
                        && request_cc
                            .max_stale
                            .is_some_and(|max| stored.may_serve_stale_for(now, max))
                    {
                        return respond::stored(
                            &self.info,
                            &stored,
                            CacheStatus::hit(&stored, now),
                        );
                    }
                    if request_cc.only_if_cached {
                        return respond::plain(
                            StatusCode::GATEWAY_TIMEOUT,
                            "not in cache (only-if-cached)\n",
                        );
                    }
                    if stored.within_stale_while_revalidate(now) && request_cc.is_empty() {
                        // RFC 5861 section 3: serve stale now, refresh once
                        // in the background.
                        let info = self.info.clone();
                        let key = new_key(&self, &lookup);
                        if let Role::Leader(guard) = cache.join_fill(&key) {
                            let refreshed = stored.clone();
                            tokio::spawn(async move {
                                let _ = self
                                    .fill(lookup, key, Some(refreshed), Some(guard), Fwd::Stale)
                                    .await;
                            });
                        }
                        return respond::stored(
                            &info,
                            &stored,
                            CacheStatus::stale_while_revalidate(&stored, now),
                        );
                    }
                    stale = Some(stored);
                }
                Selected::VaryMiss | Selected::Miss if request_cc.only_if_cached => {
                    return respond::plain(
                        StatusCode::GATEWAY_TIMEOUT,
                        "not in cache (only-if-cached)\n",
                    );
                }
                Selected::VaryMiss => vary_miss = true,
                Selected::Miss => {}
            }
            if self.tenant.store.is_uncacheable(&lookup.key) {
                // Hit-for-miss: the last answer was not cacheable, so do not
                // queue behind another request's fetch.
                break;
            }
            let key = new_key(&self, &lookup);
            match cache.join_fill(&key) {
                Role::Leader(guard) => {
                    return Box::pin(self.fill(lookup, key, stale, Some(guard), fwd(vary_miss)))
                        .await
                }
                Role::Waiter(rx) => {
                    match tokio::time::timeout(cache.coalesce_wait, crate::cache::wait_for_fill(rx))
                        .await
                    {
                        Ok(FillOutcome::Stored(stored))
                            if stored.matches_vary(&self.info.headers) =>
                        {
                            return respond::stored(
                                &self.info,
                                &stored,
                                CacheStatus::collapsed(&stored),
                            );
                        }
                        Ok(FillOutcome::Abandoned) => continue,
                        // Uncacheable, another variant, or a wait that took too
                        // long: fetch for this request alone.
                        _ => break,
                    }
                }
            }
        }
        let key = new_key(&self, &lookup);
        Box::pin(self.fill(lookup, key, stale, None, fwd(vary_miss))).await
    }

    /// Fetches for a lookup and stores what may be stored. `guard` is held
    /// when this request leads the coalesced fill of the key.
    async fn fill(
        mut self,
        lookup: Lookup,
        key: CacheKey,
        stale: Option<Arc<StoredResponse>>,
        guard: Option<FillGuard>,
        fwd: Fwd,
    ) -> Response<ProxyBody> {
        let result = self.fetch_route(&lookup.route, stale.as_ref(), true).await;
        forward::finish_lookup(self, result, lookup.ttl, key, stale, guard, fwd).await
    }

    /// Forwards without caching; `invalidate` is purged after a success.
    async fn pass(
        mut self,
        route: crate::runtime::Route,
        invalidate: Option<CacheKey>,
    ) -> Response<ProxyBody> {
        let result = self.fetch_route(&route, None, false).await;
        forward::finish_pass(self, result, invalidate).await
    }
}

/// Whether the request's own cache directives allow reusing `stored`
/// (RFC 9111 section 5.2.1): `no-cache` (or `Pragma: no-cache` without
/// Cache-Control, section 5.4), `max-age` and `min-fresh`.
fn request_allows(
    cc: &Directives,
    headers: &http::HeaderMap,
    stored: &StoredResponse,
    now: Instant,
) -> bool {
    if cc.no_cache {
        return false;
    }
    if cc.is_empty()
        && headers
            .get_all(http::header::PRAGMA)
            .iter()
            .any(|v| v.to_str().is_ok_and(|v| v.contains("no-cache")))
    {
        return false;
    }
    let age = stored.age(now).as_secs();
    if cc.max_age.is_some_and(|max| age > max) {
        return false;
    }
    if let Some(min_fresh) = cc.min_fresh {
        if stored.ttl(now) < min_fresh as i64 {
            return false;
        }
    }
    true
}
