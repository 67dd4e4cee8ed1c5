//! A chaos soak: a fleet on a real etcd under steady mixed load while
//! faults come on a schedule, every request's outcome recorded, and a
//! report of what happened. `bench/chaos` runs it for ten minutes; a
//! shortened run is a test (`tests/tests/chaos.rs`).
//!
//! The fleet: four nodes in two POPs (`ams`: edge-1, edge-2; `fra`:
//! edge-3, edge-4), three tenants on three origins, one of them a pool of
//! two members. The load: cache hits, misses, passes, uploads, HTTP/1.1 and
//! HTTP/2, spread over the nodes. The faults, at fractions of the run: a
//! policy deploy (or canary) every 20 s, a pool member killed and started
//! again, a node SIGKILLed and started again on its state, etcd stopped and
//! started again, a compaction, tag and URL purges, a SIGHUP with a broken
//! config, and a misbehaving version staged on one POP that must halt.
//!
//! Every 5xx must be explained by the fault in force when it happened (the
//! misbehaving version's traps, while it runs); a request a killed node
//! could not take is counted apart, and so is any other transport error
//! (which is a failure). The report also gives each node's RSS and open
//! descriptors after warm-up and at the end, whether every node ends on
//! the same version, and what the origins were asked against the ideal.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Method, Request};

use crate::etcd::Etcd;
use crate::fleet::outpost;
use crate::{admin_section, full_body, scratch_dir, Client, Node, Origin, Reply, ADMIN_TOKEN};

/// Objects of the `shop` tenant the load asks for (each cached per POP).
const OBJECTS: u64 = 40;

/// How long after a fault ends its effects may still be seen.
const GRACE: Duration = Duration::from_secs(3);

/// What the soak found.
pub struct Report {
    /// The report, as Markdown.
    pub text: String,
    /// 5xx answers no fault explains, and transport errors not from a
    /// killed node: each a line.
    pub unexplained: Vec<String>,
    /// Deploys or purges that were not acknowledged.
    pub lost: Vec<String>,
    /// Every node ended on the same active version of every tenant.
    pub converged: bool,
    /// Nodes whose RSS or descriptors grew past warm-up (a line each).
    pub grew: Vec<String>,
}

/// A fault and when it was in force.
#[derive(Clone)]
struct Fault {
    what: String,
    /// The node it is on, if one.
    node: Option<usize>,
    /// The request path prefix whose 5xx it explains, if any.
    explains: Option<&'static str>,
    start: Instant,
    end: Option<Instant>,
}

/// A request's outcome.
struct Outcome {
    at: Instant,
    node: usize,
    what: &'static str,
    path: String,
    result: Result<u16, String>,
}

/// The fleet under test.
struct Fleet {
    etcd: Mutex<Etcd>,
    /// Node processes (none while one is killed), their directories, ids
    /// and POPs.
    nodes: Mutex<Vec<Option<Node>>>,
    addrs: Mutex<Vec<SocketAddr>>,
    dirs: Vec<PathBuf>,
    ids: Vec<&'static str>,
    pops: Vec<&'static str>,
    faults: Mutex<Vec<Fault>>,
    outcomes: Mutex<Vec<Outcome>>,
    stop: AtomicBool,
    started: Instant,
}

impl Fleet {
    fn fault(
        &self,
        what: impl Into<String>,
        node: Option<usize>,
        explains: Option<&'static str>,
    ) -> usize {
        let mut faults = self.faults.lock().unwrap();
        faults.push(Fault {
            what: what.into(),
            node,
            explains,
            start: Instant::now(),
            end: None,
        });
        faults.len() - 1
    }

    fn end(&self, fault: usize) {
        self.faults.lock().unwrap()[fault].end = Some(Instant::now());
    }

    fn instant(&self, what: impl Into<String>) {
        let fault = self.fault(what, None, None);
        self.end(fault);
    }

    fn start_node(&self, i: usize) -> Node {
        let dir = &self.dirs[i];
        let config = dir.join("outpost.toml");
        std::fs::write(&config, admin_section()).unwrap();
        let state = dir.join("state");
        let url = self.etcd.lock().unwrap().url.clone();
        let args = [
            "serve",
            "--config",
            config.to_str().unwrap(),
            "--listen",
            "127.0.0.1:0",
            "--etcd",
            &url,
            "--node-id",
            self.ids[i],
            "--pop",
            self.pops[i],
            "--state-dir",
            state.to_str().unwrap(),
        ];
        Node::spawn(&args, dir)
    }

    fn elapsed(&self, at: Instant) -> f64 {
        at.duration_since(self.started).as_secs_f64()
    }
}

/// The tenants' documents as etcd holds them.
fn tenants(shop: &Origin, api: &[&Origin; 2], media: &Origin) -> Vec<(&'static str, String)> {
    vec![
        (
            "shop",
            format!(
                "hosts = [\"shop.test\", \"127.0.0.1\"]\npolicy = \"builtin:default\"\n\
                 [backends.origin]\nurl = {:?}\n",
                shop.url()
            ),
        ),
        (
            "api",
            format!(
                "hosts = [\"api.test\"]\npolicy = \"builtin:default\"\n\
                 [backends.origin]\nmembers = [{{ url = {:?} }}, {{ url = {:?} }}]\n\
                 connect_timeout_ms = 500\n",
                api[0].url(),
                api[1].url()
            ),
        ),
        (
            "media",
            format!(
                "hosts = [\"media.test\"]\npolicy = \"builtin:default\"\n\
                 [backends.origin]\nurl = {:?}\n",
                media.url()
            ),
        ),
    ]
}

fn script_api(origin: &Origin) {
    origin.reply_to_all(Reply::ok().only("cache-control", "no-store"));
}

/// Runs the soak for `duration` (at least a minute: the schedule is set in
/// fractions of it, and etcd stays down for a sixth of it, 30 s at most).
pub async fn run(duration: Duration) -> Report {
    let shop = Origin::start("shop").await;
    shop.reply_to_all(
        Reply::ok()
            .only("cache-control", "max-age=600")
            .header("surrogate-key", "catalog"),
    );
    let api = [Origin::start("api-1").await, Origin::start("api-2").await];
    for origin in &api {
        script_api(origin);
    }
    let media = Origin::start("media").await;
    media.reply_to_all(
        Reply::ok()
            .only("cache-control", "max-age=600")
            .body(vec![b'm'; 64 * 1024]),
    );
    let etcd = Etcd::start();
    let mut kv = etcd_client::Client::connect([&etcd.url], None)
        .await
        .unwrap();
    for (id, doc) in tenants(&shop, &[&api[0], &api[1]], &media) {
        kv.put(format!("/outpost/tenants/{id}"), doc, None)
            .await
            .unwrap();
    }
    let ids = vec!["edge-1", "edge-2", "edge-3", "edge-4"];
    let fleet = Arc::new(Fleet {
        etcd: Mutex::new(etcd),
        nodes: Mutex::new(Vec::new()),
        addrs: Mutex::new(Vec::new()),
        dirs: ids.iter().map(|_| scratch_dir()).collect(),
        pops: vec!["ams", "ams", "fra", "fra"],
        ids,
        faults: Mutex::default(),
        outcomes: Mutex::default(),
        stop: AtomicBool::new(false),
        started: Instant::now(),
    });
    for i in 0..4 {
        let node = fleet.start_node(i);
        fleet.addrs.lock().unwrap().push(node.addr);
        fleet.nodes.lock().unwrap().push(Some(node));
    }
    let client = Client::new();
    for i in 0..4 {
        let addr = fleet.addrs.lock().unwrap()[i];
        ready_at(&client, addr, &fleet).await;
    }

    let load: Vec<_> = (0..6)
        .map(|worker| tokio::spawn(load(fleet.clone(), worker)))
        .collect();

    let at = |fraction: f64| duration.mul_f64(fraction);
    let mut lost = Vec::new();
    sleep_until(&fleet, at(0.1)).await;
    let before = footprints(&fleet);

    // Deploys every 20 s (at least two), alternating two good versions; the
    // second of them a canary.
    let deploys = tokio::spawn(deploy_every(fleet.clone(), duration));

    sleep_until(&fleet, at(0.2)).await;
    let member = fleet.fault("pool member api-1 killed", None, None);
    let api_addr = api[0].addr;
    api[0].stop();
    // What api-1 was answering when it went is lost with it (a POST that
    // was sent is never sent again); new requests go to api-2.
    let cut = fleet.fault("requests in flight to api-1 cut", None, Some("/"));
    fleet.end(cut);
    sleep_until(&fleet, at(0.3)).await;
    let restarted = Origin::start_at("api-1", api_addr).await;
    script_api(&restarted);
    fleet.end(member);

    sleep_until(&fleet, at(0.32)).await;
    let killed = fleet.fault("edge-2 SIGKILLed", Some(1), None);
    drop(fleet.nodes.lock().unwrap()[1].take());
    sleep_until(&fleet, at(0.42)).await;
    let node = fleet.start_node(1);
    fleet.addrs.lock().unwrap()[1] = node.addr;
    let addr = node.addr;
    fleet.nodes.lock().unwrap()[1] = Some(node);
    ready_at(&client, addr, &fleet).await;
    fleet.end(killed);

    sleep_until(&fleet, at(0.45)).await;
    let down = fleet.fault("etcd stopped", None, None);
    fleet.etcd.lock().unwrap().stop();
    tokio::time::sleep((duration / 6).min(Duration::from_secs(30))).await;
    fleet.etcd.lock().unwrap().resume();
    fleet.end(down);

    sleep_until(&fleet, at(0.65)).await;
    match compact(&fleet).await {
        Ok(revision) => fleet.instant(format!("etcd compacted at revision {revision}")),
        Err(e) => lost.push(format!("compaction failed: {e}")),
    }
    let fetched_before_purges = shop
        .seen()
        .iter()
        .filter(|s| s.target.starts_with("/obj/"))
        .count();
    fleet.instant(format!(
        "(the shop origin has been asked for objects {fetched_before_purges} times)"
    ));
    for (what, args) in [
        ("tag purge of catalog", vec!["--tag", "catalog"]),
        (
            "URL purge of /obj/1",
            vec!["--url", "http://shop.test/obj/1"],
        ),
    ] {
        let url = fleet.etcd.lock().unwrap().url.clone();
        let mut full = vec!["purge", "--etcd", &url, "shop"];
        full.extend(args);
        let owned: Vec<String> = full.iter().map(|s| s.to_string()).collect();
        let (ok, out) = tokio::task::spawn_blocking(move || {
            let args: Vec<&str> = owned.iter().map(String::as_str).collect();
            outpost(&args)
        })
        .await
        .unwrap();
        fleet.instant(what);
        if !ok {
            lost.push(format!("{what}: {out}"));
        }
    }

    sleep_until(&fleet, at(0.7)).await;
    let config = fleet.dirs[2].join("outpost.toml");
    std::fs::write(&config, "[server\nthis is not TOML").unwrap();
    let hup = fleet.fault("SIGHUP with a broken config on edge-3", Some(2), None);
    if let Some(node) = &fleet.nodes.lock().unwrap()[2] {
        node.hangup();
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    std::fs::write(&config, admin_section()).unwrap();
    fleet.end(hup);

    sleep_until(&fleet, at(0.75)).await;
    let staged = fleet.fault("misbehaving version staged on ams", None, Some("/trap"));
    let url = fleet.etcd.lock().unwrap().url.clone();
    let (ok, out) = tokio::task::spawn_blocking(move || {
        let file = outpost::guests::example_path("misbehaving");
        outpost(&[
            "deploy",
            "--etcd",
            &url,
            "--pop",
            "ams",
            "--halt-min-requests",
            "5",
            "--promote-after-s",
            "600",
            "shop",
            file.to_str().unwrap(),
        ])
    })
    .await
    .unwrap();
    // The halt reaches every node through its watch: the fault lasts until
    // none of them runs the staged version any more.
    until_no_canary(&fleet, &client).await;
    fleet.end(staged);
    if ok || !out.contains("halted") {
        lost.push(format!("the misbehaving version was not halted: {out}"));
    }

    sleep_until(&fleet, duration).await;
    for deploy in deploys.await.unwrap() {
        lost.push(deploy);
    }
    fleet.stop.store(true, Ordering::Relaxed);
    for worker in load {
        let _ = worker.await;
    }
    let converged_at = Instant::now();
    let (converged, mut versions) = converged(&fleet, &client).await;
    for (i, node) in fleet.nodes.lock().unwrap().iter_mut().enumerate() {
        if let Some(node) = node {
            if !node.is_running() {
                let log = node.log();
                let tail: Vec<&str> = log.lines().rev().take(5).collect();
                versions.push(format!("{} exited: {tail:?}", fleet.ids[i]));
            }
        }
    }
    let after = footprints(&fleet);
    let mut sharing = Vec::new();
    let nodes: Vec<Option<(usize, SocketAddr)>> = fleet
        .nodes
        .lock()
        .unwrap()
        .iter()
        .enumerate()
        .map(|(i, n)| n.as_ref().and_then(|n| n.admin).map(|a| (i, a)))
        .collect();
    for (i, admin) in nodes.into_iter().flatten() {
        if let Some(m) = admin_metrics(&client, admin).await {
            sharing.push(format!(
                "| {} | {} | {} | {} |",
                fleet.ids[i],
                m.sum("outpost_cache_objects", &[("tenant", "shop")]),
                m.sum("outpost_pop_forwards_total", &[]),
                m.value("outpost_pop_served_for_peers_total", &[]),
            ));
        }
    }
    report(
        &fleet,
        &[&shop, &api[1], &media, &restarted],
        before,
        after,
        lost,
        converged,
        versions,
        converged_at,
        sharing,
    )
}

/// `GET path` on an admin listener with the token: the body as JSON, or
/// the text of what went wrong.
async fn admin_json(
    client: &Client,
    admin: SocketAddr,
    path: &str,
) -> Result<serde_json::Value, String> {
    let request = Request::builder()
        .uri(format!("http://{admin}{path}"))
        .header("authorization", format!("Bearer {ADMIN_TOKEN}"))
        .body(full_body(Bytes::new()))
        .unwrap();
    let response = client
        .inner
        .request(request)
        .await
        .map_err(|e| format!("({e})"))?;
    if response.status() != 200 {
        return Err(format!("({})", response.status()));
    }
    let body = http_body_util::BodyExt::collect(response.into_body())
        .await
        .map_err(|e| format!("({e})"))?
        .to_bytes();
    serde_json::from_slice(&body).map_err(|e| format!("({e})"))
}

/// `GET /metrics` on an admin listener, parsed.
async fn admin_metrics(client: &Client, admin: SocketAddr) -> Option<crate::metrics::Scrape> {
    let request = Request::builder()
        .uri(format!("http://{admin}/metrics"))
        .header("authorization", format!("Bearer {ADMIN_TOKEN}"))
        .body(full_body(Bytes::new()))
        .unwrap();
    let response = client.inner.request(request).await.ok()?;
    let body = http_body_util::BodyExt::collect(response.into_body())
        .await
        .ok()?
        .to_bytes();
    Some(crate::metrics::Scrape::parse(&String::from_utf8_lossy(
        &body,
    )))
}

/// Waits (bounded) until no node runs a canary of `shop`.
async fn until_no_canary(fleet: &Fleet, client: &Client) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline {
        let admins: Vec<SocketAddr> = fleet
            .nodes
            .lock()
            .unwrap()
            .iter()
            .flatten()
            .filter_map(|n| n.admin)
            .collect();
        let mut any = false;
        for admin in admins {
            if let Ok(v) = admin_json(client, admin, "/tenants/shop").await {
                any |= !v["canary"].is_null();
            }
        }
        if !any {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Sleeps until `offset` into the run.
async fn sleep_until(fleet: &Fleet, offset: Duration) {
    let at = fleet.started + offset;
    tokio::time::sleep_until(at.into()).await;
}

/// Waits (bounded) until the node at `addr` says it serves its desired state.
async fn ready_at(client: &Client, addr: SocketAddr, fleet: &Fleet) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let admin = fleet
            .nodes
            .lock()
            .unwrap()
            .iter()
            .flatten()
            .find(|n| n.addr == addr)
            .and_then(|n| n.admin);
        if let Some(admin) = admin {
            let r = client
                .send_to(
                    admin,
                    Method::GET,
                    "admin",
                    "/ready",
                    &[("authorization", &format!("Bearer {ADMIN_TOKEN}"))],
                    Bytes::new(),
                )
                .await;
            if r.status == 200 {
                return;
            }
        }
        assert!(Instant::now() < deadline, "node at {addr} never ready");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// One load worker: requests of every kind in turn, over the nodes in
/// turn, until the run stops.
async fn load(fleet: Arc<Fleet>, worker: u64) {
    let h1 = Client::new();
    let h2 = Client::http2();
    static UNIQUE: AtomicU64 = AtomicU64::new(0);
    let mut n = worker;
    while !fleet.stop.load(Ordering::Relaxed) {
        n += 1;
        let node = (n % 4) as usize;
        let addr = fleet.addrs.lock().unwrap()[node];
        let unique = UNIQUE.fetch_add(1, Ordering::Relaxed);
        // The object asked for, spread independently of the node and of
        // the kind of request (both follow `n`): every node sees every
        // object.
        let object = (unique.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 40) % OBJECTS;
        let (what, client, method, host, path, body) = match n % 10 {
            0..=3 => (
                "hit",
                &h1,
                Method::GET,
                "shop.test",
                format!("/obj/{object}"),
                0,
            ),
            4 => (
                "miss",
                &h1,
                Method::GET,
                "shop.test",
                format!("/miss/{unique}"),
                0,
            ),
            5 => (
                "pass",
                &h1,
                Method::GET,
                "api.test",
                format!("/api/{unique}"),
                0,
            ),
            6 => (
                "upload",
                &h1,
                Method::POST,
                "api.test",
                "/up".to_string(),
                8 * 1024,
            ),
            7 => (
                "media",
                &h1,
                Method::GET,
                "media.test",
                format!("/m/{}", object % 10),
                0,
            ),
            8 => (
                "h2 hit",
                &h2,
                Method::GET,
                "127.0.0.1",
                format!("/obj/{object}"),
                0,
            ),
            _ => (
                "trap",
                &h1,
                Method::GET,
                "shop.test",
                "/trap".to_string(),
                0,
            ),
        };
        let result = send(client, addr, method, host, &path, body).await;
        fleet.outcomes.lock().unwrap().push(Outcome {
            at: Instant::now(),
            node,
            what,
            path,
            result,
        });
    }
}

/// One request: its status, or why there was none (within 10 s).
async fn send(
    client: &Client,
    addr: SocketAddr,
    method: Method,
    host: &str,
    path: &str,
    body: usize,
) -> Result<u16, String> {
    let mut request = Request::builder()
        .method(method)
        .uri(format!("http://{addr}{path}"));
    if host != "127.0.0.1" {
        request = request.header("host", host);
    }
    let request = request
        .body(full_body(Bytes::from(vec![b'u'; body])))
        .unwrap();
    let response = tokio::time::timeout(Duration::from_secs(10), client.inner.request(request))
        .await
        .map_err(|_| "no response in 10 s".to_string())?
        .map_err(|e| format!("{e}"))?;
    let status = response.status().as_u16();
    http_body_util::BodyExt::collect(response.into_body())
        .await
        .map_err(|e| format!("body failed: {e}"))?;
    Ok(status)
}

/// A deploy every 20 s (at least two in a run), alternating two good
/// versions, every second one a canary; what was not acknowledged.
async fn deploy_every(fleet: Arc<Fleet>, duration: Duration) -> Vec<String> {
    let every = Duration::from_secs(20).min(duration / 4);
    let mut lost = Vec::new();
    let mut round = 0;
    let mut next = fleet.started + duration.mul_f64(0.12);
    // Not while etcd is down (0.45 to about 0.62) or the staged rollout
    // runs (from 0.75).
    while next < fleet.started + duration.mul_f64(0.74) {
        tokio::time::sleep_until(next.into()).await;
        let at = fleet.elapsed(next) / duration.as_secs_f64();
        next += every;
        if (0.44..0.64).contains(&at) {
            continue;
        }
        let example = ["cache-key", "default-policy"][round % 2];
        let canary = round % 2 == 1;
        round += 1;
        let url = fleet.etcd.lock().unwrap().url.clone();
        let (ok, out) = tokio::task::spawn_blocking(move || {
            let file = outpost::guests::example_path(example);
            let mut args = vec!["deploy", "--etcd", &url];
            if canary {
                args.extend(["--canary", "30"]);
            }
            let file = file.to_str().unwrap().to_string();
            args.extend(["shop", &file]);
            outpost(&args)
        })
        .await
        .unwrap();
        let what = format!(
            "deploy of {example}{}",
            if canary { " as a 30 % canary" } else { "" }
        );
        fleet.instant(what.clone());
        if !ok {
            lost.push(format!("{what}: {out}"));
        }
    }
    lost
}

/// Compacts etcd at its current revision.
async fn compact(fleet: &Fleet) -> Result<i64, String> {
    let url = fleet.etcd.lock().unwrap().url.clone();
    let mut kv = etcd_client::Client::connect([&url], None)
        .await
        .map_err(|e| e.to_string())?;
    let revision = kv
        .get("/outpost/tenants/shop", None)
        .await
        .map_err(|e| e.to_string())?
        .header()
        .map_or(0, |h| h.revision());
    kv.compact(revision, None)
        .await
        .map_err(|e| e.to_string())?;
    Ok(revision)
}

/// RSS (KiB) and open descriptors of every running node, by node.
fn footprints(fleet: &Fleet) -> Vec<Option<(u64, usize)>> {
    fleet
        .nodes
        .lock()
        .unwrap()
        .iter()
        .map(|node| {
            let node = node.as_ref()?;
            let fds = std::fs::read_dir(format!("/proc/{}/fd", node.pid()))
                .map(|d| d.count())
                .unwrap_or(0);
            Some((node.rss_kib(), fds))
        })
        .collect()
}

/// Waits (bounded) until every node runs the same active version of every
/// tenant; whether they did, and the versions seen.
async fn converged(fleet: &Fleet, client: &Client) -> (bool, Vec<String>) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let mut versions = Vec::new();
        let admins: Vec<Option<SocketAddr>> = fleet
            .nodes
            .lock()
            .unwrap()
            .iter()
            .map(|n| n.as_ref().and_then(|n| n.admin))
            .collect();
        for admin in admins.into_iter().flatten() {
            let mut seen = BTreeMap::new();
            for tenant in ["shop", "api", "media"] {
                let active = match admin_json(client, admin, &format!("/tenants/{tenant}")).await {
                    Ok(v) => v["active"].as_str().unwrap_or("-").to_string(),
                    Err(e) => e,
                };
                seen.insert(tenant, active);
            }
            versions.push(format!("{seen:?}"));
        }
        let same = versions.windows(2).all(|w| w[0] == w[1]) && versions.len() == 4;
        if same || Instant::now() > deadline {
            return (same, versions);
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[allow(clippy::too_many_arguments)]
fn report(
    fleet: &Fleet,
    origins: &[&Origin],
    before: Vec<Option<(u64, usize)>>,
    after: Vec<Option<(u64, usize)>>,
    lost: Vec<String>,
    converged: bool,
    versions: Vec<String>,
    converged_at: Instant,
    sharing: Vec<String>,
) -> Report {
    let faults = fleet.faults.lock().unwrap().clone();
    let outcomes = fleet.outcomes.lock().unwrap();
    let in_force =
        |f: &Fault, at: Instant| f.start <= at && f.end.is_none_or(|end| at <= end + GRACE);
    let mut by_outcome: BTreeMap<String, u64> = BTreeMap::new();
    let mut unexplained = Vec::new();
    for o in outcomes.iter() {
        let class = match &o.result {
            Ok(status) if *status < 400 => format!("{}xx", status / 100),
            Ok(status) => status.to_string(),
            Err(_) => "no response".to_string(),
        };
        *by_outcome.entry(format!("{} {class}", o.what)).or_default() += 1;
        let explained = match &o.result {
            Ok(status) if *status < 500 => true,
            Ok(_) => faults
                .iter()
                .any(|f| in_force(f, o.at) && f.explains.is_some_and(|p| o.path.starts_with(p))),
            // A node killed (or its restart) refuses connections.
            Err(_) => faults
                .iter()
                .any(|f| in_force(f, o.at) && f.node == Some(o.node) && f.what.contains("SIGKILL")),
        };
        if !explained {
            unexplained.push(format!(
                "{:.1} s: {} {} through {}: {:?}",
                fleet.elapsed(o.at),
                o.what,
                o.path,
                fleet.ids[o.node],
                o.result
            ));
        }
    }
    let mut grew = Vec::new();
    let mut text = String::new();
    let total: u64 = by_outcome.values().sum();
    text.push_str(&format!(
        "{total} requests over {:.0} s, {} unexplained.\n\n| requests | outcome |\n|---|---:|\n",
        fleet.elapsed(converged_at),
        unexplained.len()
    ));
    for (outcome, n) in &by_outcome {
        text.push_str(&format!("| {outcome} | {n} |\n"));
    }
    text.push_str("\n| at (s) | fault | until (s) |\n|---:|---|---:|\n");
    for f in &faults {
        let until = f
            .end
            .map_or("-".to_string(), |e| format!("{:.1}", fleet.elapsed(e)));
        text.push_str(&format!(
            "| {:.1} | {} | {until} |\n",
            fleet.elapsed(f.start),
            f.what
        ));
    }
    text.push_str("\n| node | RSS after warm-up (MiB) | at the end | fds after warm-up | at the end |\n|---|---:|---:|---:|---:|\n");
    for (i, id) in fleet.ids.iter().enumerate() {
        let show = |f: Option<(u64, usize)>| {
            f.map_or(("-".to_string(), "-".to_string()), |(rss, fds)| {
                (format!("{:.1}", rss as f64 / 1024.0), fds.to_string())
            })
        };
        let (r0, f0) = show(before[i]);
        let (r1, f1) = show(after[i]);
        let restarted = faults
            .iter()
            .any(|f| f.node == Some(i) && f.what.contains("SIGKILL"));
        text.push_str(&format!(
            "| {id}{} | {r0} | {r1} | {f0} | {f1} |\n",
            if restarted { " (restarted)" } else { "" }
        ));
        if let (Some((rss0, fds0)), Some((rss1, fds1)), false) = (before[i], after[i], restarted) {
            if rss1 > rss0 * 3 / 2 + 32 * 1024 || fds1 > fds0 + 64 {
                grew.push(format!(
                    "{id}: RSS {rss0} -> {rss1} KiB, fds {fds0} -> {fds1}"
                ));
            }
        }
    }
    let objects = |o: &Origin| {
        o.seen()
            .iter()
            .filter(|s| s.target.starts_with("/obj/"))
            .count()
    };
    let purges = faults
        .iter()
        .filter(|f| f.what.contains("purge of catalog"))
        .count();
    let mut by_host: BTreeMap<String, (usize, std::collections::BTreeSet<String>)> =
        BTreeMap::new();
    for seen in origins[0]
        .seen()
        .iter()
        .filter(|s| s.target.starts_with("/obj/"))
    {
        let host = seen
            .headers
            .get("host")
            .and_then(|h| h.to_str().ok())
            .unwrap_or("-")
            .to_string();
        let entry = by_host.entry(host).or_default();
        entry.0 += 1;
        entry.1.insert(seen.target.clone());
    }
    for (host, (n, targets)) in &by_host {
        text.push_str(&format!(
            "\nShop objects fetched with Host {host}: {n} times, {} distinct.",
            targets.len()
        ));
    }
    text.push('\n');
    text.push_str(&format!(
        "\nThe shop origin was asked for its {OBJECTS} objects {} times in all (the floor: each object \
         once per POP, again after the tag purge, {}; every policy deploy that changes the key \
         scheme, the URL purge and the node restarted add their own, and HTTP/2 requests name a \
         node's own address, so each such node is a key space of its own). Other origins: {}.\n",
        objects(origins[0]),
        OBJECTS as usize * 2 * (1 + purges),
        origins[1..]
            .iter()
            .map(|o| o.total().to_string())
            .collect::<Vec<_>>()
            .join(", ")
    ));
    text.push_str(
        "\n| node | shop objects stored | POP forwards | served for POP members |\n|---|---:|---:|---:|\n",
    );
    for line in &sharing {
        text.push_str(line);
        text.push('\n');
    }
    text.push_str(&format!(
        "\nEvery node on the same versions at the end: {converged}.\n"
    ));
    for v in &versions {
        text.push_str(&format!("- {v}\n"));
    }
    if !lost.is_empty() {
        text.push_str("\nNot acknowledged:\n");
        for l in &lost {
            text.push_str(&format!("- {l}\n"));
        }
    }
    if !unexplained.is_empty() {
        text.push_str("\nUnexplained:\n");
        for u in unexplained.iter().take(20) {
            text.push_str(&format!("- {u}\n"));
        }
    }
    Report {
        text,
        unexplained,
        lost,
        converged,
        grew,
    }
}
