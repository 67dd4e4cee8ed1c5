//! One client request in flight after its tenant was found: its state,
//! and the guest instance it runs in.

use std::cell::Cell;
use std::sync::Arc;
use std::time::Duration;

use http::{Response, StatusCode};
use hyper::body::Incoming;
use tokio::sync::OwnedSemaphorePermit;

use super::finish::Trail;
use super::respond;
use super::Context;
use crate::http::{BodyWatch, ProxyBody, RequestInfo};
use crate::metrics::{Event, Histogram};
use crate::runtime::memo::{DecisionMemo, Reads, CHECK_EVERY};
use crate::runtime::on_cpu;
use crate::runtime::{
    Decision, GuestContext, GuestFailure, GuestSession, PolicyModule, ResponseDecision,
};
use crate::tenant::Tenant;

/// One client request in flight after its tenant was found.
pub(super) struct Exchange {
    pub(super) ctx: Arc<Context>,
    pub(super) tenant: Arc<Tenant>,
    pub(super) info: Arc<RequestInfo>,
    /// The module version deciding this request.
    pub(super) module: Arc<PolicyModule>,
    /// The request's instance: started before the request hook, or only
    /// when the response hook needs it if the decision came from the memo.
    instance: Option<Instance>,
    /// The client's request body, until a backend attempt takes it.
    pub(super) body: Option<Incoming>,
    /// Why reading the client's body failed while it was forwarded, if it
    /// did.
    pub(super) body_watch: Arc<BodyWatch>,
    /// The memo's decision for this request, checked against the guest's
    /// whenever the guest runs.
    pub(super) recalled: Option<Arc<Decision>>,
    /// Whether the response hook runs after this request's attempts.
    pub(super) response_hook: ResponseHook,
    /// What the access log learns on the way (the backend that answered).
    pub(super) trail: Arc<Trail>,
}

/// A live guest instance and the tenant concurrency slot it holds.
struct Instance {
    session: GuestSession,
    _slot: OwnedSemaphorePermit,
}

/// Whether the response hook runs after a request's backend attempts (WIT
/// `route.response-hook`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum ResponseHook {
    /// The route asks for it (every route of a policy before 0.3 does): it
    /// runs in the request's instance after every attempt.
    Runs,
    /// The route declared none: the host applies the default decision
    /// itself, and the instance went back when the request hook returned.
    Skipped,
    /// The route declared none and this request checks that claim: the
    /// hook runs, and anything but the default decision is a mismatch.
    Checked,
}

thread_local! {
    /// Requests whose routes declared no response hook, served by this
    /// thread: one in `CHECK_EVERY` checks the claim.
    static DECLARED_NONE: Cell<u64> = const { Cell::new(0) };
}

impl ResponseHook {
    /// What `decision`'s route asks for, for a request of `module`. A
    /// version once caught deciding after a route that declared no hook
    /// runs it after every attempt.
    fn planned(decision: &Decision, module: &PolicyModule) -> ResponseHook {
        let declared = match decision {
            Decision::Lookup(lookup) => lookup.route.response_hook,
            Decision::Pass(route) => route.response_hook,
            // No backend is asked: nothing for a hook to see.
            Decision::Respond(_) => return ResponseHook::Skipped,
        };
        if declared || !module.trusts_declared_response_hooks() {
            return ResponseHook::Runs;
        }
        let check = DECLARED_NONE.with(|n| {
            n.set(n.get().wrapping_add(1));
            n.get() % CHECK_EVERY == 0
        });
        if check {
            ResponseHook::Checked
        } else {
            ResponseHook::Skipped
        }
    }
}

impl Drop for Exchange {
    fn drop(&mut self) {
        self.release_instance();
    }
}

/// The decision memo a request of `tenant` on `module` uses, if any. Tenants
/// that reuse instances have none: their decisions may depend on what an
/// instance kept from earlier requests.
pub(super) fn memo_of<'a>(tenant: &Tenant, module: &'a PolicyModule) -> Option<&'a DecisionMemo> {
    let config = &tenant.config;
    module
        .memo
        .as_ref()
        .filter(|_| config.memoize_decisions && !config.reuse_instances)
}

impl Exchange {
    pub(super) fn new(
        ctx: Arc<Context>,
        tenant: Arc<Tenant>,
        info: Arc<RequestInfo>,
        module: Arc<PolicyModule>,
        body: Incoming,
        recalled: Option<Arc<Decision>>,
        trail: Arc<Trail>,
    ) -> Exchange {
        Exchange {
            ctx,
            tenant,
            info,
            module,
            instance: None,
            body: Some(body),
            body_watch: Arc::default(),
            recalled,
            response_hook: ResponseHook::Runs,
            trail,
        }
    }

    /// Settles whether the response hook runs for `decision`; if it does
    /// not, the instance goes back now rather than after the origin's
    /// round trip.
    pub(super) fn plan_response_hook(&mut self, decision: &Decision) {
        self.response_hook = ResponseHook::planned(decision, &self.module);
        if self.response_hook == ResponseHook::Skipped {
            self.release_instance();
        }
    }

    /// The instance goes back to the tenant's idle pool when it reuses
    /// instances; otherwise it is dropped (its pool slot returns).
    fn release_instance(&mut self) {
        if let Some(instance) = self.instance.take() {
            self.tenant.put_idle(instance.session);
        }
    }

    /// A checked request's response hook decided `decision` after a route
    /// that declared none: anything but the default is a mismatch, counted
    /// and logged, and the hook runs for every request of the version from
    /// now on.
    pub(super) fn check_response_hook(&self, decision: &ResponseDecision) {
        if self.response_hook != ResponseHook::Checked
            || *decision == ResponseDecision::Default
            || !self.module.trusts_declared_response_hooks()
        {
            return;
        }
        self.module.distrust_declared_response_hooks();
        tracing::warn!(
            tenant = &*self.tenant.id,
            version = &*self.module.version,
            "the policy's route declared no response hook, but its on-response decided \
             {decision:?}: the hook now runs after every attempt of this version"
        );
        self.tenant
            .metrics
            .event(Event::ResponseHookMismatch, "mismatch");
    }

    /// Whether a guest instance serves this request (no: the memo decided
    /// and no response hook ran yet).
    pub(super) fn has_instance(&self) -> bool {
        self.instance.is_some()
    }

    /// Takes a concurrency slot, starts (or reuses) an instance and runs
    /// the request hook in it, feeding and checking the decision memo.
    pub(super) async fn start_instance(&mut self) -> Result<Decision, GuestFailure> {
        let tenant = &self.tenant;
        let admission = tenant.admit_guest(&self.module.version).await?;
        let (turn, slot) = (admission.turn, admission.slot);
        let started = std::time::Instant::now();
        let mut cpu = Duration::ZERO;
        let reused = admission
            .idle
            .and_then(|mut s| s.reuse(self.info.clone()).ok().map(|()| s));
        let session = match reused {
            Some(s) => Ok(s),
            None => {
                let ctx = GuestContext {
                    env: tenant.clone(),
                    version: self.module.version.clone(),
                    offline: false,
                    replayed: self.info.from_pop_member,
                };
                let start =
                    GuestSession::start(&self.ctx.runtime, &self.module, ctx, self.info.clone());
                on_cpu::timed(start, &mut cpu).await
            }
        };
        let mut session = match session {
            Ok(session) => session,
            Err(failure) => {
                self.charge_cpu(cpu);
                return Err(failure);
            }
        };
        let memo = memo_of(tenant, &self.module).filter(|m| m.is_enabled());
        if memo.is_some() {
            session.record_reads();
        }
        // Paced while it holds the turn: it stops at a tick once the tenant
        // runs more hooks than its cap.
        session.pace(Some(tenant.cpu.clone()));
        let decision = on_cpu::timed(session.on_request(), &mut cpu).await;
        session.pace(None);
        drop(turn);
        self.hook_ran(&self.module.request_hook_time, started.elapsed(), cpu);
        let reads = session.take_reads();
        // Kept even when the hook failed, so the slot returns on drop.
        self.instance = Some(Instance {
            session,
            _slot: slot,
        });
        let decision = decision?;
        if let Some(memo) = memo {
            self.check_memo(memo, reads, &decision);
        }
        Ok(decision)
    }

    /// Compares the guest's decision with the memo's, or teaches the memo.
    fn check_memo(&self, memo: &DecisionMemo, reads: Option<Reads>, decision: &Decision) {
        match &self.recalled {
            Some(recalled) if **recalled != *decision => {
                memo.disable();
                tracing::warn!(
                    tenant = &*self.tenant.id,
                    version = &*self.module.version,
                    "decision memo disabled for this version: the policy decided \
                     differently for a request with the same inputs"
                );
                self.tenant.metrics.event(Event::MemoMismatch, "mismatch");
            }
            Some(_) => {}
            None => {
                if let Some(reads) = reads {
                    memo.remember(reads, &self.info, &self.tenant.vars, decision);
                }
            }
        }
    }

    /// The request's instance for the response hook. A request decided by
    /// the memo gets one now, and the request hook runs in it first: the
    /// response hook always runs in the instance that made the decision.
    pub(super) async fn session(&mut self) -> Result<&mut GuestSession, GuestFailure> {
        if self.instance.is_none() {
            Box::pin(self.start_instance()).await?;
        }
        Ok(&mut self
            .instance
            .as_mut()
            .expect("start_instance leaves an instance")
            .session)
    }

    /// A hook ran (instantiation included for a request hook): the time it
    /// took goes to its histogram and the request's trail, the CPU it used
    /// to the tenant's share and metrics.
    pub(super) fn hook_ran(&self, time: &Histogram, took: Duration, cpu: Duration) {
        time.observe(took);
        self.trail.guest_ran(took);
        self.charge_cpu(cpu);
    }

    /// Guest CPU, charged to the tenant's share and counted.
    fn charge_cpu(&self, cpu: Duration) {
        self.tenant.cpu.charge(cpu);
        self.tenant.metrics.guest_cpu(cpu);
    }

    /// A request cut at its CPU deadline, towards the version's quarantine
    /// (tenant::quarantine).
    fn count_cpu_cut(&self) {
        let limits = &self.tenant.limits;
        let window = Duration::from_secs(limits.quarantine_window_s);
        let version = &*self.module.version;
        if let Some(held) = self
            .tenant
            .quarantine
            .cut(version, limits.quarantine_cpu_cuts, window)
        {
            tracing::warn!(
                tenant = &*self.tenant.id,
                version,
                cuts = held.cuts,
                window_s = held.window_s,
                "policy version quarantined: its requests get 503 without running it until \
                 an operator clears it (DELETE /tenants/{{id}}/quarantine) or another version \
                 is activated"
            );
        }
    }

    /// A guest failed: a 5xx for this request, a log line and a metric.
    pub(super) fn guest_failed(&self, failure: GuestFailure) -> Response<ProxyBody> {
        let (tenant, version) = (&*self.tenant.id, &*self.module.version);
        // Refusals of a held or quarantined tenant are counted, not logged
        // one by one: the start and end of each are logged.
        if !matches!(failure, GuestFailure::CpuShare | GuestFailure::Quarantined) {
            tracing::warn!(
                tenant,
                version,
                reason = failure.as_str(),
                "policy failed: {failure}"
            );
        }
        if matches!(failure, GuestFailure::CpuLimit(_)) {
            self.count_cpu_cut();
        }
        self.tenant
            .metrics
            .event(Event::GuestFailure, failure.as_str());
        if let Some(limit) = failure.limit() {
            self.tenant.metrics.event(Event::Limit, limit);
        }
        let status = if failure.is_refusal() {
            StatusCode::SERVICE_UNAVAILABLE
        } else {
            StatusCode::INTERNAL_SERVER_ERROR
        };
        let mut response = respond::plain(status, format!("policy error: {}\n", failure.as_str()));
        if matches!(failure, GuestFailure::CpuShare) {
            // The balancer looks again within a period (RFC 9110 section
            // 10.2.3: the client may retry after this many seconds).
            response.headers_mut().insert(
                http::header::RETRY_AFTER,
                http::HeaderValue::from_static("1"),
            );
        }
        response.headers_mut().insert(
            "x-outpost-error",
            http::HeaderValue::from_static(failure.as_str()),
        );
        response
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runtime::{Lookup, Route};

    fn lookup(response_hook: bool) -> Decision {
        Decision::Lookup(Lookup {
            key: "k".into(),
            ttl: None,
            route: Route {
                response_hook,
                ..Route::to(vec!["origin".into()])
            },
        })
    }

    #[test]
    fn a_route_without_a_response_hook_skips_it_but_one_in_check_every_checks_it() {
        let module = crate::runtime::test_module("router");
        let plans: Vec<ResponseHook> = (0..CHECK_EVERY * 2)
            .map(|_| ResponseHook::planned(&lookup(false), &module))
            .collect();
        let checked = plans
            .iter()
            .filter(|p| **p == ResponseHook::Checked)
            .count();
        assert_eq!(checked, 2);
        assert!(!plans.contains(&ResponseHook::Runs));
        assert_eq!(
            ResponseHook::planned(&lookup(true), &module),
            ResponseHook::Runs
        );
        // Caught once: the hook runs on every request of the version.
        module.distrust_declared_response_hooks();
        assert!((0..CHECK_EVERY)
            .all(|_| { ResponseHook::planned(&lookup(false), &module) == ResponseHook::Runs }));
    }
}
