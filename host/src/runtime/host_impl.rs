//! The host side of the `outpost:edge` imports: the heads' getters, and the
//! `host` interface (log, config, cache, backend health, fetch), all scoped
//! to the guest's own tenant. One implementation, stamped out for each
//! supported version of the package (`guest_imports!`); what a version
//! added is passed in.

use wasmtime::component::Resource;

use super::bindings::{v0_1, v0_2, v0_3};
use super::heads::{all_headers, header_str, RequestHead, ResponseHead};
use super::memo::Field;
use super::policy::FetchError;
use super::state::GuestState;

/// The imports of bindings module `$v`, with `$extra` functions of its
/// `host` interface.
macro_rules! guest_imports {
    ($v:ident, { $($extra:tt)* }) => {
        impl $v::types::Host for GuestState {}

        impl $v::types::HostRequestHead for GuestState {
            fn method(&mut self, head: Resource<RequestHead>) -> wasmtime::Result<String> {
                self.note(|| Field::Method);
                Ok(self.table.get(&head)?.0.method.as_str().to_owned())
            }

            fn scheme(&mut self, head: Resource<RequestHead>) -> wasmtime::Result<String> {
                self.note(|| Field::Scheme);
                Ok(self.table.get(&head)?.0.scheme.as_str().to_owned())
            }

            fn authority(&mut self, head: Resource<RequestHead>) -> wasmtime::Result<String> {
                self.note(|| Field::Authority);
                Ok(self.table.get(&head)?.0.authority.clone())
            }

            fn path(&mut self, head: Resource<RequestHead>) -> wasmtime::Result<String> {
                self.note(|| Field::Path);
                Ok(self.table.get(&head)?.0.uri.path().to_owned())
            }

            fn query(&mut self, head: Resource<RequestHead>) -> wasmtime::Result<Option<String>> {
                self.note(|| Field::Query);
                Ok(self.table.get(&head)?.0.uri.query().map(str::to_owned))
            }

            fn header(
                &mut self,
                head: Resource<RequestHead>,
                name: String,
            ) -> wasmtime::Result<Option<String>> {
                self.note(|| Field::Header(name.to_ascii_lowercase().into()));
                Ok(header_str(
                    &self.table.get(&head)?.0.headers,
                    &name.to_ascii_lowercase(),
                ))
            }

            fn header_values(
                &mut self,
                head: Resource<RequestHead>,
                name: String,
            ) -> wasmtime::Result<Vec<Vec<u8>>> {
                self.note(|| Field::HeaderValues(name.to_ascii_lowercase().into()));
                let info = &self.table.get(&head)?.0;
                Ok(info
                    .headers
                    .get_all(name.to_ascii_lowercase().as_str())
                    .iter()
                    .map(|v| v.as_bytes().to_vec())
                    .collect())
            }

            fn headers(&mut self, head: Resource<RequestHead>) -> wasmtime::Result<Vec<(String, Vec<u8>)>> {
                self.note(|| Field::Headers);
                Ok(all_headers(&self.table.get(&head)?.0.headers))
            }

            fn client_addr(&mut self, head: Resource<RequestHead>) -> wasmtime::Result<String> {
                self.note(|| Field::ClientAddr);
                Ok(self.table.get(&head)?.0.client_ip.to_string())
            }

            fn drop(&mut self, head: Resource<RequestHead>) -> wasmtime::Result<()> {
                self.table.delete(head)?;
                Ok(())
            }
        }

        impl $v::types::HostResponseHead for GuestState {
            fn status(&mut self, head: Resource<ResponseHead>) -> wasmtime::Result<u16> {
                Ok(self.table.get(&head)?.0.status)
            }

            fn header(
                &mut self,
                head: Resource<ResponseHead>,
                name: String,
            ) -> wasmtime::Result<Option<String>> {
                Ok(header_str(
                    &self.table.get(&head)?.0.headers,
                    &name.to_ascii_lowercase(),
                ))
            }

            fn headers(
                &mut self,
                head: Resource<ResponseHead>,
            ) -> wasmtime::Result<Vec<(String, Vec<u8>)>> {
                Ok(all_headers(&self.table.get(&head)?.0.headers))
            }

            fn drop(&mut self, head: Resource<ResponseHead>) -> wasmtime::Result<()> {
                self.table.delete(head)?;
                Ok(())
            }
        }

        impl $v::host::Host for GuestState {
                    $($extra)*

            fn log(&mut self, level: $v::host::LogLevel, message: String) -> wasmtime::Result<()> {
                self.count_host_call()?;
                // A memoized decision would skip the line.
                self.taint();
                let tenant = self.ctx.env.tenant_id();
                let version = &*self.ctx.version;
                match level {
                    $v::host::LogLevel::Debug => {
                        tracing::debug!(target: "outpost::guest", tenant, version, "{message}")
                    }
                    $v::host::LogLevel::Info => {
                        tracing::info!(target: "outpost::guest", tenant, version, "{message}")
                    }
                    $v::host::LogLevel::Warn => {
                        tracing::warn!(target: "outpost::guest", tenant, version, "{message}")
                    }
                    $v::host::LogLevel::Error => {
                        tracing::error!(target: "outpost::guest", tenant, version, "{message}")
                    }
                }
                Ok(())
            }

            fn config_get(&mut self, key: String) -> wasmtime::Result<Option<String>> {
                self.count_host_call()?;
                self.note(|| Field::Config(key.as_str().into()));
                Ok(self.ctx.env.var(&key))
            }

            fn cache_lookup(&mut self, key: String) -> wasmtime::Result<Option<$v::host::CachedObject>> {
                self.count_host_call()?;
                self.taint();
                Ok(self.ctx.env.cache_peek(&key).map(Into::into))
            }

            fn cache_purge(&mut self, key: String) -> wasmtime::Result<bool> {
                self.count_host_call()?;
                self.taint();
                if self.ctx.offline {
                    // Smoke calls and previews never change the cache.
                    return Ok(false);
                }
                Ok(self.ctx.env.cache_purge(&key))
            }

            async fn fetch(
                &mut self,
                backend: String,
                request: $v::host::FetchRequest,
            ) -> wasmtime::Result<Result<$v::host::FetchResponse, $v::types::FetchError>> {
                self.count_host_call()?;
                self.taint();
                if self.subrequests >= self.limits.max_subrequests {
                    return Ok(Err(FetchError::LimitExceeded.into()));
                }
                self.subrequests += 1;
                let request = match super::convert::subrequest(request.into()) {
                    Ok(r) => r,
                    Err(e) => return Ok(Err(e.into())),
                };
                let result = self.ctx.env.fetch(&backend, request).await;
                Ok(result.map(Into::into).map_err(Into::into))
            }
        }
    };
}

guest_imports!(v0_1, {});

/// `backend-healthy`, which 0.2.0 added.
macro_rules! backend_healthy {
    () => {
        fn backend_healthy(&mut self, backend: String) -> wasmtime::Result<bool> {
            self.count_host_call()?;
            // The answer changes with the members' health: not memoized.
            self.taint();
            Ok(self.ctx.env.backend_healthy(&backend))
        }
    };
}

guest_imports!(v0_2, {
    backend_healthy!();
});
guest_imports!(v0_3, {
    backend_healthy!();
});
