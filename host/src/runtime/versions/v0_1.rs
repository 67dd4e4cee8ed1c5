//! `outpost:edge@0.1.x` (`wit/0.1/`), adapted: as 0.2 (see `v0_2`), and
//! without a hash key, the members an attempt went through, the
//! `tls` and `unavailable` errors (told as `connect-failed`) or
//! `backend-healthy`.

use wasmtime::component::Resource;
use wasmtime::Store;

use super::{bindings, common_parts, head_getters};
use crate::runtime::heads::{RequestHead, ResponseHead};
use crate::runtime::policy::{
    Attempt, Decision, FetchError, ResponseDecision, Route, StoreOptions,
};
use crate::runtime::state::GuestState;

bindings!("../wit/0.1");

const MARKER: &str = "@0.1.";

common_parts!(bindings);

head_getters!(bindings, {});

impl bindings::host::Host for GuestState {
    common_host_calls!();
}

impl From<bindings::types::Route> for Route {
    fn from(r: bindings::types::Route) -> Self {
        Route {
            request_headers: r.request_headers.into_iter().map(Into::into).collect(),
            ..Route::to(r.backends)
        }
    }
}

impl From<bindings::types::StoreOptions> for StoreOptions {
    fn from(o: bindings::types::StoreOptions) -> Self {
        StoreOptions {
            ttl: Some(o.ttl),
            tags: o.tags,
            headers: Vec::new(),
        }
    }
}

impl From<Attempt> for bindings::types::Attempt {
    fn from(a: Attempt) -> Self {
        bindings::types::Attempt {
            backend: a.backend,
            index: a.index,
            remaining: a.remaining,
            stale_available: a.stale_available,
        }
    }
}

impl From<FetchError> for bindings::types::FetchError {
    fn from(e: FetchError) -> Self {
        use bindings::types::FetchError as E;
        match e {
            FetchError::ConnectFailed(s) => E::ConnectFailed(s),
            // 0.1 has no case for these: a connection that could not be
            // made, its message says why.
            e @ (FetchError::Tls(_) | FetchError::Unavailable(_)) => {
                E::ConnectFailed(e.to_string())
            }
            FetchError::Timeout => E::Timeout,
            FetchError::InvalidResponse(s) => E::InvalidResponse(s),
            FetchError::UnknownBackend(s) => E::UnknownBackend(s),
            FetchError::LimitExceeded => E::LimitExceeded,
        }
    }
}
