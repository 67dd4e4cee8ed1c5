//! `outpost:edge@0.3.x` (`wit/edge.wit`), the current version: what the
//! SDK builds.

use wasmtime::component::Resource;
use wasmtime::Store;

use super::{attempt_since_0_2, bindings, common_parts, head_getters};
use crate::http::SignatureVerdict;
use crate::runtime::heads::{RequestHead, ResponseHead};
use crate::runtime::policy::{
    Attempt, CallError, Decision, FetchError, RateVerdict, ResponseDecision, Route, StoreOptions,
};
use crate::runtime::state::GuestState;

bindings!(
    "../wit",
    "outpost:edge/host.counter-add",
    "outpost:edge/host.counter-get"
);

const MARKER: &str = "@0.3.";

common_parts!(bindings);

head_getters!(bindings, {
    fn signature(
        &mut self,
        head: Resource<RequestHead>,
    ) -> wasmtime::Result<bindings::types::SignatureVerdict> {
        self.head_signature(head).map(Into::into)
    }
});

impl bindings::host::Host for GuestState {
    common_host_calls!();

    fn backend_healthy(&mut self, backend: String) -> wasmtime::Result<bool> {
        GuestState::backend_healthy(self, backend)
    }

    fn rate_check(
        &mut self,
        limiter: String,
        key: String,
        cost: u32,
    ) -> wasmtime::Result<Result<bindings::host::RateVerdict, bindings::host::CallError>> {
        let verdict = GuestState::rate_check(self, limiter, key, cost)?;
        Ok(verdict.map(Into::into).map_err(Into::into))
    }

    async fn counter_add(
        &mut self,
        counter: String,
        key: String,
        delta: u64,
    ) -> wasmtime::Result<Result<u64, bindings::host::CallError>> {
        let total = GuestState::counter_add(self, counter, key, delta).await?;
        Ok(total.map_err(Into::into))
    }

    async fn counter_get(
        &mut self,
        counter: String,
        key: String,
    ) -> wasmtime::Result<Result<u64, bindings::host::CallError>> {
        let total = GuestState::counter_add(self, counter, key, 0).await?;
        Ok(total.map_err(Into::into))
    }

    fn sign_url(
        &mut self,
        path: String,
        expires_in: u32,
    ) -> wasmtime::Result<Result<String, bindings::host::CallError>> {
        Ok(GuestState::sign_url(self, path, expires_in)?.map_err(Into::into))
    }

    fn hmac_sha256(
        &mut self,
        secret: String,
        message: Vec<u8>,
    ) -> wasmtime::Result<Result<Vec<u8>, bindings::host::CallError>> {
        Ok(GuestState::hmac_sha256(self, secret, message)?.map_err(Into::into))
    }
}

impl From<SignatureVerdict> for bindings::types::SignatureVerdict {
    fn from(v: SignatureVerdict) -> Self {
        use bindings::types::SignatureVerdict as V;
        match v {
            SignatureVerdict::NotChecked => V::NotChecked,
            SignatureVerdict::Valid => V::Valid,
            SignatureVerdict::Missing => V::Missing,
            SignatureVerdict::Invalid => V::Invalid,
            SignatureVerdict::Expired => V::Expired,
        }
    }
}

impl From<RateVerdict> for bindings::host::RateVerdict {
    fn from(v: RateVerdict) -> Self {
        match v {
            RateVerdict::Allow => bindings::host::RateVerdict::Allow,
            RateVerdict::Deny { retry_after_s } => bindings::host::RateVerdict::Deny(retry_after_s),
        }
    }
}

impl From<CallError> for bindings::host::CallError {
    fn from(e: CallError) -> Self {
        match e {
            CallError::Undeclared(name) => bindings::host::CallError::Undeclared(name),
            CallError::Unavailable(why) => bindings::host::CallError::Unavailable(why),
            CallError::Invalid(why) => bindings::host::CallError::Invalid(why),
        }
    }
}

impl From<bindings::types::Route> for Route {
    fn from(r: bindings::types::Route) -> Self {
        Route {
            backends: r.backends,
            request_headers: r.request_headers.into_iter().map(Into::into).collect(),
            hash_key: r.hash_key,
            response_hook: r.response_hook,
            forward_target: r.forward_target,
            response_headers: r.response_headers.into_iter().map(Into::into).collect(),
        }
    }
}

impl From<bindings::types::StoreOptions> for StoreOptions {
    fn from(o: bindings::types::StoreOptions) -> Self {
        StoreOptions {
            ttl: o.ttl,
            tags: o.tags,
            headers: o.headers.into_iter().map(Into::into).collect(),
        }
    }
}

attempt_since_0_2!(bindings);
