//! A cache disconnected from the origin may serve a stale copy (RFC 9111
//! section 4.2.4): when no backend can be reached, a stored response is
//! served stale within `cache.stale_if_unreachable_s`, except where its
//! `must-revalidate`, `proxy-revalidate`, `no-cache` or `s-maxage` forbids
//! it. Each stored response here arrives stale (`Age` past `max-age`), so
//! the next request goes to the origin.

use std::net::SocketAddr;
use std::time::Duration;

use outpost_e2e::{admin_section, tenant, Breaker, Client, Node, Origin, Reply};

/// A response stale from the moment it is stored.
fn stale_reply(cache_control: &str, body: &str) -> Reply {
    Reply::ok()
        .only("cache-control", cache_control)
        .header("age", "120")
        .body(body.to_string())
}

/// A node with one tenant `t` in front of `backend`, with `extra` in its
/// `[cache]` section.
fn node(backend: &str, cache: &str) -> Node {
    Node::start(&format!(
        "{}[cache]\n{cache}\n{}",
        admin_section(),
        tenant("t", &["t.test"], "builtin:default", &[("origin", backend)])
    ))
}

/// Stores `/x` with `cache_control`, stops the origin and asks again.
async fn asked_again_with_the_origin_down(cache_control: &str) -> outpost_e2e::Resp {
    let origin = Origin::start("origin").await;
    origin.reply("/x", stale_reply(cache_control, "kept"));
    let node = node(&origin.url(), "");
    let client = Client::new();
    assert_eq!(client.get(&node, "t.test", "/x").await.text(), "kept");
    origin.stop();
    until_refused(&origin).await;
    client.get(&node, "t.test", "/x").await
}

/// The origin's error, though a stale copy was stored (`fwd=stale`: the
/// request went forward because of it).
fn refused_with_the_copy_there(r: &outpost_e2e::Resp) {
    assert_eq!(r.status, 502, "{}", r.text());
    let status = r.cache_status();
    assert!(status.contains("fwd=stale"), "{status}");
    assert!(status.contains("detail=origin-error"), "{status}");
}

/// Waits until the stopped origin's address refuses connections.
async fn until_refused(origin: &Origin) {
    let addr = origin.url().trim_start_matches("http://").to_string();
    while tokio::net::TcpStream::connect(&addr).await.is_ok() {
        tokio::task::yield_now().await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_stale_copy_is_served_when_the_origin_refuses_connections() {
    let r = asked_again_with_the_origin_down("max-age=60").await;
    assert_eq!((r.status.as_u16(), r.text().as_str()), (200, "kept"));
    let status = r.cache_status();
    assert!(status.contains("fwd=stale"), "{status}");
    assert!(
        status.contains("detail=stale-unreachable-connect"),
        "{status}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn must_revalidate_is_not_served_stale_when_the_origin_is_down() {
    let r = asked_again_with_the_origin_down("max-age=60, must-revalidate").await;
    refused_with_the_copy_there(&r);
}

#[tokio::test(flavor = "multi_thread")]
async fn proxy_revalidate_is_not_served_stale_when_the_origin_is_down() {
    let r = asked_again_with_the_origin_down("max-age=60, proxy-revalidate").await;
    refused_with_the_copy_there(&r);
}

#[tokio::test(flavor = "multi_thread")]
async fn no_cache_is_not_served_stale_when_the_origin_is_down() {
    let r = asked_again_with_the_origin_down("max-age=60, no-cache").await;
    refused_with_the_copy_there(&r);
}

#[tokio::test(flavor = "multi_thread")]
async fn s_maxage_is_not_served_stale_when_the_origin_is_down() {
    let r = asked_again_with_the_origin_down("s-maxage=60").await;
    refused_with_the_copy_there(&r);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_stale_copy_is_served_when_the_origin_does_not_answer_in_time() {
    let origin = Origin::start("origin").await;
    origin.reply("/x", stale_reply("max-age=60", "kept"));
    let config = format!(
        "{}[[tenant]]\nid = \"t\"\nhosts = [\"t.test\"]\npolicy = \"builtin:default\"\n\
         [tenant.backends.origin]\nurl = {:?}\nfirst_byte_timeout_ms = 300\n",
        admin_section(),
        origin.url()
    );
    let node = Node::start(&config);
    let client = Client::new();
    assert_eq!(client.get(&node, "t.test", "/x").await.text(), "kept");
    origin.reply(
        "/x",
        Reply::ok().body("late").delay(Duration::from_secs(30)),
    );
    let r = client.get(&node, "t.test", "/x").await;
    assert_eq!((r.status.as_u16(), r.text().as_str()), (200, "kept"));
    assert!(
        r.cache_status()
            .contains("detail=stale-unreachable-timeout"),
        "{}",
        r.cache_status()
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_stale_copy_is_served_when_the_origin_closes_before_answering() {
    let origin = Origin::start("origin").await;
    origin.reply("/x", stale_reply("max-age=60", "kept"));
    let addr: SocketAddr = origin.url().trim_start_matches("http://").parse().unwrap();
    let node = node(&origin.url(), "");
    let client = Client::new();
    assert_eq!(client.get(&node, "t.test", "/x").await.text(), "kept");
    // The same address now reads each request and closes without a word.
    origin.stop();
    let breaker = Breaker::start_at(addr).await;
    let r = client.get(&node, "t.test", "/x").await;
    assert!(breaker.requests() > 0, "the request reached the breaker");
    assert_eq!((r.status.as_u16(), r.text().as_str()), (200, "kept"));
    assert!(
        r.cache_status().contains("detail=stale-unreachable-"),
        "{}",
        r.cache_status()
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn stale_if_unreachable_zero_answers_the_error_instead() {
    let origin = Origin::start("origin").await;
    origin.reply("/x", stale_reply("max-age=60", "kept"));
    let node = node(&origin.url(), "stale_if_unreachable_s = 0");
    let client = Client::new();
    assert_eq!(client.get(&node, "t.test", "/x").await.text(), "kept");
    origin.stop();
    until_refused(&origin).await;
    refused_with_the_copy_there(&client.get(&node, "t.test", "/x").await);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_copy_stale_for_longer_than_the_window_is_not_served() {
    let origin = Origin::start("origin").await;
    // Stale by 2 h, against a window of 1 h (the default).
    origin.reply(
        "/x",
        Reply::ok()
            .only("cache-control", "max-age=60")
            .header("age", "7260")
            .body("old"),
    );
    let node = node(&origin.url(), "stale_retention_s = 86400");
    let client = Client::new();
    assert_eq!(client.get(&node, "t.test", "/x").await.text(), "old");
    origin.stop();
    until_refused(&origin).await;
    refused_with_the_copy_there(&client.get(&node, "t.test", "/x").await);
}
