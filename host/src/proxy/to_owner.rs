//! A miss of a key another node of the POP owns: the client's request goes
//! to the owner (which looks it up, fills and stores it, and runs the
//! response hook), and its response comes back as it is, stored nowhere
//! here. So a POP stores each object once and asks the origin once per
//! key. If neither the owner nor the next member answers, the key is
//! served here as if this node owned it.

use http::header::{self, HeaderValue};
use std::time::Duration;

use http::{Request, Response};

use super::exchange::Exchange;
use super::Context;
use crate::http::headers::{strip_hop_by_hop, via_value};
use crate::http::{empty, request_id, trace_context, ProxyBody, Scheme};
use crate::pop::marker::CountOp;
use crate::pop::ClientSide;
use crate::runtime::Route;
use crate::tenant::Tenant;

impl Exchange {
    /// The owners' response to a GET or HEAD of `key` (fetched over
    /// `route` if the owner misses too), or `None` when this node serves it
    /// itself (it owns the key, or no owner answered).
    pub(super) async fn via_owner(
        &mut self,
        key: &str,
        route: &Route,
    ) -> Option<Response<ProxyBody>> {
        if self.info.from_pop_member {
            return None;
        }
        let owners = self.ctx.pop.owners(&self.tenant.id, key);
        if owners.is_empty() {
            return None;
        }
        // The owner's fetch may take each backend's first-byte timeout.
        let origin_wait: Duration = route
            .backends
            .iter()
            .filter_map(|name| self.tenant.backends.get(name))
            .map(|b| b.first_byte_timeout())
            .sum();
        let client = ClientSide {
            ip: self.info.client_ip,
            https: self.info.scheme == Scheme::Https,
            signature: self.info.signature,
        };
        for peer in owners {
            let request = self.owner_request();
            let sent = self
                .ctx
                .pop
                .forward(&peer, request, &client, origin_wait)
                .await;
            match sent {
                // The owner does not have the tenant (yet): served here.
                Ok(response) if response.status() == http::StatusCode::MISDIRECTED_REQUEST => {}
                Ok(response) => return Some(relayed(response)),
                // A GET or HEAD may go to the next member whatever happened.
                Err(e) => tracing::debug!(
                    tenant = &*self.tenant.id,
                    owner = &*peer.node_id,
                    request_id = self.info.request_id.as_str(),
                    "POP owner did not answer ({}): {e}",
                    e.as_str()
                ),
            }
        }
        None
    }

    /// Tells the POP's owners of `keys` that an unsafe request invalidated
    /// them (RFC 9111 section 4.4: the POP is one cache), before the client
    /// is answered. An owner that cannot be told keeps its copy until it
    /// expires; that is logged.
    pub(super) async fn invalidate_at_owners(&mut self, keys: &[String]) {
        if self.info.from_pop_member {
            return;
        }
        for key in keys {
            for peer in self.ctx.pop.owners(&self.tenant.id, key) {
                let told = self
                    .ctx
                    .pop
                    .invalidate(&peer, &self.info.authority, key)
                    .await;
                if let Err(e) = told {
                    tracing::warn!(
                        tenant = &*self.tenant.id,
                        owner = &*peer.node_id,
                        "cannot tell the POP owner of a key it was invalidated: {e}"
                    );
                }
            }
        }
    }

    /// The client's request as an intermediary forwards it (RFC 9110
    /// section 7.6): hop-by-hop fields removed, `Via` added, the same
    /// request id and the node's span as the trace parent. No body: only
    /// GET and HEAD are looked up.
    fn owner_request(&self) -> Request<ProxyBody> {
        let info = &self.info;
        let mut headers = info.headers.clone();
        strip_hop_by_hop(&mut headers);
        if let Ok(host) = HeaderValue::from_str(&info.authority) {
            headers.insert(header::HOST, host);
        }
        headers.append(header::VIA, via_value(http::Version::HTTP_11));
        headers.insert(request_id::HEADER, info.request_id.header_value());
        headers.insert(trace_context::TRACEPARENT, info.trace.traceparent());
        let mut request = Request::new(empty());
        *request.method_mut() = info.method.clone();
        *request.uri_mut() = info.uri.path_and_query().map_or_else(
            || http::Uri::from_static("/"),
            |pq| http::Uri::try_from(pq.as_str()).unwrap_or(http::Uri::from_static("/")),
        );
        *request.headers_mut() = headers;
        request
    }
}

/// A POP member's invalidation of one of this node's keys: dropped, 204.
pub(super) fn invalidated_for_peer(tenant: &Tenant, key: &str) -> Response<ProxyBody> {
    tenant.store.remove(key);
    let mut response = Response::new(empty());
    *response.status_mut() = http::StatusCode::NO_CONTENT;
    response
}

/// A POP member's addition to a counter's key this node keeps: the new
/// total as text, 200; 404 when this node has no such tenant or counter
/// (yet: a config on its way), which the member reports as unavailable.
pub(super) fn counted_for_peer(ctx: &Context, op: &CountOp) -> Response<ProxyBody> {
    let tenants = ctx.tenants.load();
    let counter = tenants
        .get(&op.tenant)
        .and_then(|t| t.counters.get(&op.counter));
    match counter {
        Some(counter) => {
            let total = counter.add(&op.key, op.delta, crate::tenant::unix_now());
            Response::new(crate::http::full(total.to_string()))
        }
        None => super::respond::plain(
            http::StatusCode::NOT_FOUND,
            "no such tenant or counter on this node\n",
        ),
    }
}

/// The owner's response for the client: hop-by-hop fields removed, `Via`
/// added (RFC 9110 section 7.6.3), its `Cache-Status` kept (the owner is the
/// cache that answered, RFC 9211 section 2).
fn relayed(response: Response<hyper::body::Incoming>) -> Response<ProxyBody> {
    let (mut parts, body) = response.into_parts();
    strip_hop_by_hop(&mut parts.headers);
    parts
        .headers
        .append(header::VIA, via_value(http::Version::HTTP_11));
    Response::from_parts(parts, crate::http::boxed(body))
}
