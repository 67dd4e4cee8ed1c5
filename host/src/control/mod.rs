//! The control plane: the node's desired state (the config its tenants come
//! from, and each tenant's deployed versions), changed only here.
//!
//! Every source of desired state (the config file on SIGHUP, the admin API,
//! and a fleet source next to them) calls these methods; each change is
//! "validate, then apply", and every read-modify-write holds one async lock,
//! so two changes never interleave (two concurrent tenant PUTs both land).
//! Applying builds a new tenant table and swaps it into the data plane's
//! [`Context`]; the request path never calls this module.

mod deploy;
mod errors;
mod preview;
mod purge;
pub mod sighup;

use std::sync::Arc;

use tokio::sync::{Mutex, MutexGuard};

pub use deploy::CanaryRequest;
pub use errors::{ControlError, DeployError};
pub use purge::{PurgeBody, Purged};

use crate::cache::HttpCache;
use crate::config::{Config, ConfigError, FieldError, TenantConfig};
use crate::metrics::Metrics;
use crate::proxy::Context;
use crate::runtime::Runtime;
use crate::tenant::{Tenant, TenantTable};

/// The node's control plane.
pub struct Control {
    ctx: Arc<Context>,
    /// The desired state; held across every read-modify-write.
    desired: Mutex<Config>,
}

/// Whether a tenant PUT added a tenant or replaced one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Put {
    Added,
    Replaced,
}

impl Control {
    /// Builds a node's data plane from a checked config: the runtime, the
    /// cache and every tenant (compiling its policy). Errors name the
    /// config's source and, where it has one, the field's line.
    pub fn build(config: &Config, trace_requests: bool) -> Result<Arc<Control>, ConfigError> {
        let source_name = &config.source_name;
        let runtime = Runtime::new(&config.runtime).map_err(|e| {
            ConfigError::field(source_name, FieldError::new("runtime", e.to_string()))
        })?;
        let pop = Arc::new(crate::pop::Pop::new(&config.server.node_id()));
        let tenants = TenantTable::build(config, &runtime, None, &pop)
            .map_err(|e| config.field_error(source_name, e))?;
        let ctx = Context {
            tenants: Arc::new(arc_swap::ArcSwap::from_pointee(tenants)),
            cache: Arc::new(HttpCache::new(&config.cache)),
            runtime,
            metrics: Arc::new(Metrics::default()),
            trace_requests,
            max_target_bytes: config.server.max_target_bytes,
            max_header_bytes: config.server.max_header_bytes,
            body_read_timeout: std::time::Duration::from_millis(config.server.body_read_timeout_ms),
            https_port: std::sync::OnceLock::new(),
            node_id: config.server.node_id(),
            access_log: crate::access_log::AccessLog::start(config.server.access_log),
            spans: crate::span_export::SpanExport::start(
                config.server.otlp.as_ref(),
                &config.base_dir,
                &config.server.node_id(),
            )
            .map_err(|e| ConfigError::field(source_name, e))?,
            pop,
        };
        Ok(Arc::new(Control {
            ctx: Arc::new(ctx),
            desired: Mutex::new(config.clone()),
        }))
    }

    /// What the data plane reads.
    pub fn context(&self) -> &Arc<Context> {
        &self.ctx
    }

    /// A tenant of the running table.
    pub fn tenant(&self, id: &str) -> Result<Arc<Tenant>, ControlError> {
        self.ctx
            .tenants
            .load()
            .get(id)
            .cloned()
            .ok_or_else(|| ControlError::UnknownTenant(id.to_string()))
    }

    /// Replaces the desired config (a reload from `source_name`): added,
    /// changed and removed tenants take effect at once; unchanged ones keep
    /// their state. Listener, cache and runtime settings need a restart. On
    /// error nothing changes.
    pub async fn reload(&self, config: Config, source_name: &str) -> Result<(), ControlError> {
        let mut desired = self.desired.lock().await;
        self.apply(&mut desired, config, source_name, |e| e).await
    }

    /// Re-reads the config file at `path` and reloads it (SIGHUP, `POST
    /// /reload`); the outcome is logged. Certificate files are read again
    /// even when the config text did not change.
    pub async fn reload_file(&self, path: &std::path::Path) -> Result<(), ControlError> {
        let source_name = path.display().to_string();
        let result = match Config::load(path) {
            Ok(config) => self.reload(config, &source_name).await,
            Err(e) => Err(ControlError::Config(e)),
        };
        match &result {
            Ok(()) => tracing::info!("reloaded {source_name}"),
            Err(e) => tracing::error!("reload failed, keeping the running tenants: {e}"),
        }
        result
    }

    /// Adds or replaces one tenant.
    pub async fn put_tenant(
        &self,
        tenant: TenantConfig,
        source_name: &str,
    ) -> Result<Put, ControlError> {
        let mut desired = self.desired.lock().await;
        let mut config = desired.clone();
        config.detach_source();
        let existed = config.tenants.iter().any(|t| t.id == tenant.id);
        let id = tenant.id.clone();
        config.tenants.retain(|t| t.id != id);
        config.tenants.push(tenant);
        // Errors name the tenant's own fields, not its place in the table.
        let own = format!("tenant[{}].", config.tenants.len() - 1);
        let relative = |e: FieldError| match e.field.strip_prefix(&own) {
            Some(field) => FieldError::new(field, e.message),
            None => e,
        };
        self.apply(&mut desired, config, source_name, relative)
            .await?;
        Ok(if existed { Put::Replaced } else { Put::Added })
    }

    /// Removes a tenant; its hosts get 404 from now on.
    pub async fn delete_tenant(&self, id: &str) -> Result<(), ControlError> {
        let mut desired = self.desired.lock().await;
        let mut config = desired.clone();
        config.detach_source();
        let before = config.tenants.len();
        config.tenants.retain(|t| t.id != id);
        if config.tenants.len() == before {
            return Err(ControlError::UnknownTenant(id.to_string()));
        }
        let source_name = format!("DELETE /tenants/{id}");
        self.apply(&mut desired, config, &source_name, |e| e).await
    }

    /// The step every source shares: validates `config`, builds its tenants
    /// (keeping unchanged ones as they are), swaps the table in and records
    /// `config` as the desired state. The caller holds the lock; `relative`
    /// rewrites the path of a field error for the source's reader.
    async fn apply(
        &self,
        desired: &mut MutexGuard<'_, Config>,
        config: Config,
        source_name: &str,
        relative: impl Fn(FieldError) -> FieldError,
    ) -> Result<(), ControlError> {
        config
            .validate()
            .map_err(|e| config.field_error(source_name, relative(e)))?;
        let previous = self.ctx.tenants.load_full();
        let runtime = self.ctx.runtime.clone();
        let building = config.clone();
        let pop = self.ctx.pop.clone();
        let built = tokio::task::spawn_blocking(move || {
            TenantTable::build(&building, &runtime, Some(&previous), &pop)
        })
        .await
        .map_err(|e| ControlError::Internal(e.to_string()))?;
        let table = built.map_err(|e| config.field_error(source_name, relative(e)))?;
        self.ctx.tenants.store(Arc::new(table));
        **desired = config;
        Ok(())
    }
}
