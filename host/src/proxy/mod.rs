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

use std::net::IpAddr;
use std::sync::Arc;

use arc_swap::ArcSwap;
use http::{Method, Request, Response, StatusCode};
use hyper::body::Incoming;

use crate::cache::{CacheStatus, HttpCache};
use crate::http::headers;
use crate::http::{ProxyBody, RequestInfo, Scheme};
use crate::metrics::Metrics;
use crate::runtime::Runtime;
use crate::tenant::{Arm, Tenant, TenantTable};

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
    /// Longest request target accepted (`server.max_target_bytes`).
    pub max_target_bytes: usize,
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
        response
            .headers_mut()
            .insert("cache-status", CacheStatus::generated().to_header());
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
    if unknown_transfer_coding(request.headers()) {
        // RFC 9112 section 6.1: the only coding this node decodes is
        // chunked; forwarding the body without the others would corrupt it.
        return respond::plain(StatusCode::NOT_IMPLEMENTED, "unsupported transfer coding\n");
    }
    if target_len(request.uri()) > ctx.max_target_bytes {
        // RFC 9112 section 3 and RFC 9110 section 15.5.15.
        return respond::plain(StatusCode::URI_TOO_LONG, "request target too long\n");
    }
    let authority = match authority_of(request.uri(), request.headers()) {
        Ok(a) => a,
        Err(message) => return respond::plain(StatusCode::BAD_REQUEST, message),
    };
    let tenant = match ctx.tenants.load().find(headers::host_of(&authority)) {
        Some(t) => t.clone(),
        None => return respond::plain(StatusCode::NOT_FOUND, "unknown host\n"),
    };

    if declared_length(request.headers()).is_some_and(|len| len > tenant.max_body_bytes()) {
        return respond::body_too_large();
    }
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
    let (response, summary) =
        decide::run_policy(ctx.clone(), tenant.clone(), module, info, body).await;
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

/// The body length a request's Content-Length announces (RFC 9112 section
/// 6.3; hyper has already refused an invalid one).
fn declared_length(headers: &http::HeaderMap) -> Option<u64> {
    headers
        .get(http::header::CONTENT_LENGTH)?
        .to_str()
        .ok()?
        .trim()
        .parse()
        .ok()
}

/// Whether the request names a transfer coding other than `chunked`.
fn unknown_transfer_coding(headers: &http::HeaderMap) -> bool {
    headers
        .get_all(http::header::TRANSFER_ENCODING)
        .iter()
        .any(|v| {
            v.to_str().map_or(true, |v| {
                v.split(',')
                    .map(str::trim)
                    .any(|c| !c.is_empty() && !c.eq_ignore_ascii_case("chunked"))
            })
        })
}

/// The length of the request target as the client sent it (origin-form
/// or absolute-form), without formatting it.
fn target_len(uri: &http::Uri) -> usize {
    let scheme = uri.scheme_str().map_or(0, |s| s.len() + 3);
    let authority = uri.authority().map_or(0, |a| a.as_str().len());
    let path = uri.path_and_query().map_or(1, |pq| pq.as_str().len());
    scheme + authority + path
}

/// The authority the client asked for (RFC 9112 section 3.2, RFC 9113
/// section 8.3.1): the request target's authority if it has one, else the
/// single Host header. Lowercased.
fn authority_of(uri: &http::Uri, headers: &http::HeaderMap) -> Result<String, &'static str> {
    if let Some(authority) = uri.authority() {
        return Ok(authority.as_str().to_ascii_lowercase());
    }
    let mut hosts = headers.get_all(http::header::HOST).iter();
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

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2048))]

        /// RFC 9112 section 3.2 and RFC 9110 section 7.2: any request
        /// target and Host a client sends give an authority or a 400, and
        /// everything the request path then derives from them (the host to
        /// look up, the target sent to origins, the copy kept for previews,
        /// a backend URI) is computed without panic.
        #[test]
        fn any_target_and_host_are_handled_without_panic(
            target in "[a-zA-Z0-9:/\\[\\]@.%?#&=*+~-]{0,48}",
            host in crate::http::arbitrary::any_value(),
            second_host in proptest::option::of(crate::http::arbitrary::any_value()),
        ) {
            let Ok(uri) = target.parse::<http::Uri>() else {
                return Ok(());
            };
            let mut headers = http::HeaderMap::new();
            headers.append(http::header::HOST, host);
            if let Some(h) = second_host {
                headers.append(http::header::HOST, h);
            }
            if let Ok(authority) = authority_of(&uri, &headers) {
                let _ = headers::host_of(&authority);
                let info = RequestInfo {
                    method: Method::GET,
                    uri,
                    headers,
                    scheme: Scheme::Http,
                    authority,
                    client_ip: IpAddr::from([127, 0, 0, 1]),
                };
                let copy = info.owned_copy();
                prop_assert_eq!(copy.path_and_query(), info.path_and_query());
                let backend = crate::config::BackendUrl::parse("http://127.0.0.1:9/p").unwrap();
                let _ = backend.uri_for(info.path_and_query());
            }
        }
    }

    #[test]
    fn hosts_are_required_once_and_valid() {
        let uri: http::Uri = "/".parse().unwrap();
        let mut headers = http::HeaderMap::new();
        assert!(authority_of(&uri, &headers).is_err());
        headers.append(http::header::HOST, "A.test:8080".parse().unwrap());
        assert_eq!(authority_of(&uri, &headers).unwrap(), "a.test:8080");
        headers.append(http::header::HOST, "b.test".parse().unwrap());
        assert!(authority_of(&uri, &headers).is_err());
        let absolute: http::Uri = "http://C.test/x".parse().unwrap();
        assert_eq!(authority_of(&absolute, &headers).unwrap(), "c.test");
    }
}
