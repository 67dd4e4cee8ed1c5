//! Fair shares of guest CPU between tenants. Each request's guest is cut
//! at its own deadline (`limits.cpu_ms`), but that does not bound what a
//! tenant takes in aggregate: many requests that each loop to their
//! deadline fill every worker thread's run queue, and every other tenant's
//! requests wait behind them.
//!
//! So the CPU each tenant's guests use is measured (the time workers spend
//! polling them, see [`crate::runtime::on_cpu`]), and every [`PERIOD`] a
//! balancer compares it, over the last [`WINDOW`] periods, with the
//! tenant's share of the node: its `limits.cpu_weight` over the weights of
//! the tenants that served requests in the window. While the node is
//! contended, a tenant above its share may run request hooks on at most its
//! share of the worker threads (at least one); a request past that waits
//! up to [`MAX_WAIT`] for a turn (a waiting request costs nothing, where a
//! refused one would come straight back), then gets a 503 without running
//! its guest. A hook already running past the cap (started before the
//! tenant was held) stops at its next epoch tick and waits the same way.
//! Work-conserving: a tenant alone, or a node with CPU to spare, is never
//! held back. Cache hits decided without the guest are never held back
//! either.

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use arc_swap::ArcSwap;
use futures::future::BoxFuture;
use tokio::sync::Notify;

use super::{Tenant, TenantTable};
use crate::metrics::nanos;
use crate::runtime::Pacer;

/// How often shares are recomputed.
pub const PERIOD: Duration = Duration::from_millis(100);

/// Periods a tenant's use is summed over.
const WINDOW: usize = 5;

/// Guest CPU in use, as a percentage of the node's, at which the node is
/// contended and tenants above their share are held to it.
const CONTENDED_PERCENT: u64 = 75;

/// Longest a request of a held tenant waits for a turn.
pub const MAX_WAIT: Duration = Duration::from_millis(100);

/// A held tenant is released when its use falls under this percentage of
/// its share, or when it stops asking for more than it is given.
const RELEASE_PERCENT: u64 = 80;

/// One tenant's account.
#[derive(Debug, Default)]
pub struct CpuShare {
    /// Guest CPU since the balancer last looked, in nanoseconds.
    pending: AtomicU64,
    /// Request hooks running now.
    running: AtomicU32,
    /// Request hooks the tenant may run at once; 0 while it is not held.
    cap: AtomicU32,
    /// Requests that had to wait or were refused since the balancer last
    /// looked: the tenant asked for more than its share.
    refused: AtomicU64,
    /// Woken when a turn ends.
    freed: Notify,
    /// The last periods' use (the balancer's alone).
    history: Mutex<History>,
}

#[derive(Debug, Default)]
struct History {
    used: [u64; WINDOW],
    /// Requests answered per period.
    requests: [u64; WINDOW],
    /// The request total when last looked.
    requests_seen: u64,
    next: usize,
}

/// A request hook's turn; ends when dropped.
pub struct Turn(Arc<CpuShare>);

impl Drop for Turn {
    fn drop(&mut self) {
        self.0.running.fetch_sub(1, Ordering::Relaxed);
        self.0.freed.notify_one();
    }
}

impl CpuShare {
    /// Charges guest CPU to the tenant.
    pub fn charge(&self, used: Duration) {
        self.pending.fetch_add(nanos(used), Ordering::Relaxed);
    }

    /// A turn to run a request hook: at once, unless the tenant is held to
    /// its share and already runs that many; then when one of those ends,
    /// or `None` after [`MAX_WAIT`].
    pub async fn enter(self: &Arc<Self>) -> Option<Turn> {
        if !self.try_take() && !self.wait_for_place().await {
            return None;
        }
        Some(Turn(self.clone()))
    }

    /// Takes a place among the running hooks, if the cap leaves one.
    fn try_take(&self) -> bool {
        let running = self.running.fetch_add(1, Ordering::Relaxed) + 1;
        let cap = self.cap.load(Ordering::Relaxed);
        if cap != 0 && running > cap {
            self.running.fetch_sub(1, Ordering::Relaxed);
            return false;
        }
        true
    }

    /// Waits up to [`MAX_WAIT`] for a place; `true` once one is taken.
    /// Counts that the tenant asked for more than its share.
    async fn wait_for_place(&self) -> bool {
        self.refused.fetch_add(1, Ordering::Relaxed);
        let deadline = tokio::time::Instant::now() + MAX_WAIT;
        loop {
            // Registered before looking again, so an end in between wakes it.
            let freed = self.freed.notified();
            if self.try_take() {
                return true;
            }
            if tokio::time::timeout_at(deadline, freed).await.is_err() {
                return false;
            }
        }
    }

    /// Gives up a running hook's place if the tenant runs more than its cap
    /// (a hook started before the tenant was held, or before its cap fell).
    fn give_up_place(&self) -> bool {
        let cap = self.cap.load(Ordering::Relaxed);
        let given = self
            .running
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |running| {
                (cap != 0 && running > cap).then(|| running - 1)
            })
            .is_ok();
        if given {
            self.freed.notify_one();
        }
        given
    }

    /// Whether the tenant is held to its share now.
    pub fn is_held(&self) -> bool {
        self.cap.load(Ordering::Relaxed) != 0
    }

    /// Closes a period, given the tenant's request total: its guest CPU
    /// and requests over the window, and whether it asked for more than
    /// its share in the period.
    fn roll(&self, requests_total: u64) -> Window {
        let used = self.pending.swap(0, Ordering::Relaxed);
        let refused = self.refused.swap(0, Ordering::Relaxed) > 0;
        let mut history = self.history.lock().unwrap_or_else(|p| p.into_inner());
        let at = history.next;
        history.used[at] = used;
        history.requests[at] = requests_total.saturating_sub(history.requests_seen);
        history.requests_seen = requests_total;
        history.next = (at + 1) % WINDOW;
        Window {
            used: history.used.iter().sum(),
            requests: history.requests.iter().sum(),
            refused,
        }
    }
}

/// Paces a request hook that holds a turn: over its tenant's cap, it stops
/// at its next tick and waits for a place like a request that has not
/// started (up to [`MAX_WAIT`], then it is cut with a 503), so holding a
/// tenant takes effect within a tick instead of once the hooks it already
/// started run to their deadlines.
impl Pacer for CpuShare {
    fn pause(self: Arc<Self>) -> Option<BoxFuture<'static, bool>> {
        if !self.give_up_place() {
            return None;
        }
        Some(Box::pin(async move {
            let resumed = self.wait_for_place().await;
            if !resumed {
                // The place its turn gives back when the cut hook ends.
                self.running.fetch_add(1, Ordering::Relaxed);
            }
            resumed
        }))
    }
}

/// One tenant over the last [`WINDOW`] periods.
struct Window {
    used: u64,
    requests: u64,
    refused: bool,
}

/// The inputs of one tenant's verdict, in nanoseconds over the window.
struct Reading {
    held: bool,
    used: u64,
    share: u64,
    total: u64,
    capacity: u64,
    refused: bool,
    others_active: bool,
    cap: u32,
}

/// The request hooks the tenant may run at once from now; 0: as many as
/// it likes (not held).
fn verdict(r: &Reading) -> u32 {
    let hold = if !r.others_active {
        false
    } else if r.held {
        // Still using about its share, and asking for more than it gets (it
        // had requests wait) or still above it (its clients may all be
        // busy with hooks that started before it was held).
        (r.refused || r.used > r.share) && r.used * 100 >= r.share * RELEASE_PERCENT
    } else {
        r.used > r.share && r.total * 100 >= r.capacity * CONTENDED_PERCENT
    };
    if hold {
        r.cap
    } else {
        0
    }
}

/// Recomputes every tenant's cap each [`PERIOD`], for as long as the node
/// runs. `workers`: the threads guests run on.
pub async fn balance(tenants: Arc<ArcSwap<TenantTable>>, workers: usize) {
    let mut tick = tokio::time::interval(PERIOD);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    loop {
        tick.tick().await;
        rebalance(&tenants.load(), workers.max(1));
    }
}

fn rebalance(table: &TenantTable, workers: usize) {
    let period = nanos(PERIOD);
    let capacity = workers as u64 * period * WINDOW as u64;
    let readings: Vec<(&Arc<Tenant>, Window)> = table
        .tenants()
        .map(|t| {
            let requests: u64 = t.metrics.requests().iter().sum();
            (t, t.cpu.roll(requests))
        })
        .collect();
    let total: u64 = readings.iter().map(|(_, w)| w.used).sum();
    let weight = |t: &Tenant| u64::from(t.limits.cpu_weight.max(1));
    // Active: it served requests (hits need workers too) or ran guests.
    let is_active = |w: &Window| w.used > 0 || w.requests > 0;
    let active_weight: u64 = readings
        .iter()
        .filter(|(_, w)| is_active(w))
        .map(|(t, _)| weight(t))
        .sum();
    let active = readings.iter().filter(|(_, w)| is_active(w)).count();
    for (tenant, window) in &readings {
        let all = active_weight.max(weight(tenant));
        let share = capacity * weight(tenant) / all;
        let cap = (workers as u64 * weight(tenant) / all).max(1) as u32;
        let held = tenant.cpu.is_held();
        let granted = verdict(&Reading {
            held,
            used: window.used,
            share,
            total,
            capacity,
            refused: window.refused,
            others_active: active > usize::from(is_active(window)),
            cap,
        });
        if tenant.cpu.cap.swap(granted, Ordering::Relaxed) != granted {
            // Waiters may fit under the new cap (or none at all).
            tenant.cpu.freed.notify_waiters();
        }
        if held != (granted != 0) {
            let percent = |ns: u64| ns * 100 / capacity.max(1);
            tracing::warn!(
                tenant = &*tenant.id,
                used_percent = percent(window.used),
                share_percent = percent(share),
                "{}",
                if granted != 0 {
                    format!(
                        "tenant over its share of guest CPU: held to {cap} request hook(s) at once"
                    )
                } else {
                    "tenant back within its share of guest CPU: no longer held".to_string()
                }
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reading(used_percent: u64, total_percent: u64) -> Reading {
        Reading {
            held: false,
            used: used_percent,
            share: 50,
            total: total_percent,
            capacity: 100,
            refused: false,
            others_active: true,
            cap: 1,
        }
    }

    #[test]
    fn a_tenant_over_its_share_of_a_busy_node_is_held() {
        assert_eq!(verdict(&reading(90, 95)), 1);
    }

    #[test]
    fn a_tenant_alone_or_on_an_idle_node_is_never_held() {
        let alone = Reading {
            others_active: false,
            ..reading(100, 100)
        };
        assert_eq!(verdict(&alone), 0);
        assert_eq!(verdict(&reading(60, 65)), 0);
        assert_eq!(verdict(&reading(40, 95)), 0);
    }

    #[test]
    fn a_held_tenant_stays_held_while_it_asks_for_more_than_its_share() {
        let held = Reading {
            held: true,
            refused: true,
            ..reading(45, 55)
        };
        assert_eq!(verdict(&held), 1);
        let satisfied = Reading {
            refused: false,
            ..held
        };
        assert_eq!(verdict(&satisfied), 0);
    }

    #[tokio::test]
    async fn a_turn_past_the_cap_waits_for_a_place_or_is_refused() {
        let share = Arc::new(CpuShare::default());
        share.cap.store(1, Ordering::Relaxed);
        let first = share.enter().await.expect("the first turn");
        let waiting = tokio::spawn({
            let share = share.clone();
            async move { share.enter().await.is_some() }
        });
        tokio::task::yield_now().await;
        drop(first);
        assert!(waiting.await.unwrap(), "a freed place goes to a waiter");
        let _held = share.enter().await.expect("a place");
        assert!(share.enter().await.is_none(), "refused after MAX_WAIT");
        share.cap.store(0, Ordering::Relaxed);
        let mut turns = Vec::new();
        for _ in 0..10 {
            turns.extend(share.enter().await);
        }
        assert_eq!(turns.len(), 10);
    }

    #[tokio::test]
    async fn hooks_started_before_the_hold_pause_at_their_next_tick_down_to_the_cap() {
        let share = Arc::new(CpuShare::default());
        let mut turns = Vec::new();
        for _ in 0..3 {
            turns.push(share.enter().await.expect("not held: a turn at once"));
        }
        share.cap.store(1, Ordering::Relaxed);
        let first = share.clone().pause().expect("3 running, cap 1: pauses");
        let second = share.clone().pause().expect("2 running, cap 1: pauses");
        assert!(
            share.clone().pause().is_none(),
            "the one left under the cap runs on"
        );
        let (first, second) = (tokio::spawn(first), tokio::spawn(second));
        tokio::task::yield_now().await;
        drop(turns.pop());
        assert!(
            first.await.unwrap(),
            "the freed place lets a paused hook go on"
        );
        assert!(!second.await.unwrap(), "no place within MAX_WAIT: cut");
        // Both kept the places their turns give back when they end.
        assert_eq!(share.running.load(Ordering::Relaxed), 2);
        drop(turns);
        assert_eq!(share.running.load(Ordering::Relaxed), 0);
    }
}
