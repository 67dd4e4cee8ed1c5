//! What a guest's imports do, once for every version of the package: the
//! request and response heads' getters and the `host` interface's calls,
//! in the host's own types and scoped to the guest's tenant. Each version
//! (`versions/`) only converts its WIT types to and from these.

use bytes::Bytes;
use http::uri::PathAndQuery;
use wasmtime::component::Resource;

use super::heads::{all_headers, header_str, RequestHead, ResponseHead};
use super::memo::Field;
use super::policy::{CachedObject, CallError, FetchError, RateVerdict};
use super::state::GuestState;
use crate::http::{RequestInfo, SignatureVerdict};

/// The severity of a guest's log line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum LogLevel {
    Debug,
    Info,
    Warn,
    Error,
}

/// A guest's `fetch-request`, whichever version it came in.
pub(super) struct FetchRequestParts {
    pub method: String,
    pub path_with_query: String,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

/// The request head's getters. Each notes what it read, for the decision
/// memo (a later request with equal values for the same reads may reuse
/// the decision).
impl GuestState {
    fn request(&self, head: &Resource<RequestHead>) -> wasmtime::Result<&RequestInfo> {
        Ok(&self.table.get(head)?.0)
    }

    pub(super) fn head_method(&mut self, head: Resource<RequestHead>) -> wasmtime::Result<String> {
        self.note(|| Field::Method);
        Ok(self.request(&head)?.method.as_str().to_owned())
    }

    pub(super) fn head_scheme(&mut self, head: Resource<RequestHead>) -> wasmtime::Result<String> {
        self.note(|| Field::Scheme);
        Ok(self.request(&head)?.scheme.as_str().to_owned())
    }

    pub(super) fn head_authority(
        &mut self,
        head: Resource<RequestHead>,
    ) -> wasmtime::Result<String> {
        self.note(|| Field::Authority);
        Ok(self.request(&head)?.authority.clone())
    }

    pub(super) fn head_path(&mut self, head: Resource<RequestHead>) -> wasmtime::Result<String> {
        self.note(|| Field::Path);
        Ok(self.request(&head)?.uri.path().to_owned())
    }

    pub(super) fn head_query(
        &mut self,
        head: Resource<RequestHead>,
    ) -> wasmtime::Result<Option<String>> {
        self.note(|| Field::Query);
        Ok(self.request(&head)?.uri.query().map(str::to_owned))
    }

    pub(super) fn head_header(
        &mut self,
        head: Resource<RequestHead>,
        name: String,
    ) -> wasmtime::Result<Option<String>> {
        let name = name.to_ascii_lowercase();
        let value = header_str(&self.request(&head)?.headers, &name);
        self.note(|| Field::Header(name.into()));
        Ok(value)
    }

    pub(super) fn head_header_values(
        &mut self,
        head: Resource<RequestHead>,
        name: String,
    ) -> wasmtime::Result<Vec<Vec<u8>>> {
        let name = name.to_ascii_lowercase();
        let values = self
            .request(&head)?
            .headers
            .get_all(name.as_str())
            .iter()
            .map(|v| v.as_bytes().to_vec())
            .collect();
        self.note(|| Field::HeaderValues(name.into()));
        Ok(values)
    }

    pub(super) fn head_headers(
        &mut self,
        head: Resource<RequestHead>,
    ) -> wasmtime::Result<Vec<(String, Vec<u8>)>> {
        self.note(|| Field::Headers);
        Ok(all_headers(&self.request(&head)?.headers))
    }

    pub(super) fn head_client_addr(
        &mut self,
        head: Resource<RequestHead>,
    ) -> wasmtime::Result<String> {
        self.note(|| Field::ClientAddr);
        Ok(self.request(&head)?.client_ip.to_string())
    }

    pub(super) fn head_signature(
        &mut self,
        head: Resource<RequestHead>,
    ) -> wasmtime::Result<SignatureVerdict> {
        self.note(|| Field::Signature);
        Ok(self.request(&head)?.signature)
    }

    pub(super) fn drop_request_head(
        &mut self,
        head: Resource<RequestHead>,
    ) -> wasmtime::Result<()> {
        self.table.delete(head)?;
        Ok(())
    }
}

/// The response head's getters (the response hook's; nothing is memoized
/// there).
impl GuestState {
    pub(super) fn response_status(
        &mut self,
        head: Resource<ResponseHead>,
    ) -> wasmtime::Result<u16> {
        Ok(self.table.get(&head)?.0.status)
    }

    pub(super) fn response_header(
        &mut self,
        head: Resource<ResponseHead>,
        name: String,
    ) -> wasmtime::Result<Option<String>> {
        Ok(header_str(
            &self.table.get(&head)?.0.headers,
            &name.to_ascii_lowercase(),
        ))
    }

    pub(super) fn response_headers(
        &mut self,
        head: Resource<ResponseHead>,
    ) -> wasmtime::Result<Vec<(String, Vec<u8>)>> {
        Ok(all_headers(&self.table.get(&head)?.0.headers))
    }

    pub(super) fn drop_response_head(
        &mut self,
        head: Resource<ResponseHead>,
    ) -> wasmtime::Result<()> {
        self.table.delete(head)?;
        Ok(())
    }
}

/// The `host` interface. Every call counts against the host call limit.
impl GuestState {
    pub(super) fn log(&mut self, level: LogLevel, message: String) -> wasmtime::Result<()> {
        self.count_host_call()?;
        // A memoized decision would skip the line.
        self.taint();
        let tenant = self.ctx.env.tenant_id();
        let version = &*self.ctx.version;
        match level {
            LogLevel::Debug => {
                tracing::debug!(target: "outpost::guest", tenant, version, "{message}")
            }
            LogLevel::Info => {
                tracing::info!(target: "outpost::guest", tenant, version, "{message}")
            }
            LogLevel::Warn => {
                tracing::warn!(target: "outpost::guest", tenant, version, "{message}")
            }
            LogLevel::Error => {
                tracing::error!(target: "outpost::guest", tenant, version, "{message}")
            }
        }
        Ok(())
    }

    pub(super) fn config_get(&mut self, key: String) -> wasmtime::Result<Option<String>> {
        self.count_host_call()?;
        self.note(|| Field::Config(key.as_str().into()));
        Ok(self.ctx.env.var(&key))
    }

    pub(super) fn cache_lookup(&mut self, key: String) -> wasmtime::Result<Option<CachedObject>> {
        self.count_host_call()?;
        self.taint();
        Ok(self.ctx.env.cache_peek(&key))
    }

    pub(super) fn cache_purge(&mut self, key: String) -> wasmtime::Result<bool> {
        self.count_host_call()?;
        self.taint();
        if self.ctx.offline {
            // Smoke calls and previews never change the cache.
            return Ok(false);
        }
        Ok(self.ctx.env.cache_purge(&key))
    }

    pub(super) fn backend_healthy(&mut self, backend: String) -> wasmtime::Result<bool> {
        self.count_host_call()?;
        // The answer changes with the members' health: not memoized.
        self.taint();
        Ok(self.ctx.env.backend_healthy(&backend))
    }

    pub(super) async fn fetch(
        &mut self,
        backend: String,
        request: FetchRequestParts,
    ) -> wasmtime::Result<Result<http::Response<Bytes>, FetchError>> {
        self.count_host_call()?;
        self.taint();
        if self.subrequests >= self.limits.max_subrequests {
            return Ok(Err(FetchError::LimitExceeded));
        }
        self.subrequests += 1;
        let request = match subrequest(request) {
            Ok(r) => r,
            Err(e) => return Ok(Err(e)),
        };
        Ok(self.ctx.env.fetch(&backend, request).await)
    }

    pub(super) fn rate_check(
        &mut self,
        limiter: String,
        key: String,
        cost: u32,
    ) -> wasmtime::Result<Result<RateVerdict, CallError>> {
        self.count_host_call()?;
        self.taint();
        let dry_run = self.ctx.offline || self.ctx.replayed;
        let verdict = self.ctx.env.rate_check(&limiter, &key, cost, dry_run);
        Ok(self.note_undeclared("limiter", verdict))
    }

    /// `counter-add`, and `counter-get` as an add of 0.
    pub(super) async fn counter_add(
        &mut self,
        counter: String,
        key: String,
        delta: u64,
    ) -> wasmtime::Result<Result<u64, CallError>> {
        self.count_host_call()?;
        self.taint();
        let dry_run = self.ctx.offline;
        let delta = if self.ctx.replayed { 0 } else { delta };
        let total = self
            .ctx
            .env
            .counter_add(&counter, &key, delta, dry_run)
            .await;
        Ok(self.note_undeclared("counter", total))
    }

    pub(super) fn sign_url(
        &mut self,
        path: String,
        expires_in: u32,
    ) -> wasmtime::Result<Result<String, CallError>> {
        self.count_host_call()?;
        // Signed from the clock: never the same answer twice.
        self.taint();
        let link = self.ctx.env.sign_url(&path, expires_in);
        Ok(self.note_undeclared("signing key", link))
    }

    pub(super) fn hmac_sha256(
        &mut self,
        secret: String,
        message: Vec<u8>,
    ) -> wasmtime::Result<Result<Vec<u8>, CallError>> {
        self.count_host_call()?;
        // Secrets are re-read at each apply: a decision from one value
        // must not outlive it.
        self.taint();
        let mac = self.ctx.env.hmac_sha256(&secret, &message);
        Ok(self.note_undeclared("secret", mac.map(|mac| mac.to_vec())))
    }

    /// Keeps the name of an undeclared limiter, counter, secret or signing
    /// key a call named, for the warnings of a smoke call.
    fn note_undeclared<T>(
        &mut self,
        kind: &str,
        result: Result<T, CallError>,
    ) -> Result<T, CallError> {
        if let Err(CallError::Undeclared(name)) = &result {
            let warning = format!("the policy calls an undeclared {kind} {name:?}");
            if !self.undeclared.contains(&warning) {
                self.undeclared.push(warning);
            }
        }
        result
    }
}

/// A guest's `fetch-request` as an HTTP request whose URI is the path and
/// query (a missing leading `/` is added). Invalid parts are the guest's
/// error, reported to it as `invalid-response`.
fn subrequest(r: FetchRequestParts) -> Result<http::Request<Bytes>, FetchError> {
    let invalid = |what: String| FetchError::InvalidResponse(format!("invalid request: {what}"));
    let method = http::Method::from_bytes(r.method.as_bytes())
        .map_err(|_| invalid(format!("method {:?}", r.method)))?;
    let path = if r.path_with_query.starts_with('/') {
        r.path_with_query
    } else {
        format!("/{}", r.path_with_query)
    };
    let target =
        PathAndQuery::try_from(path.as_str()).map_err(|_| invalid(format!("target {path:?}")))?;
    let mut builder = http::Request::builder()
        .method(method)
        .uri(http::Uri::from(target));
    for (name, value) in &r.headers {
        builder = builder.header(name.as_str(), value.as_str());
    }
    builder
        .body(Bytes::from(r.body))
        .map_err(|e| invalid(e.to_string()))
}
