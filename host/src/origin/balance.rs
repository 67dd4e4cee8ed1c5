//! Which member of a pool a request goes to, and in which order the others
//! are tried after it.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use rand::RngExt;

use super::member::{InFlight, Pool};
use super::ring::Ring;
use crate::config::Balance;

/// A pool's balancing algorithm with its state.
pub(super) enum Balancer {
    RoundRobin(RoundRobin),
    LeastOutstanding(AtomicUsize),
    PowerOfTwo,
    Hash { ring: Ring, factor: u32 },
}

impl Balancer {
    pub fn new(balance: Balance, pool: &Pool, hash_balance_factor: u32) -> Balancer {
        match balance {
            Balance::RoundRobin => Balancer::RoundRobin(RoundRobin::new(pool.members.len())),
            Balance::LeastOutstanding => Balancer::LeastOutstanding(AtomicUsize::new(0)),
            Balance::PowerOfTwo => Balancer::PowerOfTwo,
            Balance::Hash => Balancer::Hash {
                ring: Ring::new(&pool.members),
                factor: hash_balance_factor,
            },
        }
    }

    /// The members to try, in order: the chosen one first, then the other
    /// eligible members (the failover order). Empty when none is eligible.
    /// `key`: what `hash` hashes.
    pub fn order(&self, pool: &Arc<Pool>, key: &str) -> Order {
        let now = pool.now_ms();
        let eligible: Vec<usize> = (0..pool.members.len())
            .filter(|&i| pool.eligible(i, now))
            .collect();
        if eligible.len() <= 1 {
            return Order {
                members: eligible,
                claimed: None,
            };
        }
        let mut claimed = None;
        // Each arm reorders the eligible members in place.
        let mut order = match self {
            Balancer::RoundRobin(rr) => rr.order(pool, eligible),
            Balancer::LeastOutstanding(rotation) => {
                // Ties go round, not always to the first member.
                let mut order = eligible;
                let start = rotation.fetch_add(1, Ordering::Relaxed) % order.len();
                order.rotate_left(start);
                order.sort_by(|&a, &b| pool.members[a].load().total_cmp(&pool.members[b].load()));
                order
            }
            Balancer::PowerOfTwo => two_choices(pool, eligible),
            Balancer::Hash { ring, factor } => {
                let (order, claim) = ring.order(pool, key, &eligible, *factor);
                claimed = claim;
                order
            }
        };
        if slow_start(pool, &mut order, now) {
            // The claimed member passed the request on.
            claimed = None;
        }
        Order {
            members: order,
            claimed,
        }
    }
}

/// The members to try, and the first one's count of requests in flight
/// when the balancer already took it (bounded-load hashing checks and
/// counts in one step).
pub(super) struct Order {
    pub members: Vec<usize>,
    pub claimed: Option<InFlight>,
}

impl Order {
    /// Counts the request to member `i` as in flight, adopting the claim
    /// the balancer made on it.
    pub fn start(&mut self, pool: &Arc<Pool>, i: usize) -> InFlight {
        match self.claimed.take() {
            Some(claim) if claim.member == i => claim,
            _ => pool.start(i),
        }
    }
}

/// A member ramping up after it came back takes a request with the
/// probability of its share, else passes it to the next in order (true).
fn slow_start(pool: &Pool, order: &mut [usize], now: u64) -> bool {
    let share = pool.share(order[0], now);
    let passes = share < 1.0 && !rand::rng().random_bool(share);
    if passes {
        order.rotate_left(1);
    }
    passes
}

/// Two members drawn at random by weight; the less loaded first, then the
/// other, then the rest.
fn two_choices(pool: &Pool, mut eligible: Vec<usize>) -> Vec<usize> {
    let mut rng = rand::rng();
    let mut draw = |from: &[usize]| {
        let total: u64 = from
            .iter()
            .map(|&i| u64::from(pool.members[i].weight))
            .sum();
        let mut point = rng.random_range(0..total);
        for (k, &i) in from.iter().enumerate() {
            let weight = u64::from(pool.members[i].weight);
            if point < weight {
                return k;
            }
            point -= weight;
        }
        from.len() - 1
    };
    let first = draw(&eligible);
    eligible.swap(0, first);
    let second = 1 + draw(&eligible[1..]);
    eligible.swap(1, second);
    if pool.members[eligible[1]].load() < pool.members[eligible[0]].load() {
        eligible.swap(0, 1);
    }
    eligible
}

/// Smooth weighted round-robin, as nginx does it: every pick adds each
/// eligible member's weight to its running score, takes the highest, and
/// lowers that one by the sum of the weights. Over any run of `sum of
/// weights` picks each member is chosen exactly `weight` times, interleaved
/// (5, 1, 1 gives a a b a c a a, not a a a a a b c).
pub(super) struct RoundRobin {
    scores: Mutex<Vec<i64>>,
}

impl RoundRobin {
    fn new(members: usize) -> RoundRobin {
        RoundRobin {
            scores: Mutex::new(vec![0; members]),
        }
    }

    /// The chosen member, then the other eligible ones after it.
    fn order(&self, pool: &Pool, mut eligible: Vec<usize>) -> Vec<usize> {
        let weight = |i: usize| i64::from(pool.members[i].weight);
        let total: i64 = eligible.iter().map(|&i| weight(i)).sum();
        let chosen = {
            let mut scores = self.scores.lock().unwrap_or_else(|e| e.into_inner());
            for &i in &eligible {
                scores[i] += weight(i);
            }
            let best = best(&scores, &eligible);
            let chosen = eligible.iter().position(|&i| i == best).unwrap_or(0);
            scores[eligible[chosen]] -= total;
            chosen
        };
        eligible.rotate_left(chosen);
        eligible
    }
}

/// The member with the highest score, the first of equals.
fn best(scores: &[i64], eligible: &[usize]) -> usize {
    eligible
        .iter()
        .copied()
        .max_by_key(|&i| (scores[i], std::cmp::Reverse(i)))
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{BackendUrl, EjectionConfig, MemberConfig};

    fn pool(weights: &[u32]) -> Arc<Pool> {
        let members = weights
            .iter()
            .enumerate()
            .map(|(i, &weight)| MemberConfig {
                url: BackendUrl::parse(&format!("http://127.0.0.1:{}", 9000 + i)).unwrap(),
                weight,
            })
            .collect();
        Arc::new(Pool::new(
            members,
            None,
            EjectionConfig::default(),
            0,
            (0, 0),
        ))
    }

    #[test]
    fn round_robin_follows_the_weights_interleaved() {
        let pool = pool(&[5, 1, 1]);
        let rr = Balancer::new(Balance::RoundRobin, &pool, 0);
        let picks: Vec<usize> = (0..7).map(|_| rr.order(&pool, "").members[0]).collect();
        assert_eq!(picks, [0, 0, 1, 0, 2, 0, 0]);
        let pool = self::pool(&[1, 2, 3]);
        let rr = Balancer::new(Balance::RoundRobin, &pool, 0);
        let mut counts = [0; 3];
        for _ in 0..600 {
            counts[rr.order(&pool, "").members[0]] += 1;
        }
        assert_eq!(counts, [100, 200, 300]);
    }

    #[test]
    fn the_failover_order_is_every_other_member_once() {
        let pool = pool(&[1, 1, 1]);
        for balance in [
            Balance::RoundRobin,
            Balance::LeastOutstanding,
            Balance::PowerOfTwo,
            Balance::Hash,
        ] {
            let balancer = Balancer::new(balance, &pool, 125);
            let mut order = balancer.order(&pool, "/k").members;
            order.sort();
            assert_eq!(order, [0, 1, 2], "{balance:?}");
        }
    }

    #[test]
    fn least_outstanding_and_two_choices_avoid_the_busy_member() {
        let pool = pool(&[1, 1]);
        let _busy = [pool.start(0), pool.start(0)];
        for balance in [Balance::LeastOutstanding, Balance::PowerOfTwo] {
            let balancer = Balancer::new(balance, &pool, 0);
            for _ in 0..20 {
                assert_eq!(balancer.order(&pool, "").members[0], 1, "{balance:?}");
            }
        }
    }
}
