//! Tenants: who a request belongs to (by Host), and what that tenant runs.
//!
//! The table lives behind an `ArcSwap` in the node and each tenant's active
//! policy behind its own, so the request path takes no lock and a swap never
//! disturbs requests already running on the old module.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

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
    /// Deployed versions and activation history (admin path only).
    pub deployments: Mutex<Deployments>,
    /// Guest instances this tenant may hold at once.
    pub instances: Arc<tokio::sync::Semaphore>,
    /// The cache namespace generation: purging everything of a tenant bumps
    /// it, which makes every stored key unreachable at once.
    generation: AtomicU64,
}

impl Tenant {
    pub fn cache_generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    /// Drops the whole cache namespace in constant time.
    pub fn purge_all(&self) {
        self.generation.fetch_add(1, Ordering::AcqRel);
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

/// The versions a tenant has deployed, newest last. Bounded: old versions
/// that are neither active nor in the rollback history are dropped.
pub struct Deployments {
    pub versions: VecDeque<Arc<PolicyModule>>,
    /// Versions that were active before, most recent last.
    pub history: Vec<Arc<str>>,
    keep: usize,
}

impl Deployments {
    fn new(initial: Arc<PolicyModule>, keep: usize) -> Deployments {
        Deployments {
            versions: VecDeque::from([initial]),
            history: Vec::new(),
            keep: keep.max(2),
        }
    }

    pub fn find(&self, version: &str) -> Option<Arc<PolicyModule>> {
        self.versions
            .iter()
            .find(|m| *m.version == *version)
            .cloned()
    }

    /// Adds a version (once) and trims.
    pub fn add(&mut self, module: Arc<PolicyModule>, active: &str) {
        if self.find(&module.version).is_none() {
            self.versions.push_back(module);
        }
        self.trim(active);
    }

    fn trim(&mut self, active: &str) {
        self.history.retain(|v| **v != *active);
        let keep_history = self.keep - 1;
        if self.history.len() > keep_history {
            self.history.drain(..self.history.len() - keep_history);
        }
        while self.versions.len() > self.keep {
            let removable = self
                .versions
                .iter()
                .position(|m| *m.version != *active && !self.history.contains(&m.version));
            match removable {
                Some(i) => {
                    self.versions.remove(i);
                }
                None => break,
            }
        }
    }
}

/// Host name -> tenant.
#[derive(Default)]
pub struct TenantTable {
    by_host: HashMap<String, Arc<Tenant>>,
    /// The tenant listing `*`, for hosts nobody else claims.
    wildcard: Option<Arc<Tenant>>,
    by_id: HashMap<String, Arc<Tenant>>,
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
                policy: ArcSwap::new(module.clone()),
                deployments: Mutex::new(Deployments::new(module, config.runtime.keep_versions)),
                generation: AtomicU64::new(0),
                instances: Arc::new(tokio::sync::Semaphore::new(
                    tc.limits.max_concurrent as usize,
                )),
            });
            table.by_id.insert(tc.id.clone(), tenant.clone());
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
