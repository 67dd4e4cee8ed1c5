//! HTTP/1 connections to one member, driven by the task of the request that
//! uses them (hyper's `client::conn::http1`), and the member's idle list.
//!
//! hyper-util's pooled client gives every connection a task of its own: a
//! request hands its head to that task over a channel and the answer comes
//! back over another, two wake-ups across tasks (often across the worker
//! threads) per exchange. Here the request's own task polls the connection:
//! while it waits for the response head, then, through the response body,
//! while it reads the body (as Pingora drives its upstream sessions). The
//! connection goes back to the idle list once its response ended and it can
//! take the next request; a response dropped before its end closes it.
//!
//! Idle connections are listed per serving lane (`crate::lane`), each
//! going back to the list of the lane that made it: its socket is
//! registered with that lane's reactor, so a lane that reuses its own
//! connections is woken by its own epoll, not by the other thread's. A
//! lane with none idle takes another lane's before it dials.
//!
//! No task watches an idle connection: one the member closed is found when
//! it is next taken (it is polled first, so an end of stream that arrived
//! is seen) or by the sweep that also closes the expired ones. A request
//! that meets a connection closing just as it is reused is sent once more
//! on a new one when hyper gives it back unsent, or when it is idempotent
//! and has no body (RFC 9112 section 9.3.1).

use std::collections::VecDeque;
use std::future::{poll_fn, Future};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use http::uri::PathAndQuery;
use http::{header, HeaderValue, Request, Response, Uri};
use http_body::Body as _;
use hyper::body::Incoming;
use hyper::client::conn::http1;
use hyper_rustls::{HttpsConnector, MaybeHttpsStream};
use hyper_util::client::legacy::connect::Connection as _;
use tower_service::Service;

use super::client::{Dial, Tcp};
use super::counted::Counted;
use super::member::MemberStats;
use crate::http::{BoxError, ProxyBody};

type Io = MaybeHttpsStream<Counted<Tcp>>;

/// Idle connections kept per member and lane; past it the oldest is
/// closed.
const MAX_IDLE: usize = 256;

/// One open connection: the half that sends requests and the half that
/// reads and writes the socket, which someone must poll.
struct Conn {
    send: http1::SendRequest<ProxyBody>,
    /// Boxed: it holds the buffers and moves between tasks and the list.
    driver: Pin<Box<http1::Connection<Io, ProxyBody>>>,
    /// The driver returned: the connection is closed.
    ended: bool,
    /// The idle list of the lane whose reactor has the socket.
    home: usize,
}

impl Conn {
    /// Lets the connection make progress (write the request, read the
    /// response, notice a close), then polls `then` (what it feeds: the
    /// response head or body), in the task polling `cx`.
    fn drive<R>(
        &mut self,
        cx: &mut Context<'_>,
        then: impl FnOnce(&mut Context<'_>) -> Poll<R>,
    ) -> Poll<R> {
        if !self.ended && self.driver.as_mut().poll(cx).is_ready() {
            self.ended = true;
        }
        then(cx)
    }

    /// Whether it can carry the next request now.
    fn reusable(&mut self, cx: &mut Context<'_>) -> bool {
        let _ = self.drive(cx, |_| Poll::Ready(()));
        !self.ended && self.send.is_ready()
    }
}

struct Idle {
    conn: Conn,
    since: Instant,
}

/// Why an exchange gave no response head.
pub(super) enum Failure {
    /// The connection could not be made (TCP or TLS): the request back,
    /// never sent.
    Dial(BoxError, Box<Request<ProxyBody>>),
    /// The exchange broke: hyper says how.
    Http(hyper::Error),
    /// The member's ALPN chose HTTP/2: the request back, untouched, for the
    /// client that speaks it.
    SpeaksH2(Box<Request<ProxyBody>>),
}

/// The HTTP/1 connections of one member.
pub(super) struct H1Pool {
    dial: HttpsConnector<Dial>,
    /// The member's URL (scheme and authority) to dial.
    member: Uri,
    /// Per lane, most recently used last.
    idle: Box<[Mutex<VecDeque<Idle>>]>,
    idle_timeout: Duration,
    /// Its stats: `speaks_h2` is set when an https member chose HTTP/2
    /// when offered both; its requests go to the pooled client from then on.
    stats: Arc<MemberStats>,
    /// Whether the sweep task runs (started with the first idle connection,
    /// on the runtime that made it).
    sweeping: AtomicBool,
}

impl H1Pool {
    pub fn new(
        dial: HttpsConnector<Dial>,
        member: Uri,
        idle_timeout: Duration,
        stats: Arc<MemberStats>,
    ) -> H1Pool {
        H1Pool {
            dial,
            member,
            idle: (0..crate::lane::count())
                .map(|_| Mutex::new(VecDeque::new()))
                .collect(),
            idle_timeout,
            stats,
            sweeping: AtomicBool::new(false),
        }
    }

    /// Whether the member chose HTTP/2 on a connection made here.
    pub fn speaks_h2(&self) -> bool {
        self.stats.speaks_h2.load(Ordering::Relaxed)
    }

    /// Sends `request` (its URI absolute, as for the pooled client) on an
    /// idle connection or a new one and waits for the response head. The
    /// connection comes with the response while its body is unread.
    pub async fn send(
        self: &Arc<Self>,
        mut request: Request<ProxyBody>,
    ) -> Result<(Response<Incoming>, Option<Lease>), Failure> {
        if let Some(conn) = poll_fn(|cx| Poll::Ready(self.take(cx))).await {
            to_origin_form(&mut request);
            let spare = (request.method().is_idempotent() && request.body().is_end_stream())
                .then(|| copy(&request));
            match self.exchange(conn, request).await {
                Ok(answer) => return Ok(answer),
                Err((error, unsent)) => {
                    let again = match (unsent, spare) {
                        (Some(unsent), _) => unsent,
                        (None, Some(spare)) if !error.is_parse() && !error.is_user() => spare,
                        _ => return Err(Failure::Http(error)),
                    };
                    tracing::debug!(member = %self.member, "a reused connection closed ({error}): sending again on a new one");
                    request = again;
                }
            }
        }
        let conn = match self.dial().await {
            Ok(conn) => conn,
            Err(Dialed::H2) => return Err(Failure::SpeaksH2(Box::new(request))),
            Err(Dialed::Failed(e)) => return Err(Failure::Dial(e, Box::new(request))),
        };
        to_origin_form(&mut request);
        self.exchange(conn, request)
            .await
            .map_err(|(error, _)| Failure::Http(error))
    }

    /// One request on `conn`, driving it until the response head is in.
    /// On failure, the request comes back if hyper did not send it.
    async fn exchange(
        self: &Arc<Self>,
        mut conn: Conn,
        request: Request<ProxyBody>,
    ) -> Result<(Response<Incoming>, Option<Lease>), (hyper::Error, Option<Request<ProxyBody>>)>
    {
        let answer = conn.send.try_send_request(request);
        let mut answer = std::pin::pin!(answer);
        let result = poll_fn(|cx| conn.drive(cx, |cx| answer.as_mut().poll(cx))).await;
        match result {
            Ok(response) if response.body().is_end_stream() => {
                let mut conn = Some(conn);
                poll_fn(|cx| {
                    if let Some(conn) = conn.take() {
                        self.give_back(conn, cx);
                    }
                    Poll::Ready(())
                })
                .await;
                Ok((response, None))
            }
            Ok(response) => Ok((
                response,
                Some(Lease {
                    conn,
                    pool: self.clone(),
                }),
            )),
            Err(mut e) => {
                let unsent = e.take_message();
                Err((e.into_error(), unsent))
            }
        }
    }

    /// A new connection (TCP, TLS), unless the member answers HTTP/2.
    async fn dial(&self) -> Result<Conn, Dialed> {
        let mut dial = self.dial.clone();
        let failed = Dialed::Failed;
        poll_fn(|cx| dial.poll_ready(cx)).await.map_err(failed)?;
        let io = dial.call(self.member.clone()).await.map_err(failed)?;
        if io.connected().is_negotiated_h2() {
            self.stats.speaks_h2.store(true, Ordering::Relaxed);
            return Err(Dialed::H2);
        }
        let (send, driver) = http1::Builder::new()
            .handshake(io)
            .await
            .map_err(|e| Dialed::Failed(Box::new(e)))?;
        Ok(Conn {
            send,
            driver: Box::pin(driver),
            ended: false,
            home: self.home(),
        })
    }

    /// The idle list of the calling thread's lane.
    fn home(&self) -> usize {
        crate::lane::current().unwrap_or(0) % self.idle.len()
    }

    fn idle(&self, lane: usize) -> MutexGuard<'_, VecDeque<Idle>> {
        self.idle[lane]
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// The most recently used idle connection that is still open, the
    /// calling lane's own first, if any.
    fn take(&self, cx: &mut Context<'_>) -> Option<Conn> {
        let home = self.home();
        let lanes = self.idle.len();
        (0..lanes).find_map(|i| self.take_from((home + i) % lanes, cx))
    }

    fn take_from(&self, lane: usize, cx: &mut Context<'_>) -> Option<Conn> {
        loop {
            let idle = self.idle(lane).pop_back()?;
            if idle.since.elapsed() >= self.idle_timeout {
                // The rest are older still.
                let expired = std::mem::take(&mut *self.idle(lane));
                drop(expired);
                return None;
            }
            let mut conn = idle.conn;
            if conn.reusable(cx) {
                return Some(conn);
            }
        }
    }

    /// A connection whose response ended: kept if it can take another.
    fn give_back(self: &Arc<Self>, mut conn: Conn, cx: &mut Context<'_>) {
        if !conn.reusable(cx) {
            return;
        }
        let since = Instant::now();
        let evicted = {
            let mut idle = self.idle(conn.home);
            let evicted = (idle.len() >= MAX_IDLE).then(|| idle.pop_front());
            idle.push_back(Idle { conn, since });
            evicted
        };
        drop(evicted);
        if !self.sweeping.swap(true, Ordering::Relaxed) {
            tokio::spawn(sweep(Arc::downgrade(self), self.idle_timeout));
        }
    }

    /// Closes the idle connections that expired or that the member closed.
    fn sweep(&self) {
        let mut cx = Context::from_waker(Waker::noop());
        let mut closed = Vec::new();
        for lane in 0..self.idle.len() {
            let mut idle = self.idle(lane);
            while idle
                .front()
                .is_some_and(|i| i.since.elapsed() >= self.idle_timeout)
            {
                closed.extend(idle.pop_front());
            }
            let mut i = 0;
            while i < idle.len() {
                let conn = &mut idle[i].conn;
                let _ = conn.drive(&mut cx, |_| Poll::Ready(()));
                if conn.ended {
                    closed.extend(idle.remove(i));
                } else {
                    i += 1;
                }
            }
        }
        drop(closed);
    }
}

enum Dialed {
    Failed(BoxError),
    H2,
}

/// Sweeps `pool` until it is dropped, about twice per idle timeout (at
/// most every 5 s), so a connection outlives its timeout by half of it and
/// one the member closed is not held open for long.
async fn sweep(pool: std::sync::Weak<H1Pool>, idle_timeout: Duration) {
    let every = (idle_timeout / 2).clamp(Duration::from_millis(50), Duration::from_secs(5));
    loop {
        tokio::time::sleep(every).await;
        let Some(pool) = pool.upgrade() else { return };
        pool.sweep();
    }
}

/// A connection lent to a response while its body is read: polled with
/// the body, given back when the body ends, closed if it is dropped before.
pub(super) struct Lease {
    conn: Conn,
    pool: Arc<H1Pool>,
}

impl Lease {
    /// Lets the connection read the body on, then polls `body` (what it
    /// reads into).
    pub fn drive<R>(
        &mut self,
        cx: &mut Context<'_>,
        body: impl FnOnce(&mut Context<'_>) -> Poll<R>,
    ) -> Poll<R> {
        self.conn.drive(cx, body)
    }

    /// Whether the connection closed (the body ends with what it has).
    pub fn closed(&self) -> bool {
        self.conn.ended
    }

    /// The body ended: the connection may take the next request.
    pub fn give_back(self, cx: &mut Context<'_>) {
        self.pool.give_back(self.conn, cx);
    }
}

/// The request as HTTP/1 sends it to an origin server (RFC 9112 section
/// 3.2.1): the target in origin form, the authority in `Host` (from the
/// URI, if the request has none).
fn to_origin_form(request: &mut Request<ProxyBody>) {
    let uri = std::mem::take(request.uri_mut());
    if !request.headers().contains_key(header::HOST) {
        if let Some(host) = uri
            .authority()
            .and_then(|a| HeaderValue::from_str(a.as_str()).ok())
        {
            request.headers_mut().insert(header::HOST, host);
        }
    }
    let target = uri
        .path_and_query()
        .cloned()
        .unwrap_or_else(|| PathAndQuery::from_static("/"));
    *request.uri_mut() = Uri::from(target);
}

/// A bodiless request's copy, to send again.
fn copy(request: &Request<ProxyBody>) -> Request<ProxyBody> {
    let mut copy = Request::new(crate::http::empty());
    *copy.method_mut() = request.method().clone();
    *copy.uri_mut() = request.uri().clone();
    *copy.version_mut() = request.version();
    *copy.headers_mut() = request.headers().clone();
    copy
}
