//! Helpers of the fleet tests: nodes on a real etcd, and the `outpost`
//! commands that drive a fleet.

use std::process::Command;
use std::time::{Duration, Instant};

use http::Method;

use crate::etcd::Etcd;
use crate::*;

/// The fields of tenant `shop` as etcd holds them.
pub fn shop_doc(origin: &Origin) -> String {
    format!(
        "hosts = [\"shop.test\"]\npolicy = \"builtin:default\"\n\n[backends.origin]\nurl = {:?}\n",
        origin.url()
    )
}

/// Writes tenant `shop` (backed by `origin`) to `etcd`; the client, for
/// more keys.
pub async fn put_shop(etcd: &Etcd, origin: &Origin) -> etcd_client::Client {
    let mut kv = etcd_client::Client::connect([&etcd.url], None)
        .await
        .unwrap();
    kv.put("/outpost/tenants/shop", shop_doc(origin), None)
        .await
        .unwrap();
    kv
}

/// A node of the fleet on `etcd`.
pub fn fleet_node(etcd: &Etcd, id: &str) -> Node {
    fleet_node_in(&etcd.url, id, &scratch_dir())
}

/// A node of the fleet on the etcd at `url`, keeping its state in `dir`.
/// Each in a POP of its own: what these nodes share is etcd, not a cache.
pub fn fleet_node_in(url: &str, id: &str, dir: &std::path::Path) -> Node {
    fleet_node_at(url, id, id, dir)
}

/// A node of POP `pop` of the fleet on the etcd at `url`, keeping its state
/// in `dir`.
pub fn fleet_node_at(url: &str, id: &str, pop: &str, dir: &std::path::Path) -> Node {
    fleet_node_env(url, id, pop, dir, &[])
}

/// [`fleet_node_at`] with extra environment variables (where secrets come
/// from).
pub fn fleet_node_env(
    url: &str,
    id: &str,
    pop: &str,
    dir: &std::path::Path,
    env: &[(&str, &str)],
) -> Node {
    let path = dir.join("outpost.toml");
    let state = dir.join("state");
    std::fs::write(&path, admin_section()).unwrap();
    let args = [
        "serve",
        "--config",
        path.to_str().unwrap(),
        "--listen",
        "127.0.0.1:0",
        "--etcd",
        url,
        "--node-id",
        id,
        "--pop",
        pop,
        "--state-dir",
        state.to_str().unwrap(),
    ];
    Node::spawn_env(&args, dir, env)
}

/// Runs `outpost ARGS`; (succeeded, stdout + stderr).
pub fn outpost(args: &[&str]) -> (bool, String) {
    let out = Command::new(outpost_bin())
        .args(args)
        .output()
        .expect("run outpost");
    let text =
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    (out.status.success(), text)
}

/// `outpost deploy` of an example policy against `etcd`.
pub fn deploy(etcd: &Etcd, tenant: &str, example: &str) -> (bool, String) {
    let file = outpost::guests::example_path(example);
    outpost(&[
        "deploy",
        "--etcd",
        &etcd.url,
        tenant,
        file.to_str().unwrap(),
    ])
}

/// `outpost status --etcd ... [--wait]`.
pub fn status(etcd: &Etcd, wait: bool) -> (bool, String) {
    let mut args = vec!["status", "--etcd", &etcd.url];
    if wait {
        args.extend(["--wait", "--timeout-s", "20"]);
    }
    outpost(&args)
}

/// The version a node runs for `shop`, if it has the tenant.
pub async fn active(client: &Client, node: &Node) -> Option<String> {
    let r = client
        .admin(node, Method::GET, "/tenants/shop", Some(ADMIN_TOKEN), "")
        .await;
    (r.status == 200).then(|| json(&r)["active"].as_str().unwrap_or_default().to_string())
}

pub async fn ready(client: &Client, node: &Node) {
    let start = Instant::now();
    while client
        .admin(node, Method::GET, "/ready", Some(ADMIN_TOKEN), "")
        .await
        .status
        != 200
    {
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "node never ready"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
