//! Module versions of a tenant: deploy (validate, smoke-call, keep),
//! activate, roll back, canaries, and lifting a quarantine.

use std::sync::Arc;

use bytes::Bytes;
use http::{Method, Uri};

use super::{Control, ControlError, DeployError};
use crate::http::RequestInfo;
use crate::runtime::PolicyModule;
use crate::tenant::quarantine::Held;
use crate::tenant::{smoke_offline, AutoRollback, Canary, Sticky, Tenant};

/// A version added to a tenant, and what its smoke call warns of.
#[derive(Debug, Clone)]
pub struct Deployed {
    pub version: Arc<str>,
    pub warnings: Vec<String>,
}

/// A canary to start: `percent` of the requests, chosen by `sticky`, go to
/// a deployed `version`.
#[derive(Debug, Clone)]
pub struct CanaryRequest {
    pub version: String,
    pub percent: u32,
    pub sticky: Sticky,
    pub auto_rollback: Option<AutoRollback>,
}

impl Control {
    /// Validates a component (a component, fits the world, compiles,
    /// instantiates under the tenant's limits, survives a smoke call) and
    /// adds it to the tenant's versions; `activate` makes it active. On any
    /// error the tenant is unchanged.
    pub async fn deploy(
        &self,
        id: &str,
        wasm: Bytes,
        activate: bool,
    ) -> Result<Deployed, ControlError> {
        if wasm.is_empty() {
            return Err(DeployError::Empty.into());
        }
        if !wasm.starts_with(b"\0asm") {
            return Err(DeployError::NotWasm.into());
        }
        self.tenant(id)?;
        // Compiled before taking the lock: compiling changes nothing.
        let runtime = self.ctx.runtime.clone();
        let module = tokio::task::spawn_blocking(move || runtime.load(&wasm))
            .await
            .map_err(|e| ControlError::Internal(format!("compilation failed: {e}")))?
            .map_err(DeployError::Load)?;
        let _desired = self.desired.lock().await;
        let tenant = self.tenant(id)?;
        let warnings = self.smoke_call(&tenant, &module).await?;
        let version = module.version.clone();
        tenant.deploy(module);
        tracing::info!(tenant = id, version = &*version, "deployed");
        for warning in &warnings {
            tracing::warn!(tenant = id, version = &*version, "{warning}");
        }
        if activate {
            tenant.activate(&version)?;
            tracing::info!(tenant = id, version = &*version, "activated");
        }
        Ok(Deployed { version, warnings })
    }

    /// Runs the request hook of `module` once on `GET /`, offline, as the
    /// tenant's policy; what it should warn an operator of (see
    /// [`smoke_offline`]).
    pub async fn smoke_call(
        &self,
        tenant: &Arc<Tenant>,
        module: &PolicyModule,
    ) -> Result<Vec<String>, DeployError> {
        let info = RequestInfo::internal(Method::GET, Uri::from_static("/"), "smoke-test.invalid");
        smoke_offline(&self.ctx.runtime, tenant, module, Arc::new(info))
            .await
            .map(|(_, warnings)| warnings)
            .map_err(DeployError::SmokeCall)
    }

    /// The smoke call's warnings for every tenant's active policy, as
    /// `tenant: warning` (what `outpost check` prints).
    pub async fn check_policies(&self) -> Vec<String> {
        let mut warnings = Vec::new();
        let table = self.ctx.tenants.load_full();
        for tenant in table.tenants() {
            let module = tenant.policy.load_full();
            match self.smoke_call(tenant, &module).await {
                Ok(found) => warnings.extend(
                    found
                        .into_iter()
                        .map(|w| format!("tenant {}: {w}", tenant.id)),
                ),
                Err(e) => warnings.push(format!("tenant {}: {e}", tenant.id)),
            }
        }
        warnings
    }

    /// Makes a deployed version the active one.
    pub async fn activate(&self, id: &str, version: &str) -> Result<(), ControlError> {
        let _desired = self.desired.lock().await;
        self.tenant(id)?.activate(version)?;
        tracing::info!(tenant = id, version, "activated");
        Ok(())
    }

    /// Re-activates the version active before the current one.
    pub async fn rollback(&self, id: &str) -> Result<Arc<str>, ControlError> {
        let _desired = self.desired.lock().await;
        let version = self.tenant(id)?.rollback()?;
        tracing::info!(tenant = id, version = &*version, "rolled back");
        Ok(version)
    }

    /// Starts (or replaces) a tenant's canary.
    pub async fn start_canary(&self, id: &str, request: CanaryRequest) -> Result<(), ControlError> {
        if request.percent > 100 {
            return Err(ControlError::Invalid(
                "percent must be between 0 and 100".into(),
            ));
        }
        let _desired = self.desired.lock().await;
        let tenant = self.tenant(id)?;
        let module = tenant.deployed(&request.version)?;
        tenant.canary.store(Some(Arc::new(Canary::new(
            module,
            request.percent,
            request.sticky,
            request.auto_rollback,
        ))));
        tracing::info!(
            tenant = id,
            version = request.version,
            percent = request.percent,
            "canary started"
        );
        Ok(())
    }

    /// Ends a canary by making its candidate the active version.
    pub async fn promote_canary(&self, id: &str) -> Result<Arc<str>, ControlError> {
        let _desired = self.desired.lock().await;
        let tenant = self.tenant(id)?;
        let canary = tenant.canary.swap(None).ok_or(ControlError::NoCanary)?;
        let version = canary.module.version.clone();
        tenant.activate(&version)?;
        tracing::info!(tenant = id, version = &*version, "canary promoted");
        Ok(version)
    }

    /// Lifts a tenant's quarantine; the version it held, if any.
    pub async fn lift_quarantine(&self, id: &str) -> Result<Option<Held>, ControlError> {
        let _desired = self.desired.lock().await;
        let held = self.tenant(id)?.quarantine.clear();
        if let Some(h) = &held {
            tracing::info!(
                tenant = id,
                version = h.version,
                "quarantine lifted by the admin API"
            );
        }
        Ok(held)
    }

    /// Ends a canary, keeping the active version.
    pub async fn abort_canary(&self, id: &str) -> Result<Arc<str>, ControlError> {
        let _desired = self.desired.lock().await;
        let tenant = self.tenant(id)?;
        let canary = tenant.canary.swap(None).ok_or(ControlError::NoCanary)?;
        let version = canary.module.version.clone();
        tracing::info!(tenant = id, version = &*version, "canary aborted");
        Ok(version)
    }
}
