//! What can go wrong when the desired state changes. Every variant is a
//! clear answer for the source that asked (the admin API maps them to
//! statuses); nothing has changed when one is returned.

use crate::config::ConfigError;
use crate::runtime::{GuestFailure, LoadError};
use crate::tenant::VersionError;

#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    #[error("no tenant {0:?}")]
    UnknownTenant(String),
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(transparent)]
    Version(#[from] VersionError),
    #[error(transparent)]
    Deploy(#[from] DeployError),
    #[error("no canary is running")]
    NoCanary,
    /// A request the control plane cannot carry out as given.
    #[error("{0}")]
    Invalid(String),
    /// A purge by URL for a URL the policy does not look up in the cache.
    #[error("the policy does not cache {0}")]
    NotCached(String),
    #[error("internal error: {0}")]
    Internal(String),
}

/// Why a component was not deployed.
#[derive(Debug, thiserror::Error)]
pub enum DeployError {
    #[error("empty body: send the component's bytes")]
    Empty,
    #[error("not a WebAssembly binary (no \\0asm header)")]
    NotWasm,
    #[error(transparent)]
    Load(#[from] LoadError),
    /// The request hook failed on `GET /` run offline.
    #[error("{}", smoke_message(.0))]
    SmokeCall(GuestFailure),
}

fn smoke_message(failure: &GuestFailure) -> String {
    match failure {
        GuestFailure::Unavailable(_) | GuestFailure::ConcurrencyLimit(_) => {
            format!("cannot instantiate under the tenant's limits: {failure}")
        }
        _ => format!("trap in smoke call (GET /): {failure}"),
    }
}
