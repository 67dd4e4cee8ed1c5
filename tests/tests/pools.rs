//! Backends that are pools: members with weights, smooth weighted
//! round-robin between them, and a member that cannot be connected to
//! skipped for the next one without the client seeing an error.

use outpost_e2e::*;

/// A tenant whose backend `origin` is a pool of these members.
fn pool_config(members: &[(String, u32)]) -> String {
    let members: Vec<String> = members
        .iter()
        .map(|(url, weight)| format!("{{ url = {url:?}, weight = {weight} }}"))
        .collect();
    format!(
        "[[tenant]]\nid = \"t\"\nhosts = [\"t.test\"]\npolicy = \"builtin:default\"\n\
         [tenant.backends.origin]\nmembers = [{}]\nconnect_timeout_ms = 1000\n",
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
}
