//! The epoch ticker: advances the engine's epoch every [`EPOCH_TICK`] while
//! guest code may be running, and sleeps while none is.
//!
//! With most requests answered from the decision memo, guests run on a
//! small share of requests; a ticker waking a thousand times a second for
//! nothing would cost a busy node CPU and an idle one its quiet.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

use wasmtime::EngineWeak;

use super::EPOCH_TICK;

/// How many guests are instantiating or inside a hook.
#[derive(Default)]
pub struct Activity {
    running: AtomicUsize,
    lock: Mutex<()>,
    wake: Condvar,
}

/// Held while guest code may run; wakes the ticker when it was asleep.
pub struct Running(Arc<Activity>);

impl Activity {
    pub fn enter(self: &Arc<Self>) -> Running {
        if self.running.fetch_add(1, Ordering::AcqRel) == 0 {
            // Taking the lock orders this with the ticker's check, so the
            // wake-up cannot fall between its check and its wait.
            let _guard = self.lock.lock().unwrap_or_else(|p| p.into_inner());
            self.wake.notify_one();
        }
        Running(self.clone())
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        self.0.running.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Starts the ticker thread; it ends when the engine is dropped.
pub fn spawn(engine: EngineWeak, activity: Arc<Activity>) -> std::io::Result<()> {
    std::thread::Builder::new()
        .name("outpost-epoch".into())
        .spawn(move || loop {
            std::thread::sleep(EPOCH_TICK);
            match engine.upgrade() {
                Some(engine) => engine.increment_epoch(),
                None => return,
            }
            let guard = activity.lock.lock().unwrap_or_else(|p| p.into_inner());
            // Wake at least every 100 ms to notice a dropped engine.
            let _ = activity
                .wake
                .wait_timeout_while(guard, Duration::from_millis(100), |_| {
                    activity.running.load(Ordering::Acquire) == 0
                });
        })
        .map(|_| ())
}
