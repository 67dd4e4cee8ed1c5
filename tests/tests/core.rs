//! The core node: tenants, policies, cache hits, coalescing, the sandbox.

use std::time::Duration;

use bytes::Bytes;
use http::Method;
use outpost_e2e::{closed_port_url, refused_config, tenant, Client, Node, Origin, Reply};

#[tokio::test(flavor = "multi_thread")]
async fn second_request_is_a_hit_and_origin_sees_one_request() {
    let origin = Origin::start("origin").await;
    let node = Node::start(&tenant(
        "shop",
        &["shop.test"],
        "example:cache-key",
        &[("origin", &origin.url())],
    ));
    let client = Client::new();

    let first = client.get(&node, "shop.test", "/page").await;
    assert_eq!(first.status, 200);
    assert_eq!(first.text(), "origin /page");
    assert!(
        first.cache_status().contains("fwd=uri-miss"),
        "{}",
        first.cache_status()
    );
    assert!(
        first.cache_status().contains("stored"),
        "{}",
        first.cache_status()
    );

    tokio::time::sleep(Duration::from_millis(1100)).await;
    let second = client.get(&node, "shop.test", "/page").await;
    assert_eq!(second.status, 200);
    assert_eq!(second.text(), "origin /page");
    assert!(
        second.cache_status().starts_with("Outpost; hit"),
        "{}",
        second.cache_status()
    );
    let age: u64 = second
        .header("age")
        .expect("an Age header")
        .parse()
        .unwrap();
    assert!(age >= 1, "age {age}");
    assert_eq!(origin.hits("/page"), 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn fifty_concurrent_cold_requests_reach_the_origin_once() {
    let origin = Origin::start("origin").await;
    origin.reply(
        "/cold",
        Reply::ok()
            .body("the cold body")
            .delay(Duration::from_millis(300)),
    );
    let node = Node::start(&tenant(
        "shop",
        &["shop.test"],
        "builtin:default",
        &[("origin", &origin.url())],
    ));
    let client = Client::new();

    let requests = (0..50).map(|_| {
        let client = client.clone();
        let node = &node;
        async move { client.get(node, "shop.test", "/cold").await }
    });
    let responses = futures::future::join_all(requests).await;
    for r in &responses {
        assert_eq!(r.status, 200);
        assert_eq!(r.text(), "the cold body");
    }
    assert_eq!(
        origin.hits("/cold"),
        1,
        "origin saw {} requests",
        origin.hits("/cold")
    );
    let collapsed = responses
        .iter()
        .filter(|r| r.cache_status().contains("collapsed"))
        .count();
    assert!(collapsed >= 1, "no response says it was collapsed");
}

#[tokio::test(flavor = "multi_thread")]
async fn two_tenants_with_the_same_path_never_share_a_cache_entry() {
    let a = Origin::start("origin-a").await;
    let b = Origin::start("origin-b").await;
    let config = format!(
        "{}\n{}",
        tenant("a", &["a.test"], "builtin:default", &[("origin", &a.url())]),
        tenant("b", &["b.test"], "builtin:default", &[("origin", &b.url())])
    );
    let node = Node::start(&config);
    let client = Client::new();
    for _ in 0..2 {
        assert_eq!(
            client.get(&node, "a.test", "/same").await.text(),
            "origin-a /same"
        );
        assert_eq!(
            client.get(&node, "b.test", "/same").await.text(),
            "origin-b /same"
        );
    }
    assert_eq!(a.hits("/same"), 1);
    assert_eq!(b.hits("/same"), 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn unknown_host_gets_404_and_never_another_tenants_content() {
    let origin = Origin::start("origin").await;
    let node = Node::start(&tenant(
        "a",
        &["a.test"],
        "builtin:default",
        &[("origin", &origin.url())],
    ));
    let client = Client::new();
    assert_eq!(client.get(&node, "a.test", "/x").await.status, 200);
    let other = client.get(&node, "evil.test", "/x").await;
    assert_eq!(other.status, 404);
    assert!(!other.text().contains("origin"));
    assert_eq!(origin.total(), 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn router_sends_x_service_name_to_its_backend_and_unknown_services_get_404() {
    let billing = Origin::start("billing").await;
    let web = Origin::start("web").await;
    let search = Origin::start("search").await;
    let config = tenant(
        "r",
        &["r.test"],
        "example:router",
        &[
            ("billing", &billing.url()),
            ("web", &web.url()),
            ("search", &search.url()),
            ("static", &web.url()),
        ],
    );
    let node = Node::start(&config);
    let client = Client::new();

    let r = client
        .get_with(
            &node,
            "r.test",
            "/invoice/7",
            &[("x-service-name", "billing")],
        )
        .await;
    assert_eq!(r.status, 200);
    assert_eq!(r.text(), "billing /invoice/7");
    assert_eq!(billing.hits("/invoice/7"), 1);
    assert_eq!(web.total(), 0);

    let r = client
        .get_with(
            &node,
            "r.test",
            "/invoice/7",
            &[("x-service-name", "payroll")],
        )
        .await;
    assert_eq!(r.status, 404);
    assert_eq!(r.text(), "service not found\n");

    assert_eq!(
        client.get(&node, "r.test", "/search/q").await.text(),
        "search /search/q"
    );
    assert_eq!(
        client.get(&node, "r.test", "/home").await.text(),
        "web /home"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn cache_key_policy_shares_one_entry_across_equivalent_queries() {
    let origin = Origin::start("origin").await;
    let node = Node::start(&tenant(
        "shop",
        &["shop.test"],
        "example:cache-key",
        &[("origin", &origin.url())],
    ));
    let client = Client::new();

    let first = client
        .get(&node, "shop.test", "/a?b=2&a=1&utm_source=x")
        .await;
    assert_eq!(first.status, 200);
    let second = client.get(&node, "SHOP.test", "/a?a=1&b=2").await;
    assert!(
        second.cache_status().contains("hit"),
        "{}",
        second.cache_status()
    );
    assert_eq!(second.body, first.body);
    assert_eq!(origin.total(), 1);

    // Mobile clients get their own variant.
    let mobile = client
        .get_with(
            &node,
            "shop.test",
            "/a?a=1&b=2",
            &[("user-agent", "Mozilla/5.0 (iPhone)")],
        )
        .await;
    assert!(
        mobile.cache_status().contains("fwd=uri-miss"),
        "{}",
        mobile.cache_status()
    );
    assert_eq!(origin.total(), 2);
}

fn fallback_node(primary: &str, secondary: &str) -> Node {
    Node::start(&tenant(
        "f",
        &["f.test"],
        "example:origin-fallback",
        &[("primary", primary), ("secondary", secondary)],
    ))
}

#[tokio::test(flavor = "multi_thread")]
async fn fallback_serves_from_secondary_when_primary_is_down() {
    let secondary = Origin::start("secondary").await;
    let node = fallback_node(&closed_port_url(), &secondary.url());
    let r = Client::new().get(&node, "f.test", "/p").await;
    assert_eq!(r.status, 200);
    assert_eq!(r.text(), "secondary /p");
}

#[tokio::test(flavor = "multi_thread")]
async fn fallback_tries_secondary_on_a_primary_5xx() {
    let primary = Origin::start("primary").await;
    primary.reply("/p", Reply::status(502));
    let secondary = Origin::start("secondary").await;
    let node = fallback_node(&primary.url(), &secondary.url());
    let r = Client::new().get(&node, "f.test", "/p").await;
    assert_eq!(r.text(), "secondary /p");
    assert_eq!(primary.hits("/p"), 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn fallback_serves_stale_when_both_are_down_and_a_copy_exists() {
    let primary = Origin::start("primary").await;
    primary.reply(
        "/p",
        Reply::ok()
            .only("cache-control", "max-age=1")
            .body("the good copy"),
    );
    let secondary = Origin::start("secondary").await;
    let node = fallback_node(&primary.url(), &secondary.url());
    let client = Client::new();
    assert_eq!(
        client.get(&node, "f.test", "/p").await.text(),
        "the good copy"
    );

    tokio::time::sleep(Duration::from_millis(2100)).await;
    primary.stop();
    secondary.stop();
    let r = client.get(&node, "f.test", "/p").await;
    assert_eq!(r.status, 200);
    assert_eq!(r.text(), "the good copy");
    assert!(r.cache_status().contains("stale"), "{}", r.cache_status());
}

#[tokio::test(flavor = "multi_thread")]
async fn fallback_answers_a_503_page_when_both_are_down_and_nothing_is_cached() {
    let node = fallback_node(&closed_port_url(), &closed_port_url());
    let r = Client::new().get(&node, "f.test", "/p").await;
    assert_eq!(r.status, 503);
    assert!(r.text().contains("Temporarily unavailable"));
    assert_eq!(r.header("retry-after"), Some("30"));
}

fn sandbox_config(origin: &str) -> String {
    let mut config = tenant(
        "bad",
        &["bad.test"],
        "example:misbehaving",
        &[("origin", origin)],
    );
    config.push_str(
        "[tenant.limits]\nmemory_mb = 8\ncpu_ms = 50\n[tenant.vars]\ngreeting = \"hello\"\n",
    );
    config.push_str(&tenant(
        "good",
        &["good.test"],
        "builtin:default",
        &[("origin", origin)],
    ));
    config
}

#[tokio::test(flavor = "multi_thread")]
async fn a_trapping_guest_fails_only_its_own_request() {
    let origin = Origin::start("origin").await;
    let node = Node::start(&sandbox_config(&origin.url()));
    let client = Client::new();
    let r = client.get(&node, "bad.test", "/trap").await;
    assert_eq!(r.status, 500);
    assert_eq!(r.header("x-outpost-error"), Some("trap"));
    assert_eq!(client.get(&node, "bad.test", "/fine").await.status, 200);
    assert_eq!(client.get(&node, "good.test", "/fine").await.status, 200);
    assert!(node.log().contains("policy failed"), "{}", node.log());
}

#[tokio::test(flavor = "multi_thread")]
async fn a_looping_guest_is_cut_off_by_its_cpu_deadline() {
    let origin = Origin::start("origin").await;
    let mut node = Node::start(&sandbox_config(&origin.url()));
    let client = Client::new();
    let r = client.get(&node, "bad.test", "/loop").await;
    assert_eq!(r.status, 500);
    assert_eq!(r.header("x-outpost-error"), Some("cpu_limit"));
    assert_eq!(client.get(&node, "good.test", "/after").await.status, 200);
    assert!(node.is_running());
}

#[tokio::test(flavor = "multi_thread")]
async fn a_guest_growing_memory_past_its_limit_gets_a_5xx() {
    let origin = Origin::start("origin").await;
    let mut node = Node::start(&sandbox_config(&origin.url()));
    let client = Client::new();
    let r = client.get(&node, "bad.test", "/grow").await;
    assert_eq!(r.status, 500);
    assert_eq!(r.header("x-outpost-error"), Some("memory_limit"));
    assert_eq!(client.get(&node, "bad.test", "/fine").await.status, 200);
    assert!(node.is_running());
}

#[tokio::test(flavor = "multi_thread")]
async fn a_guest_can_fetch_only_backends_its_tenant_declared() {
    let origin = Origin::start("origin").await;
    let node = Node::start(&sandbox_config(&origin.url()));
    let client = Client::new();
    let ok = client.get(&node, "bad.test", "/fetch/origin").await;
    assert_eq!(ok.status, 200);
    assert_eq!(ok.text(), "origin /");
    let refused = client.get(&node, "bad.test", "/fetch/elsewhere").await;
    assert_eq!(refused.status, 502);
    assert!(
        refused.text().contains("UnknownBackend"),
        "{}",
        refused.text()
    );
    assert_eq!(
        client.get(&node, "bad.test", "/vars/greeting").await.text(),
        "hello"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_config_with_an_error_exits_non_zero_naming_the_field() {
    let dir = outpost_e2e::scratch_dir();
    let err = refused_config(
        &dir,
        "bad.toml",
        "[server]\nlisten = \"127.0.0.1:0\"\n[cache]\nmax_size_mib = 5\n",
    );
    assert!(err.contains("max_size_mib"), "{err}");
    assert!(err.contains("line 4"), "{err}");

    let bad_url = tenant(
        "t",
        &["t.test"],
        "builtin:default",
        &[("origin", "gopher://x")],
    );
    let err = refused_config(&dir, "bad.toml", &bad_url);
    assert!(err.contains("tenant[0].backends.origin.url"), "{err}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_policy_that_is_not_a_component_is_rejected_at_start() {
    let dir = outpost_e2e::scratch_dir();
    let wasm = dir.join("core.wasm");
    // The smallest core module: magic and version 1.
    std::fs::write(&wasm, b"\0asm\x01\0\0\0").unwrap();
    let config = format!(
        "[[tenant]]\nid = \"t\"\nhosts = [\"t.test\"]\npolicy = {:?}\n",
        wasm.display().to_string()
    );
    let err = refused_config(&dir, "c.toml", &config);
    assert!(
        err.contains("tenant[0].policy") && err.contains("not a component"),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn quick_mode_serves_any_host_from_one_backend() {
    let origin = Origin::start("origin").await;
    let dir = outpost_e2e::scratch_dir();
    let node = Node::spawn(
        &[
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--backend",
            &origin.url(),
        ],
        &dir,
    );
    let client = Client::new();
    assert_eq!(
        client.get(&node, "anything.test", "/q").await.text(),
        "origin /q"
    );
    client
        .expect_cache_status(&node, "anything.test", "/q", "hit")
        .await;
    assert_eq!(origin.hits("/q"), 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn http2_prior_knowledge_requests_are_served() {
    let origin = Origin::start("origin").await;
    let node = Node::start(&tenant(
        "t",
        &["127.0.0.1"],
        "builtin:default",
        &[("origin", &origin.url())],
    ));
    let client = Client::http2();
    let r = client.get(&node, "127.0.0.1", "/h2").await;
    assert_eq!(r.status, 200);
    assert_eq!(r.text(), "origin /h2");
    client
        .expect_cache_status(&node, "127.0.0.1", "/h2", "hit")
        .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_request_body_is_passed_to_the_origin() {
    let origin = Origin::start("origin").await;
    origin.reply("/upload", Reply::status(201));
    let node = Node::start(&tenant(
        "t",
        &["t.test"],
        "example:router",
        &[("web", &origin.url())],
    ));
    let r = Client::new()
        .send(
            &node,
            Method::POST,
            "t.test",
            "/upload",
            &[],
            Bytes::from_static(b"payload"),
        )
        .await;
    assert_eq!(r.status, 201);
    let seen = &origin.seen()[0];
    assert_eq!(seen.method, Method::POST);
    assert_eq!(seen.body_len, b"payload".len() as u64);
}

#[test]
fn the_example_multi_tenant_config_is_valid() {
    let config = concat!(env!("CARGO_MANIFEST_DIR"), "/../examples/outpost.toml");
    let out = std::process::Command::new(outpost_e2e::outpost_bin())
        .args(["check", "--config", config])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_policy_that_cannot_be_read_is_named_with_its_file_field_and_line() {
    let dir = outpost_e2e::scratch_dir();
    let err = refused_config(
        &dir,
        "missing.toml",
        "# a comment\n[[tenant]]\nid = \"t\"\nhosts = [\"t.test\"]\npolicy = \"nowhere.wasm\"\n",
    );
    assert!(err.contains("missing.toml"), "{err}");
    assert!(err.contains("line 5"), "{err}");
    assert!(err.contains("tenant[0].policy"), "{err}");
    assert!(err.contains("nowhere.wasm"), "{err}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_request_target_over_8_kib_gets_414_and_reaches_no_origin() {
    let (origin, node, client) = outpost_e2e::start_one_tenant().await;
    let long = format!("/{}", "a".repeat(16 * 1024));
    let r = client.get(&node, "t.test", &long).await;
    assert_eq!(r.status, 414, "{}", r.text());
    assert_eq!(origin.total(), 0);
    let just_fits = format!("/{}", "b".repeat(8 * 1024 - 1));
    assert_eq!(client.get(&node, "t.test", &just_fits).await.status, 200);
    assert_eq!(client.get(&node, "t.test", "/next").await.status, 200);
    assert_eq!(origin.total(), 2);
}
