//! One client request in flight after its tenant was found: its state,
//! and the guest instance it runs in.

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
use crate::runtime::memo::{DecisionMemo, Reads};
use crate::runtime::on_cpu;
use crate::runtime::{Decision, GuestContext, GuestFailure, GuestSession, PolicyModule};
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
    /// What the access log learns on the way (the backend that answered).
    pub(super) trail: Arc<Trail>,
}

/// A live guest instance and the tenant concurrency slot it holds.
struct Instance {
    session: GuestSession,
    _slot: OwnedSemaphorePermit,
}

impl Drop for Exchange {
    /// The instance goes back to the tenant's idle pool when it reuses
    /// instances; otherwise it is dropped (its pool slot returns).
    fn drop(&mut self) {
        if let Some(instance) = self.instance.take() {
            self.tenant.put_idle(instance.session);
        }
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
            trail,
        }
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
        if tenant.quarantine.holds(&self.module.version) {
            return Err(GuestFailure::Quarantined);
        }
        // A tenant held to its share of guest CPU runs no more request
        // hooks at once than its share of the workers (tenant::cpu_share).
        let turn = tenant.cpu.enter().await.ok_or(GuestFailure::CpuShare)?;
        let slot = tenant
            .instances
            .clone()
            .try_acquire_owned()
            .map_err(|_| GuestFailure::ConcurrencyLimit(tenant.limits.max_concurrent))?;
        let started = std::time::Instant::now();
        let mut cpu = Duration::ZERO;
        let reused = tenant
            .take_idle(&self.module.version)
            .and_then(|mut s| s.reuse(self.info.clone()).ok().map(|()| s));
        let session = match reused {
            Some(s) => Ok(s),
            None => {
                let ctx = GuestContext {
                    env: tenant.clone(),
                    version: self.module.version.clone(),
                    offline: false,
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
