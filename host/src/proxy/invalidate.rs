//! Invalidation after unsafe requests (RFC 9111 section 4.4), and the
//! policy-derived cache key of a URL (also used by purge-by-URL).
//!
//! Cache keys are chosen by the tenant's policy, so the key of a URL is
//! found by asking the policy: its request hook runs offline (no
//! subrequests, no cache changes) for a GET of that URL.

use std::net::IpAddr;
use std::sync::Arc;

use http::{HeaderMap, Method, StatusCode, Uri};

use crate::node::Node;
use crate::runtime::heads::RequestInfo;
use crate::runtime::{Decision, GuestContext, GuestSession};
use crate::tenant::Tenant;

/// The key the tenant's active policy gives a GET of `authority` +
/// `path_and_query` with these header fields; `None` if it would not look
/// the request up in the cache.
pub async fn key_for(
    node: &Node,
    tenant: &Arc<Tenant>,
    authority: &str,
    path_and_query: &str,
    headers: &HeaderMap,
    client_ip: IpAddr,
) -> Option<String> {
    let uri: Uri = path_and_query.parse().ok()?;
    let info = Arc::new(RequestInfo {
        method: Method::GET,
        uri,
        headers: headers.clone(),
        scheme: "http",
        authority: authority.to_ascii_lowercase(),
        client_ip,
    });
    let module = tenant.policy.load_full();
    let ctx = GuestContext {
        tenant: tenant.clone(),
        version: module.version.clone(),
        offline: true,
    };
    let mut session = GuestSession::start(&node.runtime, &module, ctx, info)
        .await
        .ok()?;
    match session.on_request().await.ok()? {
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
/// for the target URI and for the Location and Content-Location URIs when
/// they are on the same host.
pub async fn after_unsafe(
    node: &Node,
    tenant: &Arc<Tenant>,
    request: &RequestInfo,
    status: StatusCode,
    response_headers: &HeaderMap,
) {
    if is_safe(&request.method) || !(status.is_success() || status.is_redirection()) {
        return;
    }
    let host = super::headers::host_of(&request.authority).to_string();
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
        if let Some(key) = key_for(
            node,
            tenant,
            &request.authority,
            &target,
            &request.headers,
            request.client_ip,
        )
        .await
        {
            tenant.store.remove(&key);
        }
    }
}
