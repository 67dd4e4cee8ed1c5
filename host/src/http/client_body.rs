//! A client's request body on its way to an origin, with the limits a
//! client must keep to (size, and how long it may pause), and a record of
//! how reading it failed: such a failure is the client's, not the origin's.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use http_body_util::BodyExt;
use tokio::time::{Instant, Sleep};

use super::ProxyBody;

/// How reading a client's request body on its way to an origin failed, if
/// it did.
#[derive(Debug, Default)]
pub struct BodyWatch(AtomicU8);

/// What went wrong with a client's request body.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyFailure {
    /// Malformed (a bad chunked coding, RFC 9112 section 7.1) or cut off.
    Invalid,
    /// Longer than the tenant allows (RFC 9110 section 15.5.14).
    TooLarge,
    /// No byte arrived for the read timeout (RFC 9110 section 15.5.9).
    Stalled,
}

impl BodyWatch {
    pub fn failure(&self) -> Option<BodyFailure> {
        match self.0.load(Ordering::Relaxed) {
            1 => Some(BodyFailure::Invalid),
            2 => Some(BodyFailure::TooLarge),
            3 => Some(BodyFailure::Stalled),
            _ => None,
        }
    }

    fn set(&self, failure: BodyFailure) {
        let code = match failure {
            BodyFailure::Invalid => 1,
            BodyFailure::TooLarge => 2,
            BodyFailure::Stalled => 3,
        };
        self.0.store(code, Ordering::Relaxed);
    }
}

/// The limits a client's request body is read under.
#[derive(Debug, Clone, Copy)]
pub struct BodyLimits {
    /// Bytes at most.
    pub max_bytes: u64,
    /// Longest pause between two reads.
    pub read_timeout: Duration,
}

/// `body` cut at `limits`; `watch` learns why if reading it fails.
pub fn watched<B>(body: B, watch: Arc<BodyWatch>, limits: BodyLimits) -> ProxyBody
where
    B: Body<Data = Bytes> + Send + Unpin + 'static,
    B::Error: std::error::Error + Send + Sync + 'static,
{
    let max = usize::try_from(limits.max_bytes).unwrap_or(usize::MAX);
    let timed = Timed {
        inner: body,
        timeout: limits.read_timeout,
        sleep: Box::pin(tokio::time::sleep(limits.read_timeout)),
    };
    http_body_util::Limited::new(timed, max)
        .map_err(move |e| {
            watch.set(if e.is::<http_body_util::LengthLimitError>() {
                BodyFailure::TooLarge
            } else if e.is::<Stalled>() {
                BodyFailure::Stalled
            } else {
                BodyFailure::Invalid
            });
            e
        })
        .boxed_unsync()
}

/// A body that fails with [`Stalled`] when no frame comes for `timeout`.
struct Timed<B> {
    inner: B,
    timeout: Duration,
    sleep: Pin<Box<Sleep>>,
}

/// A request body that paused longer than the read timeout.
#[derive(Debug, thiserror::Error)]
#[error("the client sent no body bytes for the read timeout")]
pub struct Stalled;

impl<B> Body for Timed<B>
where
    B: Body<Data = Bytes> + Unpin,
    B::Error: std::error::Error + Send + Sync + 'static,
{
    type Data = Bytes;
    type Error = super::BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let this = &mut *self;
        match Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Ready(frame) => {
                let deadline = Instant::now() + this.timeout;
                this.sleep.as_mut().reset(deadline);
                Poll::Ready(frame.map(|f| f.map_err(Into::into)))
            }
            Poll::Pending => match this.sleep.as_mut().poll(cx) {
                Poll::Ready(()) => Poll::Ready(Some(Err(Box::new(Stalled)))),
                Poll::Pending => Poll::Pending,
            },
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
