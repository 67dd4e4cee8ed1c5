//! A bounded load for the latency test: `REQUESTS` GETs of Zipf(1.0)-chosen
//! keys out of `KEYS` (the same sequence for the same seed), over
//! `CONCURRENCY` keep-alive connections spread over the targets, each
//! request timed from send to last body byte. Prints one JSON line:
//! mean, p50, p99 (ms), requests, errors, and how many were cache hits
//! (by `Cache-Status`).
//!
//!     latency-load TARGETS HOST PATH_PREFIX KEYS REQUESTS CONCURRENCY SEED
//!     latency-load 127.0.0.1:19001,127.0.0.1:19002 r1.shop.test /size/16384/ 100 300 4 1

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use outpost_bench::{SplitMix, Zipf};

/// What the workers share: the sequence, where they are in it, and what
/// they measured.
struct Run {
    host: String,
    prefix: String,
    sequence: Vec<usize>,
    next: AtomicUsize,
    timings: Mutex<Vec<f64>>,
    errors: AtomicUsize,
    hits: AtomicUsize,
}

/// One keep-alive connection to `target`, taking the next request of the
/// sequence until none is left.
async fn worker(run: Arc<Run>, target: SocketAddr) {
    let client = Client::builder(TokioExecutor::new())
        .pool_max_idle_per_host(1)
        .build_http::<Empty<Bytes>>();
    loop {
        let i = run.next.fetch_add(1, Ordering::Relaxed);
        let Some(&key) = run.sequence.get(i) else {
            break;
        };
        let request = http::Request::get(format!("http://{target}{}item-{key}", run.prefix))
            .header("host", &run.host)
            .body(Empty::new())
            .expect("a request");
        let start = Instant::now();
        let outcome = tokio::time::timeout(Duration::from_secs(30), async {
            let response = client.request(request).await.ok()?;
            // The first Cache-Status entry is the cache that answered.
            let hit = response
                .headers()
                .get("cache-status")
                .and_then(|v| v.to_str().ok())
                .is_some_and(|v| v.split(',').next().is_some_and(|e| e.contains("hit")));
            let ok = response.status().is_success();
            response.into_body().collect().await.ok()?;
            Some((ok, hit))
        })
        .await;
        let took = start.elapsed();
        match outcome {
            Ok(Some((true, hit))) => {
                if hit {
                    run.hits.fetch_add(1, Ordering::Relaxed);
                }
                run.timings
                    .lock()
                    .unwrap()
                    .push(took.as_secs_f64() * 1000.0);
            }
            _ => {
                run.errors.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
}

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let usage = "usage: latency-load TARGETS HOST PATH_PREFIX KEYS REQUESTS CONCURRENCY SEED";
    assert_eq!(args.len(), 7, "{usage}");
    let targets: Vec<SocketAddr> = args[0]
        .split(',')
        .map(|t| t.parse().expect(usage))
        .collect();
    let host = args[1].clone();
    let prefix = args[2].clone();
    let keys: usize = args[3].parse().expect(usage);
    let requests: usize = args[4].parse().expect(usage);
    let concurrency: usize = args[5].parse().expect(usage);
    let mut rng = SplitMix(args[6].parse().expect(usage));
    let zipf = Zipf::new(keys, 1.0);
    let sequence: Vec<usize> = (0..requests).map(|_| zipf.sample(&mut rng)).collect();

    let run = Arc::new(Run {
        host,
        prefix,
        sequence,
        next: AtomicUsize::new(0),
        timings: Mutex::new(Vec::with_capacity(requests)),
        errors: AtomicUsize::new(0),
        hits: AtomicUsize::new(0),
    });
    let workers: Vec<_> = (0..concurrency)
        .map(|w| tokio::spawn(worker(run.clone(), targets[w % targets.len()])))
        .collect();
    for w in workers {
        w.await.expect("a worker");
    }
    let (timings, errors, hits) = (&run.timings, &run.errors, &run.hits);
    let mut ms = timings.lock().unwrap().clone();
    ms.sort_by(f64::total_cmp);
    let quantile = |q: f64| {
        if ms.is_empty() {
            return 0.0;
        }
        ms[((ms.len() as f64 * q).ceil() as usize).clamp(1, ms.len()) - 1]
    };
    let mean = if ms.is_empty() {
        0.0
    } else {
        ms.iter().sum::<f64>() / ms.len() as f64
    };
    println!(
        "{{\"mean\": {mean:.2}, \"p50\": {:.2}, \"p99\": {:.2}, \"requests\": {}, \"errors\": {}, \"hits\": {}}}",
        quantile(0.5),
        quantile(0.99),
        ms.len(),
        errors.load(Ordering::Relaxed),
        hits.load(Ordering::Relaxed)
    );
}
