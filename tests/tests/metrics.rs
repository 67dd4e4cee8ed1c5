//! `/metrics` after known traffic: per-tenant requests, cache outcomes,
//! bytes and durations; guest failures and limits by kind; backend member
//! health, ejections, retries and connections; node counters; and series
//! that leave with a deleted tenant.

use http::Method;
use outpost_e2e::metrics::Scrape;
use outpost_e2e::*;

#[tokio::test(flavor = "multi_thread")]
async fn counters_after_known_traffic_match_what_the_clients_and_the_origin_saw() {
    let (origin, node, client) = start_one_tenant().await;
    origin.reply("/a", Reply::ok().body("hello"));
    origin.reply("/b", Reply::ok().body("0123456789"));
    origin.reply("/err", Reply::status(500).body("broken"));
    for path in ["/a", "/a", "/a", "/b", "/b", "/err"] {
        client.get(&node, "t.test", path).await;
    }
    assert_eq!(client.get(&node, "nobody.test", "/").await.status, 404);

    let m = Scrape::of(&client, &node).await;
    let t = ("tenant", "t");
    assert_eq!(
        m.value("outpost_requests_total", &[t, ("code", "2xx")]),
        5.0
    );
    assert_eq!(
        m.value("outpost_requests_total", &[t, ("code", "5xx")]),
        1.0
    );
    assert_eq!(
        m.value("outpost_requests_total", &[t, ("code", "4xx")]),
        0.0
    );
    let outcome = |o| m.value("outpost_cache_outcomes_total", &[t, ("outcome", o)]);
    assert_eq!(outcome("hit"), 3.0);
    assert_eq!(outcome("miss"), 3.0);
    assert_eq!(outcome("pass"), 0.0);
    assert_eq!(
        m.value("outpost_sent_bytes_total", &[t]),
        (3 * 5 + 2 * 10 + 6) as f64
    );
    assert_eq!(m.value("outpost_request_duration_seconds_count", &[t]), 6.0);
    // Every request took more than 0 s and all of them fit under +Inf.
    assert!(m.value("outpost_request_duration_seconds_sum", &[t]) > 0.0);
    assert_eq!(
        m.value(
            "outpost_request_duration_seconds_bucket",
            &[t, ("le", "+Inf")]
        ),
        6.0
    );
    // The origin saw the three misses; their heads and bodies were timed
    // and counted per member.
    assert_eq!(origin.total(), 3);
    let member = [t, ("backend", "origin")];
    assert_eq!(
        m.value("outpost_origin_first_byte_seconds_count", &member),
        3.0
    );
    assert_eq!(
        m.value("outpost_origin_received_bytes_total", &member),
        (5 + 10 + 6) as f64
    );
    assert_eq!(m.value("outpost_origin_member_up", &member), 1.0);
    assert_eq!(m.value("outpost_cache_objects", &[t]), 2.0);
    assert!(m.value("outpost_cache_bytes", &[t]) > 15.0);
    assert!(
        m.sum(
            "outpost_guest_duration_seconds_count",
            &[t, ("hook", "request")]
        ) >= 1.0
    );
    assert_eq!(
        m.value(
            "outpost_refused_requests_total",
            &[("reason", "unknown_host")]
        ),
        1.0
    );
    assert!(m.value("outpost_client_connections_accepted_total", &[]) >= 1.0);
    assert!(m.value("outpost_process_resident_memory_bytes", &[]) > 1e6);
    assert!(m.has("outpost_build_info", &[("wit_versions", "0.1,0.2,0.3")]));
}

#[tokio::test(flavor = "multi_thread")]
async fn guest_failures_and_limit_hits_are_counted_by_kind_for_their_tenant_only() {
    let origin = Origin::start("origin").await;
    let mut config = admin_section();
    config.push_str(&tenant(
        "bad",
        &["bad.test"],
        "example:misbehaving",
        &[("origin", &origin.url())],
    ));
    config.push_str("[tenant.limits]\nmemory_mb = 8\ncpu_ms = 50\n");
    config.push_str(&tenant_with(
        "good",
        &["good.test"],
        "builtin:default",
        &[("origin", &origin.url())],
        "max_body_mb = 1",
    ));
    let node = Node::start(&config);
    let client = Client::new();
    // Refused on its Content-Length, before any guest runs.
    {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut stream = tokio::net::TcpStream::connect(node.addr).await.unwrap();
        let head = "PUT /up HTTP/1.1\r\nHost: good.test\r\nContent-Length: 2097152\r\n\r\n";
        stream.write_all(head.as_bytes()).await.unwrap();
        let mut reply = [0u8; 12];
        stream.read_exact(&mut reply).await.unwrap();
        assert_eq!(&reply, b"HTTP/1.1 413");
    }
    assert_eq!(client.get(&node, "bad.test", "/trap").await.status, 500);
    assert_eq!(client.get(&node, "bad.test", "/trap").await.status, 500);
    assert_eq!(client.get(&node, "bad.test", "/loop").await.status, 500);
    assert_eq!(client.get(&node, "good.test", "/fine").await.status, 200);

    let m = Scrape::of(&client, &node).await;
    let bad = ("tenant", "bad");
    let failures = |t, r| {
        m.sum(
            "outpost_guest_failures_total",
            &[("tenant", t), ("reason", r)],
        )
    };
    assert_eq!(failures("bad", "trap"), 2.0);
    assert_eq!(failures("bad", "cpu_limit"), 1.0);
    assert_eq!(
        m.value("outpost_limit_hits_total", &[bad, ("reason", "guest_cpu")]),
        1.0
    );
    assert_eq!(
        m.sum("outpost_guest_failures_total", &[("tenant", "good")]),
        0.0
    );
    assert_eq!(
        m.value(
            "outpost_limit_hits_total",
            &[("tenant", "good"), ("reason", "request_body_bytes")]
        ),
        1.0
    );
    assert_eq!(
        m.value("outpost_requests_total", &[bad, ("code", "5xx")]),
        3.0
    );
    assert_eq!(
        m.value(
            "outpost_requests_total",
            &[("tenant", "good"), ("code", "2xx")]
        ),
        1.0
    );
    // The node's answers to failed guests are its own: synthetic.
    assert_eq!(
        m.value(
            "outpost_cache_outcomes_total",
            &[bad, ("outcome", "synthetic")]
        ),
        3.0
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_dead_member_shows_as_ejected_with_its_retries_and_the_live_one_keeps_its_connections() {
    let origin = Origin::start("live").await;
    let dead = closed_port_url();
    let config = format!(
        "{}[[tenant]]\nid = \"t\"\nhosts = [\"t.test\"]\npolicy = \"builtin:default\"\n\
         [tenant.backends.origin]\nmembers = [{{ url = {dead:?} }}, {{ url = {:?} }}]\n\
         connect_timeout_ms = 1000\nslow_start_ms = 0\n\
         [tenant.backends.origin.ejection]\nconsecutive_failures = 1\nbase_ejection_ms = 60000\n",
        admin_section(),
        origin.url()
    );
    let node = Node::start(&config);
    let client = Client::new();
    for i in 0..4 {
        let r = client.get(&node, "t.test", &format!("/p{i}")).await;
        assert_eq!(r.status, 200, "{}", r.text());
    }

    let m = Scrape::of(&client, &node).await;
    let t = ("tenant", "t");
    let dead_member = dead.trim_end_matches('/');
    let at = |url| [t, ("backend", "origin"), ("member", url)];
    assert_eq!(m.value("outpost_origin_member_up", &at(dead_member)), 0.0);
    assert_eq!(
        m.value(
            "outpost_origin_member_state",
            &[at(dead_member).as_slice(), &[("state", "ejected")]].concat()
        ),
        1.0
    );
    assert_eq!(
        m.value("outpost_origin_ejections_total", &at(dead_member)),
        1.0
    );
    assert_eq!(
        m.value("outpost_origin_retries_total", &[t, ("backend", "origin")]),
        1.0
    );
    let live = origin.url();
    let live = live.trim_end_matches('/');
    assert_eq!(m.value("outpost_origin_member_up", &at(live)), 1.0);
    assert_eq!(
        m.value("outpost_origin_first_byte_seconds_count", &at(live)),
        4.0
    );
    let open = [at(live).as_slice(), &[("state", "open")]].concat();
    assert!(m.value("outpost_origin_connections", &open) >= 1.0);
    assert_eq!(m.value("outpost_origin_in_flight", &at(live)), 0.0);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_deleted_tenant_leaves_no_series_and_a_kept_one_keeps_counting() {
    let origin = Origin::start("origin").await;
    let config = format!(
        "{}{}{}",
        admin_section(),
        tenant(
            "keep",
            &["keep.test"],
            "builtin:default",
            &[("origin", &origin.url())]
        ),
        tenant(
            "gone",
            &["gone.test"],
            "builtin:default",
            &[("origin", &origin.url())]
        ),
    );
    let node = Node::start(&config);
    let client = Client::new();
    client.get(&node, "keep.test", "/x").await;
    client.get(&node, "gone.test", "/x").await;
    let before = Scrape::of(&client, &node).await;
    assert!(before.has("outpost_requests_total", &[("tenant", "gone")]));

    let r = client
        .admin(
            &node,
            Method::DELETE,
            "/tenants/gone",
            Some(ADMIN_TOKEN),
            "",
        )
        .await;
    assert!(r.status.is_success(), "{} {}", r.status, r.text());
    client.get(&node, "keep.test", "/x").await;

    let after = Scrape::of(&client, &node).await;
    assert!(!after.text.contains("tenant=\"gone\""), "{}", after.text);
    assert_eq!(
        after.value(
            "outpost_requests_total",
            &[("tenant", "keep"), ("code", "2xx")]
        ),
        2.0
    );
}
