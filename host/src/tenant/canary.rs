//! Canary releases: a candidate version takes a share of a tenant's
//! requests, chosen stickily (by client address or a header), and can be
//! aborted automatically when it fails more often than the active version.

use std::hash::{Hash, Hasher};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use http::HeaderName;

use crate::http::RequestInfo;
use crate::runtime::PolicyModule;

/// Which version served a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Arm {
    Active,
    Candidate,
}

/// What keeps a client on the same side of the canary.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Sticky {
    ClientAddr,
    /// The value of this request header (the client address when absent).
    Header(HeaderName),
}

/// Abort the canary when the candidate's failure rate (5xx and guest
/// failures) exceeds the active version's by more than `margin`, once the
/// candidate has served `min_requests`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct AutoRollback {
    pub margin: f64,
    pub min_requests: u64,
}

#[derive(Default)]
struct ArmStats {
    requests: AtomicU64,
    failures: AtomicU64,
}

impl ArmStats {
    fn snapshot(&self) -> (u64, u64) {
        (
            self.requests.load(Ordering::Relaxed),
            self.failures.load(Ordering::Relaxed),
        )
    }
}

/// A canary aborted by its rule: which version, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Aborted {
    pub version: Arc<str>,
    pub reason: String,
}

pub struct Canary {
    pub module: Arc<PolicyModule>,
    /// Share of requests sent to the candidate, 0-100.
    pub percent: u32,
    pub sticky: Sticky,
    pub auto_rollback: Option<AutoRollback>,
    active: ArmStats,
    candidate: ArmStats,
}

impl Canary {
    pub fn new(
        module: Arc<PolicyModule>,
        percent: u32,
        sticky: Sticky,
        auto_rollback: Option<AutoRollback>,
    ) -> Canary {
        Canary {
            module,
            percent: percent.min(100),
            sticky,
            auto_rollback,
            active: ArmStats::default(),
            candidate: ArmStats::default(),
        }
    }

    /// Whether this request goes to the candidate: a stable hash of the
    /// sticky value picks one of 100 buckets.
    pub fn selects(&self, request: &RequestInfo) -> bool {
        let mut hasher = std::collections::hash_map::DefaultHasher::new();
        match &self.sticky {
            Sticky::Header(name) => match request.headers.get(name) {
                Some(value) => value.as_bytes().hash(&mut hasher),
                None => request.client_ip.hash(&mut hasher),
            },
            Sticky::ClientAddr => request.client_ip.hash(&mut hasher),
        }
        (hasher.finish() % 100) < u64::from(self.percent)
    }

    /// Counts one request's outcome.
    pub fn record(&self, arm: Arm, failed: bool) {
        let stats = match arm {
            Arm::Active => &self.active,
            Arm::Candidate => &self.candidate,
        };
        stats.requests.fetch_add(1, Ordering::Relaxed);
        if failed {
            stats.failures.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// (requests, failures) of the active and candidate arms.
    pub fn stats(&self) -> ((u64, u64), (u64, u64)) {
        (self.active.snapshot(), self.candidate.snapshot())
    }

    /// Why the canary must be aborted, if it must.
    pub fn abort_reason(&self) -> Option<String> {
        let rule = self.auto_rollback?;
        let ((active_n, active_f), (cand_n, cand_f)) = self.stats();
        if cand_n < rule.min_requests {
            return None;
        }
        let rate = |f: u64, n: u64| if n == 0 { 0.0 } else { f as f64 / n as f64 };
        let (active_rate, cand_rate) = (rate(active_f, active_n), rate(cand_f, cand_n));
        (cand_rate > active_rate + rule.margin).then(|| {
            format!(
                "candidate failed {cand_f}/{cand_n} ({:.1}%) against {active_f}/{active_n} ({:.1}%) for the active version",
                cand_rate * 100.0,
                active_rate * 100.0
            )
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::http::Scheme;

    fn request(ip: [u8; 4], user: Option<&'static str>) -> RequestInfo {
        let mut headers = http::HeaderMap::new();
        if let Some(u) = user {
            headers.insert("x-user", http::HeaderValue::from_static(u));
        }
        RequestInfo {
            method: http::Method::GET,
            uri: http::Uri::from_static("/"),
            headers,
            scheme: Scheme::Http,
            authority: "t.test".into(),
            client_ip: std::net::IpAddr::from(ip),
            request_id: crate::http::RequestId::generate(),
            trace: crate::http::TraceContext::start(),
            from_pop_member: false,
            signature: Default::default(),
        }
    }

    fn canary(percent: u32, sticky: Sticky, rule: Option<AutoRollback>) -> Canary {
        Canary::new(crate::runtime::test_module("router"), percent, sticky, rule)
    }

    #[test]
    fn the_share_is_sticky_and_close_to_the_percentage() {
        let c = canary(30, Sticky::ClientAddr, None);
        let chosen = (0..=255u8)
            .flat_map(|a| (0..40u8).map(move |b| [10, a, b, 1]))
            .filter(|ip| c.selects(&request(*ip, None)))
            .count();
        let share = chosen as f64 / (256.0 * 40.0);
        assert!((0.25..0.35).contains(&share), "{share}");
        let ip = [10, 1, 2, 3];
        let first = c.selects(&request(ip, None));
        assert!((0..20).all(|_| c.selects(&request(ip, None)) == first));
        assert!(!canary(0, Sticky::ClientAddr, None).selects(&request(ip, None)));
        assert!(canary(100, Sticky::ClientAddr, None).selects(&request(ip, None)));
    }

    #[test]
    fn a_header_keeps_a_user_on_one_side_from_any_address() {
        let c = canary(50, Sticky::Header(HeaderName::from_static("x-user")), None);
        let side = c.selects(&request([1, 1, 1, 1], Some("alice")));
        assert!((0..=255u8).all(|a| c.selects(&request([a, 2, 3, 4], Some("alice"))) == side));
    }

    #[test]
    fn a_candidate_failing_more_than_the_margin_is_aborted_once_it_has_enough_requests() {
        let rule = AutoRollback {
            margin: 0.1,
            min_requests: 20,
        };
        let c = canary(50, Sticky::ClientAddr, Some(rule));
        for i in 0..100 {
            c.record(Arm::Active, i % 50 == 0);
        }
        for i in 0..19 {
            c.record(Arm::Candidate, i % 2 == 0);
        }
        assert_eq!(c.abort_reason(), None, "too few candidate requests yet");
        c.record(Arm::Candidate, true);
        let reason = c.abort_reason().expect("55% against 2% is past the margin");
        assert!(reason.contains("11/20"), "{reason}");
        let healthy = canary(50, Sticky::ClientAddr, Some(rule));
        for _ in 0..50 {
            healthy.record(Arm::Candidate, false);
        }
        assert_eq!(healthy.abort_reason(), None);
    }
}
