//! A bounded ring of a tenant's recent request heads, for the policy
//! preview. Recording never blocks a request: when the ring is busy the
//! request is simply not recorded.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

use crate::runtime::heads::RequestInfo;

/// Request heads kept per tenant.
pub const RECENT_CAPACITY: usize = 512;

#[derive(Default)]
pub struct RecentRequests {
    ring: Mutex<VecDeque<Arc<RequestInfo>>>,
}

impl RecentRequests {
    pub fn record(&self, request: &Arc<RequestInfo>) {
        if let Ok(mut ring) = self.ring.try_lock() {
            if ring.len() == RECENT_CAPACITY {
                ring.pop_front();
            }
            ring.push_back(request.clone());
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
