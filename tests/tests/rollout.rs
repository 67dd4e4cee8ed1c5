//! Staged rollouts on a fleet: `outpost deploy --pop` runs a new version on
//! one POP's nodes first; a node whose auto-rollback rule it breaks halts
//! it in etcd, so the POP's other nodes drop it too and it never reaches
//! the other POPs; a version that does not regress is promoted to every
//! POP after its stage.

use std::time::{Duration, Instant};

use http::Method;
use outpost_e2e::etcd::Etcd;
use outpost_e2e::fleet::*;
use outpost_e2e::*;

/// `outpost deploy --pop POP` of an example, promoted after `stage_s`.
fn staged(etcd_url: &str, example: &str, pop: &str, stage_s: u64) -> (bool, String) {
    let file = outpost::guests::example_path(example);
    outpost(&[
        "deploy",
        "--etcd",
        etcd_url,
        "--pop",
        pop,
        "--halt-min-requests",
        "5",
        "--promote-after-s",
        &stage_s.to_string(),
        "shop",
        file.to_str().unwrap(),
    ])
}

/// The canary a node runs for `shop`, if any.
async fn canary(client: &Client, node: &Node) -> Option<String> {
    let r = client
        .admin(node, Method::GET, "/tenants/shop", Some(ADMIN_TOKEN), "")
        .await;
    json(&r)["canary"]["version"].as_str().map(str::to_string)
}

async fn until(what: &str, mut done: impl AsyncFnMut() -> bool) {
    let start = Instant::now();
    while !done().await {
        assert!(start.elapsed() < Duration::from_secs(30), "never: {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_rollout_staged_on_one_pop_halts_itself_fleet_wide_when_it_fails_and_is_promoted_when_it_does_not(
) {
    let etcd = Etcd::start();
    let origin = Origin::start("origin").await;
    put_shop(&etcd, &origin).await;
    let client = Client::new();
    let ams1 = fleet_node_at(&etcd.url, "ams-1", "ams", &scratch_dir());
    let ams2 = fleet_node_at(&etcd.url, "ams-2", "ams", &scratch_dir());
    let fra = fleet_node_at(&etcd.url, "fra-1", "fra", &scratch_dir());
    for node in [&ams1, &ams2, &fra] {
        ready(&client, node).await;
    }
    let (ok, out) = deploy(&etcd, "shop", "cache-key");
    assert!(ok, "{out}");
    let (ok, out) = status(&etcd, true);
    assert!(ok, "{out}");
    // The figure the README gives: "converged in ..." for three nodes.
    println!("{out}");
    let good = active(&client, &fra).await.unwrap();

    // A version that traps on /trap, staged on ams.
    let url = etcd.url.clone();
    let rollout = tokio::task::spawn_blocking(move || staged(&url, "misbehaving", "ams", 60));
    // Each node applies the selection on its own watch: wait for both.
    until("ams-1 and ams-2 run the staged version", async || {
        canary(&client, &ams1).await.is_some() && canary(&client, &ams2).await.is_some()
    })
    .await;
    let bad = canary(&client, &ams1).await.unwrap();
    assert_eq!(canary(&client, &ams2).await.as_deref(), Some(bad.as_str()));
    assert_eq!(canary(&client, &fra).await, None, "fra is not in the stage");
    // Its failures on ams-1 halt it there, then everywhere.
    until("ams-1 halts the rollout", async || {
        let r = client.get(&ams1, "shop.test", "/trap").await;
        r.status == 200
    })
    .await;
    let (ok, out) = rollout.await.unwrap();
    assert!(!ok, "{out}");
    assert!(out.contains("halted by node ams-1"), "{out}");
    until("ams-2 drops the halted version", async || {
        canary(&client, &ams2).await.is_none()
    })
    .await;
    for node in [&ams1, &ams2, &fra] {
        assert_eq!(active(&client, node).await.as_deref(), Some(good.as_str()));
        assert_eq!(canary(&client, node).await, None);
    }
    let (ok, out) = status(&etcd, false);
    assert!(ok, "{out}");
    assert!(
        out.contains(&format!("rollout of {bad} halted by node ams-1")),
        "{out}"
    );

    // A version that serves well is promoted to every POP after its stage.
    let url = etcd.url.clone();
    let (ok, out) = tokio::task::spawn_blocking(move || staged(&url, "default-policy", "ams", 1))
        .await
        .unwrap();
    assert!(ok, "{out}");
    assert!(out.contains("promoted to every POP"), "{out}");
    let (ok, out) = status(&etcd, true);
    assert!(ok, "{out}");
    let promoted = active(&client, &fra).await.unwrap();
    assert_ne!(promoted, good);
    for node in [&ams1, &ams2] {
        assert_eq!(
            active(&client, node).await.as_deref(),
            Some(promoted.as_str())
        );
    }
}
