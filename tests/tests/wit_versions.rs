//! The WIT package is a public contract: a policy built against
//! `outpost:edge@0.1.0` or `0.2.0` (before this node knew of 0.3) runs
//! unchanged, and 0.2 policies get what 0.2 added — `backend-healthy`, their
//! own hash key, the `tls` and `unavailable` fetch errors, and the member
//! that answered. (The SDK's examples are built against 0.3 now.) A 0.1, a
//! 0.2 and a 0.3 component run side by side on one node, each through its
//! own adapter.

use outpost_e2e::*;

/// A tenant `t` with `policy` and backends `primary` and `secondary`, each
/// with its own settings.
fn two_backends(policy: &str, primary: &str, secondary: &str) -> String {
    format!(
        "[[tenant]]\nid = \"t\"\nhosts = [\"t.test\"]\npolicy = {}\n\
         [tenant.backends.primary]\n{primary}\n[tenant.backends.secondary]\n{secondary}\n",
        example(policy)
    )
}

/// Backend settings whose only member never passes its probe.
fn never_healthy(url: &str) -> String {
    format!("url = {url:?}\n[tenant.backends.secondary.probe]\npath = \"/health\"\ninitial = 0\n")
}

#[tokio::test(flavor = "multi_thread")]
async fn a_policy_built_against_wit_0_1_runs_unchanged() {
    let origin = Origin::start("secondary").await;
    let config = two_backends(
        "policy-v0-1",
        &format!("url = {:?}", closed_port_url()),
        &format!("url = {:?}", origin.url()),
    );
    let node = Node::start(&config);
    let client = Client::new();
    // Its decision (key, route, header edit) and its response hook (move on
    // after a failed connect) work as they did.
    let r = client.get(&node, "t.test", "/page").await;
    assert_eq!(
        (r.status.as_u16(), r.text()),
        (200, "secondary /page".to_string())
    );
    assert_eq!(origin.seen()[0].headers["x-policy"], "v0.1");
    client
        .expect_cache_status(&node, "t.test", "/page", "hit")
        .await;

    // A failure 0.1 has no case for arrives as connect-failed, saying why.
    let probed = Origin::start("down").await;
    probed.reply("/health", Reply::status(500));
    let config = two_backends(
        "policy-v0-1",
        &format!("url = {:?}", closed_port_url()),
        &never_healthy(&probed.url()),
    );
    let node = Node::start(&config);
    let r = client.get(&node, "t.test", "/down").await;
    assert_eq!(r.status, 503, "{}", r.text());
    let told = r.text();
    assert!(
        told.contains("primary: FetchError::ConnectFailed("),
        "{told}"
    );
    assert!(
        told.contains(
            "secondary: FetchError::ConnectFailed(\"no healthy member (backend secondary"
        ),
        "{told}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_0_2_policy_steers_by_health_and_sees_the_new_fetch_errors() {
    let (primary, secondary) = (
        Origin::start("primary").await,
        Origin::start("secondary").await,
    );
    let config = two_backends(
        "pool-steering",
        &never_healthy(&primary.url()).replace("secondary.probe", "primary.probe"),
        &format!("url = {:?}", secondary.url()),
    );
    let node = Node::start(&config);
    let client = Client::new();
    let r = client.get(&node, "t.test", "/steered").await;
    assert_eq!(
        (r.status.as_u16(), r.text()),
        (200, "secondary /steered".to_string())
    );
    assert_eq!(
        primary.hits("/steered"),
        0,
        "backend-healthy said no: not even tried"
    );
    // The response hook is told which member answered.
    let r = client
        .get_with(&node, "t.test", "/who", &[("x-show-member", "1")])
        .await;
    assert_eq!(r.text(), format!("secondary {}", secondary.url()));

    // A member that refused the connection was skipped for the next one:
    // the hook is told both.
    let refusing = closed_port_url();
    let config = two_backends(
        "pool-steering",
        &format!(
            "members = [{{ url = {:?} }}, {{ url = {:?} }}]",
            refusing,
            secondary.url()
        ),
        &format!("url = {:?}", secondary.url()),
    );
    let node = Node::start(&config);
    let r = client
        .get_with(&node, "t.test", "/retried", &[("x-show-member", "1")])
        .await;
    let told = r.text();
    assert!(
        told.starts_with(&format!(
            "primary {} (after {}: ConnectFailed(",
            secondary.url(),
            refusing
        )),
        "{told}"
    );

    // `unavailable` is its own case in 0.2.
    let config = two_backends(
        "pool-steering",
        &format!("url = {:?}", closed_port_url()),
        &never_healthy(&secondary.url()),
    );
    let node = Node::start(&config);
    let r = client.get(&node, "t.test", "/down").await;
    assert_eq!(r.status, 503, "{}", r.text());
    assert!(
        r.text()
            .starts_with("secondary: Unavailable(\"backend secondary"),
        "{}",
        r.text()
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_0_2_policy_hash_key_keeps_one_user_on_one_member() {
    let members = [
        Origin::start("a").await,
        Origin::start("b").await,
        Origin::start("c").await,
    ];
    let urls: Vec<String> = members
        .iter()
        .map(|m| format!("{{ url = {:?} }}", m.url()))
        .collect();
    let config = two_backends(
        "pool-steering",
        &format!("members = [{}]\nbalance = \"hash\"", urls.join(", ")),
        &format!("url = {:?}", closed_port_url()),
    );
    let node = Node::start(&config);
    let client = Client::new();
    // Different paths, one user: hashed on the user, not the path.
    for user in ["ada", "grace", "edsger", "barbara"] {
        let mut served = std::collections::BTreeSet::new();
        for i in 0..6 {
            let r = client
                .get_with(
                    &node,
                    "t.test",
                    &format!("/{user}/{i}"),
                    &[("x-user", user), ("x-show-member", "1")],
                )
                .await;
            assert_eq!(r.status, 200, "{}", r.text());
            served.insert(r.text());
        }
        assert_eq!(served.len(), 1, "{user} was spread over {served:?}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_policy_built_against_wit_0_2_runs_unchanged_and_its_response_hook_sees_every_attempt() {
    let origin = Origin::start("secondary").await;
    origin.reply_to_all(Reply::ok().only("cache-control", "no-store"));
    let config = two_backends(
        "policy-v0-2",
        &format!("url = {:?}", closed_port_url()),
        &format!("url = {:?}", origin.url()),
    );
    let node = Node::start(&config);
    let client = Client::new();
    // 0.2 has no `response-hook` field: its hook runs after each attempt,
    // moving on from the refused primary and storing the secondary's
    // no-store answer for 60 s as it decides, memoized decision or not.
    for path in ["/a", "/b", "/c"] {
        let r = client.get(&node, "t.test", path).await;
        assert_eq!(
            (r.status.as_u16(), r.text()),
            (200, format!("secondary {path}"))
        );
        assert_eq!(origin.seen().last().unwrap().headers["x-policy"], "v0.2");
        client
            .expect_cache_status(&node, "t.test", path, "hit")
            .await;
    }
    assert_eq!(origin.total(), 3);
}

#[tokio::test(flavor = "multi_thread")]
async fn components_of_0_1_0_2_and_0_3_run_side_by_side_on_one_node() {
    let origin = Origin::start("origin").await;
    origin.reply_to_all(Reply::ok().header("server", "origin/1"));
    let tenant = |id: &str, policy: &str, backends: &[&str]| {
        let mut t = format!(
            "[[tenant]]\nid = \"{id}\"\nhosts = [\"{id}.test\"]\npolicy = {}\n",
            example(policy)
        );
        for b in backends {
            t.push_str(&format!(
                "[tenant.backends.{b}]\nurl = {:?}\n",
                origin.url()
            ));
        }
        t
    };
    let config = tenant("old", "policy-v0-1", &["primary", "secondary"])
        + &tenant("mid", "policy-v0-2", &["primary", "secondary"])
        + &tenant("new", "security-headers", &["origin"]);
    let node = Node::start(&config);
    let client = Client::new();
    for round in 0..2 {
        let old = client.get(&node, "old.test", "/a").await;
        let mid = client.get(&node, "mid.test", "/a").await;
        let new = client.get(&node, "new.test", "/a").await;
        for (r, name) in [(&old, "0.1"), (&mid, "0.2"), (&new, "0.3")] {
            assert_eq!(r.status, 200, "{name}: {}", r.text());
            if round == 1 {
                assert!(
                    r.cache_status().contains("hit"),
                    "{name}: {}",
                    r.cache_status()
                );
            }
        }
        // What only 0.3 can say: the client's response edited.
        assert_eq!(new.header("server"), None);
        assert!(new.header("strict-transport-security").is_some());
        assert_eq!(old.header("server"), Some("origin/1"));
        assert_eq!(mid.header("server"), Some("origin/1"));
    }
    let policies: Vec<String> = origin
        .seen()
        .iter()
        .map(|s| s.values("x-policy").join(","))
        .collect();
    assert_eq!(policies, ["v0.1", "v0.2", ""]);
}
