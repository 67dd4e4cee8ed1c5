//! Tenants: who a request belongs to (by Host), and what that tenant runs.
//!
//! The table lives behind an `ArcSwap` in the node and each tenant's active
//! policy behind its own, so the request path takes no lock and a swap never
//! disturbs requests already running on the old module.

mod canary;
pub mod cpu_share;
mod deployments;
mod env;
mod offline;
pub mod quarantine;
mod recent;
mod table;
mod tls;

use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};

use arc_swap::{ArcSwap, ArcSwapOption};

pub use canary::{Aborted as CanaryAborted, Arm, AutoRollback, Canary, Sticky};
pub use deployments::Deployments;
pub(crate) use env::unix_now;
pub use offline::{decide_offline, smoke_offline};
pub use recent::RecentRequests;
pub use table::TenantTable;
pub use tls::SniCertificates;

pub use crate::cache::Ledger;
use crate::cache::TenantStore;
use crate::config::{Config, FieldError, LimitsConfig, PolicySource, TenantConfig};
use crate::counters::Counter;
use crate::metrics::TenantMetrics;
use crate::origin::Backend;
use crate::pop::Pop;
use crate::ratelimit::Limiter;
use crate::runtime::{GuestSession, PolicyModule, Runtime};
use crate::secrets::Secrets;
use crate::signed_url::SignedUrls;

/// Why a version cannot be made active.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VersionError {
    #[error("version {0} is not deployed")]
    NotDeployed(String),
    #[error("no previous version to roll back to")]
    NoPrevious,
    #[error("version {0} is no longer kept")]
    NoLongerKept(String),
}

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
    /// How stale a stored response may be served when its backends cannot
    /// be reached (`cache.stale_if_unreachable_s`).
    pub stale_if_unreachable: std::time::Duration,
    /// A candidate version taking a share of the requests, if any.
    pub canary: ArcSwapOption<Canary>,
    /// The last canary its auto-rollback rule aborted, until a fleet node
    /// tells the fleet (a staged rollout halts everywhere).
    pub canary_aborted: ArcSwapOption<CanaryAborted>,
    /// Recent request heads, replayed by the policy preview.
    pub recent: RecentRequests,
    /// The config it was built from, to tell what a reload changes.
    pub config: TenantConfig,
    /// Idle instances, when the tenant reuses them.
    idle: Mutex<Vec<GuestSession>>,
    /// Its request counters, kept across rebuilds of the tenant.
    pub metrics: Arc<TenantMetrics>,
    /// Its guests' CPU, and whether it is held to its share.
    pub cpu: Arc<cpu_share::CpuShare>,
    /// A version shed after repeated CPU limit cuts.
    pub quarantine: quarantine::Quarantine,
    /// Its secrets, read on this node when the tenant was applied.
    pub secrets: Secrets,
    /// Its signed-URL rules, checked before the policy runs.
    pub signed_urls: Option<SignedUrls>,
    /// Its rate limiters by name (kept across rebuilds while their config
    /// stays the same).
    pub limiters: HashMap<String, Arc<Limiter>>,
    /// Its counters by name (kept across rebuilds and policy swaps while
    /// their config stays the same).
    pub counters: HashMap<String, Arc<Counter>>,
    /// The POP whose members keep the counters' keys (none: this node alone).
    pub pop: Option<Arc<Pop>>,
}

/// What a tenant rebuilt from a new config takes over from the one it
/// replaces, and the node's POP.
#[derive(Default)]
pub struct Carried {
    pub metrics: Arc<TenantMetrics>,
    pub limiters: HashMap<String, Arc<Limiter>>,
    pub counters: HashMap<String, Arc<Counter>>,
    pub pop: Option<Arc<Pop>>,
}

impl Carried {
    /// What `previous` (the tenant of the same id, if any) hands on.
    pub fn from(previous: Option<&Tenant>, pop: Option<Arc<Pop>>) -> Carried {
        match previous {
            None => Carried {
                pop,
                ..Carried::default()
            },
            Some(t) => Carried {
                metrics: t.metrics.clone(),
                limiters: t.limiters.clone(),
                counters: t.counters.clone(),
                pop,
            },
        }
    }
}

/// What running a guest hook for one request holds: a turn of the tenant's
/// CPU share (while the request hook runs), an instance slot (while the
/// instance lives) and, for a tenant that reuses instances, an idle one.
pub struct GuestAdmission {
    pub turn: cpu_share::Turn,
    pub slot: tokio::sync::OwnedSemaphorePermit,
    pub idle: Option<GuestSession>,
}

impl Tenant {
    /// Whether a request of `version` may run the tenant's guest now, and
    /// what it holds while it does: refused while the version is
    /// quarantined, while the tenant is held to its share of guest CPU and
    /// no turn frees up, or when it already runs `max_concurrent`
    /// instances.
    pub async fn admit_guest(
        &self,
        version: &str,
    ) -> Result<GuestAdmission, crate::runtime::GuestFailure> {
        use crate::runtime::GuestFailure;
        if self.quarantine.holds(version) {
            return Err(GuestFailure::Quarantined);
        }
        // A tenant held to its share of guest CPU runs no more request
        // hooks at once than its share of the workers (cpu_share).
        let turn = self.cpu.enter().await.ok_or(GuestFailure::CpuShare)?;
        let slot = self
            .instances
            .clone()
            .try_acquire_owned()
            .map_err(|_| GuestFailure::ConcurrencyLimit(self.limits.max_concurrent))?;
        Ok(GuestAdmission {
            turn,
            slot,
            idle: self.take_idle(version),
        })
    }

    /// An idle instance of `version`, if the tenant reuses instances and one
    /// is free (instances of other versions are dropped on the way).
    fn take_idle(&self, version: &str) -> Option<GuestSession> {
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

    /// Builds a tenant from its config, compiling its policy and reading
    /// its secrets; its cache is guaranteed its quota of the node's
    /// `ledger`. Errors name the field (relative to the tenant), never a
    /// secret's value.
    pub fn build(
        tc: &TenantConfig,
        runtime: &Runtime,
        config: &Config,
        ledger: &Arc<Ledger>,
        carried: Carried,
    ) -> Result<Tenant, FieldError> {
        let secrets = Secrets::resolve(&tc.secrets, &config.base_dir)?;
        let signed_urls = tc
            .signed_urls
            .as_ref()
            .map(|c| SignedUrls::new(c, &secrets))
            .transpose()?;
        let limiters = carry(
            &tc.limiters,
            &carried.limiters,
            Limiter::config,
            Limiter::new,
        );
        let counters = carry(
            &tc.counters,
            &carried.counters,
            Counter::config,
            Counter::new,
        );
        let keep_versions = config.runtime.keep_versions;
        let policy_error = |m: String| FieldError::new("policy", m);
        let wasm = read_policy(&tc.policy.resolved(&config.base_dir)).map_err(policy_error)?;
        let module = runtime
            .load(&wasm)
            .map_err(|e| policy_error(e.to_string()))?;
        let backends = tc
            .backends
            .iter()
            .map(|(name, bc)| {
                let backend =
                    Backend::new(&tc.id, name, bc, &config.base_dir, &config.server.node_id())
                        .map_err(|e| e.within(&format!("backends.{name}.")))?;
                Ok((name.clone(), Arc::new(backend)))
            })
            .collect::<Result<_, FieldError>>()?;
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
                ledger,
                config.cache_quota_bytes(tc),
                std::time::Duration::from_secs(config.cache.stale_retention_s),
                std::time::Duration::from_secs(config.cache.hit_for_miss_s),
            ),
            stale_if_unreachable: std::time::Duration::from_secs(
                config.cache.stale_if_unreachable_s,
            ),
            canary: ArcSwapOption::empty(),
            canary_aborted: ArcSwapOption::empty(),
            recent: RecentRequests::default(),
            config: tc.clone(),
            idle: Mutex::new(Vec::new()),
            metrics: carried.metrics,
            cpu: Arc::default(),
            quarantine: Default::default(),
            secrets,
            signed_urls,
            limiters,
            counters,
            pop: carried.pop,
        })
    }

    /// The module a request runs: the canary's candidate for its share of
    /// requests, else the active one.
    pub fn module_for(&self, request: &crate::http::RequestInfo) -> (Arc<PolicyModule>, Arm) {
        if let Some(canary) = &*self.canary.load() {
            if canary.selects(request) {
                return (canary.module.clone(), Arm::Candidate);
            }
        }
        (self.policy.load_full(), Arm::Active)
    }

    /// Makes a deployed version the active one. Requests already running
    /// keep the module they started with.
    pub fn activate(&self, version: &str) -> Result<(), VersionError> {
        let mut d = self.deployments.lock().unwrap_or_else(|p| p.into_inner());
        let module = d
            .find(version)
            .ok_or_else(|| VersionError::NotDeployed(version.to_string()))?;
        let previous = self.policy.swap(module);
        if *previous.version != *version {
            d.history.push(previous.version.clone());
        }
        d.trim(version);
        self.lift_quarantine(version);
        Ok(())
    }

    /// Adds a version to the deployed ones without activating it.
    pub fn deploy(&self, module: Arc<PolicyModule>) {
        let mut d = self.deployments.lock().unwrap_or_else(|p| p.into_inner());
        let active = self.policy.load().version.clone();
        d.add(module, &active);
    }

    /// Re-activates the version that was active before the current one.
    pub fn rollback(&self) -> Result<Arc<str>, VersionError> {
        let mut d = self.deployments.lock().unwrap_or_else(|p| p.into_inner());
        let previous = d.history.pop().ok_or(VersionError::NoPrevious)?;
        let module = d
            .find(&previous)
            .ok_or_else(|| VersionError::NoLongerKept(previous.to_string()))?;
        self.policy.store(module);
        self.lift_quarantine(&previous);
        Ok(previous)
    }

    /// An activation is an operator's choice of what runs: it lifts a
    /// quarantine (`active` is the version now active).
    fn lift_quarantine(&self, active: &str) {
        if let Some(held) = self.quarantine.clear() {
            tracing::info!(
                tenant = &*self.id,
                version = held.version,
                active,
                "quarantine lifted: a version was activated"
            );
        }
    }

    /// The longest request body a client may send this tenant, in bytes.
    pub fn max_body_bytes(&self) -> u64 {
        self.config.max_body_mb.saturating_mul(1024 * 1024)
    }

    /// A deployed version by its id.
    pub fn deployed(&self, version: &str) -> Result<Arc<PolicyModule>, VersionError> {
        self.deployments
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .find(version)
            .ok_or_else(|| VersionError::NotDeployed(version.to_string()))
    }
}

/// The `declared` limiters or counters by name, each taken over from
/// `carried` while its config is unchanged (its keys and counts with it),
/// else made anew.
fn carry<C: PartialEq + Copy, T>(
    declared: &BTreeMap<String, C>,
    carried: &HashMap<String, Arc<T>>,
    config: impl Fn(&T) -> &C,
    make: impl Fn(C) -> T,
) -> HashMap<String, Arc<T>> {
    declared
        .iter()
        .map(|(name, c)| {
            let kept = carried.get(name).filter(|t| config(t) == c).cloned();
            (name.clone(), kept.unwrap_or_else(|| Arc::new(make(*c))))
        })
        .collect()
}

/// A policy component's bytes: embedded, or read from its file.
fn read_policy(source: &PolicySource) -> Result<Cow<'static, [u8]>, String> {
    match source {
        PolicySource::Builtin(name) => crate::guests::builtin(name)
            .map(Cow::Borrowed)
            .ok_or_else(|| format!("no built-in policy {name:?} in this binary")),
        PolicySource::File(path) => std::fs::read(path)
            .map(Cow::Owned)
            .map_err(|e| format!("cannot read policy {}: {e}", path.display())),
    }
}
