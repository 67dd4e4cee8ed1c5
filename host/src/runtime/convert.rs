//! Conversions between the generated WIT bindings and the host's types, at
//! the runtime's edge: nothing outside `runtime` sees a binding type.

use bytes::Bytes;
use http::uri::PathAndQuery;

use super::bindings::{host, types};
use super::policy::{
    Attempt, CachedObject, Decision, FetchError, HeaderEdit, Lookup, ResponseDecision, Route,
    StoreOptions, SyntheticResponse,
};

impl From<types::SyntheticResponse> for SyntheticResponse {
    fn from(s: types::SyntheticResponse) -> Self {
        SyntheticResponse {
            status: s.status,
            headers: s.headers,
            body: s.body,
        }
    }
}

impl From<types::HeaderEdit> for HeaderEdit {
    fn from(e: types::HeaderEdit) -> Self {
        match e {
            types::HeaderEdit::Set((n, v)) => HeaderEdit::Set(n, v),
            types::HeaderEdit::Append((n, v)) => HeaderEdit::Append(n, v),
            types::HeaderEdit::Remove(n) => HeaderEdit::Remove(n),
        }
    }
}

impl From<types::Route> for Route {
    fn from(r: types::Route) -> Self {
        Route {
            backends: r.backends,
            request_headers: r.request_headers.into_iter().map(Into::into).collect(),
        }
    }
}

impl From<types::Decision> for Decision {
    fn from(d: types::Decision) -> Self {
        match d {
            types::Decision::Respond(s) => Decision::Respond(s.into()),
            types::Decision::Lookup(l) => Decision::Lookup(Lookup {
                key: l.key,
                ttl: l.ttl,
                route: l.route.into(),
            }),
            types::Decision::Pass(r) => Decision::Pass(r.into()),
        }
    }
}

impl From<types::ResponseDecision> for ResponseDecision {
    fn from(d: types::ResponseDecision) -> Self {
        match d {
            types::ResponseDecision::Default => ResponseDecision::Default,
            types::ResponseDecision::Store(o) => ResponseDecision::Store(StoreOptions {
                ttl: o.ttl,
                tags: o.tags,
            }),
            types::ResponseDecision::NoStore => ResponseDecision::NoStore,
            types::ResponseDecision::TryNext => ResponseDecision::TryNext,
            types::ResponseDecision::ServeStale => ResponseDecision::ServeStale,
            types::ResponseDecision::Respond(s) => ResponseDecision::Respond(s.into()),
        }
    }
}

impl From<Attempt> for types::Attempt {
    fn from(a: Attempt) -> Self {
        types::Attempt {
            backend: a.backend,
            index: a.index,
            remaining: a.remaining,
            stale_available: a.stale_available,
        }
    }
}

impl From<FetchError> for types::FetchError {
    fn from(e: FetchError) -> Self {
        match e {
            FetchError::ConnectFailed(s) => types::FetchError::ConnectFailed(s),
            // 0.1's fetch-error has no case for these (a new case is a new
            // minor version of the package): a connection that could not
            // be made, its message says why.
            e @ (FetchError::Tls(_) | FetchError::Unavailable(_)) => {
                types::FetchError::ConnectFailed(e.to_string())
            }
            FetchError::Timeout => types::FetchError::Timeout,
            FetchError::InvalidResponse(s) => types::FetchError::InvalidResponse(s),
            FetchError::UnknownBackend(s) => types::FetchError::UnknownBackend(s),
            FetchError::LimitExceeded => types::FetchError::LimitExceeded,
        }
    }
}

impl From<CachedObject> for host::CachedObject {
    fn from(c: CachedObject) -> Self {
        host::CachedObject {
            status: c.status,
            age: c.age,
            fresh: c.fresh,
        }
    }
}

/// A guest's `fetch-request` as an HTTP request whose URI is the path and
/// query (a missing leading `/` is added). Invalid parts are the guest's
/// error, reported to it as `invalid-response`.
pub(super) fn subrequest(r: host::FetchRequest) -> Result<http::Request<Bytes>, FetchError> {
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

/// A complete backend response as the guest's `fetch-response`.
pub(super) fn subresponse(r: http::Response<Bytes>) -> host::FetchResponse {
    let (parts, body) = r.into_parts();
    host::FetchResponse {
        status: parts.status.as_u16(),
        headers: super::heads::all_headers(&parts.headers),
        body: body.to_vec(),
    }
}
