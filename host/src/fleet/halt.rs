//! Staged rollouts halt themselves: when a node's canary is aborted by its
//! auto-rollback rule (the node-level rollback), the node takes the canary
//! out of the tenant's selection in etcd, with a note of who halted it and
//! why, so every other node drops it too and the rollout goes no further.
//! A compare-and-swap: a selection that changed meanwhile (or a canary
//! that did not come from etcd) is left alone.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use etcd_client::{Client, Compare, CompareOp, Txn, TxnOp};

use super::desired::{Halted, Selection};
use super::keys::Layout;
use crate::control::Control;
use crate::tenant::CanaryAborted;

/// How often the tenants are looked at for an aborted canary.
const EVERY: Duration = Duration::from_millis(200);

/// Halts, in etcd, the canaries this node aborts, for as long as etcd
/// answers; why it stopped.
pub async fn run(
    control: Arc<Control>,
    mut client: Client,
    layout: Layout,
    node: String,
) -> String {
    loop {
        tokio::time::sleep(EVERY).await;
        let table = control.context().tenants.load_full();
        for tenant in table.tenants() {
            let Some(aborted) = tenant.canary_aborted.swap(None) else {
                continue;
            };
            if let Err(e) = halt(&mut client, &layout, &tenant.id, &aborted, &node).await {
                // Tried again on the next connection.
                tenant.canary_aborted.store(Some(aborted));
                return format!("cannot halt a rollout in etcd: {e}");
            }
        }
    }
}

async fn halt(
    client: &mut Client,
    layout: &Layout,
    id: &str,
    aborted: &CanaryAborted,
    node: &str,
) -> Result<(), etcd_client::Error> {
    let key = layout.selection(id);
    let got = client.get(key.as_str(), None).await?;
    let Some(kv) = got.kvs().first() else {
        return Ok(());
    };
    let Ok(selection) = serde_json::from_slice::<Selection>(kv.value()) else {
        return Ok(());
    };
    if selection.canary.as_ref().map(|c| c.version.as_str()) != Some(&*aborted.version) {
        return Ok(());
    }
    let halted = Selection {
        active: selection.active,
        canary: None,
        halted: Some(Halted {
            version: aborted.version.to_string(),
            node: node.to_string(),
            reason: aborted.reason.clone(),
            at: SystemTime::now()
                .duration_since(SystemTime::UNIX_EPOCH)
                .map_or(0, |d| d.as_secs()),
        }),
    };
    let value = serde_json::to_vec(&halted).expect("a selection serializes");
    let txn = Txn::new()
        .when([Compare::mod_revision(
            key.as_str(),
            CompareOp::Equal,
            kv.mod_revision(),
        )])
        .and_then([TxnOp::put(key.as_str(), value, None)]);
    if client.txn(txn).await?.succeeded() {
        tracing::warn!(
            tenant = id,
            version = &*aborted.version,
            "staged rollout halted fleet-wide: {}",
            aborted.reason
        );
    }
    Ok(())
}
