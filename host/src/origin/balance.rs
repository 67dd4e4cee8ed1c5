//! Which member of a pool a request goes to.

use std::sync::Mutex;

/// Smooth weighted round-robin, as nginx does it: every pick adds each
/// member's weight to its running score, takes the highest, and lowers
/// that one by the sum of the weights. Over any run of `sum of weights`
/// picks each member is chosen exactly `weight` times, interleaved (5, 1, 1
/// gives a a b a c a a, not a a a a a b c).
pub(super) struct RoundRobin {
    weights: Vec<i64>,
    total: i64,
    scores: Mutex<Vec<i64>>,
}

impl RoundRobin {
    pub(super) fn new(weights: &[u32]) -> RoundRobin {
        let weights: Vec<i64> = weights.iter().map(|w| i64::from(*w)).collect();
        RoundRobin {
            total: weights.iter().sum(),
            scores: Mutex::new(vec![0; weights.len()]),
            weights,
        }
    }

    /// The members to try, in order: the one this pick chose, then the
    /// others after it (the failover order when a connect fails).
    pub(super) fn order(&self) -> Vec<usize> {
        let n = self.weights.len();
        let chosen = {
            let mut scores = self.scores.lock().unwrap_or_else(|e| e.into_inner());
            for (score, weight) in scores.iter_mut().zip(&self.weights) {
                *score += weight;
            }
            let chosen = (0..n)
                .max_by_key(|&i| (scores[i], std::cmp::Reverse(i)))
                .unwrap_or(0);
            scores[chosen] -= self.total;
            chosen
        };
        (0..n).map(|k| (chosen + k) % n).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn picks_follow_the_weights_interleaved() {
        let rr = RoundRobin::new(&[5, 1, 1]);
        let picks: Vec<usize> = (0..7).map(|_| rr.order()[0]).collect();
        assert_eq!(picks, [0, 0, 1, 0, 2, 0, 0]);
        let rr = RoundRobin::new(&[1, 2, 3]);
        let mut counts = [0; 3];
        for _ in 0..600 {
            counts[rr.order()[0]] += 1;
        }
        assert_eq!(counts, [100, 200, 300]);
    }

    #[test]
    fn the_failover_order_is_every_other_member_once() {
        let rr = RoundRobin::new(&[1, 1, 1]);
        let order = rr.order();
        let mut sorted = order.clone();
        sorted.sort();
        assert_eq!(sorted, [0, 1, 2]);
        assert_eq!(order[1], (order[0] + 1) % 3);
    }
}
