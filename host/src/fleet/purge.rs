//! A purge of the whole fleet: the tenant's next purge generation, written
//! to etcd with a compare-and-swap (two purges at once both count), then
//! carried out by every node when it applies the key. A key, not an event:
//! a node cut off while it is made carries it out when it catches up, and
//! a compaction gap cannot lose it. `outpost purge --etcd` and the admin
//! API of a fleet node both come here, and answer once every live node's
//! acknowledgement carries the generation.

use std::time::{Duration, Instant};

use etcd_client::{Client, Compare, CompareOp, GetOptions, Txn, TxnOp};

use super::desired::PurgeGeneration;
use super::keys::{FleetKey, Layout};
use crate::control::PurgeBody;

/// A purge carried out by every live node.
#[derive(Debug, Clone, PartialEq)]
pub struct FleetPurged {
    pub generation: u64,
    pub nodes: usize,
    pub took: Duration,
}

#[derive(Debug, thiserror::Error)]
pub enum FleetPurgeError {
    #[error("etcd: {0}")]
    Etcd(#[from] etcd_client::Error),
    #[error("purges/{tenant} in etcd does not parse: {error}")]
    Corrupt { tenant: String, error: String },
    /// In etcd (so it will be carried out), not yet by every node.
    #[error("purge generation {generation} is in etcd, but after {waited:?} not yet carried out by {}", behind.join(", "))]
    Behind {
        generation: u64,
        behind: Vec<String>,
        waited: Duration,
    },
}

/// Writes the tenant's next purge generation and waits up to `timeout`
/// for every live node to carry it out.
pub async fn purge(
    client: &mut Client,
    layout: &Layout,
    tenant: &str,
    body: &PurgeBody,
    timeout: Duration,
) -> Result<FleetPurged, FleetPurgeError> {
    let start = Instant::now();
    let generation = next_generation(client, layout, tenant, body).await?;
    loop {
        let (nodes, behind) = behind(client, layout, tenant, generation).await?;
        if behind.is_empty() {
            return Ok(FleetPurged {
                generation,
                nodes,
                took: start.elapsed(),
            });
        }
        if start.elapsed() >= timeout {
            return Err(FleetPurgeError::Behind {
                generation,
                behind,
                waited: start.elapsed(),
            });
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn next_generation(
    client: &mut Client,
    layout: &Layout,
    tenant: &str,
    body: &PurgeBody,
) -> Result<u64, FleetPurgeError> {
    let key = layout.purge(tenant);
    loop {
        let current = client.get(key.as_str(), None).await?;
        let (generation, guard) = match current.kvs().first() {
            Some(kv) => {
                let old: PurgeGeneration =
                    serde_json::from_slice(kv.value()).map_err(|e| FleetPurgeError::Corrupt {
                        tenant: tenant.to_string(),
                        error: e.to_string(),
                    })?;
                let guard =
                    Compare::mod_revision(key.as_str(), CompareOp::Equal, kv.mod_revision());
                (old.generation + 1, guard)
            }
            None => (
                1,
                Compare::create_revision(key.as_str(), CompareOp::Equal, 0),
            ),
        };
        let value = serde_json::to_vec(&PurgeGeneration {
            generation,
            purge: body.clone(),
        })
        .expect("a purge serializes");
        let txn = Txn::new()
            .when([guard])
            .and_then([TxnOp::put(key.as_str(), value, None)]);
        if client.txn(txn).await?.succeeded() {
            return Ok(generation);
        }
    }
}

/// The live nodes, and those whose acknowledgement of `tenant` does not
/// carry `generation` yet.
async fn behind(
    client: &mut Client,
    layout: &Layout,
    tenant: &str,
    generation: u64,
) -> Result<(usize, Vec<String>), FleetPurgeError> {
    let prefix = Some(GetOptions::new().with_prefix().with_keys_only());
    let nodes = client.get(layout.nodes(), prefix).await?;
    let acks = client
        .get(layout.acks(), Some(GetOptions::new().with_prefix()))
        .await?;
    let carried = |node: &str| {
        acks.kvs().iter().any(|kv| {
            let named = std::str::from_utf8(kv.key())
                .ok()
                .and_then(|k| layout.parse(k));
            named == Some(FleetKey::Ack { node, tenant })
                && serde_json::from_slice::<serde_json::Value>(kv.value())
                    .ok()
                    .and_then(|a| a["purge_generation"].as_u64())
                    .is_some_and(|g| g >= generation)
        })
    };
    let live: Vec<String> = nodes
        .kvs()
        .iter()
        .filter_map(
            |kv| match layout.parse(std::str::from_utf8(kv.key()).ok()?) {
                Some(FleetKey::Node(node)) => Some(node.to_string()),
                _ => None,
            },
        )
        .collect();
    let behind = live.iter().filter(|n| !carried(n)).cloned().collect();
    Ok((live.len(), behind))
}
