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
    let ctx = GuestContext {
        env: tenant.clone(),
        version: module.version.clone(),
        offline: true,
    };
    let mut session = GuestSession::start(runtime, module, ctx, request).await?;
    session.on_request().await
}
