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

use serde::Serialize;
use serde_json::{json, Value};

use super::{Control, ControlError};
use crate::http::RequestInfo;
use crate::runtime::{Decision, PolicyModule};
use crate::tenant::{decide_offline, Tenant};

/// Differences listed in full; the count covers all of them.
const MAX_LISTED: usize = 100;

/// A decision reduced to what the preview compares.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Outcome {
    Decided(Decision),
    Failure(&'static str),
}

impl Outcome {
    fn key(&self) -> Option<&str> {
        match self {
            Outcome::Decided(Decision::Lookup(l)) => Some(&l.key),
            _ => None,
        }
    }

    fn to_json(&self) -> Value {
        match self {
            Outcome::Decided(Decision::Respond(r)) => {
                json!({ "respond": { "status": r.status, "body_bytes": r.body.len() } })
            }
            Outcome::Decided(Decision::Lookup(l)) => {
                json!({ "lookup": { "key": l.key, "backends": l.route.backends, "ttl": l.ttl } })
            }
            Outcome::Decided(Decision::Pass(route)) => {
                json!({ "pass": { "backends": route.backends } })
            }
            Outcome::Failure(reason) => json!({ "failure": reason }),
        }
    }
}

/// What a candidate version would change, over the tenant's recent requests.
#[derive(Debug, Serialize)]
pub struct PreviewReport {
    pub active: String,
    pub candidate: String,
    /// Requests replayed.
    pub requests: usize,
    /// Requests whose decision differs.
    pub changed: usize,
    /// The first differences: the request and both decisions.
    pub differences: Vec<Value>,
    /// Distinct cache keys on each side (predicts the hit ratio's change).
    pub distinct_cache_keys: KeyCounts,
}

#[derive(Debug, Serialize)]
pub struct KeyCounts {
    pub active: usize,
    pub candidate: usize,
}

impl Control {
    async fn decide(
        &self,
        tenant: &Arc<Tenant>,
        module: &PolicyModule,
        request: &Arc<RequestInfo>,
    ) -> Outcome {
        match decide_offline(&self.ctx.runtime, tenant, module, request.clone()).await {
            Ok(decision) => Outcome::Decided(decision),
            Err(f) => Outcome::Failure(f.as_str()),
        }
    }

    /// Replays the tenant's recent requests through the active version and
    /// `version`, offline, and reports what differs.
    pub async fn preview(&self, id: &str, version: &str) -> Result<PreviewReport, ControlError> {
        let tenant = self.tenant(id)?;
        let candidate = tenant.deployed(version)?;
        let active = tenant.policy.load_full();
        let requests = tenant.recent.snapshot();
        let (mut active_keys, mut candidate_keys) = (HashSet::new(), HashSet::new());
        let mut differences = Vec::new();
        let mut changed = 0usize;
        for request in &requests {
            let before = self.decide(&tenant, &active, request).await;
            let after = self.decide(&tenant, &candidate, request).await;
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
        Ok(PreviewReport {
            active: active.version.to_string(),
            candidate: candidate.version.to_string(),
            requests: requests.len(),
            changed,
            differences,
            distinct_cache_keys: KeyCounts {
                active: active_keys.len(),
                candidate: candidate_keys.len(),
            },
        })
    }
}
