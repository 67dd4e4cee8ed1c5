//! `GET /tenants/{id}`: a tenant's versions, canary, limits and failures.

use serde_json::{json, Value};

use crate::metrics::Event;
use crate::tenant::Tenant;

/// The JSON description of a tenant.
pub(super) fn tenant(tenant: &Tenant) -> Value {
    let d = tenant.deployments.lock().unwrap_or_else(|p| p.into_inner());
    let versions: Vec<&str> = d.versions.iter().map(|m| &*m.version).collect();
    let history: Vec<&str> = d.history.iter().map(|v| &**v).collect();
    let failures: serde_json::Map<String, Value> = [
        "trap",
        "cpu_limit",
        "memory_limit",
        "host_call_limit",
        "concurrency_limit",
        "cpu_share",
        "quarantined",
        "unavailable",
    ]
    .iter()
    .map(|k| {
        (
            k.to_string(),
            json!(tenant.metrics.event_count(Event::GuestFailure, k)),
        )
    })
    .collect();
    let canary = tenant.canary.load().as_ref().map(|c| {
        let ((an, af), (cn, cf)) = c.stats();
        json!({
            "version": &*c.module.version,
            "percent": c.percent,
            "active": { "requests": an, "failures": af },
            "candidate": { "requests": cn, "failures": cf },
        })
    });
    json!({
        "id": &*tenant.id,
        "active": &*tenant.policy.load().version,
        "canary": canary,
        "versions": versions,
        "history": history,
        "limits": {
            "memory_mb": tenant.limits.memory_mb,
            "cpu_ms": tenant.limits.cpu_ms,
            "max_host_calls": tenant.limits.max_host_calls,
            "max_subrequests": tenant.limits.max_subrequests,
            "cpu_weight": tenant.limits.cpu_weight,
            "quarantine_cpu_cuts": tenant.limits.quarantine_cpu_cuts,
            "quarantine_window_s": tenant.limits.quarantine_window_s,
        },
        "quarantined": tenant.quarantine.held().map(|h| json!({
            "version": h.version,
            "cuts": h.cuts,
            "window_s": h.window_s,
            "for_s": h.since.elapsed().as_secs(),
        })),
        "backends": tenant.backends.keys().collect::<Vec<_>>(),
        "guest_failures": failures,
    })
}
