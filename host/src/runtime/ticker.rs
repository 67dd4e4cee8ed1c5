//! The epoch ticker: advances the engine's epoch every [`EPOCH_TICK`] while
//! guest code may be running, and sleeps once none has run for [`LINGER`].
//!
//! With most requests answered from the decision memo, guests run on a
//! small share of requests; a ticker waking a thousand times a second for
//! nothing would cost a busy node CPU and an idle one its quiet. Waking a
//! sleeping ticker costs a futex call (about 1 µs, a tenth of a fresh
//! instance), so it stays awake a little while after the last guest: a
//! steady trickle of guest calls never pays it.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

use wasmtime::EngineWeak;

use super::EPOCH_TICK;

/// Ticks without a guest before the ticker sleeps.
const LINGER: u32 = 20;

/// How many guests are instantiating or inside a hook.
#[derive(Default)]
pub struct Activity {
    running: AtomicUsize,
    /// The ticker waits on `wake` (set and cleared under `lock`).
    asleep: AtomicBool,
    lock: Mutex<()>,
    wake: Condvar,
}

/// Held while guest code may run; wakes the ticker when it was asleep.
pub struct Running(Arc<Activity>);

impl Activity {
    pub fn enter(self: &Arc<Self>) -> Running {
        // Sequentially consistent with the ticker's store of `asleep` and
        // load of `running`: either it sees this guest and stays awake, or
        // this sees it asleep and wakes it, under the lock it holds until
        // it waits.
        self.running.fetch_add(1, Ordering::SeqCst);
        if self.asleep.load(Ordering::SeqCst) {
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
        .spawn(move || {
            let mut idle = 0;
            loop {
                std::thread::sleep(EPOCH_TICK);
                match engine.upgrade() {
                    Some(engine) => engine.increment_epoch(),
                    None => return,
                }
                idle = if activity.running.load(Ordering::SeqCst) == 0 {
                    idle + 1
                } else {
                    0
                };
                if idle < LINGER {
                    continue;
                }
                let guard = activity.lock.lock().unwrap_or_else(|p| p.into_inner());
                activity.asleep.store(true, Ordering::SeqCst);
                // Wake at least every 100 ms to notice a dropped engine.
                let _ = activity
                    .wake
                    .wait_timeout_while(guard, Duration::from_millis(100), |_| {
                        activity.running.load(Ordering::SeqCst) == 0
                    });
                activity.asleep.store(false, Ordering::SeqCst);
                idle = 0;
            }
        })
        .map(|_| ())
}
