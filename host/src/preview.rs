//! Policy preview: "what would this version change?"
//!
//! Replays the tenant's recent request heads through the active and the
//! candidate module (request hook only, offline: no subrequests, no cache
//! writes, no origin traffic) and reports the requests whose decision would
//! differ: cache key, backends, TTL, synthetic response, or failure. The
//! number of distinct cache keys on each side predicts the effect on the
//! hit ratio.

use std::collections::HashSet;
use std::sync::Arc;

use serde_json::{json, Value};

use crate::node::Node;
use crate::runtime::heads::RequestInfo;
use crate::runtime::{Decision, GuestContext, GuestSession, PolicyModule};
use crate::tenant::Tenant;

/// Differences listed in full; the count covers all of them.
const MAX_LISTED: usize = 100;

/// A decision reduced to what the preview compares.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Outcome {
    Respond {
        status: u16,
        body_len: usize,
    },
    Lookup {
        key: String,
        backends: Vec<String>,
        ttl: Option<u32>,
    },
    Pass {
        backends: Vec<String>,
    },
    Failure(&'static str),
}

impl Outcome {
    fn key(&self) -> Option<&str> {
        match self {
            Outcome::Lookup { key, .. } => Some(key),
            _ => None,
        }
    }

    fn to_json(&self) -> Value {
        match self {
            Outcome::Respond { status, body_len } => {
                json!({ "respond": { "status": status, "body_bytes": body_len } })
            }
            Outcome::Lookup { key, backends, ttl } => {
                json!({ "lookup": { "key": key, "backends": backends, "ttl": ttl } })
            }
            Outcome::Pass { backends } => json!({ "pass": { "backends": backends } }),
            Outcome::Failure(reason) => json!({ "failure": reason }),
        }
    }
}

async fn decide(
    node: &Node,
    tenant: &Arc<Tenant>,
    module: &PolicyModule,
    request: &Arc<RequestInfo>,
) -> Outcome {
    let ctx = GuestContext {
        tenant: tenant.clone(),
        version: module.version.clone(),
        offline: true,
    };
    let mut session = match GuestSession::start(&node.runtime, module, ctx, request.clone()).await {
        Ok(s) => s,
        Err(f) => return Outcome::Failure(f.as_str()),
    };
    match session.on_request().await {
        Err(f) => Outcome::Failure(f.as_str()),
        Ok(Decision::Respond(r)) => Outcome::Respond {
            status: r.status,
            body_len: r.body.len(),
        },
        Ok(Decision::Lookup(l)) => Outcome::Lookup {
            key: l.key,
            backends: l.route.backends,
            ttl: l.ttl,
        },
        Ok(Decision::Pass(route)) => Outcome::Pass {
            backends: route.backends,
        },
    }
}

/// Runs the preview of `version` for `tenant`.
pub async fn run(node: &Node, tenant: &Arc<Tenant>, version: &str) -> Result<Value, String> {
    let candidate = tenant
        .deployments
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .find(version)
        .ok_or_else(|| format!("version {version} is not deployed"))?;
    let active = tenant.policy.load_full();
    let requests = tenant.recent.snapshot();
    let (mut active_keys, mut candidate_keys) = (HashSet::new(), HashSet::new());
    let mut differences = Vec::new();
    let mut changed = 0usize;
    for request in &requests {
        let before = decide(node, tenant, &active, request).await;
        let after = decide(node, tenant, &candidate, request).await;
        active_keys.extend(before.key().map(str::to_owned));
        candidate_keys.extend(after.key().map(str::to_owned));
        if before != after {
            changed += 1;
            if differences.len() < MAX_LISTED {
                differences.push(json!({
                    "method": request.method.as_str(),
                    "authority": request.authority,
                    "target": request.path_and_query(),
                    "active": before.to_json(),
                    "candidate": after.to_json(),
                }));
            }
        }
    }
    Ok(json!({
        "active": &*active.version,
        "candidate": &*candidate.version,
        "requests": requests.len(),
        "changed": changed,
        "differences": differences,
        "distinct_cache_keys": { "active": active_keys.len(), "candidate": candidate_keys.len() },
    }))
}
