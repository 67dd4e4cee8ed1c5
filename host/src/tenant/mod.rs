//! Tenants: who a request belongs to (by Host), and what that tenant runs.
//!
//! The table lives behind an `ArcSwap` in the node and each tenant's active
//! policy behind its own, so the request path takes no lock and a swap never
//! disturbs requests already running on the old module.

mod canary;
mod deployments;
mod recent;

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};

use arc_swap::{ArcSwap, ArcSwapOption};

pub use canary::{Arm, AutoRollback, Canary, Sticky};
pub use deployments::Deployments;
pub use recent::RecentRequests;

use crate::cache::TenantStore;
use crate::config::{Config, LimitsConfig, PolicySource, TenantConfig};
use crate::origin::Backend;
use crate::runtime::{GuestSession, PolicyModule, Runtime};

pub struct Tenant {
    pub id: Arc<str>,
    pub limits: LimitsConfig,
    pub backends: HashMap<String, Arc<Backend>>,
    pub vars: BTreeMap<String, String>,
    /// The active policy module.
    pub policy: ArcSwap<PolicyModule>,
    /// Deployed versions and activation history (admin path only).
    pub deployments: Mutex<Deployments>,
    /// Guest instances this tenant may hold at once.
    pub instances: Arc<tokio::sync::Semaphore>,
    /// The tenant's cached objects, bounded by its quota.
    pub store: TenantStore,
    /// A candidate version taking a share of the requests, if any.
    pub canary: ArcSwapOption<Canary>,
    /// Recent request heads, replayed by the policy preview.
    pub recent: RecentRequests,
    /// The config it was built from, to tell what a reload changes.
    pub config: TenantConfig,
    /// Idle instances, when the tenant reuses them.
    idle: Mutex<Vec<GuestSession>>,
}

impl Tenant {
    /// An idle instance of `version`, if the tenant reuses instances and one
    /// is free (instances of other versions are dropped on the way).
    pub fn take_idle(&self, version: &str) -> Option<GuestSession> {
        if !self.config.reuse_instances {
            return None;
        }
        let mut idle = self.idle.lock().unwrap_or_else(|p| p.into_inner());
        while let Some(session) = idle.pop() {
            if *session.version == *version {
                return Some(session);
            }
        }
        None
    }

    /// Returns an instance after its request, if it may serve again.
    pub fn put_idle(&self, session: GuestSession) {
        if !self.config.reuse_instances || !session.reusable() {
            return;
        }
        let mut idle = self.idle.lock().unwrap_or_else(|p| p.into_inner());
        if idle.len() < self.limits.max_concurrent as usize {
            idle.push(session);
        }
    }

    /// Drops every cached object of the tenant, in constant time.
    pub fn purge_all(&self) {
        self.store.clear();
    }

    /// Builds a tenant from its config, compiling its policy. Errors name
    /// the field (relative to the tenant).
    pub fn build(
        tc: &TenantConfig,
        runtime: &Runtime,
        config: &Config,
        cache_quota_bytes: u64,
    ) -> Result<Tenant, (String, String)> {
        let base_dir = &config.base_dir;
        let keep_versions = config.runtime.keep_versions;
        let source =
            PolicySource::parse(&tc.policy, base_dir).map_err(|m| ("policy".to_string(), m))?;
        let wasm = source.read().map_err(|m| ("policy".to_string(), m))?;
        let module = runtime.load(&wasm).map_err(|m| ("policy".to_string(), m))?;
        let mut backends = HashMap::new();
        for (name, bc) in &tc.backends {
            let backend = Backend::new(name, bc).map_err(|m| (format!("backends.{name}"), m))?;
            backends.insert(name.clone(), Arc::new(backend));
        }
        Ok(Tenant {
            id: tc.id.as_str().into(),
            limits: tc.limits,
            backends,
            vars: tc.vars.clone(),
            policy: ArcSwap::new(module.clone()),
            deployments: Mutex::new(Deployments::new(module, keep_versions)),
            instances: Arc::new(tokio::sync::Semaphore::new(
                tc.limits.max_concurrent as usize,
            )),
            store: TenantStore::new(
                cache_quota_bytes,
                std::time::Duration::from_secs(config.cache.stale_retention_s),
                std::time::Duration::from_secs(config.cache.hit_for_miss_s),
            ),
            canary: ArcSwapOption::empty(),
            recent: RecentRequests::default(),
            config: tc.clone(),
            idle: Mutex::new(Vec::new()),
        })
    }

    /// The module a request runs: the canary's candidate for its share of
    /// requests, else the active one.
    pub fn module_for(
        &self,
        request: &crate::runtime::heads::RequestInfo,
    ) -> (Arc<PolicyModule>, Arm) {
        if let Some(canary) = &*self.canary.load() {
            if canary.selects(request) {
                return (canary.module.clone(), Arm::Candidate);
            }
        }
        (self.policy.load_full(), Arm::Active)
    }

    /// Makes a deployed version the active one. Requests already running
    /// keep the module they started with.
    pub fn activate(&self, version: &str) -> Result<(), String> {
        let mut d = self.deployments.lock().unwrap_or_else(|p| p.into_inner());
        let module = d
            .find(version)
            .ok_or_else(|| format!("version {version} is not deployed"))?;
        let previous = self.policy.swap(module);
        if *previous.version != *version {
            d.history.push(previous.version.clone());
        }
        d.trim(version);
        Ok(())
    }

    /// Adds a version to the deployed ones without activating it.
    pub fn deploy(&self, module: Arc<PolicyModule>) {
        let mut d = self.deployments.lock().unwrap_or_else(|p| p.into_inner());
        let active = self.policy.load().version.clone();
        d.add(module, &active);
    }

    /// Re-activates the version that was active before the current one.
    pub fn rollback(&self) -> Result<Arc<str>, String> {
        let mut d = self.deployments.lock().unwrap_or_else(|p| p.into_inner());
        let previous = d
            .history
            .pop()
            .ok_or("no previous version to roll back to")?;
        let module = d
            .find(&previous)
            .ok_or_else(|| format!("version {previous} is no longer kept"))?;
        self.policy.store(module);
        Ok(previous)
    }
}

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
    ) -> Result<TenantTable, (String, String)> {
        let mut table = TenantTable::default();
        for (i, tc) in config.tenants.iter().enumerate() {
            let kept = previous
                .and_then(|p| p.get(&tc.id))
                .filter(|t| t.config == *tc)
                .cloned();
            let tenant = match kept {
                Some(t) => t,
                None => Arc::new(
                    Tenant::build(tc, runtime, config, config.cache_quota_bytes(tc))
                        .map_err(|(field, m)| (format!("tenant[{i}].{field}"), m))?,
                ),
            };
            table.insert(tenant)?;
        }
        Ok(table)
    }

    /// Adds (or replaces, by id) a tenant; fails if another tenant already
    /// serves one of its hosts.
    pub fn insert(&mut self, tenant: Arc<Tenant>) -> Result<(), (String, String)> {
        for host in &tenant.config.hosts {
            let host = host.to_ascii_lowercase();
            let holder = if host == "*" {
                self.wildcard.as_ref()
            } else {
                self.by_host.get(&host)
            };
            if let Some(other) = holder.filter(|o| o.id != tenant.id) {
                return Err((
                    "hosts".into(),
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
