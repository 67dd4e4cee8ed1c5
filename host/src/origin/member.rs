//! A pool's members: where each one is, its weight, the requests it has in
//! flight and its health, all readable without a lock.

use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU32, Ordering};
use std::sync::Arc;
use std::time::Instant;

use super::health::MemberHealth;
use crate::config::{BackendUrl, EjectionConfig, MemberConfig, ProbeConfig};
use crate::metrics::{Counter, Histogram};

/// One member of a backend's pool.
pub(super) struct Member {
    pub url: BackendUrl,
    pub weight: u32,
    /// Requests sent to it whose response is not yet complete.
    in_flight: AtomicU32,
    pub health: MemberHealth,
    pub stats: Arc<MemberStats>,
}

/// What `/metrics` tells of a member beyond its health.
#[derive(Default)]
pub struct MemberStats {
    /// From sending the request to the response head.
    pub first_byte: Histogram,
    /// Response body bytes read from it.
    pub received_bytes: Counter,
    /// Times it was taken out after failures.
    pub ejections: Counter,
    /// Connections to it now open (idle in the pool or busy).
    pub open_connections: AtomicI64,
    /// It speaks HTTP/2 (`h2c`, or ALPN chose h2): its requests share one
    /// connection, bounded by `max_streams` rather than `max_connections`.
    pub speaks_h2: AtomicBool,
}

impl Member {
    pub fn in_flight(&self) -> u32 {
        self.in_flight.load(Ordering::Relaxed)
    }

    /// Requests in flight per unit of weight, for comparing members.
    pub fn load(&self) -> f64 {
        f64::from(self.in_flight()) / f64::from(self.weight)
    }
}

/// One member as `/metrics` reports it.
pub struct MemberReport<'a> {
    pub url: String,
    pub state: MemberState,
    pub in_flight: u32,
    pub stats: &'a MemberStats,
}

/// Whether a member takes requests.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MemberState {
    Up,
    /// Its active probes fail.
    ProbeDown,
    /// Taken out after consecutive failures, for now.
    Ejected,
}

impl MemberState {
    pub fn as_str(self) -> &'static str {
        match self {
            MemberState::Up => "up",
            MemberState::ProbeDown => "probe_down",
            MemberState::Ejected => "ejected",
        }
    }
}

/// A backend's members and what the pool as a whole decides about them.
pub(super) struct Pool {
    pub members: Vec<Member>,
    /// Zero of the millisecond clock the health state is kept in.
    epoch: Instant,
    pub ejection: EjectionConfig,
    /// Serialises ejections, so that two failing at once cannot both take
    /// the pool past `max_ejected_percent`.
    ejecting: std::sync::Mutex<()>,
    pub slow_start_ms: u64,
    /// Requests in flight on an HTTP/1.1 member (one a connection) and on
    /// an HTTP/2 member; 0: no bound.
    pub max_connections: u32,
    pub max_streams: u32,
}

impl Pool {
    pub fn new(
        members: Vec<MemberConfig>,
        probe: Option<&ProbeConfig>,
        ejection: EjectionConfig,
        slow_start_ms: u64,
        (max_connections, max_streams): (u32, u32),
    ) -> Pool {
        Pool {
            members: members
                .into_iter()
                .map(|m| Member {
                    url: m.url,
                    weight: m.weight,
                    in_flight: AtomicU32::new(0),
                    health: MemberHealth::new(probe),
                    stats: Arc::default(),
                })
                .collect(),
            epoch: Instant::now(),
            ejection,
            ejecting: std::sync::Mutex::new(()),
            slow_start_ms,
            max_connections,
            max_streams,
        }
    }

    /// Milliseconds since the pool was made, never 0 (0 means "never" in
    /// the health state).
    pub fn now_ms(&self) -> u64 {
        self.epoch.elapsed().as_millis() as u64 + 1
    }

    /// Whether member `i` may take a request now: healthy, not ejected, not
    /// at its bound of requests in flight.
    pub fn eligible(&self, i: usize, now_ms: u64) -> bool {
        let member = &self.members[i];
        let bound = if member.stats.speaks_h2.load(Ordering::Relaxed) {
            self.max_streams
        } else {
            self.max_connections
        };
        member.health.available(now_ms) && (bound == 0 || member.in_flight() < bound)
    }

    /// Its share of requests while it ramps up after coming back, 0.1 to 1
    /// (slow start).
    pub fn share(&self, i: usize, now_ms: u64) -> f64 {
        self.members[i].health.share(now_ms, self.slow_start_ms)
    }

    /// Counts a request to member `i` as in flight until the guard drops.
    pub fn start(self: &Arc<Pool>, i: usize) -> InFlight {
        self.members[i].in_flight.fetch_add(1, Ordering::Relaxed);
        self.counted(i)
    }

    /// Counts a request to member `i` as in flight, as `start` does, if it
    /// has fewer than `bound` in flight: checked and counted in one step.
    pub fn try_start(self: &Arc<Pool>, i: usize, bound: u32) -> Option<InFlight> {
        self.members[i]
            .in_flight
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| {
                (n < bound).then_some(n + 1)
            })
            .ok()?;
        Some(self.counted(i))
    }

    /// The guard of a request to member `i` already counted in flight.
    fn counted(self: &Arc<Pool>, i: usize) -> InFlight {
        InFlight {
            pool: self.clone(),
            member: i,
        }
    }

    /// Why no member may take a request, for the error.
    pub fn why_unavailable(&self, backend: &str) -> String {
        let now = self.now_ms();
        let members = &self.members;
        let down = members.iter().filter(|m| !m.health.probe_up()).count();
        let ejected = members
            .iter()
            .filter(|m| m.health.probe_up() && m.health.ejected(now))
            .count();
        let mut reasons = vec![format!("{} members", members.len())];
        if down > 0 {
            reasons.push(format!("{down} failing probes"));
        }
        if ejected > 0 {
            reasons.push(format!("{ejected} taken out after failures"));
        }
        if down + ejected < members.len() {
            reasons.push("the rest at max_connections (HTTP/2: max_streams)".into());
        }
        format!("backend {backend}: {}", reasons.join(", "))
    }

    /// What a request to member `i` told of its health.
    pub fn report(&self, i: usize, ok: bool) {
        let health = &self.members[i].health;
        if ok {
            health.succeeded();
            return;
        }
        let threshold = self.ejection.consecutive_failures;
        if !health.failed(threshold) {
            return;
        }
        let _serial = self.ejecting.lock().unwrap_or_else(|e| e.into_inner());
        let now = self.now_ms();
        let ejected = self
            .members
            .iter()
            .filter(|m| m.health.ejected(now))
            .count();
        // After this ejection at most `max_ejected_percent` of the pool is
        // out: one of two at 50 %, never the only member.
        let allowed =
            (ejected + 1) * 100 <= self.ejection.max_ejected_percent as usize * self.members.len();
        if allowed && !health.ejected(now) {
            let until = health.eject(now, &self.ejection);
            self.members[i].stats.ejections.inc();
            tracing::warn!(
                member = %self.members[i].url,
                "{threshold} failures in a row: member taken out for {} s",
                (until - now) / 1000
            );
        }
    }
}

/// A request in flight to a member; counted down when dropped.
pub(super) struct InFlight {
    pub pool: Arc<Pool>,
    pub member: usize,
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.pool.members[self.member]
            .in_flight
            .fetch_sub(1, Ordering::Relaxed);
    }
}
