//! Members' health and what the pool does about it: active probes take a
//! member out and back, passive ejection after failures in a row (never
//! more than half a pool), a pool with no healthy member failing fast so
//! the policy's chain moves on, retries only where they are safe and within
//! the budget, and the first-byte and between-bytes timeouts.

use std::time::Duration;

use http::Method;
use outpost_e2e::*;

/// A tenant `t` whose backend `origin` is a pool of `members`, with more
/// backend settings.
fn pool(members: &[String], settings: &str) -> String {
    let members: Vec<String> = members
        .iter()
        .map(|u| format!("{{ url = {u:?} }}"))
        .collect();
    format!(
        "[[tenant]]\nid = \"t\"\nhosts = [\"t.test\"]\npolicy = \"builtin:default\"\n\
         [tenant.backends.origin]\nmembers = [{}]\nconnect_timeout_ms = 1000\n{settings}\n",
        members.join(", ")
    )
}

/// Which origin answered each of `n` GETs of distinct paths under `prefix`.
async fn answered_by(client: &Client, node: &Node, prefix: &str, n: usize) -> Vec<String> {
    let mut names = Vec::new();
    for i in 0..n {
        let r = client.get(node, "t.test", &format!("{prefix}/{i}")).await;
        names.push(format!(
            "{} {}",
            r.status.as_u16(),
            r.text().split(' ').next().unwrap_or("")
        ));
    }
    names
}

const NO_STORE: &str = "no-store";

async fn uncacheable(name: &str) -> Origin {
    let origin = Origin::start(name).await;
    origin.reply_to_all(Reply::ok().only("cache-control", NO_STORE));
    origin
}

#[tokio::test(flavor = "multi_thread")]
async fn a_member_failing_its_probes_is_taken_out_and_comes_back_when_they_pass() {
    let (a, b) = (uncacheable("a").await, uncacheable("b").await);
    let probe = "slow_start_ms = 0\n[tenant.backends.origin.probe]\npath = \"/health\"\n\
                 interval_ms = 100\ntimeout_ms = 500\nwindow = 3\nthreshold = 2\n";
    let node = Node::start(&pool(&[a.url(), b.url()], probe));
    let client = Client::new();
    let both = answered_by(&client, &node, "/start", 10).await;
    assert!(
        both.contains(&"200 a".to_string()) && both.contains(&"200 b".to_string()),
        "{both:?}"
    );

    a.reply("/health", Reply::status(503));
    assert!(
        node.wait_for_log("member down: probe got status 503", Duration::from_secs(10))
            .await,
        "{}",
        node.log()
    );
    let down = answered_by(&client, &node, "/down", 20).await;
    assert!(
        down.iter().all(|n| n == "200 b"),
        "a took requests while down: {down:?}"
    );

    a.reply("/health", Reply::ok());
    assert!(
        node.wait_for_log("member up", Duration::from_secs(10))
            .await,
        "{}",
        node.log()
    );
    let up = answered_by(&client, &node, "/up", 10).await;
    assert!(
        up.contains(&"200 a".to_string()),
        "a did not come back: {up:?}"
    );
    assert!(a.hits("/health") >= 4, "probes reached the member");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_member_that_keeps_failing_is_ejected_then_readmitted() {
    let (a, b) = (uncacheable("a").await, uncacheable("b").await);
    a.reply_to_all(Reply::status(503).header("cache-control", NO_STORE));
    let settings = "slow_start_ms = 0\n[tenant.backends.origin.ejection]\n\
                    consecutive_failures = 3\nbase_ejection_ms = 3000\n";
    let node = Node::start(&pool(&[a.url(), b.url()], settings));
    let client = Client::new();
    // Round-robin: a answers every other request until its third 503.
    let before = answered_by(&client, &node, "/before", 6).await;
    assert_eq!(
        before.iter().filter(|n| *n == "503 a").count(),
        3,
        "{before:?}"
    );
    assert!(
        node.log()
            .contains("3 failures in a row: member taken out for 3 s"),
        "{}",
        node.log()
    );
    let ejected = answered_by(&client, &node, "/ejected", 20).await;
    assert!(ejected.iter().all(|n| n == "200 b"), "{ejected:?}");
    assert_eq!(a.total(), 3);

    a.reply_to_all(Reply::ok().only("cache-control", NO_STORE));
    assert!(until_only_includes(&client, &node, "a", Duration::from_secs(10)).await);
}

/// Sends GETs until `name` answers one (at most `limit`).
async fn until_only_includes(client: &Client, node: &Node, name: &str, limit: Duration) -> bool {
    let deadline = tokio::time::Instant::now() + limit;
    let mut i = 0;
    while tokio::time::Instant::now() < deadline {
        i += 1;
        let r = client.get(node, "t.test", &format!("/back/{i}")).await;
        if r.status == 200 && r.text().starts_with(name) {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    false
}

#[tokio::test(flavor = "multi_thread")]
async fn passive_ejection_never_takes_out_more_than_half_of_a_pool() {
    let (a, b) = (Origin::start("a").await, Origin::start("b").await);
    for o in [&a, &b] {
        o.reply_to_all(Reply::status(503).header("cache-control", NO_STORE));
    }
    let node = Node::start(&pool(
        &[a.url(), b.url()],
        "[tenant.backends.origin.ejection]\nconsecutive_failures = 2\n",
    ));
    let client = Client::new();
    let answers = answered_by(&client, &node, "/all", 30).await;
    assert!(answers.iter().all(|n| n.starts_with("503 ")), "{answers:?}");
    assert_eq!(
        node.log().matches("member taken out").count(),
        1,
        "{}",
        node.log()
    );
    assert!(!node.log().contains("no healthy member"), "{}", node.log());
}

#[tokio::test(flavor = "multi_thread")]
async fn a_pool_with_no_healthy_member_fails_fast_and_the_chain_moves_on() {
    let (primary, secondary) = (
        Origin::start("primary").await,
        Origin::start("secondary").await,
    );
    primary.reply("/health", Reply::status(500));
    let config = format!(
        "[[tenant]]\nid = \"t\"\nhosts = [\"t.test\"]\npolicy = {}\n\
         [tenant.backends.primary]\nurl = {:?}\n\
         [tenant.backends.primary.probe]\npath = \"/health\"\ninterval_ms = 200\ninitial = 0\n\
         [tenant.backends.secondary]\nurl = {:?}\n\
         [[tenant]]\nid = \"alone\"\nhosts = [\"alone.test\"]\npolicy = \"builtin:default\"\n\
         [tenant.backends.origin]\nurl = {:?}\n\
         [tenant.backends.origin.probe]\npath = \"/health\"\ninterval_ms = 200\ninitial = 0\n",
        example("origin-fallback"),
        primary.url(),
        secondary.url(),
        primary.url(),
    );
    let node = Node::start(&config);
    let client = Client::new();
    let r = client.get(&node, "t.test", "/page").await;
    assert_eq!(
        (r.status.as_u16(), r.text()),
        (200, "secondary /page".to_string())
    );
    let r = client.get(&node, "alone.test", "/page").await;
    assert_eq!(r.status, 503, "{}", r.text());
    assert!(r.text().contains("has no healthy member"), "{}", r.text());
    assert_eq!(
        primary.hits("/page"),
        0,
        "a member that never passed its probe got the request"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_post_is_never_replayed_after_it_was_sent_but_a_get_is() {
    let (x, y) = (Breaker::start().await, Breaker::start().await);
    let node = Node::start(&pool(
        &[x.url(), y.url()],
        "[tenant.backends.origin.ejection]\nconsecutive_failures = 0\n",
    ));
    let client = Client::new();
    let r = client
        .send(
            &node,
            Method::POST,
            "t.test",
            "/order",
            &[],
            Default::default(),
        )
        .await;
    assert_eq!(r.status, 502);
    assert_eq!(x.requests() + y.requests(), 1, "the POST was sent twice");
    let r = client.get(&node, "t.test", "/page").await;
    assert_eq!(r.status, 502);
    assert_eq!(
        x.requests() + y.requests(),
        3,
        "the GET went to the other member"
    );
    assert!(x.requests() >= 1 && y.requests() >= 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn the_retry_budget_caps_how_much_retries_add() {
    let breakers = [
        Breaker::start().await,
        Breaker::start().await,
        Breaker::start().await,
    ];
    let urls: Vec<String> = breakers.iter().map(Breaker::url).collect();
    let node = Node::start(&pool(
        &urls,
        "retries = 2\nretry_budget_percent = 20\n[tenant.backends.origin.ejection]\nconsecutive_failures = 0\n",
    ));
    let client = Client::new();
    for i in 0..50 {
        let r = client.get(&node, "t.test", &format!("/b/{i}")).await;
        assert_eq!(r.status, 502);
    }
    let sent: usize = breakers.iter().map(Breaker::requests).sum();
    // Without a budget: 150 (each GET on all three members). With it: the
    // 50 first attempts, 20 % more, and the few any backend may retry.
    assert!(
        (50..=63).contains(&sent),
        "{sent} requests reached the members for 50 GETs"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_slow_origin_hits_the_first_byte_timeout_and_the_chain_moves_on() {
    let (primary, secondary) = (
        Origin::start("primary").await,
        Origin::start("secondary").await,
    );
    primary.reply_to_all(Reply::ok().delay(Duration::from_secs(5)));
    let config = format!(
        "[[tenant]]\nid = \"t\"\nhosts = [\"t.test\"]\npolicy = {}\n\
         [tenant.backends.primary]\nurl = {:?}\nfirst_byte_timeout_ms = 300\n\
         [tenant.backends.secondary]\nurl = {:?}\n",
        example("origin-fallback"),
        primary.url(),
        secondary.url(),
    );
    let node = Node::start(&config);
    let r = Client::new().get(&node, "t.test", "/slow").await;
    assert_eq!(
        (r.status.as_u16(), r.text()),
        (200, "secondary /slow".to_string())
    );
    assert_eq!(primary.hits("/slow"), 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_stalled_body_is_cut_and_the_client_sees_it_aborted() {
    let origin = Origin::start("origin").await;
    let (reply, _) = Reply::ok()
        .only("cache-control", NO_STORE)
        .generated(1 << 20, Duration::from_secs(5));
    origin.reply("/stall", reply);
    let node = Node::start(&pool(&[origin.url()], "between_bytes_timeout_ms = 300"));
    let result = Client::new().try_get(&node, "t.test", "/stall").await;
    let error = result
        .map(|r| r.body.len())
        .expect_err("a clean short body");
    assert!(error.contains("body failed"), "{error}");
}

/// `n` chunks of 64 KiB, `pause` apart: an upload from a slow client.
fn paced_upload(n: u64, pause: Duration) -> TestBody {
    let chunks = futures::stream::unfold(0, move |i| async move {
        if i == n {
            return None;
        }
        if i > 0 {
            tokio::time::sleep(pause).await;
        }
        let frame = hyper::body::Frame::data(bytes::Bytes::from(vec![7u8; 64 * 1024]));
        Some((Ok::<_, std::convert::Infallible>(frame), i + 1))
    });
    http_body_util::BodyExt::boxed(http_body_util::StreamBody::new(chunks))
}

#[tokio::test(flavor = "multi_thread")]
async fn an_upload_slower_than_the_first_byte_timeout_still_reaches_the_origin() {
    let origin = Origin::start("origin").await;
    origin.reply("/upload", Reply::status(201));
    let node = Node::start(&pool(&[origin.url()], "first_byte_timeout_ms = 500"));
    // 1.4 s of upload, never a pause of more than 200 ms.
    let body = paced_upload(8, Duration::from_millis(200));
    let r = Client::new()
        .open(&node, Method::PUT, "t.test", "/upload", &[], body)
        .await
        .unwrap();
    assert_eq!(r.status(), 201, "{}", node.log());
    let seen = origin.seen();
    assert_eq!(seen[0].body_len, 8 * 64 * 1024);
    // A client that pauses for longer than the first-byte timeout (but not
    // than its own body timeout) is waited for: the pause is not the
    // origin's.
    let body = paced_upload(3, Duration::from_millis(800));
    let r = Client::new()
        .open(&node, Method::PUT, "t.test", "/upload", &[], body)
        .await
        .unwrap();
    assert_eq!(r.status(), 201, "{}", node.log());
    assert_eq!(origin.seen()[1].body_len, 3 * 64 * 1024);
}

#[tokio::test(flavor = "multi_thread")]
async fn an_origin_that_stops_reading_an_upload_gets_a_504() {
    // Accepts, reads nothing, answers nothing.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let holder = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((stream, _)) = listener.accept().await {
            held.push(stream);
        }
    });
    let node = Node::start(&pool(&[url], "first_byte_timeout_ms = 500"));
    let r = Client::new()
        .open(
            &node,
            Method::PUT,
            "t.test",
            "/upload",
            &[],
            upload_body(256 << 20),
        )
        .await
        .expect("a response while the upload is stuck");
    assert_eq!(r.status(), 504);
    holder.abort();
}
