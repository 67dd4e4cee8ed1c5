//! Deciding a request (the policy's request hook, or the decision memo) and
//! dispatching on the decision.

use std::sync::Arc;

use http::{Method, Response};
use hyper::body::Incoming;

use super::exchange::{memo_of, Exchange};
use super::finish::Trail;
use super::Context;
use super::{edits, respond};
use crate::http::{ProxyBody, RequestInfo};
use crate::runtime::memo::Recall;
use crate::runtime::{Decision, GuestFailure, PolicyModule};
use crate::tenant::Tenant;

/// Runs the tenant's policy for one request and carries out its decision.
/// Returns the response and, for the trace log, the decision in a few words.
///
/// The paths a cache hit does not take (instantiating, fetching, slicing)
/// are boxed futures: inline, their state would make the hit path's future
/// kilobytes large, copied on every request.
pub(super) async fn run_policy(
    ctx: Arc<Context>,
    tenant: Arc<Tenant>,
    module: Arc<PolicyModule>,
    info: Arc<RequestInfo>,
    body: Incoming,
    trail: Arc<Trail>,
) -> (Response<ProxyBody>, String) {
    let recall = memo_of(&tenant, &module).and_then(|m| m.recall(&info, &tenant.vars));
    let recalled = recall.as_ref().map(|r| r.decision().clone());
    let mut exchange = Exchange::new(ctx, tenant, info, module, body, recalled, trail);
    let decision = match exchange.decide(recall).await {
        Ok(decision) => decision,
        Err(failure) => {
            let summary = failure.as_str().to_string();
            return (exchange.guest_failed(failure), summary);
        }
    };
    exchange.plan_response_hook(&decision);
    let summary = if exchange.ctx.trace_requests {
        let memoized = if !exchange.has_instance() {
            " (memo)"
        } else {
            ""
        };
        format!("{}{memoized}", decision.summary())
    } else {
        String::new()
    };
    (exchange.dispatch(decision).await, summary)
}

impl Exchange {
    /// The decision: the memo's, or the guest's (which checks the memo's
    /// when it has one).
    async fn decide(&mut self, recall: Option<Recall>) -> Result<Decision, GuestFailure> {
        if let Some(Recall::Use(decision)) = recall {
            self.tenant.metrics.memo_hit();
            return Ok(Decision::clone(&decision));
        }
        match Box::pin(self.start_instance()).await {
            Ok(decision) => Ok(decision),
            // A check the node could not run is skipped and the memo's
            // decision stands, as for the requests it answers unchecked (a
            // held or quarantined tenant's hits keep being served).
            Err(failure) if failure.is_refusal() && self.recalled.is_some() => {
                Ok(Decision::clone(self.recalled.as_ref().expect("checked")))
            }
            Err(failure) => Err(failure),
        }
    }

    /// Carries out a decision. The route's response edits apply to
    /// whatever the client gets (a request another POP member forwarded
    /// here is edited by that member, which runs the same policy).
    async fn dispatch(self, mut decision: Decision) -> Response<ProxyBody> {
        if let Err(error) = edits::check(&decision) {
            return self.policy_error(&error);
        }
        // RFC 9211 `key`, for tenants that turned debugging on.
        let debug_key = match &decision {
            Decision::Lookup(l) if self.tenant.config.debug_cache_key => Some(l.key.clone()),
            _ => None,
        };
        let response_edits = match &mut decision {
            _ if self.info.from_pop_member => Vec::new(),
            Decision::Lookup(l) => std::mem::take(&mut l.route.response_headers),
            Decision::Pass(r) => std::mem::take(&mut r.response_headers),
            Decision::Respond(_) => Vec::new(),
        };
        let mut response = match decision {
            Decision::Respond(synthetic) => respond::synthetic(synthetic),
            Decision::Pass(route) => Box::pin(self.pass(route, None)).await,
            Decision::Lookup(lookup) if matches!(self.info.method, Method::GET | Method::HEAD) => {
                self.lookup(lookup).await
            }
            // RFC 9111 section 4.4: a successful unsafe request invalidates
            // what is stored under the target's key.
            Decision::Lookup(lookup) => Box::pin(self.pass(lookup.route, Some(lookup.key))).await,
        };
        if let Some(key) = debug_key {
            respond::add_cache_status_key(response.headers_mut(), key);
        }
        edits::apply(response.headers_mut(), &response_edits);
        response
    }

    /// A decision the node cannot carry out: a 500 for this request, a log
    /// line and a metric, as for a guest that trapped.
    fn policy_error(&self, error: &str) -> Response<ProxyBody> {
        self.guest_failed(GuestFailure::Trap(format!("invalid decision: {error}")))
    }
}
