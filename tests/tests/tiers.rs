//! Tiered caching: a backend may be another Outpost (a parent, or shield)
//! that collapses its children's misses into one origin fetch, and
//! `CDN-Loop` (RFC 8586) stops a request that comes round.

use std::time::Duration;

use http::Method;
use outpost_e2e::*;

/// A node named `node_id` with tenant `t` (host `t.test`, built-in default
/// policy) whose backend `origin` is at `url`.
fn node_config(node_id: &str, url: &str) -> String {
    format!(
        "[server]\nnode_id = {node_id:?}\n{}",
        tenant("t", &["t.test"], "builtin:default", &[("origin", url)])
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn a_parent_collapses_the_misses_of_its_children_into_one_origin_fetch() {
    let origin = Origin::start("origin").await;
    // Slow enough for every request to arrive while the first is fetched.
    origin.reply("/cold", Reply::ok().delay(Duration::from_millis(1500)));
    let parent = Node::start(&node_config("parent", &origin.url()));
    let parent_url = format!("http://{}", parent.addr);
    let children = [
        Node::start(&node_config("child-1", &parent_url)),
        Node::start(&node_config("child-2", &parent_url)),
    ];
    let client = Client::new();
    let mut pending = Vec::new();
    for child in &children {
        for _ in 0..10 {
            pending.push(client.spawn_send(child.addr, Method::GET, "t.test", "/cold"));
        }
    }
    for p in pending {
        let r = p.await.unwrap();
        assert_eq!(
            (r.status.as_u16(), r.text()),
            (200, "origin /cold".to_string())
        );
    }
    assert_eq!(
        origin.hits("/cold"),
        1,
        "20 requests through 2 children and a parent"
    );
    let seen = &origin.seen()[0];
    let loop_field = seen.values("cdn-loop");
    assert_eq!(loop_field.len(), 2, "{loop_field:?}");
    assert!(
        loop_field[0].starts_with("child-") && loop_field[1] == "parent",
        "{loop_field:?}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_request_that_comes_round_is_refused_with_508() {
    let dir = scratch_dir();
    let config = dir.join("outpost.toml");
    std::fs::write(&config, node_config("edge-a", &closed_port_url())).unwrap();
    let args = [
        "serve",
        "--config",
        config.to_str().unwrap(),
        "--listen",
        "127.0.0.1:0",
    ];
    let node = Node::spawn(&args, &dir);
    // The backend now points at the node itself.
    std::fs::write(
        &config,
        node_config("edge-a", &format!("http://{}", node.addr)),
    )
    .unwrap();
    node.hangup();
    assert!(
        node.wait_for_log("reloaded", Duration::from_secs(10)).await,
        "{}",
        node.log()
    );
    let r = Client::new().get(&node, "t.test", "/round").await;
    assert_eq!(r.status, 508, "{}", r.text());
    assert!(
        r.text().contains("loop detected") && r.text().contains("edge-a"),
        "{}",
        r.text()
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn the_clients_cdn_loop_is_kept_and_the_node_adds_itself() {
    let origin = Origin::start("origin").await;
    let node = Node::start(&node_config("edge-b", &origin.url()));
    let headers = [("cdn-loop", "other-cdn; abc=1, edge-bb")];
    let r = Client::new()
        .get_with(&node, "t.test", "/kept", &headers)
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let seen = &origin.seen()[0];
    let values = seen.values("cdn-loop");
    assert_eq!(values, ["other-cdn; abc=1, edge-bb", "edge-b"]);
    let dir = scratch_dir();
    let err = refused_config(&dir, "bad.toml", &node_config("edge a", &origin.url()));
    assert!(err.contains("server.node_id"), "{err}");
}
