//! What a connection is doing: requests whose response is not yet fully
//! sent, and when the last one ended, so an idle connection can be told
//! from a busy one without asking hyper.

use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use tokio::time::Instant;

use crate::http::{BoxError, ProxyBody};

/// Requests in flight on one connection, and the end of the last.
pub(super) struct Activity {
    /// Requests so far.
    requests: AtomicUsize,
    in_flight: AtomicUsize,
    last_end: Mutex<Instant>,
}

impl Activity {
    pub(super) fn new() -> Arc<Activity> {
        Arc::new(Activity {
            requests: AtomicUsize::new(0),
            in_flight: AtomicUsize::new(0),
            last_end: Mutex::new(Instant::now()),
        })
    }

    /// Counts a request from its head until its response body is sent, or
    /// until the returned guard is dropped (the connection went away).
    pub(super) fn start(self: &Arc<Self>) -> InFlight {
        self.in_flight.fetch_add(1, Ordering::Relaxed);
        self.requests.fetch_add(1, Ordering::Relaxed);
        InFlight(self.clone())
    }

    /// Requests started so far.
    pub(super) fn requests(&self) -> usize {
        self.requests.load(Ordering::Relaxed)
    }

    /// Resolves once no request has been in flight for `quiet`.
    pub(super) async fn quiet_for(&self, quiet: Duration) {
        loop {
            let since = *self.last_end.lock().unwrap_or_else(|e| e.into_inner());
            let deadline = since + quiet;
            if self.in_flight.load(Ordering::Relaxed) == 0 && Instant::now() >= deadline {
                return;
            }
            tokio::time::sleep_until(deadline.max(Instant::now() + quiet / 4)).await;
        }
    }
}

/// One request in flight; its end is recorded when this is dropped.
pub(super) struct InFlight(Arc<Activity>);

impl InFlight {
    /// The response body, which holds this until it is sent.
    pub(super) fn track(self, body: ProxyBody) -> Tracked {
        Tracked {
            body,
            _in_flight: self,
        }
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        *self.0.last_end.lock().unwrap_or_else(|e| e.into_inner()) = Instant::now();
        self.0.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

/// A response body that keeps its request counted until it ends.
pub(super) struct Tracked {
    body: ProxyBody,
    _in_flight: InFlight,
}

impl Body for Tracked {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        Pin::new(&mut self.body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}
