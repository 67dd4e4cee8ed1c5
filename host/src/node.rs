//! A running node: its runtime, cache, tenants and listeners.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

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
    /// Log every request with its policy decision (the dev server does).
    pub trace_requests: bool,
    /// The config the tenants came from; reloads replace it.
    pub config: Mutex<Config>,
    /// Serialises changes to the tenant table (admin calls, reloads); the
    /// request path never takes it.
    pub changes: tokio::sync::Mutex<()>,
}

impl Node {
    /// Builds a node from a checked config: compiles every tenant's policy.
    pub fn build(config: &Config, trace_requests: bool) -> Result<Arc<Node>, ConfigError> {
        let runtime =
            Runtime::new(&config.runtime).map_err(|e| field_error("runtime", e.to_string()))?;
        let tenants = TenantTable::build(config, &runtime, None)
            .map_err(|(field, message)| field_error(&field, message))?;
        Ok(Arc::new(Node {
            runtime,
            cache: Arc::new(HttpCache::new(&config.cache)),
            tenants: ArcSwap::from_pointee(tenants),
            metrics: Metrics::default(),
            trace_requests,
            config: Mutex::new(config.clone()),
            changes: tokio::sync::Mutex::new(()),
        }))
    }

    /// Applies a new config's tenants: added, changed and removed tenants
    /// take effect at once; unchanged ones keep their state. Listener,
    /// cache and runtime settings need a restart. On error nothing changes.
    pub async fn reload(&self, config: Config) -> Result<(), ConfigError> {
        let _guard = self.changes.lock().await;
        let previous = self.tenants.load_full();
        let runtime = self.runtime.clone();
        let built = {
            let config = config.clone();
            tokio::task::spawn_blocking(move || {
                TenantTable::build(&config, &runtime, Some(&previous))
            })
            .await
            .map_err(|e| field_error("tenant", e.to_string()))?
        };
        let table = built.map_err(|(field, message)| field_error(&field, message))?;
        self.tenants.store(Arc::new(table));
        *self.config.lock().unwrap_or_else(|p| p.into_inner()) = config;
        Ok(())
    }
}

fn field_error(field: &str, message: String) -> ConfigError {
    ConfigError::Field {
        source_name: "config".into(),
        field: field.into(),
        message,
    }
}

/// How `run` was asked to serve.
#[derive(Default)]
pub struct RunOptions {
    /// The file to re-read on SIGHUP.
    pub config_path: Option<PathBuf>,
    /// Log every request's decision.
    pub trace_requests: bool,
}

/// Binds the node's listeners and serves until `shutdown` resolves.
/// `on_ready` gets the node and the bound address (the port may have been 0).
pub async fn run(
    config: Config,
    options: RunOptions,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
    on_ready: impl FnOnce(&Arc<Node>, SocketAddr),
) -> anyhow::Result<()> {
    let node = Node::build(&config, options.trace_requests)?;
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
    if let Some(path) = options.config_path {
        tokio::spawn(reload_on_sighup(node.clone(), path));
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
    on_ready(&node, addr);
    crate::server::serve(listener, node, &config.server, shutdown).await;
    Ok(())
}

/// Re-reads the config file on every SIGHUP; a bad file is logged and the
/// running tenants stay as they are.
async fn reload_on_sighup(node: Arc<Node>, path: PathBuf) {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        let Ok(mut hup) = signal(SignalKind::hangup()) else {
            return;
        };
        while hup.recv().await.is_some() {
            let result = match Config::load(&path) {
                Ok(config) => node.reload(config).await,
                Err(e) => Err(e),
            };
            match result {
                Ok(()) => tracing::info!("reloaded {}", path.display()),
                Err(e) => tracing::error!("reload failed, keeping the running tenants: {e}"),
            }
        }
    }
    #[cfg(not(unix))]
    let _ = (node, path);
}
