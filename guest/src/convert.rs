//! Conversions between the SDK's types and the WIT bindings.

use alloc::vec::Vec;

use crate::bindings::outpost::edge::types as wit;
use crate::types::{HeaderEdit, ResponseSource};
use crate::{
    Attempt, Decision, FetchError, OriginResponse, Outcome, Response, ResponseDecision, Route,
    Signature,
};

impl From<Response> for wit::SyntheticResponse {
    fn from(r: Response) -> Self {
        wit::SyntheticResponse {
            status: r.status,
            headers: r.headers,
            body: r.body,
        }
    }
}

fn edits(edits: Vec<HeaderEdit>) -> Vec<wit::HeaderEdit> {
    edits
        .into_iter()
        .map(|e| match e {
            HeaderEdit::Set(n, v) => wit::HeaderEdit::Set((n, v)),
            HeaderEdit::Append(n, v) => wit::HeaderEdit::Append((n, v)),
            HeaderEdit::Remove(n) => wit::HeaderEdit::Remove(n),
        })
        .collect()
}

impl Route {
    /// The route as the host is told it; `response_hook` is the policy's
    /// default for routes that do not say.
    fn into_wit(self, response_hook: bool) -> wit::Route {
        wit::Route {
            backends: self.backends,
            request_headers: edits(self.edits),
            hash_key: self.hash_key,
            response_hook: self.response_hook.unwrap_or(response_hook),
            forward_target: self.target,
            response_headers: edits(self.response_edits),
        }
    }
}

impl From<wit::SignatureVerdict> for Signature {
    fn from(v: wit::SignatureVerdict) -> Self {
        match v {
            wit::SignatureVerdict::NotChecked => Signature::NotChecked,
            wit::SignatureVerdict::Valid => Signature::Valid,
            wit::SignatureVerdict::Missing => Signature::Missing,
            wit::SignatureVerdict::Invalid => Signature::Invalid,
            wit::SignatureVerdict::Expired => Signature::Expired,
        }
    }
}

impl Decision {
    /// The decision as the host is told it; `response_hook` is the policy's
    /// [`Policy::RESPONSE_HOOK`](crate::Policy::RESPONSE_HOOK).
    pub(crate) fn into_wit(self, response_hook: bool) -> wit::Decision {
        match self {
            Decision::Respond(r) => wit::Decision::Respond(r.into()),
            Decision::Lookup { key, ttl, route } => wit::Decision::Lookup(wit::Lookup {
                key,
                ttl,
                route: route.into_wit(response_hook),
            }),
            Decision::Pass(route) => wit::Decision::Pass(route.into_wit(response_hook)),
        }
    }
}

impl From<wit::Attempt> for Attempt {
    fn from(a: wit::Attempt) -> Self {
        Attempt {
            backend: a.backend,
            index: a.index,
            remaining: a.remaining,
            stale_available: a.stale_available,
            member: a.member,
            failed_members: a
                .failed_members
                .into_iter()
                .map(|f| (f.member, f.error.into()))
                .collect(),
        }
    }
}

impl From<wit::FetchError> for FetchError {
    fn from(e: wit::FetchError) -> Self {
        match e {
            wit::FetchError::ConnectFailed(s) => FetchError::ConnectFailed(s),
            wit::FetchError::Tls(s) => FetchError::Tls(s),
            wit::FetchError::Unavailable(s) => FetchError::Unavailable(s),
            wit::FetchError::Timeout => FetchError::Timeout,
            wit::FetchError::InvalidResponse(s) => FetchError::InvalidResponse(s),
            wit::FetchError::UnknownBackend(s) => FetchError::UnknownBackend(s),
            wit::FetchError::LimitExceeded => FetchError::LimitExceeded,
        }
    }
}

impl From<wit::Outcome> for Outcome {
    fn from(o: wit::Outcome) -> Self {
        match o {
            wit::Outcome::Response(head) => Outcome::Response(OriginResponse {
                head: ResponseSource::Host(head),
            }),
            wit::Outcome::Error(e) => Outcome::Error(e.into()),
        }
    }
}

impl From<ResponseDecision> for wit::ResponseDecision {
    fn from(d: ResponseDecision) -> Self {
        match d {
            ResponseDecision::Default => wit::ResponseDecision::Default,
            ResponseDecision::Store(o) => wit::ResponseDecision::Store(wit::StoreOptions {
                ttl: o.ttl,
                tags: o.tags,
                headers: edits(o.edits),
            }),
            ResponseDecision::NoStore => wit::ResponseDecision::NoStore,
            ResponseDecision::TryNext => wit::ResponseDecision::TryNext,
            ResponseDecision::ServeStale => wit::ResponseDecision::ServeStale,
            ResponseDecision::Respond(r) => wit::ResponseDecision::Respond(r.into()),
        }
    }
}
