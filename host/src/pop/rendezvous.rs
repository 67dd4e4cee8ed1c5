//! Which member of a POP owns a cache key: rendezvous (highest random
//! weight) hashing. Every member scores every key; the key belongs to the
//! highest score, and the others follow in score order as its fallbacks.
//! Adding a member moves only the keys it now wins (about 1/N of them), and
//! removing one moves only the keys it owned, to their next member; every
//! node with the same member list computes the same owner without talking
//! to the others.
//!
//! The hashes are spelled out here (FNV-1a, then the SplitMix64 finalizer)
//! rather than taken from `std`, whose hasher may change between Rust
//! releases: nodes built by different compilers must still agree.

/// A key's or a member's 64-bit name: FNV-1a over its bytes.
pub fn name_hash(parts: &[&[u8]]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for part in parts {
        for &b in *part {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x0000_0100_0000_01b3);
        }
        // A separator, so ("ab", "c") and ("a", "bc") differ.
        h ^= 0xff;
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

/// A member's score for a key: the two names mixed by SplitMix64's
/// finalizer (FNV alone mixes too little for scores to be independent).
pub fn score(key: u64, member: u64) -> u64 {
    let mut z = key ^ member.rotate_left(29);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// The indices of `members` (their name hashes) in the key's order: owner
/// first. Ties (practically impossible) go to the lower index.
pub fn order(key: u64, members: &[u64]) -> Vec<usize> {
    let mut scored: Vec<(u64, usize)> = members
        .iter()
        .enumerate()
        .map(|(i, &m)| (score(key, m), i))
        .collect();
    scored.sort_unstable_by(|a, b| b.0.cmp(&a.0).then(a.1.cmp(&b.1)));
    scored.into_iter().map(|(_, i)| i).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn members(names: &[&str]) -> Vec<u64> {
        names.iter().map(|n| name_hash(&[n.as_bytes()])).collect()
    }

    fn owners(names: &[&str], keys: usize) -> Vec<String> {
        let hashes = members(names);
        (0..keys)
            .map(|k| {
                let key = name_hash(&[b"shop", format!("/item/{k}").as_bytes()]);
                names[order(key, &hashes)[0]].to_string()
            })
            .collect()
    }

    #[test]
    fn keys_spread_evenly_over_the_members() {
        let names = ["edge-1", "edge-2", "edge-3", "edge-4"];
        let owned = owners(&names, 20_000);
        for name in names {
            let n = owned.iter().filter(|o| *o == name).count();
            // 5,000 each on average; 10 % either way.
            assert!((4_500..=5_500).contains(&n), "{name} owns {n} of 20000");
        }
    }

    #[test]
    fn a_member_joining_takes_about_a_quarter_of_four_and_moves_nothing_else() {
        let before = owners(&["edge-1", "edge-2", "edge-3"], 20_000);
        let after = owners(&["edge-1", "edge-2", "edge-3", "edge-4"], 20_000);
        let moved: Vec<_> = before.iter().zip(&after).filter(|(b, a)| b != a).collect();
        assert!(
            (4_500..=5_500).contains(&moved.len()),
            "{} of 20000 keys moved",
            moved.len()
        );
        assert!(moved.iter().all(|(_, a)| *a == "edge-4"));
    }

    #[test]
    fn a_member_leaving_moves_only_its_own_keys_to_their_next_member() {
        let names = ["edge-1", "edge-2", "edge-3", "edge-4"];
        let hashes = members(&names);
        for k in 0..5_000 {
            let key = name_hash(&[b"shop", format!("/item/{k}").as_bytes()]);
            let full = order(key, &hashes);
            // edge-3 (index 2) leaves.
            let without: Vec<u64> = hashes.iter().copied().filter(|&h| h != hashes[2]).collect();
            let left = order(key, &without);
            let expect: Vec<usize> = full.iter().copied().filter(|&i| i != 2).collect();
            let got: Vec<usize> = left
                .iter()
                .map(|&i| if i >= 2 { i + 1 } else { i })
                .collect();
            assert_eq!(got, expect, "key {k}");
        }
    }

    const PINNED_NAME: u64 = 2_105_313_212_455_838_955;
    const PINNED_SCORE: u64 = 16_254_021_377_968_474_685;

    #[test]
    fn the_hashes_do_not_change_between_builds() {
        // Nodes of one POP must agree: these values are part of the wire
        // behaviour between versions.
        assert_eq!(name_hash(&[b"edge-1"]), PINNED_NAME);
        assert_eq!(score(1, 2), PINNED_SCORE);
        assert_ne!(name_hash(&[b"ab", b"c"]), name_hash(&[b"a", b"bc"]));
    }
}
