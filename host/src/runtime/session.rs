//! One guest instance serving one request: instantiate, call the request
//! hook, call the response hook after each backend attempt, drop.

use std::sync::Arc;
use std::time::Duration;

use wasmtime::component::Resource;
use wasmtime::Store;

use super::env::{GuestContext, Pacer};
use super::heads::{RequestHead, ResponseHead};
use super::policy::{Attempt, Decision, FetchError, ResponseDecision};
use super::state::{GuestState, LimitHit};
use super::{PolicyModule, Runtime};
use crate::http::{RequestInfo, ResponseInfo};

/// Why a guest could not produce a decision. Each is a 5xx for the request
/// that hit it, a log line and a metric; never anything worse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum GuestFailure {
    #[error("guest trapped: {0}")]
    Trap(String),
    #[error("guest exceeded its CPU time limit of {0:?} per hook")]
    CpuLimit(Duration),
    #[error("guest exceeded its memory limit of {0} MiB")]
    MemoryLimit(u32),
    #[error("guest exceeded its host call limit of {0} per request")]
    HostCallLimit(u32),
    #[error("tenant already runs its limit of {0} concurrent instances")]
    ConcurrencyLimit(u32),
    #[error("no guest instance available: {0}")]
    Unavailable(String),
    #[error("tenant is held to its share of guest CPU")]
    CpuShare,
    #[error("policy version is quarantined after repeated CPU limit cuts")]
    Quarantined,
}

impl GuestFailure {
    /// A short stable name for metrics and logs.
    pub fn as_str(&self) -> &'static str {
        match self {
            GuestFailure::Trap(_) => "trap",
            GuestFailure::CpuLimit(_) => "cpu_limit",
            GuestFailure::MemoryLimit(_) => "memory_limit",
            GuestFailure::HostCallLimit(_) => "host_call_limit",
            GuestFailure::ConcurrencyLimit(_) => "concurrency_limit",
            GuestFailure::Unavailable(_) => "unavailable",
            GuestFailure::CpuShare => "cpu_share",
            GuestFailure::Quarantined => "quarantined",
        }
    }

    /// Whether the node declined to run the guest (to its end) rather than
    /// the guest failing: no instance free, or the tenant held to its CPU
    /// share or quarantined. Such a request says nothing about the policy:
    /// it gets a 503, and a memo check it was for is skipped.
    pub fn is_refusal(&self) -> bool {
        matches!(
            self,
            GuestFailure::ConcurrencyLimit(_)
                | GuestFailure::Unavailable(_)
                | GuestFailure::CpuShare
                | GuestFailure::Quarantined
        )
    }

    /// The limit this failure hit, if a limit is what stopped the guest.
    pub fn limit(&self) -> Option<&'static str> {
        match self {
            GuestFailure::CpuLimit(_) => Some("guest_cpu"),
            GuestFailure::MemoryLimit(_) => Some("guest_memory"),
            GuestFailure::HostCallLimit(_) => Some("guest_host_calls"),
            GuestFailure::ConcurrencyLimit(_) => Some("guest_instances"),
            GuestFailure::CpuShare => Some("guest_cpu_share"),
            GuestFailure::Quarantined => Some("guest_quarantine"),
            GuestFailure::Trap(_) | GuestFailure::Unavailable(_) => None,
        }
    }
}

/// A backend outcome as the response hook receives it.
pub enum OutcomeForGuest {
    Response(Arc<ResponseInfo>),
    Error(FetchError),
}

/// A live instance bound to one request.
pub struct GuestSession {
    store: Store<GuestState>,
    hooks: Box<dyn super::versions::Hooks>,
    head: Resource<RequestHead>,
    /// The module version this instance runs.
    pub version: Arc<str>,
    /// Requests served, for instance reuse.
    uses: u32,
    /// A hook failed: the instance must not serve again.
    failed: bool,
    /// Keeps the epoch ticker going while a hook runs.
    activity: Arc<super::ticker::Activity>,
}

/// Requests one reused instance serves before it is retired: the SDK's
/// bump allocator never frees, so a reused instance's heap only grows.
pub const MAX_REUSES: u32 = 256;

impl GuestSession {
    /// Instantiates the module for one request.
    pub async fn start(
        runtime: &Runtime,
        module: &PolicyModule,
        ctx: GuestContext,
        request: Arc<RequestInfo>,
    ) -> Result<GuestSession, GuestFailure> {
        let mut store = Store::new(runtime.engine(), GuestState::new(ctx));
        store.limiter(|state| state);
        store.set_epoch_deadline(1);
        store.epoch_deadline_callback(super::pacing::on_tick);
        let head = store
            .data_mut()
            .table
            .push(RequestHead(request))
            .map_err(|e| GuestFailure::Unavailable(e.to_string()))?;
        let running = runtime.activity().enter();
        let instantiated = module.linked.instantiate(&mut store).await;
        drop(running);
        let hooks = match instantiated {
            Ok(hooks) => hooks,
            Err(e) => return Err(classify(&store, e, true)),
        };
        Ok(GuestSession {
            store,
            hooks,
            head,
            version: module.version.clone(),
            uses: 1,
            failed: false,
            activity: runtime.activity().clone(),
        })
    }

    /// Readies an instance that served an earlier request of the same
    /// tenant for a new one: a new request head, fresh per-request budgets.
    /// Guest memory and globals are kept (see `TenantConfig::reuse_instances`).
    pub fn reuse(&mut self, request: Arc<RequestInfo>) -> Result<(), GuestFailure> {
        let state = self.store.data_mut();
        let head = state
            .table
            .push(RequestHead(request))
            .map_err(|e| GuestFailure::Unavailable(e.to_string()))?;
        let old = std::mem::replace(&mut self.head, head);
        let _ = state.table.delete(old);
        state.host_calls = 0;
        state.subrequests = 0;
        state.limit_hit = None;
        state.ticks = 0;
        self.uses += 1;
        Ok(())
    }

    /// Records what the next request hook reads, for the decision memo.
    /// Only meaningful on a fresh instance: a reused one carries state.
    pub fn record_reads(&mut self) {
        if self.uses == 1 {
            self.store.data_mut().reads = Some(super::memo::Reads::default());
        }
    }

    /// What the request hook read, if it was recorded.
    pub fn take_reads(&mut self) -> Option<super::memo::Reads> {
        self.store.data_mut().reads.take()
    }

    /// What the hooks so far named that the tenant does not declare.
    pub fn undeclared(&self) -> &[String] {
        &self.store.data().undeclared
    }

    /// Whether the instance may serve another request.
    pub fn reusable(&self) -> bool {
        !self.failed && self.uses < MAX_REUSES
    }

    fn begin_hook(&mut self) {
        let state = self.store.data_mut();
        state.ticks = 0;
        state.paused = None;
        self.store.set_epoch_deadline(1);
    }

    /// Has `pacer` decide at each tick of the next request hooks whether
    /// they may go on; `None` stops pacing.
    pub fn pace(&mut self, pacer: Option<Arc<dyn Pacer>>) {
        self.store.data_mut().pacer = pacer;
    }

    /// Calls `on-request`.
    pub async fn on_request(&mut self) -> Result<Decision, GuestFailure> {
        self.begin_hook();
        let head = Resource::new_borrow(self.head.rep());
        let _running = self.activity.enter();
        let result = self.hooks.on_request(&mut self.store, head).await;
        self.failed |= result.is_err();
        result.map_err(|e| classify(&self.store, e, false))
    }

    /// Calls `on-response` for one backend attempt.
    pub async fn on_response(
        &mut self,
        attempt: Attempt,
        outcome: OutcomeForGuest,
    ) -> Result<ResponseDecision, GuestFailure> {
        self.begin_hook();
        // The response head goes in as a resource of the instance's table,
        // the same Rust type for every version of the package.
        let outcome = match outcome {
            OutcomeForGuest::Response(info) => Ok(self
                .store
                .data_mut()
                .table
                .push(ResponseHead(info))
                .map_err(|e| GuestFailure::Unavailable(e.to_string()))?),
            OutcomeForGuest::Error(e) => Err(e),
        };
        let head = Resource::new_borrow(self.head.rep());
        let _running = self.activity.enter();
        let result = self
            .hooks
            .on_response(&mut self.store, head, attempt, outcome)
            .await;
        self.failed |= result.is_err();
        result.map_err(|e| classify(&self.store, e, false))
    }
}

/// Turns a wasmtime error into the failure a policy author should see.
fn classify(
    store: &Store<GuestState>,
    error: wasmtime::Error,
    instantiating: bool,
) -> GuestFailure {
    let state = store.data();
    match state.limit_hit {
        Some(LimitHit::Cpu) => GuestFailure::CpuLimit(Duration::from_millis(state.limits.cpu_ms)),
        Some(LimitHit::Memory) => GuestFailure::MemoryLimit(state.limits.memory_mb),
        Some(LimitHit::HostCalls) => GuestFailure::HostCallLimit(state.limits.max_host_calls),
        Some(LimitHit::CpuShare) => GuestFailure::CpuShare,
        None if instantiating
            && error
                .downcast_ref::<wasmtime::PoolConcurrencyLimitError>()
                .is_some() =>
        {
            GuestFailure::Unavailable("all instance slots are in use".into())
        }
        None if instantiating => GuestFailure::Unavailable(format!("{error:#}")),
        None => GuestFailure::Trap(format!("{error:#}")),
    }
}
