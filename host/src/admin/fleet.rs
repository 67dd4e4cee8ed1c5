//! The admin API's view of the node's place in a fleet: readiness, the
//! `outpost_fleet_*` and `outpost_pop_*` metric families, and purges that
//! go fleet-wide.

use http::StatusCode;
use serde_json::json;

use std::time::Duration;

use super::{error, reply, AdminResponse};
use crate::control::PurgeBody;
use crate::fleet::purge::FleetPurgeError;
use crate::fleet::{FleetStatus, Link};
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

/// `POST /tenants/{id}/purge` on a node of a fleet: a purge of the whole
/// fleet (`fleet::purge`), answered once every live node carried it out,
/// with the time it took; 504 naming the nodes behind after 30 s (the
/// purge stays in etcd and they carry it out when they catch up); 503 when
/// etcd cannot take it (nothing was purged anywhere).
pub(super) async fn purge(link: Option<&Link>, id: &str, body: PurgeBody) -> AdminResponse {
    let Some(link) = link else {
        return error(StatusCode::INTERNAL_SERVER_ERROR, "not a fleet node");
    };
    if let Err(message) = body.clone().into_purge() {
        return error(StatusCode::BAD_REQUEST, message);
    }
    let mut client = match link.connect().await {
        Ok(c) => c,
        Err(e) => {
            return error(
                StatusCode::SERVICE_UNAVAILABLE,
                format!("etcd unreachable, nothing purged: {e}"),
            )
        }
    };
    match crate::fleet::purge::purge(&mut client, &link.layout, id, &body, PURGE_WAIT).await {
        Ok(done) => {
            tracing::info!(
                tenant = id,
                generation = done.generation,
                nodes = done.nodes,
                "fleet purge carried out"
            );
            reply(
                StatusCode::OK,
                json!({
                    "purged": "fleet",
                    "generation": done.generation,
                    "nodes": done.nodes,
                    "seconds": done.took.as_secs_f64(),
                }),
            )
        }
        Err(FleetPurgeError::Behind {
            generation, behind, ..
        }) => reply(
            StatusCode::GATEWAY_TIMEOUT,
            json!({
                "error": "not yet carried out by every live node; it stays in etcd for them",
                "generation": generation,
                "behind": behind,
            }),
        ),
        Err(e) => error(
            StatusCode::SERVICE_UNAVAILABLE,
            format!("the purge could not be recorded: {e}"),
        ),
    }
}

/// How long a fleet purge through the admin API waits for the nodes.
const PURGE_WAIT: Duration = Duration::from_secs(30);

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
