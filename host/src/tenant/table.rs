//! Host name -> tenant: the table the request path reads behind an atomic
//! pointer, rebuilt and swapped whole by the control plane. It also holds
//! the certificates of the TLS listener, so a handshake's certificate and
//! a request's tenant always come from the same swap.

use std::collections::HashMap;
use std::sync::Arc;

use rustls::sign::CertifiedKey;

use super::{Carried, Tenant};
use crate::cache::Ledger;
use crate::config::{Config, FieldError};
use crate::http::CertificateOwner;
use crate::pop::Pop;
use crate::runtime::Runtime;
use crate::secrets::Secrets;

/// Host name -> tenant, and the certificates. Swapped whole on every
/// change.
#[derive(Default, Clone)]
pub struct TenantTable {
    by_host: HashMap<String, Arc<Tenant>>,
    /// Tenants listing `*.parent`, by `parent`.
    by_parent: HashMap<String, Arc<Tenant>>,
    /// The tenant listing `*`, for hosts nobody else claims.
    catch_all: Option<Arc<Tenant>>,
    by_id: HashMap<String, Arc<Tenant>>,
    /// Tenants' own certificates, by tenant id.
    certificates: HashMap<Arc<str>, Arc<CertifiedKey>>,
    /// `server.tls.cert`: for every other handshake.
    default_certificate: Option<Arc<CertifiedKey>>,
    /// The node's cache bytes, shared by the tenants' stores (the same
    /// through every rebuild).
    ledger: Option<Arc<Ledger>>,
}

/// Where a host pattern goes in the table.
enum Pattern<'a> {
    Exact(&'a str),
    Under(&'a str),
    Any,
}

fn pattern(host: &str) -> Pattern<'_> {
    match host.strip_prefix("*.") {
        _ if host == "*" => Pattern::Any,
        Some(parent) => Pattern::Under(parent),
        None => Pattern::Exact(host),
    }
}

impl TenantTable {
    /// Builds every tenant of a config, compiling its policy, and reads
    /// every certificate (again: a file replaced on disk is picked up). The
    /// error names the field at fault. Tenants of `previous` whose config
    /// did not change are kept as they are (versions, canary, cache
    /// namespace).
    pub fn build(
        config: &Config,
        runtime: &Runtime,
        previous: Option<&TenantTable>,
        pop: &Arc<Pop>,
    ) -> Result<TenantTable, FieldError> {
        let mut table = TenantTable::default();
        let capacity = config.cache.max_size_mb.saturating_mul(1024 * 1024);
        let ledger = match previous.and_then(|p| p.ledger.clone()) {
            Some(ledger) => {
                ledger.set_capacity(capacity);
                ledger
            }
            None => Ledger::new(capacity),
        };
        for (i, tc) in config.tenants.iter().enumerate() {
            let within = |e: FieldError| e.within(&format!("tenant[{i}]."));
            // Kept as it is when neither its config nor its secrets' values
            // changed (a secret rotated in its file or variable is read
            // again on every apply).
            let kept = previous
                .and_then(|p| p.get(&tc.id))
                .filter(|t| t.config == *tc)
                .filter(|t| {
                    tc.secrets.is_empty()
                        || Secrets::resolve(&tc.secrets, &config.base_dir).as_ref()
                            == Ok(&t.secrets)
                })
                .cloned();
            let tenant = match kept {
                Some(t) => t,
                None => {
                    // A rebuilt tenant keeps counting where it was.
                    let replaced = previous.and_then(|p| p.get(&tc.id));
                    let carried = Carried::from(replaced.map(|t| &**t), Some(pop.clone()));
                    Arc::new(Tenant::build(tc, runtime, config, &ledger, carried).map_err(within)?)
                }
            };
            if let Some(files) = &tc.tls {
                let files = files.resolved(&config.base_dir);
                let certificate = crate::tls::load_certificate(&files, &tc.hosts)
                    .map_err(|e| within(e.within("tls.")))?;
                table.certificates.insert(tenant.id.clone(), certificate);
            }
            table.insert(tenant).map_err(within)?;
        }
        if let Some(files) = config
            .server
            .tls
            .as_ref()
            .and_then(|t| t.default_certificate())
        {
            let files = files.resolved(&config.base_dir);
            table.default_certificate = Some(
                crate::tls::load_certificate(&files, &[]).map_err(|e| e.within("server.tls."))?,
            );
        }
        table.share_out(config, previous);
        table.ledger = Some(ledger);
        Ok(table)
    }

    /// Sets every store's guarantee, once the table is complete: quotas are
    /// shared out again as tenants come and go, and a store left behind by
    /// a replaced or removed tenant (until its last request ends) is owed
    /// nothing.
    fn share_out(&self, config: &Config, previous: Option<&TenantTable>) {
        for tc in &config.tenants {
            if let Some(t) = self.get(&tc.id) {
                t.store.set_guarantee(config.cache_quota_bytes(tc));
            }
        }
        let replaced = previous
            .into_iter()
            .flat_map(|p| p.by_id.values())
            .filter(|old| {
                !self
                    .by_id
                    .get(&*old.id)
                    .is_some_and(|t| Arc::ptr_eq(t, old))
            });
        for old in replaced {
            old.store.set_guarantee(0);
        }
    }

    /// Adds (or replaces, by id) a tenant; fails if another tenant already
    /// serves one of its hosts.
    fn insert(&mut self, tenant: Arc<Tenant>) -> Result<(), FieldError> {
        for host in &tenant.config.hosts {
            let host = host.to_ascii_lowercase();
            let holder = match pattern(&host) {
                Pattern::Exact(h) => self.by_host.get(h),
                Pattern::Under(parent) => self.by_parent.get(parent),
                Pattern::Any => self.catch_all.as_ref(),
            };
            if let Some(other) = holder.filter(|o| o.id != tenant.id) {
                return Err(FieldError::new(
                    "hosts",
                    format!("host {host:?} is already served by tenant {:?}", &*other.id),
                ));
            }
        }
        for host in &tenant.config.hosts {
            let host = host.to_ascii_lowercase();
            match pattern(&host) {
                Pattern::Exact(h) => self.by_host.insert(h.to_string(), tenant.clone()),
                Pattern::Under(parent) => self.by_parent.insert(parent.to_string(), tenant.clone()),
                Pattern::Any => self.catch_all.replace(tenant.clone()),
            };
        }
        self.by_id.insert(tenant.id.to_string(), tenant);
        Ok(())
    }

    /// The tenant for a host name (lowercase, without port): the tenant
    /// listing it, else the one listing `*.` and its parent (one label
    /// under it, as a wildcard certificate covers), else the one listing
    /// `*`.
    pub fn find(&self, host: &str) -> Option<&Arc<Tenant>> {
        self.by_host
            .get(host)
            .or_else(|| {
                let (_, parent) = host.split_once('.')?;
                self.by_parent.get(parent)
            })
            .or(self.catch_all.as_ref())
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

    /// The certificate a TLS handshake naming `server_name` (SNI) gets,
    /// and whose it is: the certificate of the tenant that name routes to,
    /// as a Host header would, if it has one; else the default one. `None`
    /// (the handshake fails) when neither exists.
    pub fn certificate(
        &self,
        server_name: Option<&str>,
    ) -> Option<(CertificateOwner, &Arc<CertifiedKey>)> {
        let tenant = match server_name {
            Some(name) => self.find(name),
            None => self.catch_all.as_ref(),
        };
        match tenant.and_then(|t| Some((t, self.certificates.get(&t.id)?))) {
            Some((t, own)) => Some((CertificateOwner::Tenant(t.id.clone()), own)),
            None => Some((
                CertificateOwner::Default,
                self.default_certificate.as_ref()?,
            )),
        }
    }

    /// Whose certificate a connection must have been made with to serve
    /// `tenant`: its own, if it has one, else the default one.
    pub fn certificate_owner(&self, tenant: &Tenant) -> CertificateOwner {
        if self.certificates.contains_key(&tenant.id) {
            CertificateOwner::Tenant(tenant.id.clone())
        } else {
            CertificateOwner::Default
        }
    }
}
