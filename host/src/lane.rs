//! Which serving lane the calling thread is (see `server::Lanes`): the
//! data plane runs one single-threaded runtime per core, and what one
//! lane's requests use most (metric shards, idle origin connections) is
//! kept apart per lane, so two lanes never write the same cache line and a
//! socket stays with the reactor that registered it.

use std::cell::Cell;
use std::sync::OnceLock;

thread_local! {
    static LANE: Cell<Option<usize>> = const { Cell::new(None) };
}

/// Lanes a node runs: one per core the process may use.
pub fn count() -> usize {
    static COUNT: OnceLock<usize> = OnceLock::new();
    *COUNT.get_or_init(|| std::thread::available_parallelism().map_or(1, |n| n.get()))
}

/// Marks the calling thread as lane `index`, for its whole life.
pub fn enter(index: usize) {
    LANE.with(|lane| lane.set(Some(index)));
}

/// The calling thread's lane, if it is one.
pub fn current() -> Option<usize> {
    LANE.with(Cell::get)
}
