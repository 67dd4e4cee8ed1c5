//! `GET /status`: the node at a glance, as JSON: what the status page
//! (`GET /`) and `outpost status` show. Counters are totals since start;
//! readers take two snapshots for rates.

use serde_json::{json, Value};

use crate::control::Control;
use crate::fleet::FleetStatus;
use crate::metrics::{Event, Outcome, Process, Protocol};
use crate::tenant::Tenant;

/// The page itself: no build step, no external assets. It holds no data
/// and no secret; the token it asks for stays in the tab's session
/// storage and goes only in the `Authorization` header of its requests.
pub(super) const PAGE: &str = include_str!("status.html");

pub(super) fn status(control: &Control, fleet: Option<&FleetStatus>) -> Value {
    let ctx = control.context();
    let node = &ctx.metrics.node;
    let process = Process::read();
    let connections: i64 = Protocol::ALL
        .iter()
        .flat_map(|&p| [node.open(p, false), node.open(p, true)])
        .sum();
    let tenants: Vec<Value> = ctx.tenants.load().tenants().map(|t| tenant(t)).collect();
    json!({
        "node": {
            "version": env!("CARGO_PKG_VERSION"),
            "node_id": &ctx.node_id,
            "uptime_s": node.uptime_seconds(),
            "rss_bytes": process.resident_bytes,
            "open_fds": process.open_fds,
            "client_connections": connections,
        },
        "tenants": tenants,
        "fleet": fleet.map(|f| json!({
            "etcd_connected": f.connected(),
            "synced": f.synced(),
            "revision": f.revision(),
            "etcd_silence_s": f.silence().map(|d| d.as_secs_f64()),
            "tenants_refused": f.refused(),
            "pop_members": ctx.pop.size(),
        })),
    })
}

fn tenant(t: &Tenant) -> Value {
    let m = &t.metrics;
    let outcomes = m.outcomes();
    let count = |o: Outcome| outcomes[Outcome::ALL.iter().position(|&x| x == o).unwrap_or(0)];
    // Answered without a fetch of their own, against those that fetched.
    let cached = count(Outcome::Hit) + count(Outcome::Stale) + count(Outcome::Collapsed);
    let fetched = count(Outcome::Miss) + count(Outcome::Revalidated);
    let hit_ratio = (cached + fetched > 0).then(|| cached as f64 / (cached + fetched) as f64);
    let ms = |q| m.duration().quantile(q).map(|s| s * 1000.0);
    let canary = t
        .canary
        .load()
        .as_ref()
        .map(|c| json!({ "version": &*c.module.version, "percent": c.percent }));
    let failures: u64 = m.events(Event::GuestFailure).iter().map(|(_, n)| n).sum();
    let mut backends: Vec<Value> = t
        .backends
        .iter()
        .map(|(name, b)| {
            let members: Vec<Value> = b
                .members()
                .map(|member| {
                    json!({
                        "url": member.url,
                        "state": member.state.as_str(),
                        "in_flight": member.in_flight,
                        "open_connections": member.stats.open_connections
                            .load(std::sync::atomic::Ordering::Relaxed),
                    })
                })
                .collect();
            json!({ "name": name, "members": members })
        })
        .collect();
    backends.sort_by(|a, b| a["name"].as_str().cmp(&b["name"].as_str()));
    json!({
        "id": &*t.id,
        "active": &*t.policy.load().version,
        "canary": canary,
        "requests": m.requests().iter().sum::<u64>(),
        "errors_5xx": m.requests()[4],
        "hit_ratio": hit_ratio,
        "p50_ms": ms(0.5),
        "p99_ms": ms(0.99),
        "guest_failures": failures,
        "cache": t.store.usage(),
        "backends": backends,
    })
}
