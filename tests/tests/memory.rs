//! The cache's memory means what the config says: a node told to cache
//! 64 MiB grows by about 64 MiB, however small its objects, because what an
//! object is charged is what it costs (body, head, key, index entries).

use std::convert::Infallible;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use bytes::Bytes;
use http_body_util::Full;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use outpost_e2e::metrics::Scrape;
use outpost_e2e::*;

/// An origin answering every path with `size` cacheable bytes, as fast as
/// it can (the scripted origin keeps a record of every request).
async fn sized_origin(size: usize) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let body = Bytes::from(vec![b'x'; size]);
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let body = body.clone();
            tokio::spawn(async move {
                let service = service_fn(move |_request| {
                    let response = http::Response::builder()
                        .header("cache-control", "public, max-age=3600")
                        .header("content-type", "application/octet-stream")
                        .body(Full::new(body.clone()))
                        .unwrap();
                    async move { Ok::<_, Infallible>(response) }
                });
                let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    url
}

/// Sends `count` GETs of distinct paths to `t.test` over `concurrency`
/// connections.
async fn fill(node: &Node, prefix: &str, count: u64, concurrency: u64) {
    fill_host(node, "t.test", prefix, count, concurrency).await
}

async fn fill_host(node: &Node, host: &str, prefix: &str, count: u64, concurrency: u64) {
    let next = Arc::new(AtomicU64::new(0));
    let mut workers = Vec::new();
    for _ in 0..concurrency {
        let (next, client, addr) = (next.clone(), Client::new(), node.addr);
        let (prefix, host) = (prefix.to_string(), host.to_string());
        workers.push(tokio::spawn(async move {
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= count {
                    return;
                }
                let path = format!("/{prefix}/{i}");
                let r = client
                    .send_to(addr, http::Method::GET, &host, &path, &[], Bytes::new())
                    .await;
                assert_eq!(r.status, 200);
            }
        }));
    }
    for w in workers {
        w.await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_64_mib_cache_filled_three_times_over_with_1_kib_objects_grows_the_node_by_at_most_64_mib_and_15_percent(
) {
    const CACHE_MB: u64 = 64;
    let origin = sized_origin(1024).await;
    let config = format!(
        "[cache]\nmax_size_mb = {CACHE_MB}\n\n{}{}",
        admin_section(),
        tenant("t", &["t.test"], "builtin:default", &[("origin", &origin)])
    );
    let node = Node::start(&config);
    let client = Client::new();
    // The node's own buffers, pools and instances, before the cache holds
    // anything to speak of.
    fill(&node, "warm", 500, 16).await;
    let before = node.rss_kib();
    let warm = Scrape::of(&client, &node).await;
    let charged = warm.sum("outpost_cache_bytes", &[("tenant", "t")]);
    let objects = warm.sum("outpost_cache_objects", &[("tenant", "t")]);
    let per_object = charged / objects;
    // Three times what fits, by what one object is charged.
    let capacity = (CACHE_MB << 20) as f64;
    let count = (3.0 * capacity / per_object) as u64;
    fill(&node, "fill", count, 16).await;

    let after = node.rss_kib();
    let full = Scrape::of(&client, &node).await;
    let stored = full.sum("outpost_cache_bytes", &[("tenant", "t")]);
    // Not a vacuous pass: the cache did fill up, and evicted.
    assert!(stored >= 0.9 * capacity, "only {stored} bytes stored");
    assert!(full.sum("outpost_cache_evictions_total", &[("tenant", "t")]) > 0.0);
    let grown_mib = (after.saturating_sub(before)) as f64 / 1024.0;
    assert!(
        grown_mib <= CACHE_MB as f64 * 1.15,
        "RSS grew by {grown_mib:.1} MiB for a {CACHE_MB} MiB cache \
         ({per_object:.0} B charged per 1 KiB object, {count} requests)"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn an_idle_tenants_share_is_lent_to_a_busy_one_and_taken_back_down_to_each_guarantee() {
    const CACHE_MB: u64 = 16;
    let origin = sized_origin(16 * 1024).await;
    let config = format!(
        "[cache]\nmax_size_mb = {CACHE_MB}\n\n{}{}{}",
        admin_section(),
        tenant(
            "busy",
            &["busy.test"],
            "builtin:default",
            &[("origin", &origin)]
        ),
        tenant(
            "idle",
            &["idle.test"],
            "builtin:default",
            &[("origin", &origin)]
        ),
    );
    let node = Node::start(&config);
    let client = Client::new();
    let bytes = |m: &Scrape, t| m.sum("outpost_cache_bytes", &[("tenant", t)]);
    let hits = |m: &Scrape| {
        m.sum(
            "outpost_cache_outcomes_total",
            &[("tenant", "busy"), ("outcome", "hit")],
        )
    };
    let capacity = (CACHE_MB << 20) as f64;
    let guarantee = capacity / 2.0;

    // 650 objects of 16 KiB (about 12 MiB charged): more than the busy
    // tenant's half, less than the node.
    fill_host(&node, "busy.test", "a", 650, 8).await;
    let lent = Scrape::of(&client, &node).await;
    assert_eq!(
        lent.value("outpost_cache_guaranteed_bytes", &[("tenant", "busy")]),
        guarantee
    );
    assert!(
        bytes(&lent, "busy") > 1.4 * guarantee,
        "{}",
        bytes(&lent, "busy")
    );
    // Every one of them is still there: the idle tenant's half is lent.
    fill_host(&node, "busy.test", "a", 650, 8).await;
    let again = Scrape::of(&client, &node).await;
    assert_eq!(hits(&again) - hits(&lent), 650.0);

    // The idle tenant wakes up and fills the whole node: it gets its half
    // back, and takes no more than that from the busy one.
    fill_host(&node, "idle.test", "b", 1000, 8).await;
    let shared = Scrape::of(&client, &node).await;
    let (busy, idle) = (bytes(&shared, "busy"), bytes(&shared, "idle"));
    let object = 20.0 * 1024.0;
    assert!(busy + idle <= capacity, "{busy} + {idle}");
    assert!(
        busy >= guarantee - object,
        "busy kept {busy} of {guarantee}"
    );
    assert!(idle >= guarantee - object, "idle got {idle} of {guarantee}");
}
