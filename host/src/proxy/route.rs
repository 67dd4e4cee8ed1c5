//! The route loop: a route's backends in order, the response hook deciding
//! after each attempt, and the request each backend is sent.

use std::sync::Arc;
use std::time::{Instant, SystemTime};

use http::header::{HeaderMap, HeaderValue};
use http::{Response, StatusCode};
use http_body_util::BodyExt;

use super::exchange::{Exchange, ResponseHook};
use super::respond;
use crate::cache::fill::{stale_on_failure, stale_status, Fetched, StoreMode};
use crate::cache::{CacheStatus, Fwd, StoredResponse};
use crate::http::{BodyFailure, ProxyBody, ResponseInfo};
use crate::metrics::Event;
use crate::origin::Backend;
use crate::runtime::on_cpu;
use crate::runtime::{
    Attempt, FetchError, GuestFailure, OutcomeForGuest, ResponseDecision, Route, SyntheticResponse,
};

/// A stored response's validators, sent to revalidate it (RFC 9111
/// section 4.3.1).
#[derive(Debug, Clone, Default)]
pub(super) struct Validators {
    pub etag: Option<HeaderValue>,
    pub last_modified: Option<HeaderValue>,
}

/// How a request goes to a backend.
#[derive(Debug, Clone)]
pub(super) enum Forward {
    /// For the cache: a GET of the whole representation, or of one slice
    /// (`range`, inclusive), with a stale copy's validators if there is one.
    /// HEAD and the client's ranges are answered from what is stored.
    /// `key`, the cache key, is what a `hash` pool hashes.
    Lookup {
        key: String,
        validators: Option<Validators>,
        range: Option<(u64, u64)>,
    },
    /// The client's request as it is, body and all; a `hash` pool hashes
    /// its path and query.
    Pass,
}

/// What a route produced: a backend's answer, or why there is none.
pub(super) type RouteResult = Result<Answer, NoResponse>;

/// A backend's response, how the policy wants it stored, and which backend
/// it came from.
pub(super) struct Answer {
    pub fetched: Fetched,
    pub mode: StoreMode,
    pub backend: String,
}

/// Why a route ended without a backend response to send.
pub(super) enum NoResponse {
    /// The policy chose this stale copy (only ever a usable one), after a
    /// backend answered with this status, if it answered.
    ServeStale(Arc<StoredResponse>, Option<StatusCode>),
    /// The policy answered instead.
    Synthetic(SyntheticResponse),
    /// No backend produced a response.
    Failed {
        error: FetchError,
        backend: String,
    },
    GuestFailed(GuestFailure),
}

/// What one attempt produced: the head for the guest (shared, not copied),
/// the rest of the response, and the pool member that answered.
type Attempted = Result<(Arc<ResponseInfo>, Fetched, Option<String>), FetchError>;

impl Exchange {
    /// Tries the route's backends in order, consulting the response hook
    /// after each attempt. `stale`: a stored copy the policy may choose to
    /// serve instead, if the rules allow it to be served stale.
    pub(super) async fn fetch_route(
        &mut self,
        route: &Route,
        forward: &Forward,
        stale: Option<&Arc<StoredResponse>>,
    ) -> RouteResult {
        let Some(last) = route.backends.len().checked_sub(1) else {
            return Err(NoResponse::Failed {
                error: FetchError::UnknownBackend("(none)".into()),
                backend: "(route without backends)".into(),
            });
        };
        let stale = stale.filter(|s| s.may_serve_stale());
        for (index, name) in route.backends.iter().enumerate() {
            let mut failed_members = Vec::new();
            let mut outcome = match self.tenant.backends.get(name).cloned() {
                None => Err(FetchError::UnknownBackend(name.clone())),
                Some(backend) => {
                    let started = Instant::now();
                    let sent = self
                        .send(&backend, route, forward, &mut failed_members)
                        .await;
                    self.trail.origin_took(started.elapsed());
                    sent
                }
            };
            let decision = match self.response_hook {
                ResponseHook::Skipped => ResponseDecision::Default,
                ResponseHook::Runs | ResponseHook::Checked => {
                    let attempt = Attempt {
                        backend: name.clone(),
                        index: index as u32,
                        remaining: (last - index) as u32,
                        stale_available: stale.is_some(),
                        member: outcome
                            .as_mut()
                            .ok()
                            .and_then(|(_, _, member)| member.take()),
                        failed_members,
                    };
                    let for_guest = match &outcome {
                        Ok((info, _, _)) => OutcomeForGuest::Response(info.clone()),
                        Err(e) => OutcomeForGuest::Error(e.clone()),
                    };
                    match self.run_response_hook(attempt, for_guest).await {
                        Ok(d) => d,
                        Err(f) => return Err(NoResponse::GuestFailed(f)),
                    }
                }
            };
            // A request body can be sent once: no retry after it is gone.
            let can_retry = index < last
                && self
                    .body
                    .as_ref()
                    .is_none_or(http_body::Body::is_end_stream);
            if let Some(result) = settle(decision, outcome, name, can_retry, stale) {
                if result.is_ok() {
                    self.trail.answered_by(name);
                }
                return result;
            }
        }
        unreachable!("the loop returns on its last backend")
    }

    /// The response hook's decision on one attempt, in the request's
    /// instance (started now, with the request hook first, for a decision
    /// that came from the memo).
    async fn run_response_hook(
        &mut self,
        attempt: Attempt,
        for_guest: OutcomeForGuest,
    ) -> Result<ResponseDecision, GuestFailure> {
        let session = self.session().await?;
        let started = Instant::now();
        let mut cpu = std::time::Duration::ZERO;
        let decision = on_cpu::timed(session.on_response(attempt, for_guest), &mut cpu).await;
        self.hook_ran(&self.module.response_hook_time, started.elapsed(), cpu);
        let decision = decision?;
        self.check_response_hook(&decision);
        Ok(decision)
    }

    /// One attempt: build the request, send it, split the response head so
    /// the guest can read it without a copy. Members of the backend's pool
    /// that failed before the last one tried go to `failed_members`.
    async fn send(
        &mut self,
        backend: &Arc<Backend>,
        route: &Route,
        forward: &Forward,
        failed_members: &mut Vec<(String, FetchError)>,
    ) -> Attempted {
        let (request, revalidating) = self.origin_request(backend, route, forward);
        let request_time = SystemTime::now();
        // The policy's own hash key, else the cache key, else the target.
        let key = match (&route.hash_key, forward) {
            (Some(key), _) => key.as_str(),
            (None, Forward::Lookup { key, .. }) => key.as_str(),
            (None, Forward::Pass) => self.info.path_and_query(),
        };
        let mut failed = Vec::new();
        let sent = backend.send(request, key, &mut failed).await;
        failed_members.extend(failed.into_iter().map(|(m, e)| (m, FetchError::from(e))));
        let response = sent.map_err(FetchError::from)?;
        // Only the response hook is told which member answered.
        let member = match self.response_hook {
            ResponseHook::Skipped => None,
            ResponseHook::Runs | ResponseHook::Checked => response.body().member(),
        };
        let (parts, body) = response.into_parts();
        let info = Arc::new(ResponseInfo {
            status: parts.status.as_u16(),
            headers: parts.headers,
        });
        let fetched = Fetched {
            status: parts.status,
            headers: HeaderMap::new(),
            body: body.boxed_unsync(),
            request_time,
            revalidating,
        };
        Ok((info, fetched, member))
    }

    /// Forwards without caching; after a successful unsafe request, what is
    /// stored under `invalidate` (and the target's other URIs) is dropped
    /// (RFC 9111 section 4.4).
    pub(super) async fn pass(
        mut self,
        route: Route,
        invalidate: Option<String>,
    ) -> Response<ProxyBody> {
        let origin = match self.fetch_route(&route, &Forward::Pass, None).await {
            Ok(answer) => answer.fetched,
            Err(reason) => return self.without_response(reason, None, Fwd::Request),
        };
        let status = origin.status;
        let (runtime, tenant, info) = (&self.ctx.runtime, &self.tenant, &self.info);
        let dropped = super::invalidate::after_unsafe(
            runtime,
            tenant,
            info,
            invalidate,
            status,
            &origin.headers,
        )
        .await;
        self.invalidate_at_owners(&dropped).await;
        let cache_status = CacheStatus::forwarded(Fwd::Request, Some(status.as_u16()));
        respond::streamed(status, origin.headers, origin.body, cache_status)
    }

    /// A route that ended without a response to send. A backend failure
    /// is answered with `stale` if `stale-if-error` allows (RFC 5861
    /// section 4), else with a 502 or 504.
    pub(super) fn without_response(
        &self,
        reason: NoResponse,
        stale: Option<&Arc<StoredResponse>>,
        fwd: Fwd,
    ) -> Response<ProxyBody> {
        let now = Instant::now();
        match reason {
            NoResponse::Synthetic(s) => respond::synthetic(s),
            NoResponse::GuestFailed(f) => self.guest_failed(f),
            NoResponse::ServeStale(stale, status) => {
                respond::stored(&self.info, &stale, stale_status(&stale, now, status))
            }
            // A body the client could not send (malformed chunked coding,
            // RFC 9112 section 7.1, or a broken connection) is a 400, one
            // too large a 413 (RFC 9110 section 15.5.14), one that stalled a
            // 408 (section 15.5.9); none is counted against the origin.
            NoResponse::Failed { error, backend } => match self.body_watch.failure() {
                Some(failure) => {
                    tracing::debug!(
                        tenant = &*self.tenant.id,
                        "client request body failed: {error}"
                    );
                    let limit = |name| self.tenant.metrics.event(Event::Limit, name);
                    match failure {
                        BodyFailure::TooLarge => {
                            limit("request_body_bytes");
                            respond::body_too_large()
                        }
                        BodyFailure::Stalled => {
                            limit("request_body_read_timeout");
                            respond::body_stalled()
                        }
                        BodyFailure::Invalid => {
                            respond::plain(StatusCode::BAD_REQUEST, "invalid request body\n")
                        }
                    }
                }
                None => self.origin_failed_or_stale(&error, &backend, stale, fwd),
            },
        }
    }

    /// A backend failure: the stale copy if `stale-if-error` allows (RFC
    /// 5861 section 4), or if no backend could be reached and the copy may
    /// be served stale (RFC 9111 section 4.2.4, within
    /// `cache.stale_if_unreachable_s`), else a 502 or 504.
    fn origin_failed_or_stale(
        &self,
        error: &FetchError,
        backend: &str,
        stale: Option<&Arc<StoredResponse>>,
        fwd: Fwd,
    ) -> Response<ProxyBody> {
        let unreachable = error.is_unreachable().then(|| error.as_str());
        let window = self.tenant.stale_if_unreachable;
        match stale_on_failure(stale, Instant::now(), unreachable, window) {
            Some((s, status)) => {
                self.count_origin_error(error);
                respond::stored(&self.info, s, status)
            }
            None => self.origin_failed(error, backend, fwd),
        }
    }

    fn count_origin_error(&self, error: &FetchError) {
        self.tenant
            .metrics
            .event(Event::OriginError, error.as_str());
    }

    /// A route that produced no response: counted, logged, then 502 or 504.
    pub(super) fn origin_failed(
        &self,
        error: &FetchError,
        backend: &str,
        fwd: Fwd,
    ) -> Response<ProxyBody> {
        self.count_origin_error(error);
        if crate::origin::within_log_budget() {
            tracing::warn!(
                tenant = &*self.tenant.id,
                backend,
                reason = error.as_str(),
                request_id = self.info.request_id.as_str(),
                "origin failed: {error}"
            );
        }
        respond::origin_error(error, backend, fwd)
    }
}

/// What the response hook's decision makes of an attempt: the route's
/// result, or `None` to try the next backend.
fn settle(
    decision: ResponseDecision,
    outcome: Attempted,
    backend: &str,
    can_retry: bool,
    stale: Option<&Arc<StoredResponse>>,
) -> Option<RouteResult> {
    let status = outcome
        .as_ref()
        .ok()
        .map(|(info, _, _)| StatusCode::from_u16(info.status).unwrap_or(StatusCode::BAD_GATEWAY));
    match decision {
        ResponseDecision::Respond(s) => return Some(Err(NoResponse::Synthetic(s))),
        ResponseDecision::TryNext if can_retry => return None,
        ResponseDecision::ServeStale if stale.is_some() => {
            let stale = stale.expect("checked").clone();
            return Some(Err(NoResponse::ServeStale(stale, status)));
        }
        ResponseDecision::Default | ResponseDecision::TryNext | ResponseDecision::ServeStale
            if outcome.is_err() && can_retry =>
        {
            return None
        }
        _ => {}
    }
    Some(match outcome {
        Err(error) => Err(NoResponse::Failed {
            error,
            backend: backend.to_string(),
        }),
        Ok((info, mut fetched, _)) => {
            fetched.headers = Arc::try_unwrap(info)
                .map(|i| i.headers)
                .unwrap_or_else(|shared| shared.headers.clone());
            let mode = match decision {
                ResponseDecision::Store(o) => {
                    // What is stored is what this client gets too.
                    super::edits::apply(&mut fetched.headers, &o.headers);
                    match o.ttl {
                        Some(ttl) => StoreMode::Force { ttl, tags: o.tags },
                        None => StoreMode::Rfc {
                            ttl: None,
                            tags: o.tags,
                        },
                    }
                }
                ResponseDecision::NoStore => StoreMode::NoStore,
                _ => StoreMode::Rfc {
                    ttl: None,
                    tags: Vec::new(),
                },
            };
            Ok(Answer {
                fetched,
                mode,
                backend: backend.to_string(),
            })
        }
    })
}
