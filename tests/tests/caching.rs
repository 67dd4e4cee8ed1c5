//! HTTP caching semantics through a node (RFC 9111, 9110 section 13, 5861,
//! 9211, 9213), against a scripted origin that counts what it receives.

use std::time::{Duration, SystemTime};

use bytes::Bytes;
use http::Method;
use outpost_e2e::{tenant, tenant_with, Client, Node, Origin, Reply};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

async fn setup() -> (Origin, Node, Client) {
    outpost_e2e::start_one_tenant().await
}

async fn twice(client: &Client, node: &Node, path: &str) -> (outpost_e2e::Resp, outpost_e2e::Resp) {
    let a = client.get(node, "t.test", path).await;
    let b = client.get(node, "t.test", path).await;
    (a, b)
}

#[tokio::test(flavor = "multi_thread")]
async fn no_store_responses_are_not_stored() {
    let (origin, node, client) = setup().await;
    origin.reply("/x", Reply::ok().only("cache-control", "no-store"));
    let (a, b) = twice(&client, &node, "/x").await;
    assert!(
        a.cache_status().contains("detail=no-store"),
        "{}",
        a.cache_status()
    );
    assert!(
        b.cache_status().contains("fwd=uri-miss"),
        "{}",
        b.cache_status()
    );
    assert_eq!(origin.hits("/x"), 2);
}

#[tokio::test(flavor = "multi_thread")]
async fn private_responses_are_not_stored_by_the_shared_cache() {
    let (origin, node, client) = setup().await;
    origin.reply(
        "/x",
        Reply::ok().only("cache-control", "private, max-age=60"),
    );
    twice(&client, &node, "/x").await;
    assert_eq!(origin.hits("/x"), 2);
}

#[tokio::test(flavor = "multi_thread")]
async fn set_cookie_responses_are_not_shared() {
    let (origin, node, client) = setup().await;
    origin.reply("/x", Reply::ok().header("set-cookie", "session=abc"));
    let (_, b) = twice(&client, &node, "/x").await;
    assert_eq!(origin.hits("/x"), 2);
    assert!(
        b.cache_status().contains("detail=set-cookie"),
        "{}",
        b.cache_status()
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn authorized_requests_are_stored_only_when_the_response_allows_sharing() {
    let (origin, node, client) = setup().await;
    origin.reply("/plain", Reply::ok().only("cache-control", "max-age=60"));
    origin.reply("/shared", Reply::ok().only("cache-control", "s-maxage=60"));
    for path in ["/plain", "/shared"] {
        for _ in 0..2 {
            client
                .get_with(&node, "t.test", path, &[("authorization", "Bearer x")])
                .await;
        }
    }
    assert_eq!(origin.hits("/plain"), 2);
    assert_eq!(origin.hits("/shared"), 1);
}

/// RFC 9213: CDN-Cache-Control governs this cache, and goes on to the
/// client (a child tier) unless the tenant strips it; Surrogate-Control is
/// this cache's only and never leaves it.
#[tokio::test(flavor = "multi_thread")]
async fn cdn_cache_control_wins_over_cache_control_and_is_forwarded_unless_stripped() {
    let origin = Origin::start("origin").await;
    let reply = Reply::ok()
        .only("cache-control", "no-store")
        .header("cdn-cache-control", "max-age=120")
        .header("surrogate-control", "max-age=5");
    origin.reply("/x", reply);
    let client = Client::new();
    for strip in [false, true] {
        let node = Node::start(&tenant_with(
            "t",
            &["t.test"],
            "builtin:default",
            &[("origin", &origin.url())],
            &format!("strip_cdn_cache_control = {strip}"),
        ));
        let (a, b) = twice(&client, &node, "/x").await;
        assert!(b.cache_status().contains("hit"), "{}", b.cache_status());
        assert_eq!(b.header("cache-control"), Some("no-store"));
        for r in [&a, &b] {
            let expected = (!strip).then_some("max-age=120");
            assert_eq!(r.header("cdn-cache-control"), expected, "strip = {strip}");
            assert_eq!(r.header("surrogate-control"), None);
        }
    }
    assert_eq!(origin.hits("/x"), 2, "one miss per node");
}

#[tokio::test(flavor = "multi_thread")]
async fn s_maxage_wins_over_max_age() {
    let (origin, node, client) = setup().await;
    origin.reply(
        "/x",
        Reply::ok().only("cache-control", "max-age=0, s-maxage=90"),
    );
    let (_, b) = twice(&client, &node, "/x").await;
    assert_eq!(origin.hits("/x"), 1);
    assert!(
        b.cache_status().contains("ttl=90") || b.cache_status().contains("ttl=89"),
        "{}",
        b.cache_status()
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn expires_relative_to_date_gives_freshness() {
    let (origin, node, client) = setup().await;
    let now = SystemTime::now();
    origin.reply(
        "/x",
        Reply::status(200)
            .header("date", &httpdate::fmt_http_date(now))
            .header(
                "expires",
                &httpdate::fmt_http_date(now + Duration::from_secs(300)),
            ),
    );
    let (_, b) = twice(&client, &node, "/x").await;
    assert_eq!(origin.hits("/x"), 1);
    assert!(b.cache_status().contains("hit"), "{}", b.cache_status());
}

#[tokio::test(flavor = "multi_thread")]
async fn an_age_from_upstream_counts_against_freshness() {
    let (origin, node, client) = setup().await;
    origin.reply(
        "/x",
        Reply::ok()
            .only("cache-control", "max-age=60")
            .header("age", "50"),
    );
    let (_, b) = twice(&client, &node, "/x").await;
    let age: u64 = b.header("age").unwrap().parse().unwrap();
    assert!(age >= 50, "age {age}");
    assert!(
        b.cache_status().contains("ttl=10") || b.cache_status().contains("ttl=9"),
        "{}",
        b.cache_status()
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn vary_keeps_one_variant_per_request_field_value() {
    let (origin, node, client) = setup().await;
    origin.reply("/x", Reply::ok().header("vary", "Accept-Language"));
    for lang in ["en", "fr", "en", "fr"] {
        let r = client
            .get_with(&node, "t.test", "/x", &[("accept-language", lang)])
            .await;
        assert_eq!(r.status, 200);
    }
    assert_eq!(origin.hits("/x"), 2);
    let de = client
        .get_with(&node, "t.test", "/x", &[("accept-language", "de")])
        .await;
    assert!(
        de.cache_status().contains("fwd=vary-miss"),
        "{}",
        de.cache_status()
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn if_none_match_from_a_client_gets_304_from_cache() {
    let (origin, node, client) = setup().await;
    origin.reply("/x", Reply::ok().header("etag", "\"v1\""));
    client.get(&node, "t.test", "/x").await;
    let r = client
        .get_with(&node, "t.test", "/x", &[("if-none-match", "\"v1\"")])
        .await;
    assert_eq!(r.status, 304);
    assert!(r.body.is_empty());
    assert_eq!(r.header("etag"), Some("\"v1\""));
    let r = client
        .get_with(&node, "t.test", "/x", &[("if-none-match", "\"other\"")])
        .await;
    assert_eq!(r.status, 200);
    assert_eq!(origin.hits("/x"), 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_stale_entry_is_revalidated_and_a_304_refreshes_its_headers() {
    let (origin, node, client) = setup().await;
    origin.reply(
        "/x",
        Reply::ok()
            .only("cache-control", "max-age=1")
            .header("etag", "\"v1\"")
            .header("x-version", "1")
            .body("body v1"),
    );
    client.get(&node, "t.test", "/x").await;
    tokio::time::sleep(Duration::from_millis(1100)).await;
    origin.reply(
        "/x",
        Reply::ok()
            .only("cache-control", "max-age=60")
            .header("etag", "\"v1\"")
            .header("x-version", "2"),
    );
    let r = client.get(&node, "t.test", "/x").await;
    assert_eq!(r.status, 200);
    assert_eq!(r.text(), "body v1");
    assert_eq!(r.header("x-version"), Some("2"));
    assert!(
        r.cache_status().contains("fwd=stale; fwd-status=304"),
        "{}",
        r.cache_status()
    );
    let seen = origin.seen();
    assert_eq!(seen[1].headers.get("if-none-match").unwrap(), "\"v1\"");
    // Fresh again: a hit.
    client
        .expect_cache_status(&node, "t.test", "/x", "hit")
        .await;
    assert_eq!(origin.hits("/x"), 2);
}

#[tokio::test(flavor = "multi_thread")]
async fn stale_while_revalidate_serves_stale_at_once_and_refreshes_once() {
    let (origin, node, client) = setup().await;
    origin.reply(
        "/x",
        Reply::ok()
            .only("cache-control", "max-age=1, stale-while-revalidate=60")
            .body("old"),
    );
    client.get(&node, "t.test", "/x").await;
    tokio::time::sleep(Duration::from_millis(1100)).await;
    origin.reply(
        "/x",
        Reply::ok()
            .only("cache-control", "max-age=60")
            .body("new")
            .delay(Duration::from_millis(300)),
    );
    let requests = (0..20).map(|_| client.get(&node, "t.test", "/x"));
    let responses = futures::future::join_all(requests).await;
    for r in &responses {
        assert_eq!(r.text(), "old");
        assert!(
            r.cache_status().contains("stale-while-revalidate"),
            "{}",
            r.cache_status()
        );
    }
    // Wait (bounded) for the background refresh to land.
    let mut refreshed = false;
    for _ in 0..100 {
        if client.get(&node, "t.test", "/x").await.text() == "new" {
            refreshed = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        refreshed,
        "the background refresh never replaced the stale copy"
    );
    assert_eq!(
        origin.hits("/x"),
        2,
        "one fill and exactly one background refresh"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn stale_if_error_serves_the_stale_copy_when_the_origin_fails() {
    let (origin, node, client) = setup().await;
    origin.reply(
        "/x",
        Reply::ok()
            .only("cache-control", "max-age=1, stale-if-error=60")
            .body("good"),
    );
    client.get(&node, "t.test", "/x").await;
    tokio::time::sleep(Duration::from_millis(1100)).await;
    origin.reply("/x", Reply::status(503));
    let r = client.get(&node, "t.test", "/x").await;
    assert_eq!((r.status.as_u16(), r.text().as_str()), (200, "good"));
    origin.stop();
    let r = client.get(&node, "t.test", "/x").await;
    assert_eq!((r.status.as_u16(), r.text().as_str()), (200, "good"));
}

#[tokio::test(flavor = "multi_thread")]
async fn must_revalidate_is_never_served_stale() {
    let (origin, node, client) = setup().await;
    origin.reply(
        "/x",
        Reply::ok().only(
            "cache-control",
            "max-age=1, must-revalidate, stale-if-error=60",
        ),
    );
    client.get(&node, "t.test", "/x").await;
    tokio::time::sleep(Duration::from_millis(1100)).await;
    origin.reply("/x", Reply::status(503));
    assert_eq!(client.get(&node, "t.test", "/x").await.status, 503);
}

#[tokio::test(flavor = "multi_thread")]
async fn no_cache_responses_are_revalidated_before_every_reuse() {
    let (origin, node, client) = setup().await;
    origin.reply(
        "/x",
        Reply::ok()
            .only("cache-control", "no-cache")
            .header("etag", "\"e\"")
            .body("v"),
    );
    for _ in 0..3 {
        assert_eq!(client.get(&node, "t.test", "/x").await.text(), "v");
    }
    assert_eq!(origin.hits("/x"), 3);
    assert!(origin.seen()[2].headers.get("if-none-match").is_some());
}

#[tokio::test(flavor = "multi_thread")]
async fn a_request_with_no_cache_goes_to_the_origin() {
    let (origin, node, client) = setup().await;
    client.get(&node, "t.test", "/x").await;
    client
        .get_with(&node, "t.test", "/x", &[("cache-control", "no-cache")])
        .await;
    assert_eq!(origin.hits("/x"), 2);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_successful_post_invalidates_the_cached_key() {
    let (origin, node, client) = setup().await;
    origin.reply("/x", Reply::ok());
    client.get(&node, "t.test", "/x").await;
    client
        .expect_cache_status(&node, "t.test", "/x", "hit")
        .await;
    let post = client
        .send(
            &node,
            Method::POST,
            "t.test",
            "/x",
            &[],
            Bytes::from_static(b"change"),
        )
        .await;
    assert_eq!(post.status, 200);
    client
        .expect_cache_status(&node, "t.test", "/x", "fwd=uri-miss")
        .await;
    assert_eq!(
        origin
            .seen()
            .iter()
            .filter(|s| s.method == Method::GET)
            .count(),
        2
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn head_is_answered_from_the_stored_get() {
    let (origin, node, client) = setup().await;
    origin.reply("/x", Reply::ok().body("0123456789"));
    client.get(&node, "t.test", "/x").await;
    let head = client
        .send(&node, Method::HEAD, "t.test", "/x", &[], Bytes::new())
        .await;
    assert_eq!(head.status, 200);
    assert!(head.body.is_empty());
    assert_eq!(head.header("content-length"), Some("10"));
    assert_eq!(origin.hits("/x"), 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_fill_that_fails_midway_is_an_error_and_is_not_stored() {
    // An origin that promises 1,000 bytes for /small and 100,000 for
    // /large, and closes after 10.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let accepted = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let count = accepted.clone();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            count.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            tokio::spawn(async move {
                let mut buf = [0u8; 4096];
                let n = s.read(&mut buf).await.unwrap_or(0);
                let large = buf[..n].starts_with(b"GET /large");
                let length = if large { 100_000 } else { 1000 };
                let head = format!(
                    "HTTP/1.1 200 OK\r\ncontent-length: {length}\r\ncache-control: max-age=60\r\n\r\n0123456789"
                );
                let _ = s.write_all(head.as_bytes()).await;
            });
        }
    });
    let node = Node::start(&tenant(
        "t",
        &["t.test"],
        "builtin:default",
        &[("origin", &format!("http://{addr}"))],
    ));
    let client = Client::new();
    for _ in 0..2 {
        // A small body is read whole before the response starts: its
        // failure is a 502.
        let r = client.get(&node, "t.test", "/small").await;
        assert_eq!(r.status, 502, "{}", r.text());
        // A large one streams: the head is forwarded at once, the broken
        // body then reaches the client as an error, never as a clean
        // (truncated) end.
        let r = client.try_get(&node, "t.test", "/large").await;
        assert!(
            r.is_err(),
            "a truncated body was taken for a whole one: {r:?}"
        );
    }
    // Neither was stored: every request went to the origin.
    assert_eq!(accepted.load(std::sync::atomic::Ordering::SeqCst), 4);
}

#[tokio::test(flavor = "multi_thread")]
async fn surrogate_control_wins_over_cache_control_and_is_not_forwarded() {
    let (origin, node, client) = setup().await;
    origin.reply(
        "/x",
        Reply::ok()
            .only("cache-control", "max-age=5")
            .header("surrogate-control", "max-age=100"),
    );
    let (a, b) = twice(&client, &node, "/x").await;
    assert!(
        b.cache_status().contains("ttl=100") || b.cache_status().contains("ttl=99"),
        "{}",
        b.cache_status()
    );
    assert!(a.header("surrogate-control").is_none());
    assert_eq!(b.header("cache-control"), Some("max-age=5"));
}

#[tokio::test(flavor = "multi_thread")]
async fn heuristic_freshness_from_last_modified_is_used_without_explicit_freshness() {
    let (origin, node, client) = setup().await;
    let now = SystemTime::now();
    origin.reply(
        "/x",
        Reply::status(200)
            .header("date", &httpdate::fmt_http_date(now))
            .header(
                "last-modified",
                &httpdate::fmt_http_date(now - Duration::from_secs(1000)),
            ),
    );
    let (_, b) = twice(&client, &node, "/x").await;
    assert_eq!(origin.hits("/x"), 1);
    assert!(
        b.cache_status().contains("ttl=100") || b.cache_status().contains("ttl=99"),
        "{}",
        b.cache_status()
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn vary_star_and_uncacheable_statuses_are_not_stored() {
    let (origin, node, client) = setup().await;
    origin.reply("/star", Reply::ok().header("vary", "*"));
    origin.reply(
        "/found",
        Reply::status(302).header("location", "/elsewhere"),
    );
    origin.reply(
        "/fresh-302",
        Reply::status(302)
            .header("location", "/elsewhere")
            .header("cache-control", "max-age=60"),
    );
    for path in ["/star", "/found", "/fresh-302"] {
        twice(&client, &node, path).await;
    }
    assert_eq!(origin.hits("/star"), 2);
    assert_eq!(origin.hits("/found"), 2);
    assert_eq!(
        origin.hits("/fresh-302"),
        1,
        "an explicitly fresh 302 is stored"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn an_unsafe_request_invalidates_its_location_and_content_location_on_the_same_host() {
    let (origin, node, client) = setup().await;
    for path in ["/item", "/list", "/elsewhere"] {
        client.get(&node, "t.test", path).await;
        client
            .expect_cache_status(&node, "t.test", path, "hit")
            .await;
    }
    origin.reply(
        "/new",
        Reply::status(201)
            .header("location", "/item")
            .header("content-location", "http://t.test/list")
            .header("link", "</elsewhere>"),
    );
    let r = client
        .send(
            &node,
            Method::POST,
            "t.test",
            "/new",
            &[],
            Bytes::from_static(b"{}"),
        )
        .await;
    assert_eq!(r.status, 201);
    client
        .expect_cache_status(&node, "t.test", "/item", "fwd=uri-miss")
        .await;
    client
        .expect_cache_status(&node, "t.test", "/list", "fwd=uri-miss")
        .await;
    client
        .expect_cache_status(&node, "t.test", "/elsewhere", "hit")
        .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn cache_status_is_on_every_response_and_shows_the_key_when_debugging() {
    let origin = Origin::start("origin").await;
    let config = tenant_with(
        "t",
        &["t.test"],
        "builtin:default",
        &[("origin", &origin.url())],
        "debug_cache_key = true",
    );
    let node = Node::start(&config);
    let client = Client::new();
    let r = client.get(&node, "t.test", "/k?q=1").await;
    assert!(
        r.cache_status().ends_with("key=\"t.test/k?q=1\""),
        "{}",
        r.cache_status()
    );
    let unknown = client.get(&node, "nobody.test", "/").await;
    assert_eq!(unknown.status, 404);
    assert_eq!(unknown.cache_status(), "Outpost; detail=generated");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_client_accepting_max_stale_gets_the_stale_copy() {
    let (origin, node, client) = setup().await;
    origin.reply(
        "/x",
        Reply::ok().only("cache-control", "max-age=1").body("old"),
    );
    client.get(&node, "t.test", "/x").await;
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let r = client
        .get_with(&node, "t.test", "/x", &[("cache-control", "max-stale=60")])
        .await;
    assert_eq!(r.text(), "old");
    assert!(r.cache_status().contains("hit"), "{}", r.cache_status());
    assert_eq!(origin.hits("/x"), 1);
    // Without it, the stale copy is not used.
    client.get(&node, "t.test", "/x").await;
    assert_eq!(origin.hits("/x"), 2);
}

#[tokio::test(flavor = "multi_thread")]
async fn connect_is_refused() {
    let (origin, node, client) = setup().await;
    let r = client
        .send(&node, Method::CONNECT, "t.test", "/", &[], Bytes::new())
        .await;
    assert_eq!(r.status, 405);
    assert_eq!(origin.total(), 0);
}
