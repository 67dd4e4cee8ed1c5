//! A POP of nodes on a real etcd sharing one cache: each key has an owner
//! among the POP's live members, a node that does not own a key forwards
//! its miss to the owner, so the origin sees one request per key per POP;
//! an unsafe request through any node invalidates the key at its owner; an
//! owner that dies hands its keys to the next member without a client
//! error, and a member joining takes about 1/N of the keys.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::Method;
use outpost_e2e::etcd::Etcd;
use outpost_e2e::fleet::*;
use outpost_e2e::metrics::Scrape;
use outpost_e2e::*;

const KEYS: usize = 60;

fn key(i: usize) -> String {
    format!("/item/{i}")
}

fn node_in_pop(etcd: &Etcd, id: &str) -> Node {
    fleet_node_at(&etcd.url, id, "ams", &scratch_dir())
}

/// Waits (bounded) until every node sees `members` live nodes in its POP.
async fn pop_of(client: &Client, nodes: &[&Node], members: f64) {
    let start = Instant::now();
    for node in nodes {
        loop {
            let seen = Scrape::of(client, node)
                .await
                .value("outpost_pop_members", &[]);
            if seen == members {
                break;
            }
            assert!(
                start.elapsed() < Duration::from_secs(40),
                "a node sees {seen} POP members, not {members}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

/// GETs every key on every node: each must be the origin's body.
async fn get_all(client: &Client, nodes: &[&Node]) {
    for i in 0..KEYS {
        for node in nodes {
            let r = client.get(node, "shop.test", &key(i)).await;
            assert_eq!(r.status, 200, "{}: {}", key(i), r.text());
            assert_eq!(r.text(), format!("item {i}"), "{}", key(i));
        }
    }
}

fn hits(origin: &Origin) -> Vec<usize> {
    (0..KEYS).map(|i| origin.hits(&key(i))).collect()
}

async fn cached_objects(client: &Client, node: &Node) -> f64 {
    Scrape::of(client, node)
        .await
        .sum("outpost_cache_objects", &[("tenant", "shop")])
}

async fn origin_with_items() -> Origin {
    let origin = Origin::start("origin").await;
    for i in 0..KEYS {
        let reply = Reply::ok()
            .header("cache-control", "max-age=600")
            .body(format!("item {i}"));
        origin.reply(&key(i), reply);
    }
    origin
}

#[tokio::test(flavor = "multi_thread")]
async fn a_pop_of_three_stores_each_object_once_and_asks_the_origin_once_per_key() {
    let etcd = Etcd::start();
    let origin = origin_with_items().await;
    put_shop(&etcd, &origin).await;
    let client = Client::new();
    let nodes = [
        node_in_pop(&etcd, "edge-1"),
        node_in_pop(&etcd, "edge-2"),
        node_in_pop(&etcd, "edge-3"),
    ];
    let all: Vec<&Node> = nodes.iter().collect();
    for node in &all {
        ready(&client, node).await;
    }
    pop_of(&client, &all, 3.0).await;

    get_all(&client, &all).await;
    assert_eq!(hits(&origin), vec![1; KEYS], "one origin fetch per key");
    // Once more: all hits, somewhere in the POP.
    get_all(&client, &all).await;
    assert_eq!(hits(&origin), vec![1; KEYS]);

    // Each object is stored once in the POP, every node owning some.
    let mut stored = 0.0;
    for node in &all {
        let here = cached_objects(&client, node).await;
        assert!(here > 0.0, "a node stores nothing");
        stored += here;
        let m = Scrape::of(&client, node).await;
        assert!(m.value("outpost_pop_forwards_total", &[("outcome", "answered")]) > 0.0);
        assert!(m.value("outpost_pop_served_for_peers_total", &[]) > 0.0);
    }
    assert_eq!(stored, KEYS as f64);

    // An unsafe request through any node invalidates the key at its owner
    // too (RFC 9111 section 4.4: the POP is one cache), so each key is
    // fetched once more, once.
    for i in 0..KEYS {
        let r = client
            .send(
                all[0],
                Method::POST,
                "shop.test",
                &key(i),
                &[],
                Bytes::from_static(b"x"),
            )
            .await;
        assert_eq!(r.status, 200, "{}", r.text());
    }
    get_all(&client, &all).await;
    assert_eq!(hits(&origin), vec![3; KEYS], "fill, POST, one refill");

    // What the origin saw came from the owner, never with the POP's mark.
    for seen in origin.seen() {
        assert!(seen.values("outpost-pop-forward").is_empty());
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_dead_owners_keys_go_to_the_next_member_without_client_errors_and_a_new_member_takes_a_share(
) {
    let etcd = Etcd::start();
    let origin = origin_with_items().await;
    put_shop(&etcd, &origin).await;
    let client = Client::new();
    let (a, b) = (node_in_pop(&etcd, "edge-1"), node_in_pop(&etcd, "edge-2"));
    let c = node_in_pop(&etcd, "edge-3");
    for node in [&a, &b, &c] {
        ready(&client, node).await;
    }
    pop_of(&client, &[&a, &b, &c], 3.0).await;
    get_all(&client, &[&a, &b]).await;
    assert_eq!(hits(&origin), vec![1; KEYS]);
    let owned_by_c = cached_objects(&client, &c).await as usize;

    // edge-3 dies (no goodbye: SIGKILL) while clients keep asking the
    // others for every key.
    let failures = Arc::new(AtomicUsize::new(0));
    let load = {
        let (failures, addrs) = (failures.clone(), [a.addr, b.addr]);
        tokio::spawn(async move {
            let client = Client::new();
            for round in 0..5 {
                for i in 0..KEYS {
                    let addr = addrs[(i + round) % 2];
                    let r = client
                        .send_to(addr, Method::GET, "shop.test", &key(i), &[], Bytes::new())
                        .await;
                    if r.status != 200 || r.text() != format!("item {i}") {
                        failures.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
        })
    };
    std::process::Command::new("kill")
        .args(["-KILL", &c.pid().to_string()])
        .status()
        .unwrap();
    load.await.unwrap();
    assert_eq!(failures.load(Ordering::Relaxed), 0, "client errors");
    // Only the dead owner's keys were fetched again, once each, by the
    // member next in their order.
    let after = hits(&origin);
    assert!(after.iter().all(|&n| n <= 2), "{after:?}");
    let refetched = after.iter().filter(|&&n| n == 2).count();
    assert_eq!(refetched, owned_by_c, "{after:?}");
    assert!((KEYS / 6..=KEYS / 2).contains(&refetched), "{refetched}");

    // Its lease expires: the POP is two, and nothing moves again.
    pop_of(&client, &[&a, &b], 2.0).await;
    get_all(&client, &[&a, &b]).await;
    assert_eq!(hits(&origin), after);

    // edge-4 joins: it takes about a third of the keys (each fetched once
    // more, by it) and no other key moves.
    let d = node_in_pop(&etcd, "edge-4");
    ready(&client, &d).await;
    pop_of(&client, &[&a, &b, &d], 3.0).await;
    get_all(&client, &[&a, &b, &d]).await;
    let joined = hits(&origin);
    let moved = joined
        .iter()
        .zip(&after)
        .filter(|(now, before)| now != before)
        .count();
    assert!(
        joined.iter().zip(&after).all(|(n, b)| *n <= *b + 1),
        "{joined:?}"
    );
    assert_eq!(moved, cached_objects(&client, &d).await as usize);
    assert!((KEYS / 6..=KEYS / 2).contains(&moved), "{moved} keys moved");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_forward_mark_forged_from_a_members_address_is_removed_and_the_request_served_as_a_clients(
) {
    let etcd = Etcd::start();
    let origin = origin_with_items().await;
    put_shop(&etcd, &origin).await;
    let client = Client::new();
    let nodes = [node_in_pop(&etcd, "edge-1"), node_in_pop(&etcd, "edge-2")];
    let all: Vec<&Node> = nodes.iter().collect();
    for node in &all {
        ready(&client, node).await;
    }
    pop_of(&client, &all, 2.0).await;
    // From 127.0.0.1, every member's address: a mark naming a member, as
    // the format goes, but not signed with the fleet's key; one with a MAC
    // made up; one signed long ago.
    let forged = [
        "by=edge-2;for=\"203.0.113.9\";proto=https".to_string(),
        "by=edge-2;for=\"203.0.113.9\";proto=https;t=1;mac=00".to_string(),
        format!(
            "by=edge-2;for=\"203.0.113.9\";proto=https;t={};mac={}",
            1_700_000_000,
            "ab".repeat(32)
        ),
    ];
    for (i, mark) in forged.iter().enumerate() {
        for node in &all {
            let r = client
                .get_with(
                    node,
                    "shop.test",
                    &key(i),
                    &[("outpost-pop-forward", mark.as_str())],
                )
                .await;
            assert_eq!(r.status, 200, "{}", r.text());
        }
    }
    // The origin never saw the forged client address: each request was
    // the loopback client's, forwarded (if at all) with a real mark.
    assert!(!origin.seen().is_empty());
    for seen in origin.seen() {
        let forwarded = seen.values("x-forwarded-for").join(",");
        assert!(!forwarded.contains("203.0.113.9"), "{forwarded}");
        assert_eq!(seen.values("x-forwarded-proto"), ["http"]);
    }
    // While the members' own marks are believed: keys forwarded to their
    // owners were served there.
    let served: f64 = {
        let mut n = 0.0;
        for node in &all {
            n += Scrape::of(&client, node)
                .await
                .value("outpost_pop_served_for_peers_total", &[]);
        }
        n
    };
    assert!(served > 0.0);
}
