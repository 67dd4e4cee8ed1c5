//! CPU profiles from the admin API: a profile taken under load decodes as
//! pprof protobuf and names the node's own functions; a flamegraph is an
//! SVG; one profile runs at a time.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use http::Method;
use outpost_e2e::*;
use prost::Message;

/// `GET /debug/pprof/profile?QUERY` with the token.
async fn profile(client: &Client, node: &Node, query: &str) -> Resp {
    let path = format!("/debug/pprof/profile?{query}");
    client
        .admin(node, Method::GET, &path, Some(ADMIN_TOKEN), "")
        .await
}

/// Misses and hits until `stop` is set (at most 20,000 requests).
fn load(
    node: &Arc<Node>,
    client: &Client,
    stop: Arc<AtomicBool>,
) -> tokio::task::JoinHandle<usize> {
    let (node, client) = (node.clone(), client.clone());
    tokio::spawn(async move {
        let mut sent = 0;
        while !stop.load(Ordering::Relaxed) && sent < 20_000 {
            client
                .get(&node, "t.test", &format!("/p{}", sent % 50))
                .await;
            sent += 1;
        }
        sent
    })
}

#[tokio::test(flavor = "multi_thread")]
async fn a_profile_taken_under_load_decodes_as_pprof_and_names_the_nodes_functions() {
    let (_origin, node, client) = start_one_tenant().await;
    let node = Arc::new(node);
    let stop = Arc::new(AtomicBool::new(false));
    let running = load(&node, &client, stop.clone());
    let r = profile(&client, &node, "seconds=1").await;
    stop.store(true, Ordering::Relaxed);
    assert!(running.await.unwrap() > 0);
    assert_eq!(r.status, 200, "{}", r.text());
    let profile = pprof::protos::Profile::decode(r.body.as_ref()).expect("a pprof protobuf");
    assert!(!profile.sample.is_empty(), "no samples");
    let name = |i: i64| profile.string_table[i as usize].as_str();
    let sample_types: Vec<&str> = profile.sample_type.iter().map(|t| name(t.ty)).collect();
    assert!(sample_types.contains(&"cpu"), "{sample_types:?}");
    let functions: Vec<&str> = profile.function.iter().map(|f| name(f.name)).collect();
    assert!(
        functions.iter().any(|f| f.contains("outpost::proxy")),
        "no function of the node's request path among {} functions",
        functions.len()
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_flamegraph_is_an_svg_and_a_second_profile_waits_its_turn() {
    let (_origin, node, client) = start_one_tenant().await;
    let node = Arc::new(node);
    let stop = Arc::new(AtomicBool::new(false));
    let running = load(&node, &client, stop.clone());
    let first = {
        let (node, client) = (node.clone(), client.clone());
        tokio::spawn(async move { profile(&client, &node, "seconds=2&format=flamegraph").await })
    };
    // Asked again and again while the first runs (2 s): refused, not queued.
    let mut busy = None;
    for _ in 0..50 {
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        let r = profile(&client, &node, "seconds=1").await;
        if r.status == 409 {
            busy = Some(r);
            break;
        }
    }
    let busy = busy.expect("a second profile while one runs is refused");
    assert!(busy.text().contains("already"), "{}", busy.text());
    let svg = first.await.unwrap();
    stop.store(true, Ordering::Relaxed);
    running.await.unwrap();
    assert_eq!(svg.status, 200, "{}", svg.text());
    assert_eq!(svg.header("content-type"), Some("image/svg+xml"));
    let svg = svg.text();
    assert!(svg.contains("<svg"), "{}", &svg[..200.min(svg.len())]);
    assert!(
        svg.contains("outpost"),
        "the flame graph names the node's frames"
    );

    let bad = profile(&client, &node, "seconds=600").await;
    assert_eq!(bad.status, 400);
    let anonymous = client
        .admin(
            &node,
            Method::GET,
            "/debug/pprof/profile?seconds=1",
            None,
            "",
        )
        .await;
    assert_eq!(anonymous.status, 401);
}
