//! `outpost purge --etcd URL TENANT --url/--key/--tag/--all`: a purge of
//! the whole fleet (`fleet::purge`). Answers when every live node has
//! carried it out, with the time it took.

use std::time::Duration;

use super::fleet_status::connect;
use crate::control::PurgeBody;
use crate::fleet;
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
    let timeout = Duration::from_secs(args.timeout_s);
    let done = fleet::purge::purge(&mut client, &layout, id, &body, timeout)
        .await
        .map_err(|e| anyhow::anyhow!("{id}: {e}"))?;
    println!(
        "{id}: purge generation {} carried out by {} nodes in {:.3} s",
        done.generation,
        done.nodes,
        done.took.as_secs_f64()
    );
    Ok(())
}
