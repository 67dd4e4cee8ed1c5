//! A fleet on a real etcd: nodes take their tenants and module versions
//! from it, `outpost deploy` validates and publishes, and every node,
//! including one started later, ends up running what etcd selects; bad data
//! is refused and the previous version keeps serving.

use std::time::{Duration, Instant};

use http::Method;
use outpost_e2e::etcd::Etcd;
use outpost_e2e::fleet::*;
use outpost_e2e::metrics::Scrape;
use outpost_e2e::relay::Relay;
use outpost_e2e::*;

#[tokio::test(flavor = "multi_thread")]
async fn a_deploy_through_etcd_reaches_every_node_and_a_node_started_later_catches_up() {
    let etcd = Etcd::start();
    let origin = Origin::start("origin").await;
    let mut kv = put_shop(&etcd, &origin).await;
    let client = Client::new();
    let (a, b) = (fleet_node(&etcd, "edge-a"), fleet_node(&etcd, "edge-b"));
    for node in [&a, &b] {
        ready(&client, node).await;
        let r = client.get(node, "shop.test", "/page").await;
        assert_eq!(r.status, 200, "{}", r.text());
    }

    let (ok, out) = deploy(&etcd, "shop", "cache-key");
    assert!(ok, "{out}");
    let version = out
        .split_whitespace()
        .find(|w| w.starts_with("sha256:"))
        .expect("the deployed version")
        .to_string();
    let (ok, out) = status(&etcd, true);
    assert!(ok, "{out}");
    println!("{out}");
    for node in ["edge-a", "edge-b"] {
        assert!(out.contains(&format!("node {node}")), "{out}");
    }
    assert_eq!(out.matches(&version).count(), 2, "{out}");
    // Already true when `status --wait` returns.
    for node in [&a, &b] {
        assert_eq!(
            active(&client, node).await.as_deref(),
            Some(version.as_str())
        );
    }
    assert_eq!(client.get(&a, "shop.test", "/page").await.status, 200);

    // A node started later reads everything, modules included.
    let c = fleet_node(&etcd, "edge-c");
    ready(&client, &c).await;
    assert_eq!(active(&client, &c).await.as_deref(), Some(version.as_str()));

    // A purge reaches all three, and says how long that took.
    let (ok, text) = outpost(&["purge", "--etcd", &etcd.url, "--all", "shop"]);
    assert!(ok && text.contains("carried out by 3 nodes"), "{text}");
    println!("{text}");

    // A module that traps in its smoke call is refused before anything is
    // published; every node keeps its version.
    let (ok, out) = deploy(&etcd, "shop", "always-trap");
    assert!(!ok && out.contains("trap"), "{out}");
    // A tenant doc that is not TOML is refused by every node, which keeps
    // serving the version it ran.
    kv.put("/outpost/tenants/shop", "hosts = [", None)
        .await
        .unwrap();
    kv.put(
        "/outpost/tenants/other",
        "hosts = [\"other.test\"]\npolicy = \"builtin:default\"\n",
        None,
    )
    .await
    .unwrap();
    for node in [&a, &b, &c] {
        let start = Instant::now();
        while client.get(node, "other.test", "/").await.status == 404 {
            assert!(
                start.elapsed() < Duration::from_secs(20),
                "later change not applied"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert_eq!(
            active(&client, node).await.as_deref(),
            Some(version.as_str())
        );
        assert_eq!(client.get(node, "shop.test", "/page").await.status, 200);
    }
    // ... and says so in `status`, node by node (a node writes its acks
    // as it goes through the batch: wait for all three).
    let start = Instant::now();
    let out = loop {
        let (_, out) = status(&etcd, false);
        if out.matches("refused").count() == 3 || start.elapsed() > Duration::from_secs(20) {
            break out;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(out.matches("refused").count(), 3, "{out}");
    assert!(out.contains("tenants/shop"), "{out}");
    let m = Scrape::of(&client, &a).await;
    assert_eq!(m.value("outpost_fleet_tenants_refused", &[]), 1.0);
    assert_eq!(m.value("outpost_fleet_etcd_connected", &[]), 1.0);
    assert!(m.value("outpost_fleet_applied_revision", &[]) > 0.0);
}

/// The `fleet` part of a node's `GET /status`.
async fn fleet_status(client: &Client, node: &Node) -> serde_json::Value {
    let r = client
        .admin(node, Method::GET, "/status", Some(ADMIN_TOKEN), "")
        .await;
    json(&r)["fleet"].clone()
}

#[tokio::test(flavor = "multi_thread")]
async fn with_etcd_down_nodes_keep_serving_and_a_restarted_node_serves_its_last_known_good_state() {
    let mut etcd = Etcd::start();
    let origin = Origin::start("origin").await;
    put_shop(&etcd, &origin).await;
    let (ok, out) = deploy(&etcd, "shop", "cache-key");
    assert!(ok, "{out}");
    let client = Client::new();
    let dir = scratch_dir();
    let node = fleet_node_in(&etcd.url, "edge-a", &dir);
    ready(&client, &node).await;
    let version = active(&client, &node).await.expect("shop is served");
    assert!(version.starts_with("sha256:"));

    etcd.stop();
    for i in 0..20 {
        let r = client.get(&node, "shop.test", &format!("/page/{i}")).await;
        assert_eq!(r.status, 200, "etcd down fails no request");
    }
    // Restarted while etcd is down: it serves what it last applied...
    drop(node);
    let node = fleet_node_in(&etcd.url, "edge-a", &dir);
    let start = Instant::now();
    while active(&client, &node).await.as_deref() != Some(version.as_str()) {
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "not served from the snapshot"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(client.get(&node, "shop.test", "/again").await.status, 200);
    // ... but is not ready until it has read etcd again.
    let r = client
        .admin(&node, Method::GET, "/ready", Some(ADMIN_TOKEN), "")
        .await;
    assert_eq!(r.status, 503, "{}", r.text());
    // The status page's data says so too.
    let fleet = fleet_status(&client, &node).await;
    assert_eq!(fleet["etcd_connected"], false, "{fleet}");
    assert_eq!(fleet["synced"], false, "{fleet}");

    etcd.resume();
    ready(&client, &node).await;
    let start = Instant::now();
    let fleet = loop {
        let fleet = fleet_status(&client, &node).await;
        if fleet["etcd_connected"] == true {
            break fleet;
        }
        assert!(start.elapsed() < Duration::from_secs(20), "{fleet}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert!(fleet["revision"].as_i64().unwrap() > 0, "{fleet}");
    assert!(fleet["etcd_silence_s"].as_f64().unwrap() < 60.0, "{fleet}");
    assert_eq!(
        active(&client, &node).await.as_deref(),
        Some(version.as_str())
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_node_cut_off_while_etcd_compacts_reads_everything_again_and_unchanged_tenants_keep_their_cache(
) {
    let etcd = Etcd::start();
    let target = etcd.url.trim_start_matches("http://").parse().unwrap();
    let relay = Relay::start(target).await;
    let origin = Origin::start("origin").await;
    origin.reply_to_all(
        Reply::ok()
            .only("cache-control", "max-age=600")
            .body("kept"),
    );
    let mut kv = put_shop(&etcd, &origin).await;
    let steady = shop_doc(&origin).replace("shop.test", "steady.test");
    kv.put("/outpost/tenants/steady", steady, None)
        .await
        .unwrap();
    assert!(deploy(&etcd, "shop", "cache-key").0);
    let client = Client::new();
    let node = fleet_node_in(&relay.url(), "edge-a", &scratch_dir());
    ready(&client, &node).await;
    let first = active(&client, &node).await.unwrap();
    client.get(&node, "steady.test", "/kept").await;
    client
        .expect_cache_status(&node, "steady.test", "/kept", "hit")
        .await;

    // Cut off, the fleet moves on and etcd compacts its history.
    relay.cut();
    let (ok, out) = deploy(&etcd, "shop", "default-policy");
    assert!(ok, "{out}");
    let now = kv.put("/outpost/unrelated", "x", None).await.unwrap();
    let revision = now.header().unwrap().revision();
    kv.compact(revision, None).await.unwrap();
    relay.restore();

    let start = Instant::now();
    loop {
        let version = active(&client, &node).await.unwrap();
        if version != first {
            assert!(out.contains(&version), "{version} is the new deploy: {out}");
            break;
        }
        assert!(start.elapsed() < Duration::from_secs(30), "never caught up");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(node.log().contains("compacted"), "{}", node.log());
    // The unchanged tenant was not rebuilt: its cache is still there.
    client
        .expect_cache_status(&node, "steady.test", "/kept", "hit")
        .await;
    assert_eq!(origin.hits("/kept"), 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_fleet_purge_from_the_cli_or_a_nodes_admin_api_reaches_every_node_including_one_cut_off()
{
    let mut etcd = Etcd::start();
    let target = etcd.url.trim_start_matches("http://").parse().unwrap();
    let relay = Relay::start(target).await;
    let origin = Origin::start("origin").await;
    origin.reply_to_all(Reply::ok().only("cache-control", "max-age=600"));
    put_shop(&etcd, &origin).await;
    let client = Client::new();
    let a = fleet_node(&etcd, "edge-a");
    let b = fleet_node_in(&relay.url(), "edge-b", &scratch_dir());
    for node in [&a, &b] {
        ready(&client, node).await;
        client.get(node, "shop.test", "/p").await;
        client
            .expect_cache_status(node, "shop.test", "/p", "hit")
            .await;
    }
    assert_eq!(origin.hits("/p"), 2);

    // edge-b is cut off: the purge waits for it until its lease (10 s)
    // ends, then counts the live nodes only.
    relay.cut();
    let purge = [
        "purge",
        "--etcd",
        &etcd.url,
        "--url",
        "/p",
        "--timeout-s",
        "30",
        "shop",
    ];
    let (ok, text) = outpost(&purge);
    println!("{text}");
    assert!(ok, "{text}");
    assert!(
        text.contains("generation 1 carried out by 1 nodes"),
        "{text}"
    );
    assert!(client
        .get(&a, "shop.test", "/p")
        .await
        .cache_status()
        .contains("fwd=uri-miss"));

    // Back: it catches up and carries the purge out.
    relay.restore();
    let start = Instant::now();
    loop {
        let r = client.get(&b, "shop.test", "/p").await;
        if r.cache_status().contains("fwd=uri-miss") {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "the purge never reached edge-b"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(origin.hits("/p"), 4);

    // A purge through one node's admin API is a fleet purge too: it
    // answers once both nodes carried it out.
    for node in [&a, &b] {
        client
            .expect_cache_status(node, "shop.test", "/p", "hit")
            .await;
    }
    let r = client
        .admin(
            &b,
            Method::POST,
            "/tenants/shop/purge",
            Some(ADMIN_TOKEN),
            r#"{"url": "/p"}"#,
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let done = json(&r);
    assert_eq!(done["purged"], "fleet", "{done}");
    assert_eq!(done["generation"], 2, "{done}");
    assert_eq!(done["nodes"], 2, "{done}");
    for node in [&a, &b] {
        let r = client.get(node, "shop.test", "/p").await;
        assert!(
            r.cache_status().contains("fwd=uri-miss"),
            "{}",
            r.cache_status()
        );
    }
    assert_eq!(origin.hits("/p"), 6);

    // With etcd gone, nothing is purged and the node says so.
    etcd.stop();
    let r = client
        .admin(
            &a,
            Method::POST,
            "/tenants/shop/purge",
            Some(ADMIN_TOKEN),
            r#"{"url": "/p"}"#,
        )
        .await;
    assert_eq!(r.status, 503, "{}", r.text());
    client
        .expect_cache_status(&a, "shop.test", "/p", "hit")
        .await;
}
