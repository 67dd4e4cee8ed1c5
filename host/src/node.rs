//! A running node: its runtime, cache, tenants and listeners.

use std::net::SocketAddr;
use std::sync::Arc;

use arc_swap::ArcSwap;
use tokio::net::TcpListener;

use crate::cache::HttpCache;
use crate::config::{Config, ConfigError};
use crate::metrics::Metrics;
use crate::runtime::Runtime;
use crate::tenant::TenantTable;

/// What every request shares.
pub struct Node {
    pub runtime: Arc<Runtime>,
    pub cache: Arc<HttpCache>,
    pub tenants: ArcSwap<TenantTable>,
    pub metrics: Metrics,
}

impl Node {
    /// Builds a node from a checked config: compiles every tenant's policy.
    pub fn build(config: &Config) -> Result<Arc<Node>, ConfigError> {
        let runtime = Runtime::new(&config.runtime).map_err(|e| ConfigError::Field {
            source_name: "runtime".into(),
            field: "runtime".into(),
            message: format!("{e:#}"),
        })?;
        let tenants = TenantTable::build(config, &runtime).map_err(|(field, message)| {
            ConfigError::Field {
                source_name: "config".into(),
                field,
                message,
            }
        })?;
        Ok(Arc::new(Node {
            runtime,
            cache: Arc::new(HttpCache::new(&config.cache)),
            tenants: ArcSwap::from_pointee(tenants),
            metrics: Metrics::default(),
        }))
    }
}

/// Binds the node's listeners and serves until `shutdown` resolves.
/// `on_ready` gets the bound address (the port may have been 0).
pub async fn run(
    config: Config,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
    on_ready: impl FnOnce(SocketAddr),
) -> anyhow::Result<()> {
    let node = Node::build(&config)?;
    if let Some(demo) = &config.demo_origin {
        let listener = TcpListener::bind(demo.listen)
            .await
            .map_err(|e| anyhow::anyhow!("demo_origin.listen {}: {e}", demo.listen))?;
        tracing::info!("demo origin listening on http://{}", listener.local_addr()?);
        tokio::spawn(crate::demo_origin::serve(listener));
    }
    if let Some(admin) = &config.admin {
        let listener = TcpListener::bind(admin.listen)
            .await
            .map_err(|e| anyhow::anyhow!("admin.listen {}: {e}", admin.listen))?;
        let token: Arc<str> = admin.resolved_token().unwrap_or_default().into();
        // Tests and scripts read this line to find the admin port.
        println!("outpost admin on http://{}", listener.local_addr()?);
        tokio::spawn(crate::admin::serve(listener, node.clone(), token));
    }
    let listener = TcpListener::bind(config.server.listen)
        .await
        .map_err(|e| anyhow::anyhow!("server.listen {}: {e}", config.server.listen))?;
    let addr = listener.local_addr()?;
    for tenant in node.tenants.load().tenants() {
        tracing::info!(
            tenant = &*tenant.id,
            version = &*tenant.policy.load().version,
            "tenant ready"
        );
    }
    on_ready(addr);
    crate::server::serve(listener, node, &config.server, shutdown).await;
    Ok(())
}
