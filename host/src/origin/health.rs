//! One member's health: what its active probes said (a window of results,
//! Varnish's model) and whether passive checks took it out (Envoy's outlier
//! ejection), kept in atomics so the request path reads it without a lock.
//! Times are milliseconds on the pool's clock; 0 means "never".

use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};

use crate::config::{EjectionConfig, ProbeConfig};

pub(super) struct MemberHealth {
    /// Failed requests in a row.
    failures: AtomicU32,
    /// Until when it is taken out; 0 when it is not.
    ejected_until: AtomicU64,
    /// How many times it was taken out since it last stayed in for the
    /// longest ejection.
    ejections: AtomicU32,
    last_ejection_end: AtomicU64,
    /// The last probe results, newest in bit 0 (only the probe task writes).
    probes: AtomicU64,
    probe_down: AtomicBool,
    /// Since when it is back after being down, while it ramps up.
    back_since: AtomicU64,
}

/// What a probe result changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Transition {
    Unchanged,
    WentDown,
    CameUp,
}

impl MemberHealth {
    /// A member starts healthy unless its probes' `initial` is below their
    /// threshold.
    pub fn new(probe: Option<&ProbeConfig>) -> MemberHealth {
        let (probes, down) = match probe {
            Some(p) => (low_bits(p.initial()), p.initial() < p.threshold),
            None => (0, false),
        };
        MemberHealth {
            failures: AtomicU32::new(0),
            ejected_until: AtomicU64::new(0),
            ejections: AtomicU32::new(0),
            last_ejection_end: AtomicU64::new(0),
            probes: AtomicU64::new(probes),
            probe_down: AtomicBool::new(down),
            back_since: AtomicU64::new(0),
        }
    }

    /// Whether it may take requests: its probes pass and it is not taken
    /// out. An ejection that has run out ends here, and its ramp-up starts.
    pub fn available(&self, now: u64) -> bool {
        if self.probe_down.load(Ordering::Relaxed) {
            return false;
        }
        let until = self.ejected_until.load(Ordering::Relaxed);
        if until == 0 {
            return true;
        }
        if now < until {
            return false;
        }
        if self
            .ejected_until
            .compare_exchange(until, 0, Ordering::Relaxed, Ordering::Relaxed)
            .is_ok()
        {
            self.failures.store(0, Ordering::Relaxed);
            self.last_ejection_end.store(until, Ordering::Relaxed);
            self.back_since.store(now, Ordering::Relaxed);
        }
        true
    }

    pub fn ejected(&self, now: u64) -> bool {
        now < self.ejected_until.load(Ordering::Relaxed)
    }

    /// Whether its probes currently pass.
    pub fn probe_up(&self) -> bool {
        !self.probe_down.load(Ordering::Relaxed)
    }

    /// Its share of requests, from 0.1 just after it came back to 1 once
    /// `slow_start_ms` have passed.
    pub fn share(&self, now: u64, slow_start_ms: u64) -> f64 {
        let since = self.back_since.load(Ordering::Relaxed);
        if since == 0 {
            return 1.0;
        }
        let elapsed = now.saturating_sub(since);
        if elapsed >= slow_start_ms {
            self.back_since.store(0, Ordering::Relaxed);
            return 1.0;
        }
        (elapsed as f64 / slow_start_ms as f64).max(0.1)
    }

    pub fn succeeded(&self) {
        // Read first: a healthy member's line is not written per request.
        if self.failures.load(Ordering::Relaxed) != 0 {
            self.failures.store(0, Ordering::Relaxed);
        }
    }

    /// Counts a failure; whether it makes `threshold` in a row (0: never).
    pub fn failed(&self, threshold: u32) -> bool {
        let failures = self.failures.fetch_add(1, Ordering::Relaxed) + 1;
        threshold > 0 && failures >= threshold
    }

    /// Takes it out: for the base time times the number of recent
    /// ejections, at most the maximum. Returns until when.
    pub fn eject(&self, now: u64, config: &EjectionConfig) -> u64 {
        // A member that stayed in for the longest ejection starts over.
        let last_end = self.last_ejection_end.load(Ordering::Relaxed);
        if last_end != 0 && now.saturating_sub(last_end) > config.max_ejection_ms {
            self.ejections.store(0, Ordering::Relaxed);
        }
        let count = self.ejections.fetch_add(1, Ordering::Relaxed) + 1;
        let duration = config
            .base_ejection_ms
            .saturating_mul(u64::from(count))
            .min(config.max_ejection_ms);
        let until = now + duration;
        self.ejected_until.store(until, Ordering::Relaxed);
        self.failures.store(0, Ordering::Relaxed);
        until
    }

    /// Records a probe result: healthy while at least `threshold` of the
    /// last `window` passed.
    pub fn probed(&self, passed: bool, probe: &ProbeConfig, now: u64) -> Transition {
        let bits = ((self.probes.load(Ordering::Relaxed) << 1) | u64::from(passed))
            & low_bits(probe.window);
        self.probes.store(bits, Ordering::Relaxed);
        let up = bits.count_ones() >= probe.threshold;
        let was_up = !self.probe_down.swap(!up, Ordering::Relaxed);
        match (was_up, up) {
            (false, true) => {
                self.back_since.store(now, Ordering::Relaxed);
                Transition::CameUp
            }
            (true, false) => Transition::WentDown,
            _ => Transition::Unchanged,
        }
    }
}

/// A mask of the `n` lowest bits.
fn low_bits(n: u32) -> u64 {
    if n >= 64 {
        u64::MAX
    } else {
        (1u64 << n) - 1
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn probe(window: u32, threshold: u32, initial: Option<u32>) -> ProbeConfig {
        ProbeConfig {
            path: "/".into(),
            expect_status: 200,
            interval_ms: 1000,
            timeout_ms: 100,
            window,
            threshold,
            initial,
        }
    }

    #[test]
    fn a_member_goes_down_when_fewer_than_threshold_of_the_window_pass() {
        let p = probe(8, 3, None);
        let h = MemberHealth::new(Some(&p));
        assert!(h.available(1), "starts healthy: initial = threshold");
        // The 3 initial passes leave the window one by one: the 6th
        // failure leaves 2.
        let mut transitions = Vec::new();
        for _ in 0..8 {
            transitions.push(h.probed(false, &p, 2));
        }
        assert_eq!(
            transitions
                .iter()
                .filter(|t| **t == Transition::WentDown)
                .count(),
            1
        );
        assert!(!h.available(3));
        assert_eq!(h.probed(true, &p, 4), Transition::Unchanged);
        assert_eq!(h.probed(true, &p, 5), Transition::Unchanged);
        assert_eq!(h.probed(true, &p, 6), Transition::CameUp);
        assert!(h.available(7));
        assert!(h.share(7, 1000) < 0.2, "ramps up after coming back");
        assert_eq!(h.share(1007, 1000), 1.0);
    }

    #[test]
    fn initial_zero_waits_for_the_probes() {
        let p = probe(8, 3, Some(0));
        assert!(!MemberHealth::new(Some(&p)).available(1));
    }

    #[test]
    fn ejections_grow_to_the_maximum_then_start_over() {
        let config = EjectionConfig {
            consecutive_failures: 2,
            base_ejection_ms: 100,
            max_ejection_ms: 250,
            max_ejected_percent: 50,
        };
        let h = MemberHealth::new(None);
        assert!(!h.failed(2));
        assert!(h.failed(2));
        assert_eq!(h.eject(10, &config), 110);
        assert!(!h.available(109));
        assert!(h.available(110), "back when the ejection runs out");
        assert_eq!(h.eject(120, &config), 320, "twice the base");
        assert!(h.available(320));
        assert_eq!(h.eject(330, &config), 580, "capped at the maximum");
        assert!(h.available(580));
        assert_eq!(h.eject(1000, &config), 1100, "in long enough: starts over");
    }
}
