//! The data plane's request path, one state at a time:
//!
//! 1. **Received** (here): CONNECT refused, the authority checked, the
//!    tenant found by host; unknown hosts get 404.
//! 2. **Decided** (`decide.rs`): the policy's request hook runs in a fresh
//!    instance, or the decision memo answers for it.
//! 3. **Dispatched** (`decide.rs`): a synthetic answer, a pass to a
//!    backend, or a cache lookup (a key another node of the POP owns goes
//!    to that node, `to_owner.rs`; else `lookup.rs`: hit, stale while
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
mod edits;
mod exchange;
mod finish;
mod forward_request;
mod invalidate;
mod lookup;
mod range;
mod respond;
mod route;
mod slice;
mod to_owner;

use std::sync::Arc;

use arc_swap::{ArcSwap, ArcSwapOption};
use http::{Request, Response};
use hyper::body::Incoming;

use crate::access_log::AccessLog;
use crate::cache::{CacheStatus, HttpCache, CACHE_STATUS};
use crate::config::OnInvalid;
use crate::http::{
    request_id, Connection, ProxyBody, RequestId, RequestInfo, Scheme, SignatureVerdict,
    TraceContext,
};
use crate::metrics::{Event, Metrics};
use crate::pop::marker::Mark;
use crate::pop::Pop;
use crate::runtime::Runtime;
use crate::span_export::SpanExport;
use crate::tenant::{Arm, Tenant, TenantTable};
use finish::{Started, Trail};

/// What the request path reads: an immutable view of the node, except for
/// the tenant table, which the control plane swaps whole. A hit takes no
/// lock.
pub struct Context {
    /// Shared with the TLS listener, which takes certificates from it.
    pub tenants: Arc<ArcSwap<TenantTable>>,
    pub cache: Arc<HttpCache>,
    pub runtime: Arc<Runtime>,
    pub metrics: Arc<Metrics>,
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
    /// Where a line per request goes (`server.access_log`), if anywhere.
    pub access_log: Option<AccessLog>,
    /// Where spans of sampled requests go (`server.otlp`), if anywhere.
    pub spans: Option<SpanExport>,
    /// The other nodes of this node's POP, which own some of the keys (none
    /// outside a fleet); tenants keep it for their counters.
    pub pop: Arc<Pop>,
}

/// Serves one client request. Never fails: every problem is a response.
pub async fn handle(
    ctx: Arc<Context>,
    request: Request<Incoming>,
    connection: Connection,
) -> Response<ProxyBody> {
    let request_id = RequestId::of(request.headers());
    let id = request_id.header_value();
    let mut response = handle_tenant(ctx, request, connection, request_id).await;
    // RFC 9211 on every response: those the node made itself (synthetic
    // answers, errors) say so.
    let headers = response.headers_mut();
    if !headers.contains_key(CACHE_STATUS) {
        headers.insert(CACHE_STATUS, CacheStatus::generated().to_header());
    }
    headers.insert(request_id::HEADER, id);
    response
}

async fn handle_tenant(
    ctx: Arc<Context>,
    mut request: Request<Incoming>,
    mut connection: Connection,
    request_id: RequestId,
) -> Response<ProxyBody> {
    let started = Started::now();
    let from_peer = from_pop_member(&ctx, &mut request, &mut connection);
    if let Some(op) = from_peer.as_ref().and_then(|m| m.count.as_ref()) {
        return to_owner::counted_for_peer(&ctx, op);
    }
    let https = from_peer
        .as_ref()
        .map_or(connection.tls.is_some(), |m| m.https);
    let (tenant, authority) = match admit::admit(&ctx, &request, &connection, https) {
        Ok(admitted) => admitted,
        Err(refusal) => return refused(&ctx, refusal, from_peer.is_some()),
    };
    if let Some(key) = from_peer.as_ref().and_then(|m| m.invalidate.as_deref()) {
        return to_owner::invalidated_for_peer(&tenant, key);
    }
    let (mut parts, body) = request.into_parts();
    // The node answers a bad link itself unless the policy wants to.
    let mut refusal = None;
    let signature = match (&from_peer, &tenant.signed_urls) {
        // The member that forwarded it checked it (and took the token off).
        (Some(mark), _) => mark.signature,
        (None, None) => SignatureVerdict::NotChecked,
        (None, Some(urls)) => {
            let now = crate::tenant::unix_now();
            let checked = urls.check(&parts.uri, &parts.headers, connection.client_ip, now);
            tenant.metrics.signature(checked.verdict);
            if let Some(uri) = checked.stripped {
                parts.uri = uri;
            }
            if urls.on_invalid == OnInvalid::Deny {
                refusal = respond::signature_refused(checked.verdict);
            }
            checked.verdict
        }
    };
    let mut trace = TraceContext::of(&parts.headers);
    if ctx.spans.as_ref().is_some_and(|s| s.sample_new_trace()) {
        trace.sample();
    }
    let info = Arc::new(RequestInfo {
        method: parts.method,
        uri: parts.uri,
        headers: parts.headers,
        scheme: if https { Scheme::Https } else { Scheme::Http },
        authority,
        client_ip: connection.client_ip,
        request_id,
        trace,
        from_pop_member: from_peer.is_some(),
        signature,
    });
    tenant.recent.record(&info);
    let (module, arm) = tenant.module_for(&info);
    let trail = Arc::new(Trail::default());
    let spans = ctx.spans.is_some() && info.trace.sampled();
    let access = (ctx.access_log.is_some() || spans).then(|| finish::Access {
        ctx: ctx.clone(),
        info: info.clone(),
        version: module.version.clone(),
        trail: trail.clone(),
    });
    if let Some(refusal) = refusal {
        // Logged and counted like any answer, without running the policy.
        return finish::measured(refusal, tenant, started, access);
    }
    let trace = ctx.trace_requests.then(|| info.clone());
    let (mut response, summary) =
        decide::run_policy(ctx.clone(), tenant.clone(), module, info, body, trail).await;
    if tenant.config.strip_cdn_cache_control {
        response.headers_mut().remove("cdn-cache-control");
    }
    record_canary(&tenant, arm, response.status().is_server_error());
    if let Some(info) = trace {
        let cache = response
            .headers()
            .get(CACHE_STATUS)
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
    finish::measured(response, tenant, started, access)
}

/// A request refused before its tenant's policy ran, counted. A POP member
/// asking for a tenant this node does not have (yet) is told it cannot be
/// served here (RFC 9110 section 15.5.20), and serves the request itself.
fn refused(ctx: &Context, refusal: admit::Refusal, from_peer: bool) -> Response<ProxyBody> {
    ctx.metrics.node.refused(refusal.as_str());
    if from_peer && matches!(refusal, admit::Refusal::UnknownHost) {
        return respond::plain(
            http::StatusCode::MISDIRECTED_REQUEST,
            "no such tenant on this node yet\n",
        );
    }
    refusal.response()
}

/// A request another node of the POP forwarded to this one, the key's
/// owner: the client's address becomes the one its mark names. A mark is
/// removed from every request, and believed only when a current member
/// signed it with the fleet's key (`pop::marker`), over plain HTTP (the
/// POP's own listener, not a client's TLS connection).
fn from_pop_member(
    ctx: &Context,
    request: &mut Request<Incoming>,
    connection: &mut Connection,
) -> Option<Mark> {
    let mark = ctx.pop.take_mark(request.headers_mut())?;
    if connection.tls.is_some() {
        return None;
    }
    ctx.pop.served_for_peers.inc();
    connection.client_ip = mark.client_ip;
    Some(mark)
}

/// Counts a request against the tenant's canary, and aborts the canary if
/// its rule says so.
fn record_canary(tenant: &Tenant, arm: Arm, failed: bool) {
    let loaded = tenant.canary.load();
    let Some(canary) = &*loaded else {
        return;
    };
    canary.record(arm, failed);
    let Some(reason) = canary.abort_reason() else {
        return;
    };
    // Only the request that takes it out tells, and never a canary
    // deployed since this one was loaded.
    if !take_if_current(&tenant.canary, &loaded) {
        return;
    }
    tracing::warn!(
        tenant = &*tenant.id,
        version = &*canary.module.version,
        "canary aborted: {reason}"
    );
    tenant.metrics.event(Event::CanaryAbort, "auto_rollback");
    tenant
        .canary_aborted
        .store(Some(Arc::new(crate::tenant::CanaryAborted {
            version: canary.module.version.clone(),
            reason,
        })));
}

/// Empties `slot` if it still holds `seen`, in one compare-and-swap;
/// whether this call did.
fn take_if_current<T>(slot: &ArcSwapOption<T>, seen: &Option<Arc<T>>) -> bool {
    let Some(seen) = seen else {
        return false;
    };
    let previous = slot.compare_and_swap(seen, None);
    previous.as_ref().is_some_and(|p| Arc::ptr_eq(p, seen))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_aborted_canary_is_taken_out_once_and_a_newer_one_stays() {
        let slot = ArcSwapOption::from_pointee("old");
        let seen = slot.load_full();
        // Another canary deployed between the load and the abort.
        slot.store(Some(Arc::new("new")));
        assert!(!take_if_current(&slot, &seen));
        assert_eq!(slot.load().as_deref(), Some(&"new"));

        let seen = slot.load_full();
        assert!(take_if_current(&slot, &seen));
        assert!(slot.load().is_none());
        assert!(!take_if_current(&slot, &seen), "taken out twice");
    }
}
