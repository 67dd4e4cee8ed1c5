//! A node's place in the fleet as etcd shows it: `{prefix}/nodes/{id}`
//! (address, POP, version, the revision it applied) and, per tenant,
//! `{prefix}/acks/{id}/{tenant}`: the version it runs and since when, or
//! why it refused the tenant's keys (Envoy's ACK/NACK). All under one
//! lease kept alive while the node is connected, so a dead node's keys go
//! with it.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use etcd_client::{Client, LeaseKeepAliveStream, LeaseKeeper, PutOptions};
use serde_json::json;

use super::keys::Layout;
use super::{FleetStatus, TenantOutcome};
use crate::metrics::{Protocol, CLASSES};
use crate::proxy::Context;

/// Seconds a dead node's keys outlive it.
pub const LEASE_TTL_S: i64 = 10;

/// Who this node is.
#[derive(Debug, Clone)]
pub struct Member {
    pub node_id: String,
    pub pop: String,
    pub address: SocketAddr,
}

/// What another node's record says of it (other fields are for people
/// and `outpost status`).
#[derive(Debug, Clone, PartialEq, serde::Deserialize)]
pub struct NodeRecord {
    pub address: SocketAddr,
    pub pop: String,
}

impl NodeRecord {
    /// Same POP and address: a load update changes nothing for the ring.
    pub fn same_place(&self, other: &NodeRecord) -> bool {
        self.address == other.address && self.pop == other.pop
    }
}

/// A node registered under a lease: writes its acknowledgements.
pub struct Registration {
    client: Client,
    lease: i64,
}

/// What keeps the lease alive, and the node's record up to date.
pub struct KeepAlive {
    keeper: LeaseKeeper,
    stream: LeaseKeepAliveStream,
    client: Client,
    lease: i64,
    key: String,
    member: Member,
    load: Load,
}

/// How many keep-alives go by between two writes of the record.
const RECORD_EVERY: u32 = 3;

impl Member {
    /// Takes a lease and writes the node's record and every
    /// acknowledgement under it; the record is written again with the
    /// node's load while the lease is kept alive.
    pub async fn register(
        &self,
        client: &Client,
        layout: &Layout,
        status: &FleetStatus,
        ctx: Arc<Context>,
    ) -> Result<(Registration, KeepAlive), etcd_client::Error> {
        let mut client = client.clone();
        let lease = client.lease_grant(LEASE_TTL_S, None).await?.id();
        let with_lease = || Some(PutOptions::new().with_lease(lease));
        let mut load = Load::new(ctx);
        let record = self.record(load.now());
        client
            .put(layout.node(&self.node_id), record, with_lease())
            .await?;
        for (tenant, outcome) in status.tenants() {
            let key = layout.ack(&self.node_id, &tenant);
            client.put(key, ack(&outcome), with_lease()).await?;
        }
        let (keeper, stream) = client.lease_keep_alive(lease).await?;
        let keep_alive = KeepAlive {
            keeper,
            stream,
            client: client.clone(),
            lease,
            key: layout.node(&self.node_id),
            member: self.clone(),
            load,
        };
        Ok((Registration { client, lease }, keep_alive))
    }

    /// The node's record: where it is and how busy.
    fn record(&self, load: serde_json::Value) -> String {
        json!({
            "address": self.address.to_string(),
            "pop": self.pop,
            "version": env!("CARGO_PKG_VERSION"),
            "since": started_at(),
            "load": load,
        })
        .to_string()
    }
}

/// A node's load as its record shows it: requests per second and failed
/// (5xx) requests per second since the last record, and open connections.
struct Load {
    ctx: Arc<Context>,
    last: (Instant, u64, u64),
}

impl Load {
    fn new(ctx: Arc<Context>) -> Load {
        let (requests, failed) = totals(&ctx);
        Load {
            ctx,
            last: (Instant::now(), requests, failed),
        }
    }

    fn now(&mut self) -> serde_json::Value {
        let (requests, failed) = totals(&self.ctx);
        let (at, before, failed_before) = self.last;
        let seconds = at.elapsed().as_secs_f64().max(0.001);
        self.last = (Instant::now(), requests, failed);
        let node = &self.ctx.metrics.node;
        let open: i64 = Protocol::ALL
            .iter()
            .map(|&p| node.open(p, false) + node.open(p, true))
            .sum();
        let rate = |n: u64, m: u64| (n.saturating_sub(m) as f64 / seconds * 10.0).round() / 10.0;
        json!({
            "requests_per_s": rate(requests, before),
            "errors_per_s": rate(failed, failed_before),
            "open_connections": open,
            "pop_members": self.ctx.pop.size(),
        })
    }
}

/// Requests served by every tenant, and those answered 5xx.
fn totals(ctx: &Context) -> (u64, u64) {
    let table = ctx.tenants.load();
    let mut all = (0, 0);
    for tenant in table.tenants() {
        let by_class = tenant.metrics.requests();
        all.0 += by_class.iter().sum::<u64>();
        all.1 += by_class[CLASSES.len() - 1];
    }
    all
}

/// When the process started, in Unix seconds.
fn started_at() -> u64 {
    static AT: std::sync::OnceLock<u64> = std::sync::OnceLock::new();
    *AT.get_or_init(|| unix_seconds(SystemTime::now()))
}

impl Registration {
    /// Writes what the node made of a tenant.
    pub async fn ack(
        &mut self,
        layout: &Layout,
        node_id: &str,
        tenant: &str,
        outcome: &TenantOutcome,
    ) -> Result<(), etcd_client::Error> {
        let options = PutOptions::new().with_lease(self.lease);
        self.client
            .put(layout.ack(node_id, tenant), ack(outcome), Some(options))
            .await
            .map(drop)
    }

    /// Removes a tenant's acknowledgement (the tenant is gone).
    pub async fn forget(&mut self, layout: &Layout, node_id: &str, tenant: &str) {
        let _ = self.client.delete(layout.ack(node_id, tenant), None).await;
    }
}

impl KeepAlive {
    /// Keeps the lease alive until it cannot; the reason.
    pub async fn run(mut self) -> String {
        let every = Duration::from_secs(LEASE_TTL_S as u64 / 3);
        for tick in 1.. {
            tokio::time::sleep(every).await;
            if tick % RECORD_EVERY == 0 {
                let record = self.member.record(self.load.now());
                let options = PutOptions::new().with_lease(self.lease);
                if let Err(e) = self
                    .client
                    .put(self.key.as_str(), record, Some(options))
                    .await
                {
                    return format!("cannot write the node's record: {e}");
                }
            }
            if let Err(e) = self.keeper.keep_alive().await {
                return format!("lease keep-alive: {e}");
            }
            match tokio::time::timeout(every, self.stream.message()).await {
                Ok(Ok(Some(r))) if r.ttl() > 0 => {}
                Ok(Ok(Some(_))) => return "the node's lease expired".into(),
                Ok(Ok(None)) | Err(_) => return "lease keep-alive went unanswered".into(),
                Ok(Err(e)) => return format!("lease keep-alive: {e}"),
            }
        }
        unreachable!("the loop only ends by returning")
    }
}

/// An acknowledgement's value.
fn ack(outcome: &TenantOutcome) -> String {
    let at = unix_seconds(outcome.at);
    let value = match &outcome.outcome {
        Ok(a) => json!({
            "revisions": outcome.revisions,
            "version": &*a.version,
            "purge_generation": a.purge_generation,
            "at": at,
        }),
        Err(why) => json!({ "revisions": outcome.revisions, "refused": why, "at": at }),
    };
    value.to_string()
}

fn unix_seconds(t: SystemTime) -> u64 {
    t.duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}
