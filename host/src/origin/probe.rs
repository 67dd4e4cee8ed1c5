//! Active health checks: one task per member asks for the probe path every
//! interval (jittered, so members are not probed in lockstep) and records
//! whether the expected status came in time.

use std::sync::Arc;
use std::time::Duration;

use http::{HeaderValue, Request};
use rand::RngExt;
use tokio::task::AbortHandle;

use super::client::MemberClient;
use super::health::Transition;
use super::member::Pool;
use crate::config::ProbeConfig;

/// What a probe task needs; it runs until its handle is aborted (when the
/// backend is dropped).
pub(super) struct Prober {
    pub backend: String,
    pub pool: Arc<Pool>,
    /// The members' clients, in the pool's order.
    pub clients: Arc<[MemberClient]>,
    pub probe: ProbeConfig,
    pub host_header: Option<HeaderValue>,
}

impl Prober {
    /// Starts a task per member, if the node runs on a tokio runtime (not,
    /// e.g., for `outpost check`).
    pub fn spawn(self) -> Vec<AbortHandle> {
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return Vec::new();
        };
        let prober = Arc::new(self);
        (0..prober.pool.members.len())
            .map(|i| runtime.spawn(prober.clone().run(i)).abort_handle())
            .collect()
    }

    async fn run(self: Arc<Self>, member: usize) {
        let interval = Duration::from_millis(self.probe.interval_ms);
        let first = interval.mul_f64(rand::rng().random_range(0.0..1.0));
        tokio::time::sleep(first).await;
        loop {
            let result = self.probe_once(member).await;
            let health = &self.pool.members[member].health;
            let url = &self.pool.members[member].url;
            match health.probed(result.is_ok(), &self.probe, self.pool.now_ms()) {
                Transition::WentDown => tracing::warn!(
                    backend = &*self.backend,
                    member = %url,
                    "member down: probe {}",
                    result.err().unwrap_or_default()
                ),
                Transition::CameUp => {
                    tracing::info!(backend = &*self.backend, member = %url, "member up")
                }
                Transition::Unchanged => {}
            }
            let next = interval.mul_f64(rand::rng().random_range(0.9..1.1));
            tokio::time::sleep(next).await;
        }
    }

    /// One probe: `Err` says what was wrong.
    async fn probe_once(&self, member: usize) -> Result<(), String> {
        let url = &self.pool.members[member].url;
        let mut request = Request::new(crate::http::empty());
        let client = &self.clients[member];
        *request.uri_mut() = client.request_uri(url, &self.probe.path, self.host_header.as_ref());
        if let Some(host) = &self.host_header {
            request
                .headers_mut()
                .insert(http::header::HOST, host.clone());
        }
        let timeout = Duration::from_millis(self.probe.timeout_ms);
        match tokio::time::timeout(timeout, client.send(request)).await {
            Err(_) => Err(format!("timed out after {timeout:?}")),
            Ok(Err(e)) => Err(e.error.to_string()),
            Ok(Ok((response, _))) if response.status().as_u16() == self.probe.expect_status => {
                Ok(())
            }
            Ok(Ok((response, _))) => Err(format!(
                "got status {}, expected {}",
                response.status().as_u16(),
                self.probe.expect_status
            )),
        }
    }
}
