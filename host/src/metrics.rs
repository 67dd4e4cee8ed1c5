//! Node counters, rendered in the Prometheus text format.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

/// Shards of a [`Counter`]; more than the worker threads of a small node.
const SHARDS: usize = 8;

/// One shard on its own cache line.
#[derive(Default)]
#[repr(align(128))]
struct Shard(AtomicU64);

/// A counter bumped on every request by every worker thread: each thread
/// adds to its own shard, so the workers do not fight over one cache line.
#[derive(Default)]
pub struct Counter {
    shards: [Shard; SHARDS],
}

thread_local! {
    /// This thread's shard.
    static SHARD: usize = {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        NEXT.fetch_add(1, Ordering::Relaxed) as usize % SHARDS
    };
}

impl Counter {
    pub fn inc(&self) {
        let shard = SHARD.with(|s| *s);
        self.shards[shard].0.fetch_add(1, Ordering::Relaxed);
    }

    pub fn get(&self) -> u64 {
        self.shards
            .iter()
            .map(|s| s.0.load(Ordering::Relaxed))
            .sum()
    }
}

/// Counters of the request path. Per-tenant counters are keyed by tenant id
/// and by a short reason (`GuestFailure::as_str`, cache outcome...).
#[derive(Default)]
pub struct Metrics {
    pub requests: Counter,
    /// Requests whose policy decision came from the decision memo.
    pub memo_hits: Counter,
    per_tenant: Mutex<BTreeMap<(String, &'static str, &'static str), u64>>,
}

impl Metrics {
    /// Adds one to `outpost_<family>_total{tenant, reason}`.
    pub fn count(&self, family: &'static str, tenant: &str, reason: &'static str) {
        let mut map = self.per_tenant.lock().unwrap_or_else(|p| p.into_inner());
        *map.entry((tenant.to_string(), family, reason)).or_default() += 1;
    }

    /// The current value of a per-tenant counter.
    pub fn get(&self, family: &'static str, tenant: &str, reason: &'static str) -> u64 {
        let map = self.per_tenant.lock().unwrap_or_else(|p| p.into_inner());
        map.get(&(tenant.to_string(), family, reason))
            .copied()
            .unwrap_or(0)
    }

    /// Prometheus text exposition.
    pub fn render(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(out, "# TYPE outpost_requests_total counter");
        let _ = writeln!(out, "outpost_requests_total {}", self.requests.get());
        let _ = writeln!(out, "# TYPE outpost_decision_memo_hits_total counter");
        let _ = writeln!(
            out,
            "outpost_decision_memo_hits_total {}",
            self.memo_hits.get()
        );
        let map = self.per_tenant.lock().unwrap_or_else(|p| p.into_inner());
        for ((tenant, family, reason), value) in map.iter() {
            let _ = writeln!(
                out,
                "outpost_{family}_total{{tenant=\"{tenant}\",reason=\"{reason}\"}} {value}"
            );
        }
        out
    }
}
