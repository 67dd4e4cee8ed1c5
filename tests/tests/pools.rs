//! Backends that are pools: members with weights, the balancing
//! algorithms (smooth weighted round-robin, least-outstanding, two choices,
//! consistent hashing with bounded load), and a member that cannot be
//! connected to skipped for the next one without the client seeing an
//! error.

use std::time::Duration;

use http::Method;
use outpost_e2e::*;

/// A tenant whose backend `origin` is a pool of these members.
fn pool_config(members: &[(String, u32)]) -> String {
    pool_config_with(members, "")
}

/// [`pool_config`] with more settings of the backend.
fn pool_config_with(members: &[(String, u32)], settings: &str) -> String {
    let members: Vec<String> = members
        .iter()
        .map(|(url, weight)| format!("{{ url = {url:?}, weight = {weight} }}"))
        .collect();
    format!(
        "[[tenant]]\nid = \"t\"\nhosts = [\"t.test\"]\npolicy = \"builtin:default\"\n\
         [tenant.backends.origin]\nmembers = [{}]\nconnect_timeout_ms = 1000\n{settings}\n",
        members.join(", ")
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn a_pool_spreads_requests_by_weight() {
    let origins = [
        Origin::start("a").await,
        Origin::start("b").await,
        Origin::start("c").await,
    ];
    let members: Vec<(String, u32)> = origins
        .iter()
        .zip([1, 2, 3])
        .map(|(o, w)| (o.url(), w))
        .collect();
    let node = Node::start(&pool_config(&members));
    let client = Client::new();
    // Distinct uncacheable paths: every request goes to a member.
    for i in 0..600 {
        let r = client.get(&node, "t.test", &format!("/w/{i}")).await;
        assert_eq!(r.status, 200, "{}", r.text());
    }
    let counts: Vec<usize> = origins.iter().map(Origin::total).collect();
    for (count, expected) in counts.iter().zip([100, 200, 300]) {
        assert!(
            count.abs_diff(expected) <= expected / 20,
            "counts {counts:?}, expected 100 / 200 / 300"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_member_that_refuses_connections_is_skipped_for_the_next() {
    let live = Origin::start("live").await;
    let node = Node::start(&pool_config(&[(closed_port_url(), 1), (live.url(), 1)]));
    let client = Client::new();
    for i in 0..20 {
        let r = client.get(&node, "t.test", &format!("/f/{i}")).await;
        assert_eq!(r.status, 200, "{}", r.text());
        assert_eq!(r.text(), format!("live /f/{i}"));
    }
    assert_eq!(live.total(), 20);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_post_whose_member_refuses_the_connection_goes_whole_to_the_next() {
    let live = Origin::start("live").await;
    let node = Node::start(&pool_config(&[(closed_port_url(), 1), (live.url(), 1)]));
    let client = Client::new();
    // Round-robin: every other POST meets the closed member first.
    for _ in 0..4 {
        let r = post_order(&client, &node).await;
        assert_eq!(r.status, 200, "{}", r.text());
    }
    let seen = live.seen();
    assert_eq!(seen.len(), 4);
    assert!(seen
        .iter()
        .all(|s| s.method == Method::POST && s.body_len == 1000));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_post_to_http2_members_is_replayed_when_small_and_never_when_it_streams() {
    let live = Origin::start("live").await;
    let members = [(closed_port_url(), 1), (live.url(), 1)];
    // HTTP/2 with prior knowledge: the request goes to the pooled client,
    // which gives nothing back when it cannot connect; the body (1,000
    // bytes, under `replay_body_kb`) was read whole, so it goes again.
    let node = Node::start(&pool_config_with(&members, "protocol = \"h2c\""));
    let client = Client::new();
    for _ in 0..4 {
        let r = post_order(&client, &node).await;
        assert_eq!(r.status, 200, "{}", r.text());
    }
    let seen = live.seen();
    assert_eq!(seen.len(), 4);
    assert!(seen.iter().all(|s| s.method == Method::POST
        && s.body_len == 1000
        && s.version == http::Version::HTTP_2));
    // With every body streamed (`replay_body_kb = 0`), a POST that met the
    // closed member first fails rather than being sent twice.
    let live = Origin::start("live").await;
    let members = [(closed_port_url(), 1), (live.url(), 1)];
    let settings = "protocol = \"h2c\"\nreplay_body_kb = 0";
    let node = Node::start(&pool_config_with(&members, settings));
    let statuses: Vec<u16> = {
        let mut all = Vec::new();
        for _ in 0..4 {
            all.push(post_order(&client, &node).await.status.as_u16());
        }
        all
    };
    assert_eq!(
        statuses.iter().filter(|s| **s == 200).count(),
        2,
        "{statuses:?}"
    );
    assert_eq!(
        statuses.iter().filter(|s| **s == 502).count(),
        2,
        "{statuses:?}"
    );
    assert!(live.seen().iter().all(|s| s.body_len == 1000));
}

#[tokio::test(flavor = "multi_thread")]
async fn an_http2_member_is_bounded_by_max_streams_not_max_connections() {
    let origin = Origin::start("slow").await;
    origin.reply_to_all(Reply::ok().delay(Duration::from_secs(2)));
    let settings = "protocol = \"h2c\"\nmax_connections = 1\nmax_streams = 3";
    let node = Node::start(&pool_config_with(&[(origin.url(), 1)], settings));
    let client = Client::new();
    let answers = futures::future::join_all((0..5).map(|i| {
        let client = client.clone();
        let node = &node;
        async move {
            client
                .send(
                    node,
                    Method::POST,
                    "t.test",
                    &format!("/s/{i}"),
                    &[],
                    "x".into(),
                )
                .await
                .status
                .as_u16()
        }
    }))
    .await;
    // One connection carries three requests at once; the other two find
    // the member at its bound (503: no member may take them).
    assert_eq!(origin.max_in_flight(), 3, "{answers:?}");
    assert_eq!(
        answers.iter().filter(|s| **s == 200).count(),
        3,
        "{answers:?}"
    );
    assert_eq!(
        answers.iter().filter(|s| **s == 503).count(),
        2,
        "{answers:?}"
    );
    assert!(origin
        .seen()
        .iter()
        .all(|s| s.version == http::Version::HTTP_2));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_pool_config_that_cannot_work_is_refused_at_load() {
    let dir = scratch_dir();
    let both = pool_config(&[("http://127.0.0.1:9".into(), 1)])
        .replace("members =", "url = \"http://127.0.0.1:8\"\nmembers =");
    let err = refused_config(&dir, "both.toml", &both);
    assert!(
        err.contains("tenant[0].backends.origin.url") && err.contains("not both"),
        "{err}"
    );
    let mixed = pool_config(&[
        ("http://127.0.0.1:9".into(), 1),
        ("https://127.0.0.1:8".into(), 1),
    ]);
    let err = refused_config(&dir, "mixed.toml", &mixed);
    assert!(err.contains("tenant[0].backends.origin.members"), "{err}");
    let zero = pool_config(&[("http://127.0.0.1:9".into(), 0)]);
    let err = refused_config(&dir, "zero.toml", &zero);
    assert!(err.contains("weight"), "{err}");
    let one = [("http://127.0.0.1:9".to_string(), 1)];
    let factor = pool_config_with(&one, "balance = \"hash\"\nhash_balance_factor = 50");
    let err = refused_config(&dir, "factor.toml", &factor);
    assert!(
        err.contains("tenant[0].backends.origin.hash_balance_factor"),
        "{err}"
    );
    let probe = pool_config_with(
        &one,
        "[tenant.backends.origin.probe]\nwindow = 4\nthreshold = 5",
    );
    let err = refused_config(&dir, "probe.toml", &probe);
    assert!(
        err.contains("tenant[0].backends.origin.probe.threshold"),
        "{err}"
    );
    let balance = pool_config_with(&one, "balance = \"random\"");
    let err = refused_config(&dir, "balance.toml", &balance);
    assert!(
        err.contains("balance") && err.contains("least-outstanding"),
        "{err}"
    );
}

/// Equal-weight members at these origins.
fn equal(origins: &[&Origin]) -> Vec<(String, u32)> {
    origins.iter().map(|o| (o.url(), 1)).collect()
}

/// `n` GETs of distinct paths, started 150 ms apart and answered in any
/// order: a request a slow member holds keeps it busy while later ones
/// start.
async fn spaced_requests(node: &Node, n: usize) {
    let client = Client::new();
    let mut pending = Vec::new();
    for i in 0..n {
        pending.push(client.spawn_send(node.addr, Method::GET, "t.test", &format!("/s/{i}")));
        tokio::time::sleep(Duration::from_millis(150)).await;
    }
    for p in pending {
        assert_eq!(p.await.unwrap().status, 200);
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn least_outstanding_and_two_choices_send_new_requests_to_the_idle_member() {
    for balance in ["least-outstanding", "power-of-two"] {
        let (slow, fast) = (Origin::start("slow").await, Origin::start("fast").await);
        // Held longer than the 10 requests take to start.
        slow.reply_to_all(Reply::ok().delay(Duration::from_secs(3)));
        let node = Node::start(&pool_config_with(
            &equal(&[&slow, &fast]),
            &format!("balance = {balance:?}"),
        ));
        spaced_requests(&node, 10).await;
        // While the slow member holds a request, every later one goes to
        // the idle member (two choices of two always draws both).
        assert!(
            slow.total() <= 1,
            "{balance}: the busy member got {} of 10",
            slow.total()
        );
        assert_eq!(fast.total() + slow.total(), 10);
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn hash_balancing_sends_each_key_to_one_member() {
    let origins = [
        Origin::start("a").await,
        Origin::start("b").await,
        Origin::start("c").await,
    ];
    for o in &origins {
        o.reply_to_all(Reply::ok().only("cache-control", "no-store"));
    }
    let node = Node::start(&pool_config_with(
        &equal(&[&origins[0], &origins[1], &origins[2]]),
        "balance = \"hash\"",
    ));
    let client = Client::new();
    for round in 0..3 {
        for k in 0..30 {
            let r = client.get(&node, "t.test", &format!("/k/{k}")).await;
            assert_eq!(r.status, 200, "round {round}");
        }
    }
    for k in 0..30 {
        let target = format!("/k/{k}");
        let owners: Vec<usize> = origins.iter().map(|o| o.hits(&target)).collect();
        assert!(
            owners.contains(&3) && owners.iter().sum::<usize>() == 3,
            "{target} went to {owners:?}"
        );
    }
    let spread: Vec<usize> = origins.iter().map(Origin::total).collect();
    assert!(spread.iter().all(|&n| n > 0), "keys per member {spread:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_hot_key_under_bounded_load_spills_to_the_next_member() {
    let origins = [
        Origin::start("a").await,
        Origin::start("b").await,
        Origin::start("c").await,
        Origin::start("d").await,
        Origin::start("e").await,
    ];
    for o in &origins {
        // Held long enough for all ten to be in flight at once.
        o.reply_to_all(Reply::ok().delay(Duration::from_secs(2)));
    }
    let members: Vec<&Origin> = origins.iter().collect();
    let node = Node::start(&pool_config_with(
        &equal(&members),
        "balance = \"hash\"\nhash_balance_factor = 125",
    ));
    // POSTs pass the cache (no coalescing): each is a request in flight
    // for the same key (the path) at once.
    let client = Client::new();
    let pending: Vec<_> = (0..10)
        .map(|_| client.spawn_send(node.addr, Method::POST, "t.test", "/hot"))
        .collect();
    for p in pending {
        assert_eq!(p.await.unwrap().status, 200);
    }
    let spread: Vec<usize> = origins.iter().map(Origin::total).collect();
    assert_eq!(spread.iter().sum::<usize>(), 10);
    // 10 in flight over 5 members: none may hold more than
    // ceil(1.25 * 10 / 5) = 3 of them.
    assert!(
        spread.iter().all(|&n| n <= 3),
        "one key melted a member: {spread:?}"
    );
    assert!(spread.iter().filter(|&&n| n > 0).count() >= 2, "{spread:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn an_idle_origin_connection_is_reused_until_keepalive_idle_ms_then_replaced() {
    let origin = Origin::start("origin").await;
    origin.reply_to_all(Reply::ok().only("cache-control", "no-store"));
    let node = Node::start(&pool_config_with(
        &[(origin.url(), 1)],
        "keepalive_idle_ms = 200",
    ));
    let client = Client::new();
    for i in 0..3 {
        let path = format!("/busy{i}");
        assert_eq!(client.get(&node, "t.test", &path).await.status, 200);
    }
    assert_eq!(origin.connections(), 1, "back-to-back requests share one");
    // Idle far longer than keepalive_idle_ms: the pooled one is gone.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(client.get(&node, "t.test", "/later").await.status, 200);
    assert_eq!(origin.connections(), 2);
}

#[tokio::test(flavor = "multi_thread")]
async fn two_host_names_of_a_tenant_share_one_origin_connection() {
    let origin = Origin::start("origin").await;
    origin.reply_to_all(Reply::ok().only("cache-control", "no-store"));
    let config = tenant(
        "t",
        &["a.test", "b.test"],
        "builtin:default",
        &[("origin", &origin.url())],
    );
    let node = Node::start(&config);
    let client = Client::new();
    for i in 0..6 {
        let host = if i % 2 == 0 { "a.test" } else { "b.test" };
        let r = client.get(&node, host, &format!("/api/{i}")).await;
        assert_eq!(r.status, 200);
    }
    // Each request named its own Host, and both went over one connection.
    let hosts: Vec<String> = origin
        .seen()
        .iter()
        .map(|s| s.headers["host"].to_str().unwrap().to_string())
        .collect();
    assert_eq!(
        hosts,
        ["a.test", "b.test", "a.test", "b.test", "a.test", "b.test"]
    );
    assert_eq!(origin.connections(), 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_stale_pooled_connection_is_retried_once_for_a_get_and_never_for_a_sent_post() {
    let origin = RawOrigin::start(Keeping::OneExchange).await;
    let node = Node::start(&pool_config(&[(origin.url(), 1)]));
    let client = Client::new();
    assert_eq!(client.get(&node, "t.test", "/first").await.status, 200);
    // The pooled connection closes as the GET is sent on it: sent again on
    // a new one, and the client never knows.
    let r = client.get(&node, "t.test", "/second").await;
    assert_eq!(r.status, 200);
    assert_eq!(r.text(), "ok");
    let get = |target: &str, connection| (format!("GET {target}"), connection);
    assert_eq!(
        origin.seen(),
        [get("/first", 0), get("/second", 0), get("/second", 1)]
    );
    // The same with a body that went out: not sent twice.
    assert_eq!(post_order(&client, &node).await.status, 502);
    let seen = origin.seen();
    assert_eq!(seen[3..], [("POST /order".to_string(), 1)]);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_connection_the_origin_closed_while_idle_is_not_reused() {
    let origin = RawOrigin::start(Keeping::IdleFor(Duration::from_millis(100))).await;
    let node = Node::start(&pool_config(&[(origin.url(), 1)]));
    let client = Client::new();
    assert_eq!(client.get(&node, "t.test", "/first").await.status, 200);
    assert!(origin.wait_closed(1, Duration::from_secs(10)).await);
    // A POST is never sent twice: had it gone on the closed connection, the
    // client would get a 502.
    assert_eq!(post_order(&client, &node).await.status, 200);
    assert_eq!(
        origin.seen(),
        [
            ("GET /first".to_string(), 0),
            ("POST /order".to_string(), 1)
        ]
    );
}

/// A POST of a 1,000-byte order to tenant `t`.
async fn post_order(client: &Client, node: &Node) -> Resp {
    let body = bytes::Bytes::from(vec![b'x'; 1000]);
    client
        .send(node, Method::POST, "t.test", "/order", &[], body)
        .await
}
