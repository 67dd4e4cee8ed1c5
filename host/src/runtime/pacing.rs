//! What a guest does at each epoch tick it spends running: counts it
//! against its CPU deadline, and gives the worker back to the executor,
//! either for one turn of the run queue or, when its caller paces it, until
//! the caller lets it go on.

use std::sync::Arc;

use wasmtime::{StoreContextMut, Trap, UpdateDeadline};

use super::state::{GuestState, LimitHit, Paused};
use super::EPOCH_TICK;

/// The store's epoch deadline callback: called once per tick the guest
/// spends running (after a yield or a host call the deadline restarts from
/// the current epoch), so the count of calls is its CPU time in ticks; time
/// spent waiting for the executor, for a pacer or in host calls is not
/// charged.
pub(crate) fn on_tick(
    mut ctx: StoreContextMut<'_, GuestState>,
) -> wasmtime::Result<UpdateDeadline> {
    let state = ctx.data_mut();
    if let Some(paused) = state.paused.take() {
        // Back from a pause, called at once (deadline 0): not a tick.
        if !paused.get() {
            state.limit_hit = Some(LimitHit::CpuShare);
            return Err(Trap::Interrupt.into());
        }
        return Ok(UpdateDeadline::Continue(1));
    }
    state.ticks += 1;
    let allowed = state.limits.cpu_ms.div_ceil(EPOCH_TICK.as_millis() as u64);
    if state.ticks > allowed {
        state.limit_hit = Some(LimitHit::Cpu);
        return Err(Trap::Interrupt.into());
    }
    if let Some(wait) = state.pacer.clone().and_then(|p| p.pause()) {
        let paused = Arc::new(Paused::default());
        state.paused = Some(paused.clone());
        let wait = async move { paused.set(wait.await) };
        // Deadline 0: the callback runs again as soon as the guest does, to
        // read the verdict.
        return Ok(UpdateDeadline::YieldCustom(0, Box::pin(wait)));
    }
    // Yield to the executor every tick: a long-running guest never holds a
    // worker thread that other tenants' requests need. Through tokio's
    // `yield_now`, which wakes the task only after the runtime has looked
    // for I/O: a serving lane runs one thread, and a guest that is woken at
    // once would be polled again before the lane reads its sockets (tokio
    // polls them every 61 tasks when there is always one to run), so the
    // requests of other connections on that lane would wait for dozens of
    // ticks.
    Ok(UpdateDeadline::YieldCustom(
        1,
        Box::pin(tokio::task::yield_now()),
    ))
}
