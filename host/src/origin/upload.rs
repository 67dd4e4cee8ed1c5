//! A request body on its way to a member, and when the first-byte timeout
//! may start: the origin cannot answer before it has the whole request, so
//! the wait for the response head is timed from the body's end. While the
//! body is sent, the same timeout bounds each pause in its progress (as
//! nginx's `proxy_send_timeout`), so an origin that stops reading cannot
//! hold the request forever.

use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};

use crate::http::{BoxError, ProxyBody};

/// How far a body has been sent, shared by the body and the waiting side.
pub(super) struct Progress {
    start: Instant,
    /// Milliseconds from `start` to the last frame the connection took.
    last_ms: AtomicU64,
    /// The connection asked for the next frame and the client has not sent
    /// it yet: a pause that is the client's (its own body timeout, 408,
    /// bounds it), not the member's.
    waiting_on_client: AtomicBool,
    done: AtomicBool,
    finished: tokio::sync::Notify,
}

impl Progress {
    /// Whether the whole body was handed to the connection.
    fn done(&self) -> bool {
        self.done.load(Ordering::Acquire)
    }

    fn last_frame(&self) -> Instant {
        self.start + Duration::from_millis(self.last_ms.load(Ordering::Relaxed))
    }

    fn frame_taken(&self) {
        let ms = self.start.elapsed().as_millis() as u64;
        self.last_ms.store(ms, Ordering::Relaxed);
    }

    fn finish(&self) {
        self.done.store(true, Ordering::Release);
        self.finished.notify_one();
    }

    /// Waits until the body is sent; `Err` when the member took nothing
    /// for `pause` while the client had data for it.
    pub async fn sent(&self, pause: Duration) -> Result<(), ()> {
        loop {
            if self.done() {
                return Ok(());
            }
            let now = Instant::now();
            let mut until = self.last_frame() + pause;
            if now >= until {
                if !self.waiting_on_client.load(Ordering::Relaxed) {
                    return Err(());
                }
                until = now + pause;
            }
            tokio::select! {
                () = self.finished.notified() => {}
                () = tokio::time::sleep_until(until.into()) => {}
            }
        }
    }
}

/// `body` with its progress watched; `None` when it is empty (nothing to
/// wait for).
pub(super) fn watch(body: ProxyBody) -> (ProxyBody, Option<Arc<Progress>>) {
    if body.is_end_stream() {
        return (body, None);
    }
    let progress = Arc::new(Progress {
        start: Instant::now(),
        last_ms: AtomicU64::new(0),
        waiting_on_client: AtomicBool::new(false),
        done: AtomicBool::new(false),
        finished: tokio::sync::Notify::new(),
    });
    let watched = Sending {
        inner: body,
        progress: progress.clone(),
    };
    (ProxyBody::new(watched), Some(progress))
}

struct Sending {
    inner: ProxyBody,
    progress: Arc<Progress>,
}

impl Body for Sending {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        let pending = polled.is_pending();
        self.progress
            .waiting_on_client
            .store(pending, Ordering::Relaxed);
        match &polled {
            Poll::Ready(Some(Ok(_))) => {
                self.progress.frame_taken();
                // The connection may not ask again once the body says it
                // is complete.
                if self.inner.is_end_stream() {
                    self.progress.finish();
                }
            }
            Poll::Ready(None) => self.progress.finish(),
            Poll::Ready(Some(Err(_))) | Poll::Pending => {}
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
