//! Rate limiters a tenant declares (`[tenant.limiters.NAME]`) and its
//! policy calls `rate-check` on: node-local and approximate across a POP,
//! as nginx's `limit_req` and Fastly's edge rate limiting are.
//!
//! Each key is a leaky bucket counted as nginx's `limit_req` counts it (its
//! `ngx_http_limit_req_lookup`): a key's *excess* drains at the rate; a
//! request adds its cost and is allowed while the excess stays within the
//! burst (`nodelay`: allowed requests are never queued), and a denied one
//! changes nothing. A key seen for the first time, or idle long enough to
//! have drained, starts at no excess, so of instant requests the first and
//! then `burst` more pass: `rate = 10, burst = 5` lets 6 of 100 instant
//! requests through, then one every 100 ms. A penalty time (Fastly's
//! penalty box) keeps a denied key denied for that long.
//!
//! Memory is bounded per limiter: at most `max_keys` keys, the least
//! recently used forgotten first.

use std::num::NonZeroUsize;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use lru::LruCache;

use crate::config::LimiterConfig;

/// A limiter's answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Allow,
    /// Whole seconds (at least 1) until the key would be allowed again.
    Deny {
        retry_after_s: u32,
    },
}

/// One key's bucket.
#[derive(Debug, Clone, Copy)]
struct Bucket {
    /// Requests above the rate, not yet drained.
    excess: f64,
    /// When `excess` was last written.
    at: Instant,
    /// Denied until then, whatever the bucket says.
    penalty_until: Option<Instant>,
}

/// One limiter: its rules and its keys' buckets.
pub struct Limiter {
    config: LimiterConfig,
    /// Drained per second.
    per_second: f64,
    buckets: Mutex<LruCache<Box<str>, Bucket>>,
    /// Checks allowed and denied, for metrics.
    pub allowed: AtomicU64,
    pub denied: AtomicU64,
}

impl Limiter {
    pub fn new(config: LimiterConfig) -> Limiter {
        let max_keys = NonZeroUsize::new(config.max_keys as usize).unwrap_or(NonZeroUsize::MIN);
        Limiter {
            per_second: f64::from(config.rate) / f64::from(config.window_s.max(1)),
            config,
            buckets: Mutex::new(LruCache::new(max_keys)),
            allowed: AtomicU64::new(0),
            denied: AtomicU64::new(0),
        }
    }

    pub fn config(&self) -> &LimiterConfig {
        &self.config
    }

    /// Counts `cost` against `key` at `now`.
    pub fn check(&self, key: &str, cost: u32, now: Instant) -> Verdict {
        let verdict = self.bucket_check(key, cost, now);
        let counter = match verdict {
            Verdict::Allow => &self.allowed,
            Verdict::Deny { .. } => &self.denied,
        };
        counter.fetch_add(1, Ordering::Relaxed);
        verdict
    }

    fn bucket_check(&self, key: &str, cost: u32, now: Instant) -> Verdict {
        let mut buckets = self.buckets.lock().unwrap_or_else(|p| p.into_inner());
        let burst = f64::from(self.config.burst);
        let cost = f64::from(cost);
        let bucket = buckets.get_mut(key);
        if let Some(until) = bucket.as_ref().and_then(|b| b.penalty_until) {
            if until > now {
                return Verdict::Deny {
                    retry_after_s: whole_seconds(until - now),
                };
            }
        }
        // The excess after draining plus this cost, never below zero, as
        // nginx; a key's first request adds nothing (a cost above 1 still
        // counts its rest).
        let excess = match &bucket {
            Some(b) => {
                let drained = self.per_second * now.saturating_duration_since(b.at).as_secs_f64();
                (b.excess - drained + cost).max(0.0)
            }
            None => (cost - 1.0).max(0.0),
        };
        if excess > burst {
            let retry_after_s = if self.config.penalty_s > 0 {
                let until = now + Duration::from_secs(self.config.penalty_s.into());
                match bucket {
                    Some(b) => b.penalty_until = Some(until),
                    None => {
                        buckets.put(
                            key.into(),
                            Bucket {
                                excess: 0.0,
                                at: now,
                                penalty_until: Some(until),
                            },
                        );
                    }
                }
                self.config.penalty_s
            } else {
                // Until enough has drained for this cost to fit.
                whole_seconds(Duration::from_secs_f64((excess - burst) / self.per_second))
            };
            return Verdict::Deny { retry_after_s };
        }
        let bucket = Bucket {
            excess,
            at: now,
            penalty_until: None,
        };
        match buckets.get_mut(key) {
            Some(b) => *b = bucket,
            None => {
                buckets.put(key.into(), bucket);
            }
        }
        Verdict::Allow
    }

    /// Keys remembered now.
    pub fn keys(&self) -> usize {
        self.buckets.lock().unwrap_or_else(|p| p.into_inner()).len()
    }
}

/// A wait in whole seconds for `Retry-After`, rounded up, at least 1.
fn whole_seconds(wait: Duration) -> u32 {
    let secs = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
    secs.clamp(1, u64::from(u32::MAX)) as u32
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limiter(rate: u32, burst: u32, penalty_s: u32, max_keys: u32) -> Limiter {
        Limiter::new(LimiterConfig {
            rate,
            window_s: 1,
            burst,
            penalty_s,
            max_keys,
        })
    }

    fn allowed(l: &Limiter, key: &str, n: usize, at: Instant) -> usize {
        (0..n)
            .filter(|_| l.check(key, 1, at) == Verdict::Allow)
            .count()
    }

    #[test]
    fn a_burst_of_instant_requests_gets_one_plus_burst_as_nginx_counts_it() {
        let l = limiter(10, 5, 0, 100);
        let t0 = Instant::now();
        assert_eq!(allowed(&l, "k", 100, t0), 6);
        assert_eq!(l.check("k", 1, t0), Verdict::Deny { retry_after_s: 1 });
        // At the rate over the next second, every request passes: 10 more.
        let at_rate = (1..=10)
            .filter(|i| l.check("k", 1, t0 + Duration::from_millis(100 * i)) == Verdict::Allow)
            .count();
        assert_eq!(at_rate, 10);
        // Another key has its own bucket.
        assert_eq!(allowed(&l, "other", 100, t0), 6);
        // A second of idling drains the bucket: one plus the burst again.
        assert_eq!(allowed(&l, "k", 100, t0 + Duration::from_secs(3)), 6);
    }

    #[test]
    fn a_penalty_keeps_a_denied_key_out_for_its_time() {
        let l = limiter(10, 0, 30, 100);
        let t0 = Instant::now();
        assert_eq!(l.check("k", 1, t0), Verdict::Allow);
        assert_eq!(l.check("k", 1, t0), Verdict::Deny { retry_after_s: 30 });
        let later = t0 + Duration::from_secs(10);
        assert_eq!(l.check("k", 1, later), Verdict::Deny { retry_after_s: 20 });
        assert_eq!(
            l.check("k", 1, t0 + Duration::from_secs(31)),
            Verdict::Allow
        );
    }

    #[test]
    fn retry_after_is_the_time_until_the_cost_fits() {
        // 1 per minute, no burst: the second request waits a minute.
        let l = Limiter::new(LimiterConfig {
            rate: 1,
            window_s: 60,
            burst: 0,
            penalty_s: 0,
            max_keys: 10,
        });
        let t0 = Instant::now();
        assert_eq!(l.check("k", 1, t0), Verdict::Allow);
        assert_eq!(l.check("k", 1, t0), Verdict::Deny { retry_after_s: 60 });
        // A cost counts as that many requests.
        let l = limiter(10, 5, 0, 10);
        assert_eq!(l.check("k", 4, t0), Verdict::Allow);
        assert_eq!(l.check("k", 2, t0), Verdict::Allow);
        assert_eq!(l.check("k", 1, t0), Verdict::Deny { retry_after_s: 1 });
    }

    #[test]
    fn memory_is_bounded_and_the_least_recently_used_key_goes_first() {
        let l = limiter(1, 0, 0, 3);
        let t0 = Instant::now();
        for key in ["a", "b", "c"] {
            assert_eq!(l.check(key, 1, t0), Verdict::Allow);
        }
        // "a" used again: "b" is now the oldest.
        assert!(matches!(l.check("a", 1, t0), Verdict::Deny { .. }));
        assert_eq!(l.check("d", 1, t0), Verdict::Allow);
        assert_eq!(l.keys(), 3);
        // "b" was forgotten, so it starts afresh; "a" was not.
        assert_eq!(l.check("b", 1, t0), Verdict::Allow);
        assert!(matches!(l.check("a", 1, t0), Verdict::Deny { .. }));
    }
}
