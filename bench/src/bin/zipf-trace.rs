//! Writes a request trace: one key per line, Zipf(s) over `keys` keys,
//! shuffled so popularity does not follow key order.
//!
//!     zipf-trace KEYS REQUESTS [S] > trace.txt

use std::io::Write;

use outpost_bench::{SplitMix, Zipf};

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let keys: usize = args.get(1).and_then(|a| a.parse().ok()).unwrap_or(100_000);
    let requests: usize = args
        .get(2)
        .and_then(|a| a.parse().ok())
        .unwrap_or(1_000_000);
    let s: f64 = args.get(3).and_then(|a| a.parse().ok()).unwrap_or(1.0);
    let zipf = Zipf::new(keys, s);
    let mut rng = SplitMix(0x5EED);
    // A fixed permutation of the key ids (Fisher-Yates).
    let mut ids: Vec<usize> = (0..keys).collect();
    for i in (1..keys).rev() {
        let j = (rng.next_u64() % (i as u64 + 1)) as usize;
        ids.swap(i, j);
    }
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    for _ in 0..requests {
        writeln!(out, "{}", ids[zipf.sample(&mut rng)]).expect("write the trace");
    }
}
