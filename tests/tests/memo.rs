//! Decision memoization: repeated requests skip wasm, and still get the
//! decision the policy would make for them.

use outpost_e2e::metrics::Scrape;
use outpost_e2e::{admin_section, failing_over, tenant, tenant_with, Client, Node, Origin, Reply};

/// `outpost_decision_memo_hits_total` from the admin API.
async fn memo_hits(client: &Client, node: &Node) -> u64 {
    Scrape::of(client, node)
        .await
        .sum("outpost_decision_memo_hits_total", &[]) as u64
}

const PHONE: &str = "Mozilla/5.0 (iPhone; CPU iPhone OS 17_0)";
const DESKTOP: &str = "Mozilla/5.0 (X11; Linux x86_64)";

#[tokio::test(flavor = "multi_thread")]
async fn repeated_requests_reuse_the_decision_yet_still_vary_by_what_the_policy_reads() {
    let origin = Origin::start("origin").await;
    let config = format!(
        "{}{}",
        admin_section(),
        tenant_with(
            "shop",
            &["shop.test"],
            "example:cache-key",
            &[("origin", &origin.url())],
            "debug_cache_key = true",
        )
    );
    let node = Node::start(&config);
    let client = Client::new();
    // The cache-key policy reads the User-Agent: phones and desktops get
    // different keys for the same URL, whichever came first.
    for round in 0..20 {
        for (ua, class) in [(PHONE, "mobile"), (DESKTOP, "desktop")] {
            let r = client
                .get_with(&node, "shop.test", "/page?b=2&a=1", &[("user-agent", ua)])
                .await;
            assert_eq!(r.status, 200);
            let expected = format!("key=\"{class}|shop.test/page?a=1&b=2\"");
            assert!(
                r.cache_status().contains(&expected),
                "round {round}: {}",
                r.cache_status()
            );
        }
    }
    // A query the policy normalises to the same key shares the decision's
    // effect but has its own memo entry.
    let r = client
        .get_with(
            &node,
            "shop.test",
            "/page?a=1&b=2&utm_source=x",
            &[("user-agent", PHONE)],
        )
        .await;
    assert!(
        r.cache_status().starts_with("Outpost; hit"),
        "{}",
        r.cache_status()
    );
    assert_eq!(origin.total(), 2, "one fetch per device class");
    // 41 requests: at most 3 distinct inputs ran the guest, plus one check
    // in 256 memoized requests (per thread).
    let hits = memo_hits(&client, &node).await;
    assert!(hits >= 37, "only {hits} requests were decided by the memo");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_policy_that_calls_out_runs_on_every_request() {
    let origin = Origin::start("origin").await;
    origin.reply("/", Reply::ok().body("from the backend"));
    let config = format!(
        "{}{}",
        admin_section(),
        tenant(
            "m",
            &["m.test"],
            "example:misbehaving",
            &[("origin", &origin.url())]
        )
    );
    let node = Node::start(&config);
    let client = Client::new();
    // `/fetch/origin` makes the guest fetch `/` itself: that answer can
    // change, so the guest must run (and fetch) every time.
    for _ in 0..5 {
        let r = client.get(&node, "m.test", "/fetch/origin").await;
        assert_eq!(r.text(), "from the backend");
    }
    assert_eq!(origin.hits("/"), 5);
    assert_eq!(memo_hits(&client, &node).await, 0);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_memoized_request_that_misses_still_gets_the_response_hook() {
    let (primary, secondary, node) = failing_over().await;
    let client = Client::new();
    // Nothing is stored, so every request goes to the backends and the
    // response hook must turn the primary's 503 into a try on the secondary
    // even when the request hook's decision came from the memo.
    for _ in 0..6 {
        let r = client.get(&node, "f.test", "/item").await;
        assert_eq!(r.status, 200);
        assert_eq!(r.text(), "from the secondary");
    }
    assert_eq!(primary.hits("/item"), 6);
    assert_eq!(secondary.hits("/item"), 6);
    assert!(memo_hits(&client, &node).await >= 5);
}

#[tokio::test(flavor = "multi_thread")]
async fn memoization_is_off_when_the_tenant_turns_it_off_or_reuses_instances() {
    let origin = Origin::start("origin").await;
    let off = tenant_with(
        "off",
        &["off.test"],
        "example:cache-key",
        &[("origin", &origin.url())],
        "memoize_decisions = false",
    );
    let reusing = tenant_with(
        "r",
        &["r.test"],
        "example:misbehaving",
        &[("origin", &origin.url())],
        "reuse_instances = true",
    );
    let node = Node::start(&format!("{}{off}{reusing}", admin_section()));
    let client = Client::new();
    for _ in 0..5 {
        assert_eq!(client.get(&node, "off.test", "/a").await.status, 200);
    }
    // A reused instance keeps its counter: each request runs the guest.
    let mut counts = Vec::new();
    for _ in 0..3 {
        counts.push(client.get(&node, "r.test", "/count").await.text());
    }
    assert_eq!(counts, ["1", "2", "3"]);
    assert_eq!(memo_hits(&client, &node).await, 0);
}
