//! Fills a cache with COUNT distinct objects of SIZE bytes: GETs of
//! `/size/SIZE/PREFIX-i` (see hyper-ceiling) over CONCURRENCY keep-alive
//! connections, each request sent once. Prints the requests that did not
//! get a 200 (0 expected).
//!
//!     fill 127.0.0.1:8080 t.test 1024 100000 r1 16

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    let [_, addr, host, size, count, prefix, concurrency] = &args[..] else {
        eprintln!("usage: fill ADDR HOST SIZE COUNT PREFIX CONCURRENCY");
        std::process::exit(2);
    };
    let count: u64 = count.parse().expect("COUNT is a number");
    let concurrency: u64 = concurrency.parse().expect("CONCURRENCY is a number");
    let client: Client<_, Empty<Bytes>> = Client::builder(TokioExecutor::new()).build_http();
    let next = Arc::new(AtomicU64::new(0));
    let failed = Arc::new(AtomicU64::new(0));
    let mut workers = Vec::new();
    for _ in 0..concurrency {
        let (client, next, failed) = (client.clone(), next.clone(), failed.clone());
        let url = format!("http://{addr}/size/{size}/{prefix}-");
        let host = host.clone();
        workers.push(tokio::spawn(async move {
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= count {
                    return;
                }
                let request = http::Request::get(format!("{url}{i}"))
                    .header("host", &host)
                    .body(Empty::new())
                    .expect("a valid request");
                let ok = match client.request(request).await {
                    Ok(response) => {
                        let status = response.status();
                        response.into_body().collect().await.is_ok() && status == 200
                    }
                    Err(_) => false,
                };
                if !ok {
                    failed.fetch_add(1, Ordering::Relaxed);
                }
            }
        }));
    }
    for w in workers {
        w.await.expect("a worker");
    }
    println!("{}", failed.load(Ordering::Relaxed));
}
