//! Cached objects: ranges, purges by tag and soft purges, per-tenant
//! quotas, streaming fills, large objects and uploads with bounded memory.

use std::sync::atomic::Ordering;
use std::time::Duration;

use bytes::Bytes;
use futures::StreamExt;
use http::Method;
use http_body_util::BodyExt;
use outpost_e2e::{
    generated_byte, tenant, tenant_with, upload_body, Client, Node, Origin, Reply,
    ADMIN_TOKEN as TOKEN,
};

async fn setup() -> (Origin, Node, Client) {
    outpost_e2e::start_one_tenant().await
}

async fn cached(client: &Client, node: &Node, path: &str) {
    cached_on(client, node, "t.test", path).await
}

#[tokio::test(flavor = "multi_thread")]
async fn a_single_range_is_served_as_206_from_cache() {
    let (origin, node, client) = setup().await;
    origin.reply("/r", Reply::ok().body("0123456789"));
    cached(&client, &node, "/r").await;
    let r = client
        .get_with(&node, "t.test", "/r", &[("range", "bytes=2-5")])
        .await;
    assert_eq!(r.status, 206);
    assert_eq!(r.text(), "2345");
    assert_eq!(r.header("content-range"), Some("bytes 2-5/10"));
    let r = client
        .get_with(&node, "t.test", "/r", &[("range", "bytes=-3")])
        .await;
    assert_eq!((r.status.as_u16(), r.text().as_str()), (206, "789"));
    assert_eq!(origin.hits("/r"), 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn several_ranges_are_served_as_multipart_byteranges() {
    let (origin, node, client) = setup().await;
    origin.reply(
        "/r",
        Reply::ok()
            .header("content-type", "text/plain")
            .body("0123456789"),
    );
    cached(&client, &node, "/r").await;
    let r = client
        .get_with(&node, "t.test", "/r", &[("range", "bytes=0-1,8-9")])
        .await;
    assert_eq!(r.status, 206);
    let ct = r.header("content-type").unwrap().to_string();
    let boundary = ct
        .strip_prefix("multipart/byteranges; boundary=")
        .expect("multipart");
    let text = r.text();
    assert!(
        text.contains(&format!(
            "--{boundary}\r\ncontent-type: text/plain\r\ncontent-range: bytes 0-1/10\r\n\r\n01"
        )),
        "{text}"
    );
    assert!(
        text.contains("content-range: bytes 8-9/10\r\n\r\n89"),
        "{text}"
    );
    assert!(text.ends_with(&format!("--{boundary}--\r\n")), "{text}");
}

#[tokio::test(flavor = "multi_thread")]
async fn if_range_that_does_not_match_gets_the_whole_object() {
    let (origin, node, client) = setup().await;
    origin.reply(
        "/r",
        Reply::ok().header("etag", "\"v1\"").body("0123456789"),
    );
    cached(&client, &node, "/r").await;
    let matching = client
        .get_with(
            &node,
            "t.test",
            "/r",
            &[("range", "bytes=0-0"), ("if-range", "\"v1\"")],
        )
        .await;
    assert_eq!(
        (matching.status.as_u16(), matching.text().as_str()),
        (206, "0")
    );
    let stale = client
        .get_with(
            &node,
            "t.test",
            "/r",
            &[("range", "bytes=0-0"), ("if-range", "\"v0\"")],
        )
        .await;
    assert_eq!(
        (stale.status.as_u16(), stale.text().as_str()),
        (200, "0123456789")
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn an_unsatisfiable_range_gets_416() {
    let (origin, node, client) = setup().await;
    origin.reply("/r", Reply::ok().body("0123456789"));
    cached(&client, &node, "/r").await;
    let r = client
        .get_with(&node, "t.test", "/r", &[("range", "bytes=10-20")])
        .await;
    assert_eq!(r.status, 416);
    assert_eq!(r.header("content-range"), Some("bytes */10"));
}

#[tokio::test(flavor = "multi_thread")]
async fn purge_by_tag_removes_every_key_carrying_it() {
    let (origin, node, client) = setup().await;
    origin.reply(
        "/p1",
        Reply::ok().header("surrogate-key", "product-1 catalog"),
    );
    origin.reply("/p2", Reply::ok().header("cache-tag", "product-2, catalog"));
    origin.reply("/other", Reply::ok().header("surrogate-key", "blog"));
    for path in ["/p1", "/p2", "/other"] {
        cached(&client, &node, path).await;
    }
    assert!(
        client
            .get(&node, "t.test", "/p1")
            .await
            .header("surrogate-key")
            .is_none(),
        "tags are not sent to clients"
    );
    let r = client
        .admin(
            &node,
            Method::POST,
            "/tenants/t/purge",
            Some(TOKEN),
            "{\"tag\": \"catalog\"}",
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert!(r.text().contains("\"keys\": 2"), "{}", r.text());
    client
        .expect_cache_status(&node, "t.test", "/p1", "fwd=uri-miss")
        .await;
    client
        .expect_cache_status(&node, "t.test", "/p2", "fwd=uri-miss")
        .await;
    client
        .expect_cache_status(&node, "t.test", "/other", "hit")
        .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_soft_purge_marks_stale_and_the_stale_copy_still_covers_an_outage() {
    let (origin, node, client) = setup().await;
    origin.reply(
        "/s",
        Reply::ok()
            .only("cache-control", "max-age=600, stale-if-error=600")
            .body("kept"),
    );
    cached(&client, &node, "/s").await;
    let r = client
        .admin(
            &node,
            Method::POST,
            "/tenants/t/purge",
            Some(TOKEN),
            "{\"key\": \"t.test/s\", \"soft\": true}",
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    origin.reply("/s", Reply::status(503));
    let r = client.get(&node, "t.test", "/s").await;
    assert_eq!((r.status.as_u16(), r.text().as_str()), (200, "kept"));
    assert!(r.cache_status().contains("stale"), "{}", r.cache_status());
    assert_eq!(
        origin.hits("/s"),
        2,
        "the soft-purged object went back to the origin"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_tenant_filling_its_quota_on_a_full_node_evicts_only_its_own_objects() {
    let origin = Origin::start("origin").await;
    let with_quota = |id: &str, host: &str, mb: u32| {
        tenant_with(
            id,
            &[host],
            "builtin:default",
            &[("origin", &origin.url())],
            &format!("cache_quota_mb = {mb}"),
        )
    };
    let config = format!(
        "{}{}",
        with_quota("small", "small.test", 1),
        with_quota("other", "other.test", 8)
    );
    let node = Node::start(&format!("[cache]\nmax_size_mb = 9\n\n{config}"));
    let client = Client::new();
    let big = Bytes::from(vec![b'x'; 200 * 1024]);
    // The other tenant uses most of its 8 MiB, so the node has little to
    // lend.
    for i in 0..36 {
        let path = format!("/keep/{i}");
        origin.reply(&path, Reply::ok().body(big.clone()));
        cached_on(&client, &node, "other.test", &path).await;
    }
    for i in 0..20 {
        let path = format!("/fill/{i}");
        origin.reply(&path, Reply::ok().body(big.clone()));
        client.get(&node, "small.test", &path).await;
    }
    // 20 x 200 KiB does not fit in 1 MiB and what is left of the node:
    // the small tenant lost objects...
    let mut refetched = 0;
    for i in 0..20 {
        if client
            .get(&node, "small.test", &format!("/fill/{i}"))
            .await
            .cache_status()
            .contains("fwd=uri-miss")
        {
            refetched += 1;
        }
    }
    assert!(refetched >= 10, "only {refetched} of 20 were evicted");
    // ... and the other tenant, within its quota, lost nothing.
    for i in 0..36 {
        client
            .expect_cache_status(&node, "other.test", &format!("/keep/{i}"), "hit")
            .await;
    }
}

async fn cached_on(client: &Client, node: &Node, host: &str, path: &str) {
    client.get(node, host, path).await;
    client.expect_cache_status(node, host, path, "hit").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn the_first_byte_reaches_the_client_before_the_origin_sends_the_last() {
    let (origin, node, client) = setup().await;
    let (reply, finished) = Reply::ok().generated(256 * 1024, Duration::from_secs(2));
    origin.reply("/slow-body", reply);
    let response = client
        .open(
            &node,
            Method::GET,
            "t.test",
            "/slow-body",
            &[],
            http_body_util::Empty::new().boxed(),
        )
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let mut body = response.into_body();
    let first = body.frame().await.unwrap().unwrap().into_data().unwrap();
    assert!(!first.is_empty());
    assert!(
        !finished.load(Ordering::SeqCst),
        "the origin had already sent everything"
    );
    let rest = body.collect().await.unwrap().to_bytes();
    let all: Vec<u8> = first.iter().chain(rest.iter()).copied().collect();
    assert_eq!(all.len(), 256 * 1024);
    assert!(all
        .iter()
        .enumerate()
        .all(|(i, b)| *b == generated_byte(i as u64)));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_hundred_concurrent_cold_requests_make_one_fetch_and_all_get_the_whole_body() {
    let (origin, node, client) = setup().await;
    let (reply, _) = Reply::ok().generated(1024 * 1024, Duration::from_millis(300));
    origin.reply("/big", reply);
    let requests = (0..100).map(|_| client.get(&node, "t.test", "/big"));
    let responses = futures::future::join_all(requests).await;
    for r in &responses {
        assert_eq!(r.status, 200);
        assert_eq!(r.body.len(), 1024 * 1024);
        assert!(r
            .body
            .iter()
            .enumerate()
            .all(|(i, b)| *b == generated_byte(i as u64)));
    }
    assert_eq!(origin.hits("/big"), 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn uncacheable_answers_are_remembered_so_requests_do_not_queue() {
    let (origin, node, client) = setup().await;
    origin.reply(
        "/u",
        Reply::ok()
            .only("cache-control", "private")
            .delay(Duration::from_millis(500)),
    );
    client.get(&node, "t.test", "/u").await;
    let responses =
        futures::future::join_all((0..10).map(|_| client.get(&node, "t.test", "/u"))).await;
    assert!(responses
        .iter()
        .all(|r| r.status == 200 && !r.cache_status().contains("collapsed")));
    assert_eq!(origin.hits("/u"), 11);
    // All ten were at the origin together. Without the hit-for-miss mark one
    // would lead a fill and the other nine wait for it: never more than 9.
    assert_eq!(origin.max_in_flight(), 10);
}

/// A slower test, kept in CI: 1 GiB through the node, and a 256 MiB upload.
#[tokio::test(flavor = "multi_thread")]
async fn a_1_gib_object_and_a_256_mib_upload_stream_with_bounded_memory() {
    let (origin, node, client) = setup().await;
    const GIB: u64 = 1024 * 1024 * 1024;
    let (reply, _) = Reply::ok().generated(GIB, Duration::ZERO);
    origin.reply("/huge", reply);
    let response = client
        .open(
            &node,
            Method::GET,
            "t.test",
            "/huge",
            &[],
            http_body_util::Empty::new().boxed(),
        )
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert!(response.headers()["cache-status"]
        .to_str()
        .unwrap()
        .contains("too-large"));
    let mut stream = response.into_body().into_data_stream();
    let mut received = 0u64;
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.unwrap();
        assert_eq!(chunk[0], generated_byte(received));
        received += chunk.len() as u64;
    }
    assert_eq!(received, GIB);

    // Upload: the request body streams to the origin.
    const UPLOAD: u64 = 256 * 1024 * 1024;
    origin.reply("/upload", Reply::status(201));
    let body = upload_body(UPLOAD);
    let r = client
        .open(&node, Method::PUT, "t.test", "/upload", &[], body)
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    let seen = origin
        .seen()
        .into_iter()
        .find(|s| s.target == "/upload")
        .unwrap();
    assert_eq!(seen.body_len, UPLOAD);

    let peak = node.peak_rss_kib();
    println!(
        "node peak RSS after 1 GiB download and 256 MiB upload: {} MiB",
        peak / 1024
    );
    assert!(peak < 256 * 1024, "peak RSS {} MiB", peak / 1024);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_range_miss_on_a_large_object_fetches_only_the_slices_it_needs() {
    let (origin, node, client) = setup().await;
    const GIB: u64 = 1024 * 1024 * 1024;
    let (reply, _) = Reply::ok()
        .header("etag", "\"big-v1\"")
        .generated(GIB, Duration::ZERO);
    origin.reply("/huge", reply);
    let start: u64 = 700 * 1024 * 1024 + 12345;
    let range = format!("bytes={start}-{}", start + 99);
    let r = client
        .get_with(&node, "t.test", "/huge", &[("range", &range)])
        .await;
    assert_eq!(r.status, 206);
    assert_eq!(
        r.header("content-range"),
        Some(format!("bytes {start}-{}/{GIB}", start + 99).as_str())
    );
    assert_eq!(r.body.len(), 100);
    assert!(r
        .body
        .iter()
        .enumerate()
        .all(|(i, b)| *b == generated_byte(start + i as u64)));
    let seen = origin.seen();
    assert_eq!(seen.len(), 1);
    let asked = seen[0]
        .headers
        .get("range")
        .expect("the origin was asked for a slice")
        .to_str()
        .unwrap()
        .to_string();
    assert!(asked.starts_with("bytes=734003200-"), "{asked}");

    // A second range in the same slice is served from the cached slice.
    let r = client
        .get_with(
            &node,
            "t.test",
            "/huge",
            &[("range", &format!("bytes={}-{}", start + 1000, start + 1009))],
        )
        .await;
    assert_eq!(r.status, 206);
    assert!(r
        .body
        .iter()
        .enumerate()
        .all(|(i, b)| *b == generated_byte(start + 1000 + i as u64)));
    assert_eq!(origin.total(), 1);

    // A range across a slice boundary needs exactly one more slice.
    let boundary = 701 * 1024 * 1024;
    let r = client
        .get_with(
            &node,
            "t.test",
            "/huge",
            &[(
                "range",
                &format!("bytes={}-{}", boundary - 10, boundary + 9),
            )],
        )
        .await;
    assert_eq!(r.body.len(), 20);
    assert!(r
        .body
        .iter()
        .enumerate()
        .all(|(i, b)| *b == generated_byte(boundary - 10 + i as u64)));
    assert_eq!(origin.total(), 2);
}

#[tokio::test(flavor = "multi_thread")]
async fn slices_with_different_etags_fail_the_response_and_are_dropped() {
    let (origin, node, client) = setup().await;
    const SIZE: u64 = 8 * 1024 * 1024;
    let (v1, _) = Reply::ok()
        .header("etag", "\"v1\"")
        .generated(SIZE, Duration::ZERO);
    origin.reply("/obj", v1);
    // Slice 0 is cached with ETag v1.
    let r = client
        .get_with(&node, "t.test", "/obj", &[("range", "bytes=0-9")])
        .await;
    assert_eq!(r.status, 206);
    // The object changes; a range spanning slices 0 (v1, cached) and 1 (v2).
    let (v2, _) = Reply::ok()
        .header("etag", "\"v2\"")
        .generated(SIZE, Duration::ZERO);
    origin.reply("/obj", v2);
    let mib = 1024 * 1024;
    let response = client
        .open(
            &node,
            Method::GET,
            "t.test",
            "/obj",
            &[("range", &format!("bytes={}-{}", mib - 5, mib + 5))],
            http_body_util::Empty::new().boxed(),
        )
        .await
        .unwrap();
    assert!(
        response.into_body().collect().await.is_err(),
        "a mixed-version body was delivered whole"
    );
    // The slices were dropped: the next request fetches consistent ones.
    let r = client
        .get_with(
            &node,
            "t.test",
            "/obj",
            &[("range", &format!("bytes={}-{}", mib - 5, mib + 5))],
        )
        .await;
    assert_eq!(r.status, 206);
    assert_eq!(r.header("etag"), Some("\"v2\""));
    assert_eq!(r.body.len(), 11);
}

#[tokio::test(flavor = "multi_thread")]
async fn objects_over_the_tenants_max_object_size_are_streamed_not_stored() {
    let origin = Origin::start("origin").await;
    let config = tenant_with(
        "t",
        &["t.test"],
        "builtin:default",
        &[("origin", &origin.url())],
        "max_object_mb = 1",
    );
    let node = Node::start(&config);
    let client = Client::new();
    origin.reply("/small", Reply::ok().body(vec![b's'; 512 * 1024]));
    origin.reply("/large", Reply::ok().body(vec![b'l'; 2 * 1024 * 1024]));
    for path in ["/small", "/large"] {
        for _ in 0..2 {
            let r = client.get(&node, "t.test", path).await;
            assert_eq!(r.status, 200);
        }
    }
    assert_eq!(origin.hits("/small"), 1);
    assert_eq!(origin.hits("/large"), 2);
    let r = client.get(&node, "t.test", "/large").await;
    assert_eq!(r.body.len(), 2 * 1024 * 1024);
    assert!(
        r.cache_status().contains("detail=too-large"),
        "{}",
        r.cache_status()
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn an_origin_without_range_support_is_asked_once_per_range_miss() {
    let (origin, node, client) = setup().await;
    origin.reply(
        "/plain",
        Reply::ok()
            .only("cache-control", "no-store")
            .body("0123456789"),
    );
    // The slice request gets a 200: the node falls back to a normal fetch.
    let r = client
        .get_with(&node, "t.test", "/plain", &[("range", "bytes=2-3")])
        .await;
    assert_eq!(r.status, 200);
    assert_eq!(r.text(), "0123456789");
    assert_eq!(origin.hits("/plain"), 2);
    // Remembered: the next Range miss does not try slices again.
    client
        .get_with(&node, "t.test", "/plain", &[("range", "bytes=2-3")])
        .await;
    assert_eq!(origin.hits("/plain"), 3);
}

#[tokio::test(flavor = "multi_thread")]
async fn small_stored_objects_do_not_keep_the_origin_connection_buffers() {
    let origin = Origin::start("origin").await;
    let node = Node::start(&tenant(
        "t",
        &["t.test"],
        "example:cache-key",
        &[("origin", &origin.url())],
    ));
    let client = Client::new();
    let fetch = |range: std::ops::Range<u32>| {
        let client = &client;
        let node = &node;
        futures::stream::iter(range)
            .map(move |i| async move { client.get(node, "t.test", &format!("/o/{i}")).await })
            .buffer_unordered(8)
            .for_each(|r| async move { assert_eq!(r.status, 200) })
    };
    fetch(0..500).await;
    let before = node.peak_rss_kib();
    fetch(500..4500).await;
    let grown = node.peak_rss_kib().saturating_sub(before);
    // 4,000 objects of a few dozen bytes. Each response arrives in a read
    // buffer of kilobytes: objects that kept slices of those buffers grew
    // the node by ~25 MiB here, owned copies by ~12 MiB.
    assert!(
        grown < 18 * 1024,
        "resident memory grew {grown} KiB for 4,000 small objects"
    );
    assert_eq!(origin.total(), 4500);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_range_to_the_largest_u64_on_a_miss_gets_the_rest_of_the_object() {
    let (origin, node, client) = setup().await;
    let (reply, _) = Reply::ok()
        .header("etag", "\"v1\"")
        .generated(3000, Duration::ZERO);
    origin.reply("/tail", reply);
    let r = client
        .get_with(
            &node,
            "t.test",
            "/tail",
            &[("range", "bytes=1000-18446744073709551615")],
        )
        .await;
    assert_eq!(r.status, 206);
    assert_eq!(r.header("content-range"), Some("bytes 1000-2999/3000"));
    assert_eq!(r.header("content-length"), Some("2000"));
    assert_eq!(r.body.len(), 2000);
    assert!(r
        .body
        .iter()
        .enumerate()
        .all(|(i, b)| *b == generated_byte(1000 + i as u64)));
}

#[tokio::test(flavor = "multi_thread")]
async fn an_origin_age_of_two_to_the_sixty_four_is_stale_not_a_crash() {
    let (origin, node, client) = setup().await;
    origin.reply(
        "/old",
        Reply::ok()
            .header("age", "18446744073709551615")
            .body("ancient"),
    );
    let first = client.get(&node, "t.test", "/old").await;
    assert_eq!(
        (first.status.as_u16(), first.text().as_str()),
        (200, "ancient")
    );
    // RFC 9111 section 1.2.2: the Age counts as 2^31 s, so the 60 s of
    // max-age are long gone: the next request goes to the origin again.
    let second = client.get(&node, "t.test", "/old").await;
    assert_eq!(second.status, 200);
    assert!(
        !second.cache_status().contains("; hit"),
        "{}",
        second.cache_status()
    );
    assert_eq!(origin.hits("/old"), 2);
}
