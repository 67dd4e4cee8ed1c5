//! Invalidation after unsafe requests (RFC 9111 section 4.4).
//!
//! Cache keys are chosen by the tenant's policy, so the key of a URL is
//! found by asking the policy: its request hook runs offline (no
//! subrequests, no cache changes) for a GET of that URL.

use std::sync::Arc;

use http::{HeaderMap, Method, StatusCode, Uri};

use crate::http::RequestInfo;
use crate::runtime::{Decision, Runtime};
use crate::tenant::{decide_offline, Tenant};

/// The key the tenant's active policy gives a GET of `request`'s authority
/// and `target`, with `request`'s header fields; `None` if it would not
/// look that request up in the cache.
pub async fn key_for(
    runtime: &Runtime,
    tenant: &Arc<Tenant>,
    request: &RequestInfo,
    target: &str,
) -> Option<String> {
    let uri: Uri = target.parse().ok()?;
    let info = Arc::new(RequestInfo {
        method: Method::GET,
        uri,
        headers: request.headers.clone(),
        scheme: request.scheme,
        authority: request.authority.clone(),
        client_ip: request.client_ip,
        request_id: request.request_id.clone(),
        trace: request.trace.clone(),
        from_pop_member: request.from_pop_member,
        signature: request.signature,
    });
    let module = tenant.policy.load_full();
    match decide_offline(runtime, tenant, &module, info).await.ok()? {
        Decision::Lookup(lookup) => Some(lookup.key),
        _ => None,
    }
}

/// Methods that do not change state (RFC 9110 section 9.2.1).
fn is_safe(method: &Method) -> bool {
    matches!(
        *method,
        Method::GET | Method::HEAD | Method::OPTIONS | Method::TRACE
    )
}

/// After a non-error response to an unsafe request, drops what is stored
/// under `key` (the key the policy gave the request itself, if it gave one)
/// and under the keys of the target URI and of the Location and
/// Content-Location URIs when they are on the same host (RFC 9111 section
/// 4.4). Every invalidation of the request path is here. Returns the keys
/// dropped, for the POP's owners of them.
pub async fn after_unsafe(
    runtime: &Runtime,
    tenant: &Arc<Tenant>,
    request: &RequestInfo,
    key: Option<String>,
    status: StatusCode,
    response_headers: &HeaderMap,
) -> Vec<String> {
    let mut dropped = Vec::new();
    if is_safe(&request.method) || !(status.is_success() || status.is_redirection()) {
        return dropped;
    }
    if let Some(key) = key {
        tenant.store.remove(&key);
        dropped.push(key);
    }
    let host = crate::http::headers::host_of(&request.authority).to_string();
    let mut targets = vec![request.path_and_query().to_string()];
    for name in [http::header::LOCATION, http::header::CONTENT_LOCATION] {
        let Some(value) = response_headers.get(&name).and_then(|v| v.to_str().ok()) else {
            continue;
        };
        let Ok(uri) = value.parse::<Uri>() else {
            continue;
        };
        let same_host = uri.host().is_none_or(|h| h.eq_ignore_ascii_case(&host));
        if same_host && value.starts_with(['/', 'h', 'H']) {
            targets.push(
                uri.path_and_query()
                    .map(|p| p.as_str().to_string())
                    .unwrap_or_else(|| "/".into()),
            );
        }
    }
    for target in targets {
        if let Some(key) = key_for(runtime, tenant, request, &target).await {
            tenant.store.remove(&key);
            if !dropped.contains(&key) {
                dropped.push(key);
            }
        }
    }
    dropped
}
