//! The per-request store data of a guest instance.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use wasmtime::component::ResourceTable;
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};

use super::env::{GuestContext, Pacer};
use super::memo::{Field, Reads};
use crate::config::LimitsConfig;

/// Which limit stopped a guest.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LimitHit {
    Memory,
    Cpu,
    HostCalls,
    /// Paused over its tenant's share of guest CPU and not let go on.
    CpuShare,
}

/// A paused hook's verdict, written when its wait ends.
#[derive(Default)]
pub(crate) struct Paused(AtomicBool);

impl Paused {
    pub(crate) fn set(&self, go_on: bool) {
        self.0.store(go_on, Ordering::Release);
    }

    pub(crate) fn get(&self) -> bool {
        self.0.load(Ordering::Acquire)
    }
}

pub struct GuestState {
    pub(crate) table: ResourceTable,
    /// Made on the first WASI call: most policies import nothing from WASI
    /// (the SDK's `no-std` feature), and building a context seeds its
    /// random sources, a few hundred nanoseconds on every instance.
    wasi: Option<WasiCtx>,
    pub(crate) ctx: GuestContext,
    pub(crate) limits: LimitsConfig,
    /// Epoch ticks the guest has run during the current hook.
    pub(crate) ticks: u64,
    pub(crate) host_calls: u32,
    pub(crate) subrequests: u32,
    pub(crate) limit_hit: Option<LimitHit>,
    /// What the request hook reads, while a fresh instance decides for the
    /// decision memo.
    pub(crate) reads: Option<Reads>,
    /// Paces the running request hook (see `pacing`); none otherwise.
    pub(crate) pacer: Option<Arc<dyn Pacer>>,
    /// Set while the hook is paused, until the tick after it resumes.
    pub(crate) paused: Option<Arc<Paused>>,
    /// Host calls that named a limiter, counter, secret or key the tenant
    /// does not declare, as warnings (smoke calls report them).
    pub(crate) undeclared: Vec<String>,
}

impl GuestState {
    pub fn new(ctx: GuestContext) -> GuestState {
        let mut limits = ctx.env.limits();
        if ctx.offline {
            limits.max_subrequests = 0;
        }
        GuestState {
            table: ResourceTable::new(),
            wasi: None,
            ctx,
            limits,
            ticks: 0,
            host_calls: 0,
            subrequests: 0,
            limit_hit: None,
            reads: None,
            pacer: None,
            paused: None,
            undeclared: Vec::new(),
        }
    }

    /// Records an input of the request hook, when recording.
    pub(crate) fn note(&mut self, field: impl FnOnce() -> Field) {
        if let Some(reads) = &mut self.reads {
            reads.note(field());
        }
    }

    /// Records a call that makes the decision unrepeatable.
    pub(crate) fn taint(&mut self) {
        if let Some(reads) = &mut self.reads {
            reads.taint();
        }
    }

    /// Counts a host call; traps the guest past its limit.
    pub(crate) fn count_host_call(&mut self) -> wasmtime::Result<()> {
        self.host_calls += 1;
        if self.host_calls > self.limits.max_host_calls {
            self.limit_hit = Some(LimitHit::HostCalls);
            wasmtime::bail!(
                "host call limit of {} per request exceeded",
                self.limits.max_host_calls
            );
        }
        Ok(())
    }
}

impl WasiView for GuestState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            // No environment, arguments, preopens or stdio: a policy talks to
            // the world only through the outpost:edge imports.
            ctx: self.wasi.get_or_insert_with(|| WasiCtx::builder().build()),
            table: &mut self.table,
        }
    }
}

/// Enforces the tenant's linear memory cap and records when it bites.
impl wasmtime::ResourceLimiter for GuestState {
    fn memory_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _max: Option<usize>,
    ) -> wasmtime::Result<bool> {
        let allowed = desired <= self.limits.memory_mb as usize * 1024 * 1024;
        if !allowed {
            self.limit_hit = Some(LimitHit::Memory);
        }
        Ok(allowed)
    }

    fn table_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _max: Option<usize>,
    ) -> wasmtime::Result<bool> {
        Ok(desired <= 100_000)
    }
}
