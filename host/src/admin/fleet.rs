//! The admin API's view of the node's place in a fleet: readiness and the
//! `outpost_fleet_*` metric families.

use http::StatusCode;
use serde_json::json;

use super::{reply, AdminResponse};
use crate::fleet::FleetStatus;
use crate::metrics::Scrape;
use crate::pop::Pop;

/// The labels of a series without any.
const NONE: [(&str, &str); 0] = [];

/// `GET /ready`: a node of a fleet is ready once it applied a full read of
/// etcd (what it serves before that may be old); a node alone, at once.
pub(super) fn ready(fleet: Option<&FleetStatus>) -> AdminResponse {
    match fleet {
        Some(f) if !f.synced() => reply(
            StatusCode::SERVICE_UNAVAILABLE,
            json!({ "ready": false, "reason": "no full read of etcd applied yet", "etcd_connected": f.connected() }),
        ),
        Some(f) => reply(
            StatusCode::OK,
            json!({ "ready": true, "etcd_revision": f.revision() }),
        ),
        None => reply(StatusCode::OK, json!({ "ready": true })),
    }
}

/// etcd's state as the node sees it (nothing for a node outside a fleet).
pub(super) fn metrics(scrape: &mut Scrape, fleet: &FleetStatus, pop: &Pop) -> std::fmt::Result {
    scrape.gauges(
        "outpost_pop_members",
        "Live nodes of this node's POP, itself included: the owners of its cache keys.",
        [(NONE, pop.size() as f64)],
    )?;
    scrape.counters(
        "outpost_pop_forwards",
        "Misses of keys another node of the POP owns, sent to it, by outcome (failed: on to the next member or the origin).",
        [
            ([("outcome", "answered")], pop.forwarded.get()),
            ([("outcome", "failed")], pop.forward_failed.get()),
        ],
    )?;
    scrape.counters(
        "outpost_pop_served_for_peers",
        "Requests other nodes of the POP forwarded here, the keys' owner.",
        [(NONE, pop.served_for_peers.get())],
    )?;
    scrape.gauges(
        "outpost_fleet_etcd_connected",
        "1 while the node is connected to the fleet's etcd.",
        [(NONE, f64::from(u8::from(fleet.connected())))],
    )?;
    scrape.gauges(
        "outpost_fleet_applied_revision",
        "The etcd revision everything up to is applied.",
        [(NONE, fleet.revision() as f64)],
    )?;
    scrape.gauges(
        "outpost_fleet_etcd_silence_seconds",
        "Seconds since etcd last answered (a read or the watch; progress arrives every 5 s).",
        fleet.silence().map(|d| (NONE, d.as_secs_f64())),
    )?;
    scrape.gauges(
        "outpost_fleet_tenants_refused",
        "Tenants whose last change from etcd was refused (they serve what they served).",
        [(NONE, fleet.refused() as f64)],
    )
}
