//! One tenant's request counters. The tenant holds them; a rebuilt tenant
//! (a reload, a new version) keeps the same ones, and a deleted tenant's
//! go with it, so its series leave `/metrics`.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use super::shard::{add, Histogram, Sharded};
use crate::http::SignatureVerdict;

/// What the cache did for a request (the `outcome` label).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Served from the cache, fresh.
    Hit,
    /// Not stored (or for other `Vary` values): fetched.
    Miss,
    /// Served stale (RFC 5861: while revalidating, or on an error).
    Stale,
    /// A stored response revalidated with the origin (RFC 9111 section 4.3).
    Revalidated,
    /// The policy passed the request by the cache.
    Pass,
    /// The node (or the policy) made the response itself.
    Synthetic,
    /// Served from a fill another request led.
    Collapsed,
}

impl Outcome {
    pub const ALL: [Outcome; 7] = [
        Outcome::Hit,
        Outcome::Miss,
        Outcome::Stale,
        Outcome::Revalidated,
        Outcome::Pass,
        Outcome::Synthetic,
        Outcome::Collapsed,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Hit => "hit",
            Outcome::Miss => "miss",
            Outcome::Stale => "stale",
            Outcome::Revalidated => "revalidated",
            Outcome::Pass => "pass",
            Outcome::Synthetic => "synthetic",
            Outcome::Collapsed => "collapsed",
        }
    }
}

/// Status classes, the `code` label: `1xx` .. `5xx`.
pub const CLASSES: [&str; 5] = ["1xx", "2xx", "3xx", "4xx", "5xx"];

/// Rare per-tenant events, counted by reason: each a metric family.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Event {
    /// A guest trapped, ran out of time or memory... (`GuestFailure`).
    GuestFailure,
    /// A request refused by a limit (body, head, instances...).
    Limit,
    /// A memoized decision that differed from the guest's when checked.
    MemoMismatch,
    /// A route that declared no response hook whose hook, when checked,
    /// decided something other than the default.
    ResponseHookMismatch,
    /// A canary ended by its auto-rollback rule.
    CanaryAbort,
    /// A backend that failed to answer, by error kind.
    OriginError,
}

impl Event {
    pub const ALL: [Event; 6] = [
        Event::GuestFailure,
        Event::Limit,
        Event::MemoMismatch,
        Event::ResponseHookMismatch,
        Event::CanaryAbort,
        Event::OriginError,
    ];

    /// The family's name and help.
    pub fn family(self) -> (&'static str, &'static str) {
        match self {
            Event::GuestFailure => (
                "outpost_guest_failures",
                "Policy guest failures (trap, CPU deadline, memory...), by kind.",
            ),
            Event::Limit => (
                "outpost_limit_hits",
                "Requests refused or cut by a limit, by limit.",
            ),
            Event::MemoMismatch => (
                "outpost_decision_memo_mismatches",
                "Memoized decisions that differed from the guest's when checked (the memo is then off for the version).",
            ),
            Event::ResponseHookMismatch => (
                "outpost_response_hook_mismatches",
                "Checked requests whose routes declared no response hook but whose hook decided something else (the hook then runs on every request of the version).",
            ),
            Event::CanaryAbort => (
                "outpost_canary_aborts",
                "Canaries ended by their auto-rollback rule.",
            ),
            Event::OriginError => (
                "outpost_origin_errors",
                "Backends that did not answer a request, by error kind.",
            ),
        }
    }
}

/// The counters a request touches, one copy per worker thread.
#[derive(Default)]
struct Cells {
    classes: [AtomicU64; CLASSES.len()],
    outcomes: [AtomicU64; Outcome::ALL.len()],
    bytes_sent: AtomicU64,
    memo_hits: AtomicU64,
    /// Nanoseconds worker threads spent running the tenant's guests.
    guest_cpu: AtomicU64,
    /// Signed-URL checks by verdict, as [`SIGNATURE_VERDICTS`].
    signatures: [AtomicU64; SIGNATURE_VERDICTS.len()],
}

/// The verdicts of signed-URL checks counted, by name.
pub const SIGNATURE_VERDICTS: [SignatureVerdict; 4] = [
    SignatureVerdict::Valid,
    SignatureVerdict::Missing,
    SignatureVerdict::Invalid,
    SignatureVerdict::Expired,
];

#[derive(Default)]
pub struct TenantMetrics {
    cells: Sharded<Cells>,
    /// Client view: from the request head to the response's last byte.
    duration: Histogram,
    /// Rare events (failures): a lock on the failure path only.
    events: Mutex<BTreeMap<(Event, &'static str), u64>>,
}

impl TenantMetrics {
    /// A request whose response ended (or was abandoned) after `bytes` of
    /// body.
    pub fn finished(&self, status: u16, outcome: Outcome, bytes: u64, elapsed: Duration) {
        let cells = self.cells.local();
        let class = usize::from(status / 100).clamp(1, CLASSES.len()) - 1;
        add(&cells.classes[class], 1);
        add(&cells.outcomes[outcome as usize], 1);
        add(&cells.bytes_sent, bytes);
        self.duration.observe(elapsed);
    }

    /// A signed-URL check's verdict (one that checked nothing is not
    /// counted).
    pub fn signature(&self, verdict: SignatureVerdict) {
        if let Some(i) = SIGNATURE_VERDICTS.iter().position(|v| *v == verdict) {
            add(&self.cells.local().signatures[i], 1);
        }
    }

    /// Signed-URL checks by verdict, as [`SIGNATURE_VERDICTS`].
    pub fn signatures(&self) -> [u64; SIGNATURE_VERDICTS.len()] {
        let mut out = [0; SIGNATURE_VERDICTS.len()];
        for cells in self.cells.all() {
            for (total, cell) in out.iter_mut().zip(&cells.signatures) {
                *total += cell.load(Ordering::Relaxed);
            }
        }
        out
    }

    /// A decision that came from the memo instead of the guest.
    pub fn memo_hit(&self) {
        add(&self.cells.local().memo_hits, 1);
    }

    /// CPU the tenant's guests used (see `runtime::on_cpu`).
    pub fn guest_cpu(&self, used: Duration) {
        add(&self.cells.local().guest_cpu, super::nanos(used));
    }

    pub fn guest_cpu_seconds(&self) -> f64 {
        self.sum(|c| &c.guest_cpu) as f64 / 1e9
    }

    pub fn event(&self, event: Event, reason: &'static str) {
        let mut events = self.events.lock().unwrap_or_else(|p| p.into_inner());
        *events.entry((event, reason)).or_default() += 1;
    }

    /// Requests by status class, as [`CLASSES`].
    pub fn requests(&self) -> [u64; CLASSES.len()] {
        let mut out = [0; CLASSES.len()];
        for cells in self.cells.all() {
            for (total, cell) in out.iter_mut().zip(&cells.classes) {
                *total += cell.load(Ordering::Relaxed);
            }
        }
        out
    }

    /// Requests by cache outcome, as [`Outcome::ALL`].
    pub fn outcomes(&self) -> [u64; Outcome::ALL.len()] {
        let mut out = [0; Outcome::ALL.len()];
        for cells in self.cells.all() {
            for (total, cell) in out.iter_mut().zip(&cells.outcomes) {
                *total += cell.load(Ordering::Relaxed);
            }
        }
        out
    }

    pub fn bytes_sent(&self) -> u64 {
        self.sum(|c| &c.bytes_sent)
    }

    pub fn memo_hits(&self) -> u64 {
        self.sum(|c| &c.memo_hits)
    }

    pub fn duration(&self) -> &Histogram {
        &self.duration
    }

    /// The count of one event and reason.
    pub fn events(&self, event: Event) -> Vec<(&'static str, u64)> {
        let events = self.events.lock().unwrap_or_else(|p| p.into_inner());
        events
            .iter()
            .filter(|((e, _), _)| *e == event)
            .map(|((_, reason), n)| (*reason, *n))
            .collect()
    }

    /// One event's count for one reason (0 if never).
    pub fn event_count(&self, event: Event, reason: &str) -> u64 {
        self.events(event)
            .into_iter()
            .find(|(r, _)| *r == reason)
            .map_or(0, |(_, n)| n)
    }

    fn sum(&self, cell: impl Fn(&Cells) -> &AtomicU64) -> u64 {
        self.cells
            .all()
            .map(|c| cell(c).load(Ordering::Relaxed))
            .sum()
    }
}

impl std::fmt::Debug for TenantMetrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TenantMetrics")
            .field("requests", &self.requests())
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_finished_request_counts_its_class_outcome_bytes_and_time() {
        let m = TenantMetrics::default();
        m.finished(200, Outcome::Hit, 1024, Duration::from_micros(50));
        m.finished(503, Outcome::Miss, 10, Duration::from_millis(2));
        m.finished(999, Outcome::Synthetic, 0, Duration::ZERO);
        assert_eq!(m.requests(), [0, 1, 0, 0, 2]);
        assert_eq!(m.outcomes(), [1, 1, 0, 0, 0, 1, 0]);
        assert_eq!(m.bytes_sent(), 1034);
        assert_eq!(m.duration().count(), 3);
        m.event(Event::GuestFailure, "trap");
        m.event(Event::GuestFailure, "trap");
        assert_eq!(m.event_count(Event::GuestFailure, "trap"), 2);
        assert_eq!(m.event_count(Event::Limit, "trap"), 0);
    }
}
