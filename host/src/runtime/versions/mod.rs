//! The versions of the `outpost:edge` package the node runs, one module
//! each: the current one (`v0_3`) and an adapter per older minor (`v0_2`,
//! `v0_1`), as published. Each module holds its version's generated
//! bindings, its imports (thin calls into `capabilities`) and its exports
//! converted to the host's types (`policy`), behind the two traits below.
//! Nothing else in the runtime names a version: supporting a new one is a
//! module and a line in [`VERSIONS`].

mod v0_1;
mod v0_2;
mod v0_3;

use std::future::Future;
use std::pin::Pin;

use wasmtime::component::{InstancePre, Linker, Resource};
use wasmtime::Store;

use super::heads::{RequestHead, ResponseHead};
use super::policy::{Attempt, Decision, FetchError, ResponseDecision};
use super::state::GuestState;

/// A hook call (or an instantiation) in flight.
pub(super) type Call<'a, T> = Pin<Box<dyn Future<Output = wasmtime::Result<T>> + Send + 'a>>;

/// A component linked against its version's imports, ready to instantiate.
pub(super) trait Linked: Send + Sync {
    fn instantiate<'a>(&'a self, store: &'a mut Store<GuestState>) -> Call<'a, Box<dyn Hooks>>;
}

/// An instance's exports, taking and returning the host's types.
pub(super) trait Hooks: Send + Sync {
    fn on_request<'a>(
        &'a self,
        store: &'a mut Store<GuestState>,
        head: Resource<RequestHead>,
    ) -> Call<'a, Decision>;

    fn on_response<'a>(
        &'a self,
        store: &'a mut Store<GuestState>,
        head: Resource<RequestHead>,
        attempt: Attempt,
        outcome: Result<Resource<ResponseHead>, FetchError>,
    ) -> Call<'a, ResponseDecision>;
}

/// A version of the package the node runs.
pub(super) struct Version {
    /// What its interface names contain, e.g. `@0.2.` (any patch).
    pub marker: &'static str,
    /// Adds its imports to the node's linker.
    pub add_to_linker: fn(&mut Linker<GuestState>) -> wasmtime::Result<()>,
    /// Checks a component's exports and makes it instantiable.
    pub link: fn(InstancePre<GuestState>) -> wasmtime::Result<Box<dyn Linked>>,
}

/// Every version the node runs, newest first.
pub(super) const VERSIONS: &[Version] = &[v0_3::VERSION, v0_2::VERSION, v0_1::VERSION];

/// The newest version: what a component that names none is checked against.
pub(super) const CURRENT: &Version = &VERSIONS[0];

/// The `outpost:edge` minor versions this node runs (build info).
pub const SUPPORTED_WIT: &str = "0.1,0.2,0.3";

/// The bindings of the package at `$path` (relative to the host crate),
/// with `fetch` and the `$async` imports async, in a module `bindings`.
macro_rules! bindings {
    ($path:literal $(, $async:literal)*) => {
        mod bindings {
            wasmtime::component::bindgen!({
                path: $path,
                world: "edge-policy",
                imports: {
                    "outpost:edge/host.fetch": async | trappable,
                    $($async: async | trappable,)*
                    default: trappable,
                },
                exports: { default: async },
                with: {
                    "outpost:edge/types.request-head": crate::runtime::heads::RequestHead,
                    "outpost:edge/types.response-head": crate::runtime::heads::ResponseHead,
                },
            });

            pub use self::outpost::edge::{host, types};
        }
    };
}

/// The conversions of the attempt and of fetch errors, as 0.2 made them,
/// for bindings module `$v`.
macro_rules! attempt_since_0_2 {
    ($v:ident) => {
        impl From<Attempt> for $v::types::Attempt {
            fn from(a: Attempt) -> Self {
                $v::types::Attempt {
                    backend: a.backend,
                    index: a.index,
                    remaining: a.remaining,
                    stale_available: a.stale_available,
                    member: a.member,
                    failed_members: a
                        .failed_members
                        .into_iter()
                        .map(|(member, error)| $v::types::MemberFailure {
                            member,
                            error: error.into(),
                        })
                        .collect(),
                }
            }
        }

        impl From<FetchError> for $v::types::FetchError {
            fn from(e: FetchError) -> Self {
                use $v::types::FetchError as E;
                match e {
                    FetchError::ConnectFailed(s) => E::ConnectFailed(s),
                    FetchError::Tls(s) => E::Tls(s),
                    FetchError::Unavailable(s) => E::Unavailable(s),
                    FetchError::Timeout => E::Timeout,
                    FetchError::InvalidResponse(s) => E::InvalidResponse(s),
                    FetchError::UnknownBackend(s) => E::UnknownBackend(s),
                    FetchError::LimitExceeded => E::LimitExceeded,
                }
            }
        }
    };
}

/// The `request-head` and `response-head` getters of bindings module `$v`:
/// those every version has, and the `$since` ones a version added. (A
/// version's resources map onto the same Rust types, so only the trait
/// differs.)
macro_rules! head_getters {
    ($v:ident, { $($since:tt)* }) => {
        impl $v::types::HostRequestHead for GuestState {
            fn method(&mut self, head: Resource<RequestHead>) -> wasmtime::Result<String> {
                self.head_method(head)
            }

            fn scheme(&mut self, head: Resource<RequestHead>) -> wasmtime::Result<String> {
                self.head_scheme(head)
            }

            fn authority(&mut self, head: Resource<RequestHead>) -> wasmtime::Result<String> {
                self.head_authority(head)
            }

            fn path(&mut self, head: Resource<RequestHead>) -> wasmtime::Result<String> {
                self.head_path(head)
            }

            fn query(&mut self, head: Resource<RequestHead>) -> wasmtime::Result<Option<String>> {
                self.head_query(head)
            }

            fn header(
                &mut self,
                head: Resource<RequestHead>,
                name: String,
            ) -> wasmtime::Result<Option<String>> {
                self.head_header(head, name)
            }

            fn header_values(
                &mut self,
                head: Resource<RequestHead>,
                name: String,
            ) -> wasmtime::Result<Vec<Vec<u8>>> {
                self.head_header_values(head, name)
            }

            fn headers(
                &mut self,
                head: Resource<RequestHead>,
            ) -> wasmtime::Result<Vec<(String, Vec<u8>)>> {
                self.head_headers(head)
            }

            fn client_addr(&mut self, head: Resource<RequestHead>) -> wasmtime::Result<String> {
                self.head_client_addr(head)
            }

            $($since)*

            fn drop(&mut self, head: Resource<RequestHead>) -> wasmtime::Result<()> {
                self.drop_request_head(head)
            }
        }

        impl $v::types::HostResponseHead for GuestState {
            fn status(&mut self, head: Resource<ResponseHead>) -> wasmtime::Result<u16> {
                self.response_status(head)
            }

            fn header(
                &mut self,
                head: Resource<ResponseHead>,
                name: String,
            ) -> wasmtime::Result<Option<String>> {
                self.response_header(head, name)
            }

            fn headers(
                &mut self,
                head: Resource<ResponseHead>,
            ) -> wasmtime::Result<Vec<(String, Vec<u8>)>> {
                self.response_headers(head)
            }

            fn drop(&mut self, head: Resource<ResponseHead>) -> wasmtime::Result<()> {
                self.drop_response_head(head)
            }
        }
    };
}

/// The `host` calls every version has, for bindings module `$v`, and the
/// link and hook glue (`$v::EdgePolicy` exports `on-request` and
/// `on-response`).
macro_rules! common_parts {
    ($v:ident) => {
        impl From<$v::host::LogLevel> for crate::runtime::capabilities::LogLevel {
            fn from(level: $v::host::LogLevel) -> Self {
                use crate::runtime::capabilities::LogLevel as L;
                match level {
                    $v::host::LogLevel::Debug => L::Debug,
                    $v::host::LogLevel::Info => L::Info,
                    $v::host::LogLevel::Warn => L::Warn,
                    $v::host::LogLevel::Error => L::Error,
                }
            }
        }

        impl From<crate::runtime::policy::CachedObject> for $v::host::CachedObject {
            fn from(c: crate::runtime::policy::CachedObject) -> Self {
                $v::host::CachedObject {
                    status: c.status,
                    age: c.age,
                    fresh: c.fresh,
                }
            }
        }

        impl From<$v::host::FetchRequest> for crate::runtime::capabilities::FetchRequestParts {
            fn from(r: $v::host::FetchRequest) -> Self {
                crate::runtime::capabilities::FetchRequestParts {
                    method: r.method,
                    path_with_query: r.path_with_query,
                    headers: r.headers,
                    body: r.body,
                }
            }
        }

        impl From<http::Response<bytes::Bytes>> for $v::host::FetchResponse {
            /// A complete backend response as the guest's `fetch-response`.
            fn from(r: http::Response<bytes::Bytes>) -> Self {
                let (parts, body) = r.into_parts();
                $v::host::FetchResponse {
                    status: parts.status.as_u16(),
                    headers: crate::runtime::heads::all_headers(&parts.headers),
                    body: body.to_vec(),
                }
            }
        }

        impl From<$v::types::SyntheticResponse> for crate::runtime::policy::SyntheticResponse {
            fn from(s: $v::types::SyntheticResponse) -> Self {
                crate::runtime::policy::SyntheticResponse {
                    status: s.status,
                    headers: s.headers,
                    body: s.body,
                }
            }
        }

        impl From<$v::types::HeaderEdit> for crate::runtime::policy::HeaderEdit {
            fn from(e: $v::types::HeaderEdit) -> Self {
                use crate::runtime::policy::HeaderEdit as E;
                match e {
                    $v::types::HeaderEdit::Set((n, v)) => E::Set(n, v),
                    $v::types::HeaderEdit::Append((n, v)) => E::Append(n, v),
                    $v::types::HeaderEdit::Remove(n) => E::Remove(n),
                }
            }
        }

        impl From<$v::types::Decision> for Decision {
            fn from(d: $v::types::Decision) -> Self {
                match d {
                    $v::types::Decision::Respond(s) => Decision::Respond(s.into()),
                    $v::types::Decision::Lookup(l) => {
                        Decision::Lookup(crate::runtime::policy::Lookup {
                            key: l.key,
                            ttl: l.ttl,
                            route: l.route.into(),
                        })
                    }
                    $v::types::Decision::Pass(r) => Decision::Pass(r.into()),
                }
            }
        }

        impl From<$v::types::ResponseDecision> for ResponseDecision {
            fn from(d: $v::types::ResponseDecision) -> Self {
                use $v::types::ResponseDecision as D;
                match d {
                    D::Default => ResponseDecision::Default,
                    D::Store(o) => ResponseDecision::Store(o.into()),
                    D::NoStore => ResponseDecision::NoStore,
                    D::TryNext => ResponseDecision::TryNext,
                    D::ServeStale => ResponseDecision::ServeStale,
                    D::Respond(s) => ResponseDecision::Respond(s.into()),
                }
            }
        }

        impl $v::types::Host for GuestState {}

        /// The calls this version shares with every other.
        macro_rules! common_host_calls {
            () => {
                fn log(
                    &mut self,
                    level: $v::host::LogLevel,
                    message: String,
                ) -> wasmtime::Result<()> {
                    GuestState::log(self, level.into(), message)
                }

                fn config_get(&mut self, key: String) -> wasmtime::Result<Option<String>> {
                    GuestState::config_get(self, key)
                }

                fn cache_lookup(
                    &mut self,
                    key: String,
                ) -> wasmtime::Result<Option<$v::host::CachedObject>> {
                    Ok(GuestState::cache_lookup(self, key)?.map(Into::into))
                }

                fn cache_purge(&mut self, key: String) -> wasmtime::Result<bool> {
                    GuestState::cache_purge(self, key)
                }

                async fn fetch(
                    &mut self,
                    backend: String,
                    request: $v::host::FetchRequest,
                ) -> wasmtime::Result<Result<$v::host::FetchResponse, $v::types::FetchError>> {
                    let result = GuestState::fetch(self, backend, request.into()).await?;
                    Ok(result.map(Into::into).map_err(Into::into))
                }
            };
        }

        struct Linked($v::EdgePolicyPre<GuestState>);

        impl super::Linked for Linked {
            fn instantiate<'a>(
                &'a self,
                store: &'a mut Store<GuestState>,
            ) -> super::Call<'a, Box<dyn super::Hooks>> {
                Box::pin(async move {
                    let policy = self.0.instantiate_async(store).await?;
                    Ok(Box::new(Hooks(policy)) as Box<dyn super::Hooks>)
                })
            }
        }

        struct Hooks($v::EdgePolicy);

        impl super::Hooks for Hooks {
            fn on_request<'a>(
                &'a self,
                store: &'a mut Store<GuestState>,
                head: Resource<RequestHead>,
            ) -> super::Call<'a, Decision> {
                Box::pin(async move {
                    let decision = self
                        .0
                        .outpost_edge_policy()
                        .call_on_request(store, head)
                        .await?;
                    Ok(decision.into())
                })
            }

            fn on_response<'a>(
                &'a self,
                store: &'a mut Store<GuestState>,
                head: Resource<RequestHead>,
                attempt: Attempt,
                outcome: Result<Resource<ResponseHead>, FetchError>,
            ) -> super::Call<'a, ResponseDecision> {
                Box::pin(async move {
                    let outcome = match outcome {
                        Ok(head) => $v::types::Outcome::Response(head),
                        Err(e) => $v::types::Outcome::Error(e.into()),
                    };
                    let decision = self
                        .0
                        .outpost_edge_policy()
                        .call_on_response(store, head, &attempt.into(), &outcome)
                        .await?;
                    Ok(decision.into())
                })
            }
        }

        pub(super) const VERSION: super::Version = super::Version {
            marker: MARKER,
            add_to_linker: |linker| {
                $v::EdgePolicy::add_to_linker::<_, wasmtime::component::HasSelf<_>>(linker, |s| s)
            },
            link: |pre| Ok(Box::new(Linked($v::EdgePolicyPre::new(pre)?))),
        };
    };
}

use {attempt_since_0_2, bindings, common_parts, head_getters};
