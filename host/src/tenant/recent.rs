//! A bounded ring of a tenant's recent request heads, for the policy
//! preview. Recording never blocks a request: when the ring is busy the
//! request is simply not recorded.
//!
//! Once the ring is full only one request in [`SAMPLE_EVERY`] is recorded,
//! and what is kept is a compact copy: a parsed head shares its buffer
//! with the connection's read buffer, so keeping the head itself would
//! hold kilobytes per entry, and a thousand tenants' rings would hold
//! gigabytes.

use std::cell::Cell;
use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use crate::http::RequestInfo;

/// Request heads kept per tenant.
pub const RECENT_CAPACITY: usize = 256;
/// With the ring full, one request in this many replaces the oldest.
const SAMPLE_EVERY: u32 = 16;

thread_local! {
    /// Requests seen by this thread, for sampling without a shared counter.
    static SEEN: Cell<u32> = const { Cell::new(0) };
}

#[derive(Default)]
pub struct RecentRequests {
    ring: Mutex<VecDeque<Arc<RequestInfo>>>,
    /// The ring holds `RECENT_CAPACITY` heads: skipped requests need not
    /// touch the lock.
    full: AtomicBool,
}

impl RecentRequests {
    pub fn record(&self, request: &RequestInfo) {
        let sampled = SEEN.with(|seen| {
            let n = seen.get().wrapping_add(1);
            seen.set(n);
            n % SAMPLE_EVERY == 0
        });
        if !sampled && self.full.load(Ordering::Relaxed) {
            return;
        }
        if let Ok(mut ring) = self.ring.try_lock() {
            if ring.len() == RECENT_CAPACITY {
                ring.pop_front();
            }
            ring.push_back(Arc::new(request.owned_copy()));
            if ring.len() == RECENT_CAPACITY {
                self.full.store(true, Ordering::Relaxed);
            }
        }
    }

    /// The recorded heads, oldest first.
    pub fn snapshot(&self) -> Vec<Arc<RequestInfo>> {
        self.ring
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .cloned()
            .collect()
    }
}
