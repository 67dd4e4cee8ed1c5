//! Exact counters a tenant declares (`[tenant.counters.NAME]`) and its
//! policy calls `counter-add` and `counter-get` on: a total per key, e.g. a
//! user's downloads today.
//!
//! This is one node's part: the keys it owns. A POP keeps each key at the
//! member that owns it on the rendezvous ring (`pop`), and the others ask
//! that member (`tenant::env`), so one key's total is kept in one place and
//! is exact. Totals live in memory: what a node loses when it stops is the
//! totals of the keys it owned (their next owner starts them from 0), and a
//! key evicted past `max_keys` (least recently used first) starts from 0.

use std::num::NonZeroUsize;
use std::sync::Mutex;

use lru::LruCache;

use crate::config::{CounterConfig, CounterReset};

/// One counter's totals on this node.
pub struct Counter {
    config: CounterConfig,
    state: Mutex<Totals>,
}

struct Totals {
    /// The reset period the totals belong to.
    period: u64,
    by_key: LruCache<Box<str>, u64>,
}

impl Counter {
    pub fn new(config: CounterConfig) -> Counter {
        let max_keys = NonZeroUsize::new(config.max_keys as usize).unwrap_or(NonZeroUsize::MIN);
        Counter {
            config,
            state: Mutex::new(Totals {
                period: 0,
                by_key: LruCache::new(max_keys),
            }),
        }
    }

    pub fn config(&self) -> &CounterConfig {
        &self.config
    }

    /// Adds `delta` to `key` at `now` (Unix seconds) and returns the new
    /// total (saturating); `delta` 0 reads it. Totals start again from 0 at
    /// each reset boundary (UTC).
    pub fn add(&self, key: &str, delta: u64, now: u64) -> u64 {
        let period = match self.config.reset {
            CounterReset::Never => 0,
            CounterReset::Hourly => now / 3600,
            CounterReset::Daily => now / 86_400,
        };
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        if state.period != period {
            state.by_key.clear();
            state.period = period;
        }
        if delta == 0 {
            return state.by_key.get(key).copied().unwrap_or(0);
        }
        match state.by_key.get_mut(key) {
            Some(total) => {
                *total = total.saturating_add(delta);
                *total
            }
            None => {
                state.by_key.put(key.into(), delta);
                delta
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn totals_are_exact_per_key_and_start_again_each_day() {
        let c = Counter::new(CounterConfig {
            reset: CounterReset::Daily,
            max_keys: 10,
        });
        let day = 20_000 * 86_400;
        assert_eq!(c.add("alice", 1, day), 1);
        assert_eq!(c.add("alice", 2, day + 10), 3);
        assert_eq!(c.add("bob", 1, day + 10), 1);
        assert_eq!(c.add("alice", 0, day + 86_399), 3);
        assert_eq!(c.add("alice", 0, day + 86_400), 0);
        assert_eq!(c.add("alice", 1, day + 86_400), 1);
    }

    #[test]
    fn past_max_keys_the_least_recently_used_total_is_forgotten() {
        let c = Counter::new(CounterConfig {
            reset: CounterReset::Never,
            max_keys: 2,
        });
        c.add("a", 5, 0);
        c.add("b", 5, 0);
        c.add("a", 1, 0);
        c.add("c", 1, 0);
        assert_eq!(c.add("a", 0, 0), 6);
        assert_eq!(c.add("b", 0, 0), 0);
    }
}
