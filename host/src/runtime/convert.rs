//! Conversions between the generated WIT bindings and the host's types, at
//! the runtime's edge: nothing outside `runtime` sees a binding type.
//!
//! The conversions every supported version of the package shares are
//! written once (`shared_conversions!`) and stamped out for each version's
//! generated module; what a version changed is written out for it.

use bytes::Bytes;
use http::uri::PathAndQuery;

use super::bindings::{v0_1, v0_2, v0_3};
use super::policy::{
    Attempt, CachedObject, Decision, FetchError, HeaderEdit, Lookup, ResponseDecision, Route,
    StoreOptions, SyntheticResponse,
};

/// The conversions of the types a version left as 0.1.0 had them, for the
/// bindings module `$v`.
macro_rules! shared_conversions {
    ($v:ident) => {
        impl From<$v::types::SyntheticResponse> for SyntheticResponse {
            fn from(s: $v::types::SyntheticResponse) -> Self {
                SyntheticResponse {
                    status: s.status,
                    headers: s.headers,
                    body: s.body,
                }
            }
        }

        impl From<$v::types::HeaderEdit> for HeaderEdit {
            fn from(e: $v::types::HeaderEdit) -> Self {
                match e {
                    $v::types::HeaderEdit::Set((n, v)) => HeaderEdit::Set(n, v),
                    $v::types::HeaderEdit::Append((n, v)) => HeaderEdit::Append(n, v),
                    $v::types::HeaderEdit::Remove(n) => HeaderEdit::Remove(n),
                }
            }
        }

        impl From<$v::types::Decision> for Decision {
            fn from(d: $v::types::Decision) -> Self {
                match d {
                    $v::types::Decision::Respond(s) => Decision::Respond(s.into()),
                    $v::types::Decision::Lookup(l) => Decision::Lookup(Lookup {
                        key: l.key,
                        ttl: l.ttl,
                        route: l.route.into(),
                    }),
                    $v::types::Decision::Pass(r) => Decision::Pass(r.into()),
                }
            }
        }

        impl From<$v::types::ResponseDecision> for ResponseDecision {
            fn from(d: $v::types::ResponseDecision) -> Self {
                use $v::types::ResponseDecision as D;
                match d {
                    D::Default => ResponseDecision::Default,
                    D::Store(o) => ResponseDecision::Store(StoreOptions {
                        ttl: o.ttl,
                        tags: o.tags,
                    }),
                    D::NoStore => ResponseDecision::NoStore,
                    D::TryNext => ResponseDecision::TryNext,
                    D::ServeStale => ResponseDecision::ServeStale,
                    D::Respond(s) => ResponseDecision::Respond(s.into()),
                }
            }
        }

        impl From<CachedObject> for $v::host::CachedObject {
            fn from(c: CachedObject) -> Self {
                $v::host::CachedObject {
                    status: c.status,
                    age: c.age,
                    fresh: c.fresh,
                }
            }
        }

        impl From<$v::host::FetchRequest> for FetchRequestParts {
            fn from(r: $v::host::FetchRequest) -> Self {
                FetchRequestParts {
                    method: r.method,
                    path_with_query: r.path_with_query,
                    headers: r.headers,
                    body: r.body,
                }
            }
        }

        impl From<http::Response<Bytes>> for $v::host::FetchResponse {
            /// A complete backend response as the guest's `fetch-response`.
            fn from(r: http::Response<Bytes>) -> Self {
                let (parts, body) = r.into_parts();
                $v::host::FetchResponse {
                    status: parts.status.as_u16(),
                    headers: super::heads::all_headers(&parts.headers),
                    body: body.to_vec(),
                }
            }
        }
    };
}

/// The conversions of the types 0.2.0 changed and 0.3.0 left as they were.
macro_rules! since_0_2_conversions {
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

shared_conversions!(v0_1);
shared_conversions!(v0_2);
shared_conversions!(v0_3);
since_0_2_conversions!(v0_2);
since_0_2_conversions!(v0_3);

// Before 0.3 a route could not say it needs no response hook: it always
// runs, as it did.
impl From<v0_1::types::Route> for Route {
    fn from(r: v0_1::types::Route) -> Self {
        Route {
            backends: r.backends,
            request_headers: r.request_headers.into_iter().map(Into::into).collect(),
            hash_key: None,
            response_hook: true,
        }
    }
}

impl From<v0_2::types::Route> for Route {
    fn from(r: v0_2::types::Route) -> Self {
        Route {
            backends: r.backends,
            request_headers: r.request_headers.into_iter().map(Into::into).collect(),
            hash_key: r.hash_key,
            response_hook: true,
        }
    }
}

impl From<v0_3::types::Route> for Route {
    fn from(r: v0_3::types::Route) -> Self {
        Route {
            backends: r.backends,
            request_headers: r.request_headers.into_iter().map(Into::into).collect(),
            hash_key: r.hash_key,
            response_hook: r.response_hook,
        }
    }
}

impl From<Attempt> for v0_1::types::Attempt {
    fn from(a: Attempt) -> Self {
        v0_1::types::Attempt {
            backend: a.backend,
            index: a.index,
            remaining: a.remaining,
            stale_available: a.stale_available,
        }
    }
}

impl From<FetchError> for v0_1::types::FetchError {
    fn from(e: FetchError) -> Self {
        use v0_1::types::FetchError as E;
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

/// A guest's `fetch-request`, whichever version it came in.
pub(super) struct FetchRequestParts {
    method: String,
    path_with_query: String,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

/// A guest's `fetch-request` as an HTTP request whose URI is the path and
/// query (a missing leading `/` is added). Invalid parts are the guest's
/// error, reported to it as `invalid-response`.
pub(super) fn subrequest(r: FetchRequestParts) -> Result<http::Request<Bytes>, FetchError> {
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
