//! The second stage of a staged rollout: while the new version runs on
//! one POP, wait; a node of that POP whose auto-rollback rule the version
//! breaks halts it (`fleet::halt`), and the rollout stops there. Without a
//! halt, the version becomes active on every POP (compare-and-swap: a
//! selection changed meanwhile by someone else is left alone).

use std::time::{Duration, Instant};

use anyhow::bail;
use etcd_client::{Client, Compare, CompareOp, Txn, TxnOp};

use crate::fleet::desired::Selection;
use crate::fleet::keys::Layout;

pub async fn promote_unless_halted(
    client: &mut Client,
    layout: &Layout,
    id: &str,
    version: &str,
    stage: Duration,
) -> anyhow::Result<()> {
    let key = layout.selection(id);
    let start = Instant::now();
    loop {
        let got = client.get(key.as_str(), None).await?;
        let Some(kv) = got.kvs().first() else {
            bail!("{id}: the selection was removed during the rollout");
        };
        let selection: Selection = serde_json::from_slice(kv.value())?;
        match (&selection.canary, &selection.halted) {
            (Some(c), _) if c.version == version => {}
            (_, Some(h)) if h.version == version => bail!(
                "{id}: rollout of {version} halted by node {} after {:.1} s: {}",
                h.node,
                start.elapsed().as_secs_f64(),
                h.reason
            ),
            _ => bail!("{id}: the selection changed during the rollout; not promoting"),
        }
        if start.elapsed() >= stage {
            let promoted = Selection {
                active: version.to_string(),
                canary: None,
                halted: None,
            };
            let txn = Txn::new()
                .when([Compare::mod_revision(
                    key.as_str(),
                    CompareOp::Equal,
                    kv.mod_revision(),
                )])
                .and_then([TxnOp::put(
                    key.as_str(),
                    serde_json::to_vec(&promoted)?,
                    None,
                )]);
            if client.txn(txn).await?.succeeded() {
                println!("{id}: {version} promoted to every POP after {stage:?} without a halt");
                return Ok(());
            }
            continue;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
