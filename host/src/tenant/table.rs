//! Host name -> tenant: the table the request path reads behind an atomic
//! pointer, rebuilt and swapped whole by the control plane.

use std::collections::HashMap;
use std::sync::Arc;

use super::Tenant;
use crate::config::{Config, FieldError};
use crate::runtime::Runtime;

/// Host name -> tenant. Cloned and swapped whole on every change.
#[derive(Default, Clone)]
pub struct TenantTable {
    by_host: HashMap<String, Arc<Tenant>>,
    /// The tenant listing `*`, for hosts nobody else claims.
    wildcard: Option<Arc<Tenant>>,
    by_id: HashMap<String, Arc<Tenant>>,
}

impl TenantTable {
    /// Builds every tenant of a config, compiling its policy. The error
    /// names the field at fault. Tenants of `previous` whose config did not
    /// change are kept as they are (versions, canary, cache namespace).
    pub fn build(
        config: &Config,
        runtime: &Runtime,
        previous: Option<&TenantTable>,
    ) -> Result<TenantTable, FieldError> {
        let mut table = TenantTable::default();
        for (i, tc) in config.tenants.iter().enumerate() {
            let within = |e: FieldError| e.within(&format!("tenant[{i}]."));
            let kept = previous
                .and_then(|p| p.get(&tc.id))
                .filter(|t| t.config == *tc)
                .cloned();
            let tenant = match kept {
                Some(t) => t,
                None => Arc::new(
                    Tenant::build(tc, runtime, config, config.cache_quota_bytes(tc))
                        .map_err(within)?,
                ),
            };
            table.insert(tenant).map_err(within)?;
        }
        Ok(table)
    }

    /// Adds (or replaces, by id) a tenant; fails if another tenant already
    /// serves one of its hosts.
    pub fn insert(&mut self, tenant: Arc<Tenant>) -> Result<(), FieldError> {
        for host in &tenant.config.hosts {
            let host = host.to_ascii_lowercase();
            let holder = if host == "*" {
                self.wildcard.as_ref()
            } else {
                self.by_host.get(&host)
            };
            if let Some(other) = holder.filter(|o| o.id != tenant.id) {
                return Err(FieldError::new(
                    "hosts",
                    format!("host {host:?} is already served by tenant {:?}", &*other.id),
                ));
            }
        }
        self.remove(&tenant.id);
        for host in &tenant.config.hosts {
            let host = host.to_ascii_lowercase();
            if host == "*" {
                self.wildcard = Some(tenant.clone());
            } else {
                self.by_host.insert(host, tenant.clone());
            }
        }
        self.by_id.insert(tenant.id.to_string(), tenant);
        Ok(())
    }

    /// Removes a tenant by id; its hosts then get 404.
    pub fn remove(&mut self, id: &str) -> Option<Arc<Tenant>> {
        let tenant = self.by_id.remove(id)?;
        self.by_host.retain(|_, t| !Arc::ptr_eq(t, &tenant));
        if self
            .wildcard
            .as_ref()
            .is_some_and(|w| Arc::ptr_eq(w, &tenant))
        {
            self.wildcard = None;
        }
        Some(tenant)
    }

    /// The tenant for a host name (lowercase, without port).
    pub fn find(&self, host: &str) -> Option<&Arc<Tenant>> {
        self.by_host.get(host).or(self.wildcard.as_ref())
    }

    /// A tenant by id.
    pub fn get(&self, id: &str) -> Option<&Arc<Tenant>> {
        self.by_id.get(id)
    }

    /// Every tenant, once each, by id.
    pub fn tenants(&self) -> impl Iterator<Item = &Arc<Tenant>> {
        let mut all: Vec<&Arc<Tenant>> = self.by_id.values().collect();
        all.sort_by(|a, b| a.id.cmp(&b.id));
        all.into_iter()
    }
}
