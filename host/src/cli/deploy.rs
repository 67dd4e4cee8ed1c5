//! `outpost deploy --etcd URL TENANT FILE.wasm`: validates a module as the
//! admin API would (a component of the right world that compiles,
//! instantiates under the tenant's limits and survives a smoke call, in a
//! node built here from the tenant's config in etcd), then publishes it to
//! the fleet: its bytes in chunks, then the tenant's selection.

use std::path::PathBuf;

use anyhow::{bail, Context};
use etcd_client::{Client, ConnectOptions};

use crate::config::{Config, TenantConfig};
use crate::control::Control;
use crate::fleet::desired::{module_keys, CanarySelection, Selection};
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
    let selection = match (args.canary, current) {
        (Some(percent), Some(current)) => Selection {
            active: current.active,
            canary: Some(CanarySelection {
                version: version.to_string(),
                percent,
            }),
        },
        (Some(_), None) => {
            bail!("tenant {id:?} runs no version from etcd yet: deploy it without --canary first")
        }
        (None, _) => Selection {
            active: version.to_string(),
            canary: None,
        },
    };
    client
        .put(layout.selection(id), serde_json::to_vec(&selection)?, None)
        .await?;
    match args.canary {
        Some(p) => println!("{id}: {version} deployed as a {p}% canary"),
        None => println!("{id}: {version} deployed and active"),
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
    let version = control
        .deploy(id, wasm.to_vec().into(), false)
        .await
        .map_err(|e| anyhow::anyhow!("{id}: the module is refused: {e}"))?;
    Ok(version)
}
