//! `outpost deploy --etcd URL TENANT FILE.wasm`: validates a module as the
//! admin API would (a component of the right world that compiles,
//! instantiates under the tenant's limits and survives a smoke call, in a
//! node built here from the tenant's config in etcd), then publishes it to
//! the fleet: its bytes in chunks, then the tenant's selection. With
//! `--pop`, a staged rollout (`rollout.rs`).

use std::path::PathBuf;

use anyhow::{bail, Context};
use etcd_client::{Client, ConnectOptions};

use crate::config::{Config, TenantConfig};
use crate::control::Control;
use crate::fleet::desired::{module_keys, CanarySelection, RollbackRule, Selection};
use crate::fleet::keys::Layout;

#[derive(clap::Args)]
pub struct DeployArgs {
    /// The fleet's etcd endpoints (comma-separated URLs).
    #[arg(long, value_delimiter = ',', required = true)]
    etcd: Vec<String>,
    /// Where the fleet's keys live in etcd.
    #[arg(long, default_value = "/outpost")]
    prefix: String,
    /// Send this percentage of the tenant's requests to the new version (a
    /// canary) instead of making it active.
    #[arg(long, value_parser = clap::value_parser!(u32).range(0..=100))]
    canary: Option<u32>,
    /// A staged rollout: the new version runs on the nodes of this POP only
    /// (for `--canary` percent of their requests, else all), under an
    /// auto-rollback rule; a node whose rule it breaks halts it fleet-wide.
    #[arg(long)]
    pop: Option<String>,
    /// With `--pop`: after this many seconds without a halt, make the new
    /// version active on every POP (without it, the stage stays until the
    /// next deploy).
    #[arg(long, requires = "pop")]
    promote_after_s: Option<u64>,
    /// With `--pop`: how far the new version's failure rate may exceed the
    /// old one's on a node (0-1).
    #[arg(long, requires = "pop", default_value_t = 0.05)]
    halt_margin: f64,
    /// With `--pop`: requests the new version serves on a node before its
    /// rule is checked.
    #[arg(long, requires = "pop", default_value_t = 100)]
    halt_min_requests: u64,
    tenant: String,
    file: PathBuf,
}

pub fn run(args: DeployArgs) -> anyhow::Result<()> {
    let wasm = std::fs::read(&args.file)
        .with_context(|| format!("cannot read {}", args.file.display()))?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(deploy(args, wasm))
}

async fn deploy(args: DeployArgs, wasm: Vec<u8>) -> anyhow::Result<()> {
    let layout = Layout::new(&args.prefix);
    let options = ConnectOptions::new().with_connect_timeout(std::time::Duration::from_secs(5));
    let mut client = Client::connect(&args.etcd, Some(options))
        .await
        .with_context(|| format!("cannot connect to etcd at {}", args.etcd.join(",")))?;
    let id = &args.tenant;
    let doc = client.get(layout.tenant(id), None).await?;
    let Some(doc) = doc.kvs().first() else {
        bail!(
            "no tenant {id:?} in etcd ({} is not set)",
            layout.tenant(id)
        );
    };
    let version = validate(id, doc.value(), &wasm).await?;
    let (published, keys) = module_keys(&layout, &wasm);
    debug_assert_eq!(published, *version);
    for (key, value) in keys {
        client.put(key, value, None).await?;
    }
    let current = client.get(layout.selection(id), None).await?;
    let current: Option<Selection> = current
        .kvs()
        .first()
        .and_then(|kv| serde_json::from_slice(kv.value()).ok());
    let staged = args.pop.is_some();
    let selection = match (args.canary.or(staged.then_some(100)), current) {
        (Some(percent), Some(current)) => Selection {
            active: current.active,
            canary: Some(CanarySelection {
                version: version.to_string(),
                percent,
                pop: args.pop.clone(),
                auto_rollback: staged.then_some(RollbackRule {
                    margin: args.halt_margin,
                    min_requests: args.halt_min_requests,
                }),
            }),
            halted: None,
        },
        (Some(_), None) => {
            bail!("tenant {id:?} runs no version from etcd yet: deploy it without --canary or --pop first")
        }
        (None, _) => Selection {
            active: version.to_string(),
            canary: None,
            halted: None,
        },
    };
    client
        .put(layout.selection(id), serde_json::to_vec(&selection)?, None)
        .await?;
    match (&args.pop, selection.canary.as_ref().map(|c| c.percent)) {
        (Some(pop), Some(p)) => {
            println!("{id}: {version} staged on POP {pop} for {p}% of its requests")
        }
        (None, Some(p)) => println!("{id}: {version} deployed as a {p}% canary"),
        _ => println!("{id}: {version} deployed and active"),
    }
    if let Some(after) = args.promote_after_s {
        let stage = std::time::Duration::from_secs(after);
        super::rollout::promote_unless_halted(&mut client, &layout, id, &version, stage).await?;
    }
    Ok(())
}

/// Deploys `wasm` to a node built here for the tenant alone, as the admin
/// API deploys; its version.
async fn validate(id: &str, doc: &[u8], wasm: &[u8]) -> anyhow::Result<std::sync::Arc<str>> {
    let source = format!("etcd tenants/{id}");
    let text = std::str::from_utf8(doc).with_context(|| format!("{source}: not UTF-8"))?;
    let mut tenant = TenantConfig::from_toml(text, &source)?;
    if tenant.id.is_empty() {
        tenant.id = id.to_string();
    }
    let mut config = Config::embedded_default();
    config.demo_origin = None;
    config.admin = None;
    config.tenants = vec![tenant];
    config
        .validate()
        .map_err(|e| config.field_error(&source, e))?;
    let control = Control::build(&config, false)?;
    let deployed = control
        .deploy(id, wasm.to_vec().into(), false)
        .await
        .map_err(|e| anyhow::anyhow!("{id}: the module is refused: {e}"))?;
    for warning in &deployed.warnings {
        eprintln!("warning: {id}: {warning}");
    }
    Ok(deployed.version)
}
