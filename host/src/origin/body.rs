//! A member's response body as the node reads it: the request counts as in
//! flight until the body ends or is dropped, a body that stalls longer than
//! the between-bytes timeout ends in an error (so the client sees it cut,
//! never a clean short body), and a broken body counts against the member's
//! health. An HTTP/1 connection driven in the reading task comes with the
//! body: polled with it, given back to its member when the body ends.

use std::future::Future;
use std::pin::Pin;
use std::task::{ready, Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;
use tokio::time::Sleep;

use super::h1::Lease;
use super::member::InFlight;
use crate::http::BoxError;

pub struct MemberBody {
    inner: Incoming,
    /// The connection that reads `inner`, while it does.
    lease: Option<Lease>,
    /// `None` once the body ended.
    in_flight: Option<InFlight>,
    /// Whether how the body ends tells of the member's health (not when
    /// the head already did).
    reports: bool,
    between_bytes: Duration,
    last_frame: Instant,
    /// Armed while waiting; re-armed from `last_frame` when it fires early.
    timer: Option<Pin<Box<Sleep>>>,
}

/// A body that stalled for longer than the backend allows.
#[derive(Debug, thiserror::Error)]
#[error("the origin body stalled for more than {0:?}")]
pub struct BodyStalled(Duration);

impl MemberBody {
    pub(super) fn new(
        inner: Incoming,
        lease: Option<Lease>,
        in_flight: InFlight,
        between_bytes: Duration,
        reports: bool,
    ) -> MemberBody {
        MemberBody {
            inner,
            lease,
            in_flight: Some(in_flight),
            reports,
            between_bytes,
            last_frame: Instant::now(),
            timer: None,
        }
    }

    /// The URL of the member sending this body (`None` once it ended).
    pub fn member(&self) -> Option<String> {
        let in_flight = self.in_flight.as_ref()?;
        Some(in_flight.pool.members[in_flight.member].url.to_string())
    }

    /// The body is all read: its connection may take the next request.
    fn give_back(&mut self, cx: &mut Context<'_>) {
        if let Some(lease) = self.lease.take() {
            lease.give_back(cx);
        }
    }

    /// The body ended, well or not: the member is no longer busy with it.
    fn finish(&mut self, ok: bool) {
        if let Some(in_flight) = self.in_flight.take() {
            if self.reports {
                in_flight.pool.report(in_flight.member, ok);
            }
        }
    }

    /// Ready with the stall error once `between_bytes` passed since the
    /// last frame.
    fn poll_stalled(&mut self, cx: &mut Context<'_>) -> Poll<BodyStalled> {
        loop {
            let deadline = self.last_frame + self.between_bytes;
            let timer = self
                .timer
                .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(deadline.into())));
            ready!(timer.as_mut().poll(cx));
            if Instant::now() >= deadline {
                return Poll::Ready(BodyStalled(self.between_bytes));
            }
            // Frames came since it was armed: wait from the last one.
            timer.as_mut().reset(deadline.into());
        }
    }
}

impl Body for MemberBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = self.get_mut();
        let inner = &mut this.inner;
        let polled = match &mut this.lease {
            // The connection first: what it reads is what the body yields.
            Some(lease) => {
                let polled = lease.drive(cx, |cx| Pin::new(&mut *inner).poll_frame(cx));
                if lease.closed() {
                    this.lease = None;
                }
                polled
            }
            None => Pin::new(inner).poll_frame(cx),
        };
        match polled {
            Poll::Ready(Some(Ok(frame))) => {
                this.last_frame = Instant::now();
                if let (Some(data), Some(f)) = (frame.data_ref(), &this.in_flight) {
                    let stats = &f.pool.members[f.member].stats;
                    stats.received_bytes.add(data.len() as u64);
                }
                // A reader may stop at the end it was told of.
                if this.inner.is_end_stream() {
                    this.give_back(cx);
                }
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(Some(Err(e))) => {
                this.lease = None;
                this.finish(false);
                Poll::Ready(Some(Err(e.into())))
            }
            Poll::Ready(None) => {
                this.give_back(cx);
                this.finish(true);
                Poll::Ready(None)
            }
            Poll::Pending => {
                let stalled = ready!(this.poll_stalled(cx));
                this.lease = None;
                this.finish(false);
                Poll::Ready(Some(Err(stalled.into())))
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
