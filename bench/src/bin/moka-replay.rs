//! The hit ratio moka alone achieves on a trace: every key is an object
//! weighing `OBJECT_BYTES`, the cache holds `CAPACITY_BYTES`, a miss
//! inserts. Replays the first `REQUESTS` lines (wrapping), as many as the
//! server answered.
//!
//!     moka-replay TRACE REQUESTS OBJECT_BYTES CAPACITY_BYTES

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.len() != 5 {
        eprintln!("usage: moka-replay TRACE REQUESTS OBJECT_BYTES CAPACITY_BYTES");
        std::process::exit(2);
    }
    let trace = std::fs::read_to_string(&args[1]).expect("read the trace");
    let keys: Vec<u32> = trace
        .lines()
        .map(|l| l.parse().expect("a key id"))
        .collect();
    let requests: usize = args[2].parse().expect("REQUESTS");
    let object: u32 = args[3].parse().expect("OBJECT_BYTES");
    let capacity: u64 = args[4].parse().expect("CAPACITY_BYTES");
    let cache: moka::sync::Cache<u32, ()> = moka::sync::Cache::builder()
        .max_capacity(capacity)
        .weigher(move |_, _| object)
        .build();
    let mut hits = 0usize;
    for i in 0..requests {
        let key = keys[i % keys.len()];
        if cache.get(&key).is_some() {
            hits += 1;
        } else {
            cache.insert(key, ());
        }
        // Let moka apply its pending admissions and evictions as it would
        // between requests on a server.
        if i % 1024 == 0 {
            cache.run_pending_tasks();
        }
    }
    println!("{:.4}", hits as f64 / requests.max(1) as f64);
}
