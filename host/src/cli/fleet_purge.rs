//! `outpost purge --etcd URL TENANT --url/--key/--tag/--all`: a purge of
//! the whole fleet, as a new purge generation of the tenant in etcd, so it
//! is never lost: a node cut off while it is made carries it out when it
//! catches up (a compaction gap cannot lose it: it is a key, not an
//! event). Answers when every live node has carried it out, with the time
//! it took.

use std::time::{Duration, Instant};

use anyhow::bail;
use etcd_client::{Compare, CompareOp, Txn, TxnOp};

use super::fleet_status::{connect, read};
use crate::control::PurgeBody;
use crate::fleet::desired::PurgeGeneration;
use crate::fleet::keys::Layout;

#[derive(clap::Args)]
#[command(group = clap::ArgGroup::new("what").required(true).multiple(false))]
pub struct PurgeArgs {
    /// The fleet's etcd endpoints (comma-separated URLs).
    #[arg(long, value_delimiter = ',', required = true)]
    etcd: Vec<String>,
    /// Where the fleet's keys live in etcd.
    #[arg(long, default_value = "/outpost")]
    prefix: String,
    /// One URL (its key is what the tenant's policy gives a GET of it).
    #[arg(long, group = "what")]
    url: Option<String>,
    /// One cache key.
    #[arg(long, group = "what")]
    key: Option<String>,
    /// Every key carrying this surrogate key / cache tag.
    #[arg(long, group = "what")]
    tag: Option<String>,
    /// Everything of the tenant.
    #[arg(long, group = "what")]
    all: bool,
    /// Mark stale instead of removing.
    #[arg(long, conflicts_with = "all")]
    soft: bool,
    /// How long to wait for every live node, in seconds.
    #[arg(long, default_value_t = 60)]
    timeout_s: u64,
    tenant: String,
}

pub fn run(args: PurgeArgs) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(purge(args))
}

async fn purge(args: PurgeArgs) -> anyhow::Result<()> {
    let body = PurgeBody {
        key: args.key,
        url: args.url,
        tag: args.tag,
        all: args.all,
        soft: args.soft,
    };
    body.clone().into_purge().map_err(anyhow::Error::msg)?;
    let layout = Layout::new(&args.prefix);
    let mut client = connect(&args.etcd).await?;
    let id = &args.tenant;
    let key = layout.purge(id);
    let start = Instant::now();
    // Compare-and-swap on the key, so two purges at once both count.
    let generation = loop {
        let current = client.get(key.as_str(), None).await?;
        let (generation, guard) = match current.kvs().first() {
            Some(kv) => {
                let old: PurgeGeneration = serde_json::from_slice(kv.value())?;
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
        })?;
        let txn = Txn::new()
            .when([guard])
            .and_then([TxnOp::put(key.as_str(), value, None)]);
        if client.txn(txn).await?.succeeded() {
            break generation;
        }
    };
    let timeout = Duration::from_secs(args.timeout_s);
    loop {
        let fleet = read(&mut client, &layout).await?;
        let behind: Vec<&String> = fleet
            .nodes
            .keys()
            .filter(|node| {
                let ack = fleet.acks.get(&((*node).clone(), id.clone()));
                ack.and_then(|a| a["purge_generation"].as_u64())
                    .unwrap_or(0)
                    < generation
            })
            .collect();
        if behind.is_empty() {
            println!(
                "{id}: purge generation {generation} carried out by {} nodes in {:.3} s",
                fleet.nodes.len(),
                start.elapsed().as_secs_f64()
            );
            return Ok(());
        }
        if start.elapsed() >= timeout {
            let list: Vec<&str> = behind.iter().map(|n| n.as_str()).collect();
            bail!(
                "{id}: purge generation {generation} is in etcd, but after {timeout:?} not yet carried out by {}",
                list.join(", ")
            );
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
