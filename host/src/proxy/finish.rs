//! The end of a request as the client sees it: when its response body has
//! been sent (or abandoned: the client went away, an origin body broke),
//! the tenant's counters hear its status, cache outcome, bytes and time,
//! and the access log gets its line.

use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context as TaskContext, Poll};
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use http::Response;
use http_body::{Body, Frame, SizeHint};

use super::Context;
use crate::access_log::Entry;
use crate::http::{BoxError, ProxyBody, RequestInfo};
use crate::metrics::{nanos, Outcome};
use crate::tenant::Tenant;

/// When a request's head arrived.
#[derive(Clone, Copy)]
pub(super) struct Started {
    at: Instant,
    wall: SystemTime,
}

impl Started {
    pub(super) fn now() -> Started {
        Started {
            at: Instant::now(),
            wall: SystemTime::now(),
        }
    }
}

/// What the request path learns on the way that the log and the span
/// want.
#[derive(Default)]
pub(super) struct Trail {
    backend: Mutex<Option<Arc<str>>>,
    /// Nanoseconds in the guest's hooks.
    guest: AtomicU64,
    /// Nanoseconds waiting for backends' response heads.
    origin: AtomicU64,
}

impl Trail {
    pub(super) fn guest_ran(&self, d: Duration) {
        self.guest.fetch_add(nanos(d), Ordering::Relaxed);
    }

    pub(super) fn origin_took(&self, d: Duration) {
        self.origin.fetch_add(nanos(d), Ordering::Relaxed);
    }

    /// `backend` answered (the last one to, when the chain moved on).
    pub(super) fn answered_by(&self, backend: &str) {
        *self.backend.lock().unwrap_or_else(|p| p.into_inner()) = Some(backend.into());
    }

    fn backend(&self) -> Option<Arc<str>> {
        self.backend
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }
}

/// What an access log line or a span needs beyond the counters.
pub(super) struct Access {
    pub(super) ctx: Arc<Context>,
    pub(super) info: Arc<RequestInfo>,
    pub(super) version: Arc<str>,
    pub(super) trail: Arc<Trail>,
}

/// What is recorded when the body ends.
struct Pending {
    tenant: Arc<Tenant>,
    status: u16,
    outcome: Outcome,
    started: Started,
    bytes: u64,
    access: Option<Access>,
}

impl Pending {
    fn record(self) {
        let elapsed = self.started.at.elapsed();
        self.tenant
            .metrics
            .finished(self.status, self.outcome, self.bytes, elapsed);
        let Some(access) = self.access else {
            return;
        };
        let info = &access.info;
        let backend = access.trail.backend();
        let trace_id = info.trace.trace_id_hex();
        let entry = Entry {
            time: self.started.wall,
            tenant: &self.tenant.id,
            version: &access.version,
            method: info.method.as_str(),
            host: &info.authority,
            path: info.path_and_query(),
            status: self.status,
            bytes: self.bytes,
            duration: elapsed,
            outcome: self.outcome.as_str(),
            backend: backend.as_deref().unwrap_or("-"),
            request_id: info.request_id.as_str(),
            trace_id: &trace_id,
            guest: Duration::from_nanos(access.trail.guest.load(Ordering::Relaxed)),
            origin: Duration::from_nanos(access.trail.origin.load(Ordering::Relaxed)),
        };
        if let Some(log) = &access.ctx.access_log {
            log.write(&entry);
        }
        if let Some(spans) = &access.ctx.spans {
            spans.record(&info.trace, &entry);
        }
    }
}

/// A response body that records the request once it is done.
struct Measured {
    inner: ProxyBody,
    pending: Option<Pending>,
}

impl Measured {
    fn done(&mut self) {
        if let Some(pending) = self.pending.take() {
            pending.record();
        }
    }
}

impl Body for Measured {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut TaskContext<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        match &polled {
            Poll::Ready(Some(Ok(frame))) => {
                if let (Some(data), Some(p)) = (frame.data_ref(), self.pending.as_mut()) {
                    p.bytes += data.len() as u64;
                }
                if self.inner.is_end_stream() {
                    self.done();
                }
            }
            Poll::Ready(_) => self.done(),
            Poll::Pending => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

impl Drop for Measured {
    fn drop(&mut self) {
        self.done();
    }
}

/// Wraps a tenant's response so that its end is counted (and logged and
/// its span exported, with `access`). Responses the cache or a backend did not make (synthetic
/// answers, errors of the node) count as `synthetic`.
pub(super) fn measured(
    response: Response<ProxyBody>,
    tenant: Arc<Tenant>,
    started: Started,
    access: Option<Access>,
) -> Response<ProxyBody> {
    let status = response.status().as_u16();
    let outcome = response
        .extensions()
        .get::<Outcome>()
        .copied()
        .unwrap_or(Outcome::Synthetic);
    response.map(|inner| {
        let pending = Some(Pending {
            tenant,
            status,
            outcome,
            started,
            bytes: 0,
            access,
        });
        http_body_util::BodyExt::boxed_unsync(Measured { inner, pending })
    })
}
