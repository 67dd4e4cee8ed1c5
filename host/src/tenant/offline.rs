//! Running a tenant's policy once, offline: no subrequest leaves the node
//! and the cache is not changed. The one way the control plane (deploy
//! smoke calls, previews, purge by URL) and the invalidation of unsafe
//! requests ask a policy what it would decide.

use std::sync::Arc;

use super::Tenant;
use crate::http::RequestInfo;
use crate::runtime::{Decision, GuestContext, GuestFailure, GuestSession, PolicyModule, Runtime};

/// The decision `module` makes for `request` as `tenant`'s policy, in a
/// fresh instance under the tenant's limits.
pub async fn decide_offline(
    runtime: &Runtime,
    tenant: &Arc<Tenant>,
    module: &PolicyModule,
    request: Arc<RequestInfo>,
) -> Result<Decision, GuestFailure> {
    smoke_offline(runtime, tenant, module, request)
        .await
        .map(|(decision, _)| decision)
}

/// As [`decide_offline`], with what an operator should be warned of: the
/// limiters, counters, secrets and keys the hook named that the tenant does
/// not declare, and backends its decision routes to that it does not
/// declare (every such request would get a 502).
pub async fn smoke_offline(
    runtime: &Runtime,
    tenant: &Arc<Tenant>,
    module: &PolicyModule,
    request: Arc<RequestInfo>,
) -> Result<(Decision, Vec<String>), GuestFailure> {
    let ctx = GuestContext {
        env: tenant.clone(),
        version: module.version.clone(),
        offline: true,
        replayed: false,
    };
    let mut session = GuestSession::start(runtime, module, ctx, request).await?;
    let decision = session.on_request().await?;
    let mut warnings = session.undeclared().to_vec();
    let route = match &decision {
        Decision::Respond(_) => None,
        Decision::Lookup(l) => Some(&l.route),
        Decision::Pass(r) => Some(r),
    };
    for backend in route.into_iter().flat_map(|r| &r.backends) {
        if !tenant.backends.contains_key(backend) {
            warnings.push(format!(
                "the policy routes to {backend:?}, which is not a backend of tenant {:?}",
                &*tenant.id
            ));
        }
    }
    Ok((decision, warnings))
}
