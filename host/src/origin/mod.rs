//! Backends: where a tenant's requests go on a miss. A backend is a pool of
//! members (one URL, or several with weights), each with its own HTTP
//! client and pooled connections; the pool balances requests, tracks each
//! member's health (active probes, passive ejection, slow start), retries
//! what may be retried within a budget, and times each step.
//!
//! An engine: it speaks HTTP and reports its own [`OriginError`]s; what a
//! policy is told of them is decided above.

mod balance;
mod body;
mod client;
mod counted;
mod failure_log;
mod h1;
mod health;
mod member;
mod probe;
mod replay;
mod retry;
mod ring;
mod upload;

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderValue, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use tokio::task::AbortHandle;

use crate::config::{BackendConfig, FieldError};
use crate::http::{error_chain, ProxyBody};
use crate::metrics::Counter;
use balance::Balancer;
pub use body::{BodyStalled, MemberBody};
use client::{MemberClient, Unanswered};
pub(crate) use failure_log::within_log_budget;
use h1::Lease;
use member::{InFlight, Pool};
pub use member::{MemberReport, MemberState};
use retry::RetryBudget;

/// The `CDN-Loop` request field (RFC 8586).
pub const CDN_LOOP: http::HeaderName = http::HeaderName::from_static("cdn-loop");

/// Largest body a guest `fetch` may read.
pub const SUBREQUEST_MAX_BODY: usize = 8 * 1024 * 1024;

/// Why a backend gave no (complete) response.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OriginError {
    /// The connection could not be made.
    #[error("connection failed: {0}")]
    Connect(String),
    /// Connecting, the response head or a body chunk took longer than the
    /// backend's timeout.
    #[error("timed out")]
    Timeout,
    /// The TLS handshake failed: what about the certificate or the origin.
    #[error("tls: {0}")]
    Tls(String),
    /// The backend answered something that is not valid HTTP, or broke off.
    #[error("invalid response: {0}")]
    Invalid(String),
    /// The request body failed while it was sent: the client's upload
    /// broke off or stalled. Not the member's doing.
    #[error("the request body failed: {0}")]
    RequestBody(String),
    /// A complete body was asked for and this one is larger.
    #[error("body larger than the {0} bytes allowed")]
    TooLarge(usize),
    /// No member may take a request: probes fail, ejected, or at their
    /// connection bound.
    #[error("no healthy member ({0})")]
    Unavailable(String),
}

impl OriginError {
    /// Whether the request surely did not reach the member, so any method
    /// may go to another one.
    fn nothing_sent(&self) -> bool {
        matches!(self, OriginError::Connect(_) | OriginError::Tls(_))
    }

    /// Whether it tells of the member's health.
    fn member_at_fault(&self) -> bool {
        !matches!(self, OriginError::RequestBody(_))
    }
}

/// One named backend of a tenant.
pub struct Backend {
    pub name: String,
    /// The tenant it belongs to, for the log.
    tenant: Arc<str>,
    pool: Arc<Pool>,
    balancer: Balancer,
    budget: RetryBudget,
    /// Attempts sent to another member after one failed.
    retried: Counter,
    retries: u32,
    /// Host header to send instead of the client's.
    pub host_header: Option<HeaderValue>,
    /// Request bodies up to this size are read whole and may be sent to a
    /// second member (`replay_body_kb`).
    replay_body_bytes: u64,
    first_byte: Duration,
    between_bytes: Duration,
    /// One per member, in the pool's order.
    clients: Arc<[MemberClient]>,
    /// This node's name, added to every request's `CDN-Loop` (RFC 8586).
    cdn_loop: HeaderValue,
    /// The probe tasks, stopped with the backend.
    probes: Vec<AbortHandle>,
}

impl Drop for Backend {
    fn drop(&mut self) {
        for probe in &self.probes {
            probe.abort();
        }
    }
}

impl Backend {
    /// How long a member may take to start its response.
    pub fn first_byte_timeout(&self) -> Duration {
        self.first_byte
    }

    /// `tenant`'s backend from its (validated) config; relative TLS file paths are
    /// resolved against `base_dir`; `node_id` names this node in
    /// `CDN-Loop`. Its probes start if it has any and a tokio runtime runs.
    /// The error names the field under the backend (`tls.ca`, ...).
    pub fn new(
        tenant: &str,
        name: &str,
        config: &BackendConfig,
        base_dir: &Path,
        node_id: &str,
    ) -> Result<Backend, FieldError> {
        let tls = crate::tls::client_config(config.tls.as_ref(), base_dir)?;
        let pool = Arc::new(Pool::new(
            config.members(),
            config.probe.as_ref(),
            config.ejection,
            config.slow_start_ms,
            (config.max_connections, config.max_streams),
        ));
        let clients = pool
            .members
            .iter()
            .map(|m| client::build(config, &m.url, m.stats.clone(), &tls))
            .collect::<Result<Arc<[MemberClient]>, FieldError>>()?;
        // Checked by `BackendConfig::validate`.
        let host_header = config
            .host_header
            .as_deref()
            .and_then(|h| HeaderValue::from_str(h).ok());
        let probes = match &config.probe {
            Some(probe) => probe::Prober {
                backend: name.to_string(),
                pool: pool.clone(),
                clients: clients.clone(),
                probe: probe.clone(),
                host_header: host_header.clone(),
            }
            .spawn(),
            None => Vec::new(),
        };
        Ok(Backend {
            name: name.to_string(),
            tenant: tenant.into(),
            balancer: Balancer::new(config.balance, &pool, config.hash_balance_factor),
            pool,
            budget: RetryBudget::new(config.retry_budget_percent),
            retried: Counter::default(),
            retries: config.retries,
            host_header,
            replay_body_bytes: config.replay_body_kb.saturating_mul(1024),
            first_byte: Duration::from_millis(config.first_byte_timeout_ms),
            between_bytes: Duration::from_millis(config.between_bytes_timeout_ms),
            clients,
            // Checked by `Config::validate`.
            cdn_loop: HeaderValue::from_str(node_id)
                .unwrap_or_else(|_| HeaderValue::from_static("outpost")),
            probes,
        })
    }

    /// Each member's state and counters, for `/metrics`.
    pub fn members(&self) -> impl Iterator<Item = MemberReport<'_>> {
        let now = self.pool.now_ms();
        self.pool.members.iter().map(move |m| MemberReport {
            url: m.url.to_string(),
            state: if !m.health.probe_up() {
                MemberState::ProbeDown
            } else if m.health.ejected(now) {
                MemberState::Ejected
            } else {
                MemberState::Up
            },
            in_flight: m.in_flight(),
            stats: &m.stats,
        })
    }

    /// Attempts sent to another member after one failed, so far.
    pub fn retries(&self) -> u64 {
        self.retried.get()
    }

    /// Whether some member may take a request now.
    pub fn healthy(&self) -> bool {
        let now = self.pool.now_ms();
        (0..self.pool.members.len()).any(|i| self.pool.eligible(i, now))
    }

    /// Sends a request (its URI: the path and query on the backend) to a
    /// member and waits for the response head; `key` is what `hash`
    /// balancing hashes (the cache key). A failed attempt goes to the next
    /// member, up to `retries` times, if its body can be sent again (none,
    /// or one of at most `replay_body_kb`, read whole first) and either
    /// nothing was sent (a failed connect or handshake) or the method is
    /// idempotent (RFC 9110 section 9.2.2) and the retry budget allows; a
    /// larger body streams, and goes to another member only if it was
    /// handed back untouched. A timeout is not retried here: the policy's chain
    /// moves on. The members that failed before the last one tried are
    /// added to `failed`, with why.
    pub async fn send(
        &self,
        request: Request<ProxyBody>,
        key: &str,
        failed: &mut Vec<(String, OriginError)>,
    ) -> Result<Response<MemberBody>, OriginError> {
        let mut order = self.balancer.order(&self.pool, key);
        if order.members.is_empty() {
            return Err(OriginError::Unavailable(
                self.pool.why_unavailable(&self.name),
            ));
        }
        self.budget.request();
        let (mut parts, body) = request.into_parts();
        // RFC 8586 section 2: a CDN adds itself to the field (the client's
        // values are kept), so a node that sees itself there knows the
        // request came round.
        parts.headers.append(CDN_LOOP, self.cdn_loop.clone());
        let target = parts
            .uri
            .path_and_query()
            .map_or("/", |pq| pq.as_str())
            .to_string();
        let (mut body, replay) = match replay::prepare(body, self.replay_body_bytes).await {
            Ok(replay::Prepared::Whole(bytes)) => (None, Some(bytes)),
            Ok(replay::Prepared::Stream(body)) => (Some(body), None),
            Err(e) => return Err(OriginError::RequestBody(error_chain(&*e))),
        };
        let replayable = replay.is_some();
        // A request a member's connection failed before it went out: its
        // body untouched, it can go to the next member whatever it is.
        let mut unsent: Option<Box<Request<ProxyBody>>> = None;
        let attempts = order.members.len().min(1 + self.retries as usize);
        for attempt in 0..attempts {
            let i = order.members[attempt];
            let member = &self.pool.members[i];
            let more = attempt + 1 < attempts;
            let mut request = match unsent.take() {
                Some(request) => *request,
                None => {
                    let body = match &replay {
                        Some(bytes) if bytes.is_empty() => crate::http::empty(),
                        Some(bytes) => crate::http::full(bytes.clone()),
                        None => body.take().unwrap_or_else(crate::http::empty),
                    };
                    let mut request = Request::new(body);
                    *request.method_mut() = parts.method.clone();
                    // Copied only while another attempt may need them.
                    *request.headers_mut() = if more && replayable {
                        parts.headers.clone()
                    } else {
                        std::mem::take(&mut parts.headers)
                    };
                    request
                }
            };
            *request.uri_mut() = self.clients[i].request_uri(
                &member.url,
                &target,
                request.headers().get(http::header::HOST),
            );
            let in_flight = order.start(&self.pool, i);
            let error = match self.send_to(i, request).await {
                Ok((response, lease)) => return Ok(self.answered(response, lease, in_flight)),
                Err(Unanswered {
                    error,
                    unsent: back,
                }) => {
                    unsent = back;
                    error
                }
            };
            // Only the member's own failures count against its health (and
            // are logged), not an upload that stopped.
            if error.member_at_fault() {
                self.pool.report(i, false);
                let url = member.url.to_string();
                failure_log::member_failed(&self.tenant, &self.name, &url, &error);
            }
            let retry = more
                && (unsent.is_some()
                    || (replayable
                        && (error.nothing_sent()
                            || (matches!(error, OriginError::Invalid(_))
                                && parts.method.is_idempotent()
                                && self.budget.try_retry()))));
            if !retry {
                return Err(error);
            }
            self.retried.inc();
            tracing::debug!(backend = &*self.name, member = %member.url, "trying the next member: {error}");
            failed.push((member.url.to_string(), error));
        }
        unreachable!("the last attempt returns")
    }

    /// A response head from a member: a gateway error counts against its
    /// health at once, anything else when its body ends well.
    fn answered(
        &self,
        response: Response<Incoming>,
        lease: Option<Lease>,
        in_flight: InFlight,
    ) -> Response<MemberBody> {
        let status = response.status();
        let failed = matches!(
            status,
            StatusCode::BAD_GATEWAY | StatusCode::SERVICE_UNAVAILABLE | StatusCode::GATEWAY_TIMEOUT
        );
        let ended = http_body::Body::is_end_stream(response.body());
        if failed || ended {
            self.pool.report(in_flight.member, !failed);
        }
        let reports = !(failed || ended);
        response.map(|body| MemberBody::new(body, lease, in_flight, self.between_bytes, reports))
    }

    /// One attempt. The first-byte timeout runs from the end of the request
    /// body (`upload`): an upload takes the time it takes, as long as it
    /// never pauses for longer than that.
    async fn send_to(
        &self,
        member: usize,
        request: Request<ProxyBody>,
    ) -> Result<(Response<Incoming>, Option<Lease>), Unanswered> {
        let (parts, body) = request.into_parts();
        let (body, upload) = upload::watch(body);
        let started = std::time::Instant::now();
        let exchange = async {
            let result = self.clients[member]
                .send(Request::from_parts(parts, body))
                .await;
            let stats = &self.pool.members[member].stats;
            stats.first_byte.observe(started.elapsed());
            result
        };
        tokio::pin!(exchange);
        let timed_out = || Unanswered {
            error: OriginError::Timeout,
            unsent: None,
        };
        if let Some(upload) = upload {
            tokio::select! {
                // An origin may answer before it read everything.
                result = &mut exchange => return result,
                sent = upload.sent(self.first_byte) => sent.map_err(|()| timed_out())?,
            }
        }
        tokio::time::timeout(self.first_byte, exchange)
            .await
            .unwrap_or_else(|_| Err(timed_out()))
    }

    /// One complete exchange (a guest's `fetch`): the request's URI is the
    /// path and query on this backend; the body is read whole, up to
    /// [`SUBREQUEST_MAX_BODY`].
    pub async fn fetch_complete(
        &self,
        request: Request<Bytes>,
    ) -> Result<Response<Bytes>, OriginError> {
        // `send` keeps only the URI's path and query.
        let (mut parts, body) = request.into_parts();
        if let Some(host) = &self.host_header {
            parts.headers.insert(http::header::HOST, host.clone());
        }
        let body = Full::new(body)
            .map_err(|never| match never {})
            .boxed_unsync();
        let key = parts.uri.path().to_string();
        let response = self
            .send(Request::from_parts(parts, body), &key, &mut Vec::new())
            .await?;
        let (parts, mut body) = response.into_parts();
        let mut collected = Vec::new();
        while let Some(frame) = body.frame().await {
            let frame = frame.map_err(|e| match e.downcast_ref::<BodyStalled>() {
                Some(_) => OriginError::Timeout,
                None => OriginError::Invalid(error_chain(&*e)),
            })?;
            if let Ok(data) = frame.into_data() {
                if collected.len() + data.len() > SUBREQUEST_MAX_BODY {
                    return Err(OriginError::TooLarge(SUBREQUEST_MAX_BODY));
                }
                collected.extend_from_slice(&data);
            }
        }
        Ok(Response::from_parts(parts, Bytes::from(collected)))
    }
}
