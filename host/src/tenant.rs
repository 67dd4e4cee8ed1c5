//! Tenants: who a request belongs to (by Host), and what that tenant runs.
//!
//! The table lives behind an `ArcSwap` in the node and each tenant's active
//! policy behind its own, so the request path takes no lock and a swap never
//! disturbs requests already running on the old module.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use arc_swap::ArcSwap;

use crate::config::{Config, LimitsConfig, PolicySource};
use crate::origin::Backend;
use crate::runtime::{PolicyModule, Runtime};

pub struct Tenant {
    pub id: Arc<str>,
    pub limits: LimitsConfig,
    pub backends: HashMap<String, Arc<Backend>>,
    pub vars: BTreeMap<String, String>,
    /// The active policy module.
    pub policy: ArcSwap<PolicyModule>,
}

/// Host name -> tenant.
#[derive(Default)]
pub struct TenantTable {
    by_host: HashMap<String, Arc<Tenant>>,
    /// The tenant listing `*`, for hosts nobody else claims.
    wildcard: Option<Arc<Tenant>>,
}

impl TenantTable {
    /// Builds every tenant of a config, compiling its policy. The error
    /// names the field at fault.
    pub fn build(config: &Config, runtime: &Runtime) -> Result<TenantTable, (String, String)> {
        let mut table = TenantTable::default();
        for (i, tc) in config.tenants.iter().enumerate() {
            let at = |field: &str| format!("tenant[{i}].{field}");
            let source =
                PolicySource::parse(&tc.policy, &config.base_dir).map_err(|m| (at("policy"), m))?;
            let wasm = source.read().map_err(|m| (at("policy"), m))?;
            let module = runtime.load(&wasm).map_err(|m| (at("policy"), m))?;
            let mut backends = HashMap::new();
            for (name, bc) in &tc.backends {
                let backend =
                    Backend::new(name, bc).map_err(|m| (at(&format!("backends.{name}")), m))?;
                backends.insert(name.clone(), Arc::new(backend));
            }
            let tenant = Arc::new(Tenant {
                id: tc.id.as_str().into(),
                limits: tc.limits,
                backends,
                vars: tc.vars.clone(),
                policy: ArcSwap::new(module),
            });
            for host in &tc.hosts {
                let host = host.to_ascii_lowercase();
                if host == "*" {
                    table.wildcard = Some(tenant.clone());
                } else {
                    table.by_host.insert(host, tenant.clone());
                }
            }
        }
        Ok(table)
    }

    /// The tenant for a host name (lowercase, without port).
    pub fn find(&self, host: &str) -> Option<&Arc<Tenant>> {
        self.by_host.get(host).or(self.wildcard.as_ref())
    }

    /// Every tenant, once each.
    pub fn tenants(&self) -> Vec<Arc<Tenant>> {
        let mut seen: Vec<Arc<Tenant>> = Vec::new();
        for t in self.by_host.values().chain(self.wildcard.iter()) {
            if !seen.iter().any(|s| Arc::ptr_eq(s, t)) {
                seen.push(t.clone());
            }
        }
        seen
    }
}
