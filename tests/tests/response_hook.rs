//! A policy says whether it needs to see what a backend answers
//! (`route.response-hook`, WIT 0.3). Without a response hook an
//! origin-bound request runs the request hook only, and a memoized decision
//! runs no wasm at all; a policy with one still sees every attempt; a policy
//! whose hook decides things its routes said it would not is caught.

use http::Method;
use outpost_e2e::metrics::Scrape;
use outpost_e2e::*;

/// Runs of a tenant's policy hook (`request` or `response`) so far.
async fn hook_runs(client: &Client, node: &Node, hook: &str) -> u64 {
    Scrape::of(client, node)
        .await
        .sum("outpost_guest_duration_seconds_count", &[("hook", hook)]) as u64
}

#[tokio::test(flavor = "multi_thread")]
async fn a_memoized_pass_runs_no_guest_when_the_policy_needs_no_response_hook() {
    let billing = Origin::start("billing").await;
    billing.reply_to_all(Reply::ok().only("cache-control", "no-store"));
    let web = Origin::start("web").await;
    let config = format!(
        "{}{}",
        admin_section(),
        tenant(
            "api",
            &["api.test"],
            "builtin:router",
            &[("billing", &billing.url()), ("web", &web.url())]
        )
    );
    let node = Node::start(&config);
    let client = Client::new();
    let service = [("x-service-name", "billing")];
    // Uncacheable API reads and writes: every one reaches the service.
    for _ in 0..20 {
        let r = client
            .get_with(&node, "api.test", "/invoices", &service)
            .await;
        assert_eq!(
            (r.status.as_u16(), r.text()),
            (200, "billing /invoices".into())
        );
        let r = client
            .send(
                &node,
                Method::POST,
                "api.test",
                "/invoices",
                &service,
                "{}".into(),
            )
            .await;
        assert_eq!(r.status, 200);
    }
    assert_eq!(billing.hits("/invoices"), 40);
    // The first request of each kind ran the request hook; every later one
    // was decided by the memo, and none ran a response hook.
    assert_eq!(hook_runs(&client, &node, "request").await, 2);
    assert_eq!(hook_runs(&client, &node, "response").await, 0);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_policy_with_a_response_hook_still_sees_every_attempt() {
    let (primary, secondary, node) = failing_over().await;
    let client = Client::new();
    for _ in 0..10 {
        let r = client.get(&node, "f.test", "/item").await;
        assert_eq!(r.text(), "from the secondary");
    }
    // Two attempts per request, each seen by the hook, memoized or not.
    assert_eq!((primary.hits("/item"), secondary.hits("/item")), (10, 10));
    assert_eq!(hook_runs(&client, &node, "response").await, 20);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_route_that_hides_its_response_hook_is_caught_and_the_hook_then_always_runs() {
    let origin = Origin::start("origin").await;
    origin.reply(
        "/undeclared-hook",
        Reply::ok().only("cache-control", "no-store"),
    );
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
    // The route says no hook, so the origin's no-store stands, until one
    // request in 256 (per worker thread) runs the hook anyway: it stores
    // the response, and every later request runs it too.
    let mut stored_after = None;
    for n in 1..=2_000 {
        let r = client.get(&node, "m.test", "/undeclared-hook").await;
        assert_eq!(r.status, 200);
        if r.cache_status().starts_with("Outpost; hit") {
            stored_after = Some(n);
            break;
        }
    }
    let stored_after = stored_after.expect("the hook's decision was never applied");
    assert!(stored_after > 100, "stored after {stored_after} requests");
    let scrape = Scrape::of(&client, &node).await;
    assert_eq!(
        scrape.sum("outpost_response_hook_mismatches_total", &[("tenant", "m")]),
        1.0,
        "{}",
        scrape.text
    );
    assert!(node.log().contains("declared no response hook"));
}
