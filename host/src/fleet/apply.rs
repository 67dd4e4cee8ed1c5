//! Applies what etcd says of one tenant through the control plane, the
//! same validate-and-apply step the config file and the admin API use: its
//! fields (a rebuild only if they changed), then the version it runs and
//! its canary (a deploy, validated as the admin API validates one). Any
//! error refuses the change and leaves the tenant serving what it served.

use std::sync::Arc;

use super::desired::{Desired, PurgeGeneration, Selection, TenantKeys};
use super::Applied;
use crate::config::TenantConfig;
use crate::control::{CanaryRequest, Control};
use crate::tenant::{AutoRollback, Sticky, Tenant};

/// Applies a tenant's keys (`changed`: which of the tenant's three keys
/// changed since last applied); what it runs after, or why the change was
/// refused.
pub async fn tenant(
    control: &Control,
    desired: &Desired,
    (id, pop): (&str, &str),
    keys: &TenantKeys,
    changed: [bool; 3],
) -> Result<Applied, String> {
    if changed[0] || control.tenant(id).is_err() {
        put_fields(control, id, keys).await?;
    }
    if let Some(raw) = &keys.selection {
        let selection: Selection = serde_json::from_slice(&raw.value)
            .map_err(|e| format!("selections/{id}: not a selection: {e}"))?;
        select(control, desired, (id, pop), &selection).await?;
    }
    let mut purge_generation = 0;
    if let Some(raw) = &keys.purge {
        let purge: PurgeGeneration = serde_json::from_slice(&raw.value)
            .map_err(|e| format!("purges/{id}: not a purge generation: {e}"))?;
        purge_generation = purge.generation;
        if changed[2] {
            let what = purge
                .purge
                .into_purge()
                .map_err(|e| format!("purges/{id}: {e}"))?;
            control.purge(id, what).await.map_err(|e| e.to_string())?;
        }
    }
    let tenant = control.tenant(id).map_err(|e| e.to_string())?;
    let version: Arc<str> = tenant.policy.load().version.clone();
    Ok(Applied {
        version,
        purge_generation,
    })
}

async fn put_fields(control: &Control, id: &str, keys: &TenantKeys) -> Result<(), String> {
    let Some(doc) = &keys.doc else {
        return Err(format!(
            "tenants/{id}: no such key (a selection without a tenant)"
        ));
    };
    let source = format!("etcd tenants/{id}@{}", doc.revision);
    let text = std::str::from_utf8(&doc.value).map_err(|_| format!("{source}: not UTF-8"))?;
    let mut config = TenantConfig::from_toml(text, &source).map_err(|e| e.to_string())?;
    if config.id.is_empty() {
        config.id = id.to_string();
    } else if config.id != id {
        return Err(format!(
            "{source}: field `id`: {:?} does not match the key's {id:?}",
            config.id
        ));
    }
    control
        .put_tenant(config, &source)
        .await
        .map(drop)
        .map_err(|e| e.to_string())
}

/// Makes the selected version active (deploying it from etcd if this node
/// does not run it) and starts, changes or ends the canary; a canary staged
/// on another POP is none of this node's.
async fn select(
    control: &Control,
    desired: &Desired,
    (id, pop): (&str, &str),
    selection: &Selection,
) -> Result<(), String> {
    let tenant = control.tenant(id).map_err(|e| e.to_string())?;
    if *tenant.policy.load().version != *selection.active {
        make_available(control, desired, &tenant, &selection.active).await?;
        control
            .activate(id, &selection.active)
            .await
            .map_err(|e| format!("{}: {e}", selection.active))?;
    }
    let running = tenant
        .canary
        .load()
        .as_ref()
        .map(|c| (c.module.version.clone(), c.percent));
    let canary = selection
        .canary
        .as_ref()
        .filter(|c| c.pop.as_deref().is_none_or(|p| p == pop));
    match (canary, running) {
        (None, None) => {}
        (None, Some(_)) => {
            control.abort_canary(id).await.map_err(|e| e.to_string())?;
        }
        (Some(c), Some((version, percent))) if *version == *c.version && percent == c.percent => {}
        (Some(c), _) => {
            make_available(control, desired, &tenant, &c.version).await?;
            let request = CanaryRequest {
                version: c.version.clone(),
                percent: c.percent,
                sticky: Sticky::ClientAddr,
                auto_rollback: c.auto_rollback.map(|r| AutoRollback {
                    margin: r.margin,
                    min_requests: r.min_requests,
                }),
            };
            control
                .start_canary(id, request)
                .await
                .map_err(|e| e.to_string())?;
        }
    }
    Ok(())
}

/// Deploys `version` from etcd's bytes, unless the tenant still keeps it
/// (a rollback to a recent version compiles and validates nothing again).
async fn make_available(
    control: &Control,
    desired: &Desired,
    tenant: &Tenant,
    version: &str,
) -> Result<(), String> {
    if tenant.deployed(version).is_ok() {
        return Ok(());
    }
    let wasm = desired.module_bytes(version).map_err(|e| e.to_string())?;
    control
        .deploy(&tenant.id, wasm, false)
        .await
        .map(drop)
        .map_err(|e| format!("{version}: {e}"))
}
