//! The retry budget: retries may add at most a percentage of a backend's
//! requests over the last 10 s (Finagle's and Envoy's retry budgets), so a
//! failing pool is not asked for three times its load by retries.

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::time::Instant;

/// Seconds in the sliding window.
const WINDOW_S: usize = 10;

/// Retries allowed in a window whatever the share, so a backend with
/// little traffic can still retry.
const MIN_RETRIES: u64 = 3;

pub(super) struct RetryBudget {
    percent: u64,
    epoch: Instant,
    buckets: [Bucket; WINDOW_S],
}

#[derive(Default)]
struct Bucket {
    /// The second (since `epoch`, plus one) these counts are for.
    second: AtomicU64,
    requests: AtomicU32,
    retries: AtomicU32,
}

impl RetryBudget {
    pub fn new(percent: u32) -> RetryBudget {
        RetryBudget {
            percent: u64::from(percent),
            epoch: Instant::now(),
            buckets: Default::default(),
        }
    }

    /// Counts a request (its first attempt).
    pub fn request(&self) {
        self.current().requests.fetch_add(1, Ordering::Relaxed);
    }

    /// Takes one retry from the budget if there is one left.
    pub fn try_retry(&self) -> bool {
        let now = self.second();
        let (mut requests, mut retries) = (0u64, 0u64);
        for bucket in &self.buckets {
            if now.saturating_sub(bucket.second.load(Ordering::Relaxed)) < WINDOW_S as u64 {
                requests += u64::from(bucket.requests.load(Ordering::Relaxed));
                retries += u64::from(bucket.retries.load(Ordering::Relaxed));
            }
        }
        let allowed = retries < MIN_RETRIES || (retries + 1) * 100 <= self.percent * requests;
        if allowed {
            self.current().retries.fetch_add(1, Ordering::Relaxed);
        }
        allowed
    }

    fn second(&self) -> u64 {
        self.epoch.elapsed().as_secs() + WINDOW_S as u64
    }

    /// This second's bucket, emptied first if it last held an older second.
    /// (Two requests racing at a second's turn may lose a count: the budget
    /// is a bound on amplification, not an exact ledger.)
    fn current(&self) -> &Bucket {
        let now = self.second();
        let bucket = &self.buckets[now as usize % WINDOW_S];
        if bucket.second.swap(now, Ordering::Relaxed) != now {
            bucket.requests.store(0, Ordering::Relaxed);
            bucket.retries.store(0, Ordering::Relaxed);
        }
        bucket
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retries_stay_within_the_share_of_requests() {
        let budget = RetryBudget::new(20);
        let mut retried = 0;
        for _ in 0..100 {
            budget.request();
            if budget.try_retry() {
                retried += 1;
            }
        }
        assert!(
            (20..=23).contains(&retried),
            "{retried} retries for 100 requests"
        );
    }

    #[test]
    fn a_quiet_backend_still_gets_a_few_retries() {
        let budget = RetryBudget::new(20);
        budget.request();
        assert!(budget.try_retry());
        assert!(RetryBudget::new(0).try_retry());
    }
}
