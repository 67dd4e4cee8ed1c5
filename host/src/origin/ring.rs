//! Consistent hashing over a pool (Ketama, as nginx's `hash ...
//! consistent`): each member owns 160 points per unit of weight on a ring
//! of CRC-32 values, named by its URL, so removing one member moves only
//! the keys it owned. Load is bounded as HAProxy's `hash-balance-factor`
//! does: a member already over its share of the requests in flight passes
//! the key on to the next member on the ring.

use std::sync::Arc;

use super::member::{InFlight, Member, Pool};

/// Points per unit of weight.
const POINTS_PER_WEIGHT: u32 = 160;

pub(super) struct Ring {
    /// (point, member index), sorted by point.
    points: Vec<(u32, usize)>,
}

impl Ring {
    pub fn new(members: &[Member]) -> Ring {
        let mut points = Vec::new();
        for (i, member) in members.iter().enumerate() {
            let name = member.url.to_string();
            for j in 0..POINTS_PER_WEIGHT * member.weight {
                points.push((crc32fast::hash(format!("{name}-{j}").as_bytes()), i));
            }
        }
        points.sort_unstable();
        Ring { points }
    }

    /// The eligible members in ring order from the key's point, the first
    /// one under its load bound (`factor` percent of its weighted share of
    /// the requests in flight, plus this one) moved to the front and
    /// claimed: its count of requests in flight goes up in the same atomic
    /// step as the bound is checked, so requests racing for one hot key
    /// cannot all pass a member's bound at once. No claim when `factor` is
    /// 0 or every member stayed at its bound.
    pub fn order(
        &self,
        pool: &Arc<Pool>,
        key: &str,
        eligible: &[usize],
        factor: u32,
    ) -> (Vec<usize>, Option<InFlight>) {
        let mut order = self.walk(key, pool.members.len(), eligible);
        if factor == 0 {
            return (order, None);
        }
        let members = &pool.members;
        let weights: u64 = order.iter().map(|&i| u64::from(members[i].weight)).sum();
        // Each round reads the load afresh: a claim fails only when others
        // started requests meanwhile, and then the bounds are higher.
        for _ in 0..3 {
            let in_flight: u64 = order
                .iter()
                .map(|&i| u64::from(members[i].in_flight()))
                .sum();
            let bound = |i: usize| {
                // ceil(factor/100 * (in_flight + 1) * weight / weights)
                let bound = (u64::from(factor) * (in_flight + 1) * u64::from(members[i].weight))
                    .div_ceil(100 * weights);
                u32::try_from(bound).unwrap_or(u32::MAX)
            };
            for k in 0..order.len() {
                if let Some(claim) = pool.try_start(order[k], bound(order[k])) {
                    order[..=k].rotate_right(1);
                    return (order, Some(claim));
                }
            }
        }
        (order, None)
    }

    /// The distinct eligible members met going round from the key's point.
    fn walk(&self, key: &str, members: usize, eligible: &[usize]) -> Vec<usize> {
        let mut wanted = vec![false; members];
        for &i in eligible {
            wanted[i] = true;
        }
        let hash = crc32fast::hash(key.as_bytes());
        let start = self.points.partition_point(|&(point, _)| point < hash);
        let mut order = Vec::with_capacity(eligible.len());
        for k in 0..self.points.len() {
            let member = self.points[(start + k) % self.points.len()].1;
            if std::mem::take(&mut wanted[member]) {
                order.push(member);
                if order.len() == eligible.len() {
                    break;
                }
            }
        }
        order
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{BackendUrl, EjectionConfig, MemberConfig};

    fn pool(ports: &[u16]) -> Pool {
        let members = ports
            .iter()
            .map(|port| MemberConfig {
                url: BackendUrl::parse(&format!("http://127.0.0.1:{port}")).unwrap(),
                weight: 1,
            })
            .collect();
        Pool::new(members, None, EjectionConfig::default(), 0, (0, 0))
    }

    fn owner(pool: &Arc<Pool>, ring: &Ring, key: &str) -> String {
        let all: Vec<usize> = (0..pool.members.len()).collect();
        pool.members[ring.order(pool, key, &all, 0).0[0]]
            .url
            .to_string()
    }

    #[test]
    fn removing_one_member_of_five_moves_about_a_fifth_of_the_keys() {
        let five = Arc::new(pool(&[9001, 9002, 9003, 9004, 9005]));
        let four = Arc::new(pool(&[9001, 9002, 9004, 9005]));
        let (ring5, ring4) = (Ring::new(&five.members), Ring::new(&four.members));
        let keys: Vec<String> = (0..10_000).map(|i| format!("/objects/{i}")).collect();
        let moved = keys
            .iter()
            .filter(|k| owner(&five, &ring5, k) != owner(&four, &ring4, k))
            .count();
        // The removed member's keys, and only those, move: 1/5 of 10,000,
        // give or take how evenly 160 points split the ring.
        assert!((1_500..=2_500).contains(&moved), "{moved} keys moved");
        let removed = five.members[2].url.to_string();
        let stayed_put = keys
            .iter()
            .filter(|k| owner(&five, &ring5, k) != removed)
            .all(|k| owner(&five, &ring5, k) == owner(&four, &ring4, k));
        assert!(stayed_put, "a key of a remaining member moved");
    }

    #[test]
    fn a_hot_key_spills_to_the_next_member_under_bounded_load() {
        let pool = Arc::new(pool(&[9001, 9002, 9003, 9004, 9005]));
        let ring = Ring::new(&pool.members);
        let all: Vec<usize> = (0..5).collect();
        let home = ring.order(&pool, "/hot", &all, 0).0;
        let mut held = Vec::new();
        let mut chosen = Vec::new();
        for _ in 0..10 {
            let (order, claim) = ring.order(&pool, "/hot", &all, 125);
            chosen.push(order[0]);
            held.push(claim.expect("a member under its bound is claimed"));
        }
        assert_eq!(
            chosen[0], home[0],
            "the first request goes to the key's member"
        );
        let at_home = chosen.iter().filter(|&&m| m == home[0]).count();
        // 10 in flight over 5 members: a bound of ceil(1.25 * 10 / 5) = 3.
        assert!(at_home <= 3, "{at_home} of 10 on the key's member");
        assert!(
            chosen.contains(&home[1]),
            "the next member on the ring takes the excess"
        );
        let unbounded: Vec<usize> = (0..5)
            .map(|_| ring.order(&pool, "/hot", &all, 0).0[0])
            .collect();
        assert!(unbounded.iter().all(|&m| m == home[0]));
    }
}
