//! Automatic quarantine of a policy version that keeps running into its
//! CPU limit. Each such request is already cut at its deadline, but a
//! version whose slow path is being hit over and over still spends
//! `limits.cpu_ms` of a worker on every one of them. With
//! `limits.quarantine_cpu_cuts = N`, N cuts within
//! `limits.quarantine_window_s` quarantine the version: its requests get a
//! 503 at once without running the guest (cache hits decided without the
//! guest are still served) until an operator clears it (`DELETE
//! /tenants/{id}/quarantine`) or another version is activated.

use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde::Serialize;

/// One tenant's quarantine state.
#[derive(Debug, Default)]
pub struct Quarantine {
    /// Fast path of `holds`: most tenants are never quarantined.
    active: AtomicBool,
    /// Cuts in the current window.
    cuts: AtomicU32,
    state: Mutex<State>,
}

#[derive(Debug, Default)]
struct State {
    window_start: Option<Instant>,
    /// The version shed, and when it was quarantined.
    held: Option<Held>,
}

/// A quarantined version, as `GET /tenants/{id}` shows it.
#[derive(Debug, Clone, Serialize)]
pub struct Held {
    pub version: String,
    pub cuts: u32,
    pub window_s: u64,
    #[serde(skip)]
    pub since: Instant,
}

impl Quarantine {
    /// Counts a request cut at its CPU deadline; returns the quarantine if
    /// this cut started it (for the caller to log).
    pub fn cut(&self, version: &str, threshold: Option<u32>, window: Duration) -> Option<Held> {
        let threshold = threshold?;
        let now = Instant::now();
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        if state.held.is_some() {
            return None;
        }
        let expired = state
            .window_start
            .is_none_or(|start| now.duration_since(start) > window);
        if expired {
            state.window_start = Some(now);
            self.cuts.store(0, Ordering::Relaxed);
        }
        let cuts = self.cuts.fetch_add(1, Ordering::Relaxed) + 1;
        if cuts < threshold {
            return None;
        }
        let held = Held {
            version: version.to_string(),
            cuts,
            window_s: window.as_secs(),
            since: now,
        };
        state.held = Some(held.clone());
        self.active.store(true, Ordering::Release);
        Some(held)
    }

    /// Whether requests running `version` are shed.
    pub fn holds(&self, version: &str) -> bool {
        self.active.load(Ordering::Acquire)
            && self
                .state
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .held
                .as_ref()
                .is_some_and(|h| h.version == version)
    }

    /// The quarantined version, if any.
    pub fn held(&self) -> Option<Held> {
        self.state
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .held
            .clone()
    }

    /// Lifts the quarantine (an operator, or another version activated);
    /// the version it held, if any. Its cuts start counting from zero.
    pub fn clear(&self) -> Option<Held> {
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        self.active.store(false, Ordering::Release);
        state.window_start = None;
        state.held.take()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MINUTE: Duration = Duration::from_secs(60);

    #[test]
    fn the_nth_cut_in_a_window_quarantines_that_version_only() {
        let q = Quarantine::default();
        for _ in 0..2 {
            assert!(q.cut("v1", Some(3), MINUTE).is_none());
        }
        assert!(!q.holds("v1"));
        let held = q.cut("v1", Some(3), MINUTE).expect("third cut");
        assert_eq!((held.version.as_str(), held.cuts), ("v1", 3));
        assert!(q.holds("v1") && !q.holds("v2"));
        assert!(q.cut("v1", Some(3), MINUTE).is_none(), "started once");
        assert_eq!(q.clear().map(|h| h.version), Some("v1".into()));
        assert!(!q.holds("v1"));
        assert!(q.cut("v1", Some(3), MINUTE).is_none(), "counting anew");
    }

    #[test]
    fn cuts_spread_over_windows_or_with_no_threshold_never_quarantine() {
        let q = Quarantine::default();
        for _ in 0..100 {
            assert!(q.cut("v1", None, MINUTE).is_none());
        }
        for _ in 0..10 {
            assert!(q.cut("v1", Some(2), Duration::ZERO).is_none());
            std::thread::sleep(Duration::from_millis(1));
        }
        assert!(q.held().is_none());
    }
}
