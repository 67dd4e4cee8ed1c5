//! `outpost:edge@0.2.x` (`wit/0.2/`), adapted: a 0.2 route always runs the
//! response hook, sends the client's target and edits no response; its
//! `store` always overrides the lifetime.

use wasmtime::component::Resource;
use wasmtime::Store;

use super::{attempt_since_0_2, bindings, common_parts, head_getters};
use crate::runtime::heads::{RequestHead, ResponseHead};
use crate::runtime::policy::{
    Attempt, Decision, FetchError, ResponseDecision, Route, StoreOptions,
};
use crate::runtime::state::GuestState;

bindings!("../wit/0.2");

const MARKER: &str = "@0.2.";

common_parts!(bindings);

head_getters!(bindings, {});

impl bindings::host::Host for GuestState {
    common_host_calls!();

    fn backend_healthy(&mut self, backend: String) -> wasmtime::Result<bool> {
        GuestState::backend_healthy(self, backend)
    }
}

impl From<bindings::types::Route> for Route {
    fn from(r: bindings::types::Route) -> Self {
        Route {
            request_headers: r.request_headers.into_iter().map(Into::into).collect(),
            hash_key: r.hash_key,
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

attempt_since_0_2!(bindings);
