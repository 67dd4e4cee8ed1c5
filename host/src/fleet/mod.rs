//! A fleet's shared state in etcd, a source of desired state for the
//! control plane like the config file and the admin API: tenants, module
//! versions (content-addressed, chunked), which version each tenant runs,
//! purge generations, and the nodes' membership and acknowledgements. The
//! key layout is in [`keys`]; [`desired`] holds what etcd says, raw, until
//! a tenant is applied ([`apply`]); [`sync`] follows etcd, keeping the last
//! known good state on disk ([`snapshot`]) and the node's membership
//! ([`membership`]).

pub mod apply;
pub mod desired;
pub mod halt;
pub mod keys;
pub mod membership;
pub mod purge;
pub mod snapshot;
pub mod sync;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

/// How to reach the fleet's etcd, for what the admin API of a fleet node
/// does fleet-wide (a purge).
#[derive(Debug, Clone)]
pub struct Link {
    pub endpoints: Vec<String>,
    pub layout: keys::Layout,
}

impl Link {
    /// A client of etcd, or why there is none (within a few seconds).
    pub async fn connect(&self) -> Result<etcd_client::Client, etcd_client::Error> {
        let options = etcd_client::ConnectOptions::new()
            .with_connect_timeout(Duration::from_secs(3))
            .with_timeout(Duration::from_secs(5));
        etcd_client::Client::connect(&self.endpoints, Some(options)).await
    }
}

/// What a node knows of its place in the fleet: for readiness, the status
/// page and acknowledgements.
#[derive(Debug, Default)]
pub struct FleetStatus {
    connected: AtomicBool,
    /// A full read of etcd has been applied once.
    synced: AtomicBool,
    revision: AtomicI64,
    /// When etcd last answered (a read, or anything on the watch).
    heard: Mutex<Option<Instant>>,
    tenants: Mutex<BTreeMap<String, TenantOutcome>>,
}

/// What a node runs for a tenant.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Applied {
    pub version: Arc<str>,
    /// The last purge generation carried out (0: none).
    pub purge_generation: u64,
}

/// What the node made of a tenant's keys, last time they changed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TenantOutcome {
    /// The revisions of the tenant's keys it looked at.
    pub revisions: [i64; 3],
    /// What it runs since, or why it refused the change.
    pub outcome: Result<Applied, String>,
    pub at: SystemTime,
}

impl FleetStatus {
    pub fn set_connected(&self, connected: bool) {
        self.connected.store(connected, Ordering::Relaxed);
    }

    pub fn connected(&self) -> bool {
        self.connected.load(Ordering::Relaxed)
    }

    pub fn set_synced(&self) {
        self.synced.store(true, Ordering::Relaxed);
    }

    /// Whether the node has applied a full read of etcd (`/ready`).
    pub fn synced(&self) -> bool {
        self.synced.load(Ordering::Relaxed)
    }

    pub fn set_revision(&self, revision: i64) {
        self.revision.store(revision, Ordering::Relaxed);
    }

    /// The etcd revision everything up to is applied.
    pub fn revision(&self) -> i64 {
        self.revision.load(Ordering::Relaxed)
    }

    /// etcd answered just now.
    pub fn heard(&self) {
        *self.heard.lock().unwrap_or_else(|p| p.into_inner()) = Some(Instant::now());
    }

    /// How long since etcd last answered; `None` if it never did.
    pub fn silence(&self) -> Option<Duration> {
        let heard = *self.heard.lock().unwrap_or_else(|p| p.into_inner());
        heard.map(|t| t.elapsed())
    }

    /// Tenants whose last change was refused.
    pub fn refused(&self) -> usize {
        self.lock().values().filter(|t| t.outcome.is_err()).count()
    }

    /// Records what the node made of a tenant's keys; the record.
    pub fn record(
        &self,
        id: &str,
        revisions: [i64; 3],
        outcome: Result<Applied, String>,
    ) -> TenantOutcome {
        let entry = TenantOutcome {
            revisions,
            outcome,
            at: SystemTime::now(),
        };
        self.lock().insert(id.to_string(), entry.clone());
        entry
    }

    pub fn forget(&self, id: &str) {
        self.lock().remove(id);
    }

    pub fn tenants(&self) -> BTreeMap<String, TenantOutcome> {
        self.lock().clone()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, TenantOutcome>> {
        self.tenants.lock().unwrap_or_else(|p| p.into_inner())
    }
}
