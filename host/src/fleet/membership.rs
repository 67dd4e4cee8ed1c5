//! A node's place in the fleet as etcd shows it: `{prefix}/nodes/{id}`
//! (address, POP, version, the revision it applied) and, per tenant,
//! `{prefix}/acks/{id}/{tenant}`: the version it runs and since when, or
//! why it refused the tenant's keys (Envoy's ACK/NACK). All under one
//! lease kept alive while the node is connected, so a dead node's keys go
//! with it.

use std::net::SocketAddr;
use std::time::{Duration, SystemTime};

use etcd_client::{Client, LeaseKeepAliveStream, LeaseKeeper, PutOptions};
use serde_json::json;

use super::keys::Layout;
use super::{FleetStatus, TenantOutcome};

/// Seconds a dead node's keys outlive it.
pub const LEASE_TTL_S: i64 = 10;

/// Who this node is.
#[derive(Debug, Clone)]
pub struct Member {
    pub node_id: String,
    pub pop: String,
    pub address: SocketAddr,
}

/// A node registered under a lease: writes its acknowledgements.
pub struct Registration {
    client: Client,
    lease: i64,
}

/// What keeps the lease alive.
pub struct KeepAlive {
    keeper: LeaseKeeper,
    stream: LeaseKeepAliveStream,
}

impl Member {
    /// Takes a lease and writes the node's key and every acknowledgement
    /// under it.
    pub async fn register(
        &self,
        client: &Client,
        layout: &Layout,
        status: &FleetStatus,
    ) -> Result<(Registration, KeepAlive), etcd_client::Error> {
        let mut client = client.clone();
        let lease = client.lease_grant(LEASE_TTL_S, None).await?.id();
        let record = json!({
            "address": self.address.to_string(),
            "pop": self.pop,
            "version": env!("CARGO_PKG_VERSION"),
            "since": unix_seconds(SystemTime::now()),
        });
        let with_lease = || Some(PutOptions::new().with_lease(lease));
        client
            .put(layout.node(&self.node_id), record.to_string(), with_lease())
            .await?;
        for (tenant, outcome) in status.tenants() {
            let key = layout.ack(&self.node_id, &tenant);
            client.put(key, ack(&outcome), with_lease()).await?;
        }
        let (keeper, stream) = client.lease_keep_alive(lease).await?;
        Ok((Registration { client, lease }, KeepAlive { keeper, stream }))
    }
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
        loop {
            tokio::time::sleep(every).await;
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
