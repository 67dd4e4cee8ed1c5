//! The data plane's request path, one state at a time:
//!
//! 1. **Received** (here): CONNECT refused, the authority checked, the
//!    tenant found by host; unknown hosts get 404.
//! 2. **Decided** (`decide.rs`): the policy's request hook runs in a fresh
//!    instance, or the decision memo answers for it.
//! 3. **Dispatched** (`decide.rs`): a synthetic answer, a pass to a
//!    backend, or a cache lookup (`lookup.rs`: hit, stale while
//!    revalidating, collapsed into another request's fill, or a miss; a
//!    Range miss goes to `slice.rs`).
//! 4. **Forwarded** (`route.rs`): the route's backends in order, the
//!    response hook deciding after each attempt.
//! 5. **Finished** (`lookup.rs`, `decide.rs`): stored, refreshed, served
//!    stale, streamed, or an error response; then the canary and the trace
//!    log are told.
//!
//! The HTTP caching rules themselves are in `cache`; this module only moves
//! between states.

mod admit;
mod conditional;
mod decide;
mod exchange;
mod forward_request;
mod invalidate;
mod lookup;
mod range;
mod respond;
mod route;
mod slice;

use std::sync::Arc;

use arc_swap::ArcSwap;
use http::{Request, Response};
use hyper::body::Incoming;

use crate::cache::{CacheStatus, HttpCache};
use crate::http::{Connection, ProxyBody, RequestInfo};
use crate::metrics::Metrics;
use crate::runtime::Runtime;
use crate::tenant::{Arm, Tenant, TenantTable};

/// What the request path reads: an immutable view of the node, except for
/// the tenant table, which the control plane swaps whole. A hit takes no
/// lock.
pub struct Context {
    /// Shared with the TLS listener, which takes certificates from it.
    pub tenants: Arc<ArcSwap<TenantTable>>,
    pub cache: Arc<HttpCache>,
    pub runtime: Arc<Runtime>,
    pub metrics: Metrics,
    /// Log every request with its policy decision (the dev server does).
    pub trace_requests: bool,
    /// Longest request target accepted (`server.max_target_bytes`).
    pub max_target_bytes: usize,
    /// Largest request head accepted (`server.max_header_bytes`).
    pub max_header_bytes: usize,
    /// Longest pause in a request body (`server.body_read_timeout_ms`).
    pub body_read_timeout: std::time::Duration,
    /// The TLS listener's port once bound, for `force_https` redirects.
    pub https_port: std::sync::OnceLock<u16>,
    /// This node's `CDN-Loop` name (`server.node_id`).
    pub node_id: String,
}

/// Serves one client request. Never fails: every problem is a response.
pub async fn handle(
    ctx: Arc<Context>,
    request: Request<Incoming>,
    connection: Connection,
) -> Response<ProxyBody> {
    let mut response = handle_tenant(ctx, request, connection).await;
    // RFC 9211 on every response: those the node made itself (synthetic
    // answers, errors) say so.
    if !response.headers().contains_key("cache-status") {
        response
            .headers_mut()
            .insert("cache-status", CacheStatus::generated().to_header());
    }
    response
}

async fn handle_tenant(
    ctx: Arc<Context>,
    request: Request<Incoming>,
    connection: Connection,
) -> Response<ProxyBody> {
    ctx.metrics.requests.inc();
    let (tenant, authority) = match admit::admit(&ctx, &request, &connection) {
        Ok(admitted) => admitted,
        Err(refusal) => return refusal.response(),
    };
    let (parts, body) = request.into_parts();
    let info = Arc::new(RequestInfo {
        method: parts.method,
        uri: parts.uri,
        headers: parts.headers,
        scheme: connection.scheme(),
        authority,
        client_ip: connection.client_ip,
    });
    tenant.recent.record(&info);
    let (module, arm) = tenant.module_for(&info);
    let trace = ctx.trace_requests.then(|| info.clone());
    let (mut response, summary) =
        decide::run_policy(ctx.clone(), tenant.clone(), module, info, body).await;
    if tenant.config.strip_cdn_cache_control {
        response.headers_mut().remove("cdn-cache-control");
    }
    record_canary(&ctx, &tenant, arm, response.status().is_server_error());
    if let Some(info) = trace {
        let cache = response
            .headers()
            .get("cache-status")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("-");
        tracing::info!(
            target: "outpost::request",
            tenant = &*tenant.id,
            "{} {}{} -> {} [{summary}] {cache}",
            info.method,
            info.authority,
            info.path_and_query(),
            response.status().as_u16(),
        );
    }
    response
}

/// Counts a request against the tenant's canary, and aborts the canary if
/// its rule says so.
fn record_canary(ctx: &Context, tenant: &Tenant, arm: Arm, failed: bool) {
    let Some(canary) = &*tenant.canary.load() else {
        return;
    };
    canary.record(arm, failed);
    let Some(reason) = canary.abort_reason() else {
        return;
    };
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
