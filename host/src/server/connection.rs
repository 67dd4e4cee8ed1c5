//! One client connection from its first request to its close.
//!
//! HTTP/1.1: hyper's connection state (its read and write buffers, some
//! 16 KiB) is only kept while requests come. A connection quiet for
//! [`PARK_AFTER`] is taken back from hyper and parked as the bare socket
//! (a few hundred bytes) until its next byte arrives, then served by a new
//! hyper connection that starts with what had been read; a parked
//! connection that stays quiet for the idle timeout is closed. So an idle
//! keep-alive connection costs little memory, and its idle time is bounded
//! apart from the header read timeout (which hyper starts when a request's
//! first byte is awaited by it).
//!
//! HTTP/2: the connection gets a GOAWAY once no stream has been open for
//! the idle timeout, and on shutdown.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures::FutureExt;
use hyper::body::Incoming;
use hyper::server::conn::http2;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite};
use tokio::sync::watch;

use super::activity::{Activity, Tracked};
use super::rewind::Rewind;
use super::Builders;
use crate::http::{Connection, ProxyBody};

/// How long an HTTP/1.1 connection stays with hyper after its last
/// response.
pub(super) const PARK_AFTER: Duration = Duration::from_secs(1);

/// What serving a connection needs beyond the connection itself.
pub(super) struct Serving<H> {
    pub(super) handler: H,
    pub(super) client: Connection,
    pub(super) idle_timeout: Duration,
    /// How long an idle connection waits for a last request once the node
    /// shuts down (`server.drain_s`).
    pub(super) drain: Duration,
    /// Changes once, when the node shuts down.
    pub(super) shutdown: watch::Receiver<bool>,
}

type BoxedResponse = std::pin::Pin<
    Box<dyn Future<Output = Result<hyper::Response<Tracked>, std::convert::Infallible>> + Send>,
>;

/// The hyper service of one connection: each request goes to the handler
/// with the client's details, and is counted in `activity` from its head
/// until its response is sent.
fn service<H, F>(
    handler: &H,
    client: &Connection,
    activity: &Arc<Activity>,
) -> impl hyper::service::Service<
    hyper::Request<Incoming>,
    Response = hyper::Response<Tracked>,
    Error = std::convert::Infallible,
    Future = BoxedResponse,
> + Unpin
where
    H: Fn(hyper::Request<Incoming>, Connection) -> F + Clone + Send + Sync + Unpin + 'static,
    F: Future<Output = hyper::Response<ProxyBody>> + Send + 'static,
{
    let (handler, client, activity) = (handler.clone(), client.clone(), activity.clone());
    service_fn(move |request| {
        // Counted from the head on: a slow origin or a long upload is not
        // an idle connection.
        let in_flight = activity.start();
        let handled = handler(request, client.clone());
        // Boxed: hyper moves the request future around while it polls the
        // connection, and a pointer moves cheaper than the state. A `map`,
        // not an async block: a block would hold the handler's future twice
        // (captured, and awaited), a box and a copy twice the size.
        Box::pin(handled.map(move |response| {
            Ok::<_, std::convert::Infallible>(response.map(|body| in_flight.track(body)))
        })) as BoxedResponse
    })
}

/// Serves HTTP/1.1 on `io` until the client closes, the connection idles
/// past the timeout, or the node shuts down. Shutting down, a request in
/// flight finishes with `Connection: close`, and an idle connection still
/// answers its next request (with `Connection: close`) until the drain
/// ends: a client that sent one just as the node began to drain gets its
/// answer instead of a reset (RFC 9112 section 9.6).
pub(super) async fn serve_http1<I, H, F>(builders: &Builders, io: I, mut serving: Serving<H>)
where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    H: Fn(hyper::Request<Incoming>, Connection) -> F + Clone + Send + Sync + Unpin + 'static,
    F: Future<Output = hyper::Response<ProxyBody>> + Send + 'static,
{
    let client_ip = serving.client.client_ip;
    let mut prefix = Bytes::new();
    let mut io = io;
    loop {
        let closing = *serving.shutdown.borrow();
        let builder = if closing {
            &builders.h1_last
        } else {
            &builders.h1
        };
        let activity = Activity::new();
        let service = service(&serving.handler, &serving.client, &activity);
        // Boxed, so a parked connection's task does not keep room for it.
        let mut conn =
            Box::new(builder.serve_connection(TokioIo::new(Rewind::new(prefix, io)), service));
        // The requests started when hyper was asked to let the connection go.
        let mut parked_at = None;
        let ended = loop {
            tokio::select! {
                ended = std::future::poll_fn(|cx| conn.poll_without_shutdown(cx)) => break ended,
                () = activity.quiet_for(PARK_AFTER), if parked_at.is_none() && !closing => {
                    // Lets an idle connection go at once; one that started a
                    // request meanwhile answers it with Connection: close.
                    parked_at = Some(activity.requests());
                    std::pin::Pin::new(&mut *conn).graceful_shutdown();
                }
                _ = serving.shutdown.changed(), if parked_at.is_none() && !closing => {
                    // As parking: a request in flight ends the connection
                    // with Connection: close; an idle one is parked.
                    parked_at = Some(activity.requests());
                    std::pin::Pin::new(&mut *conn).graceful_shutdown();
                }
            }
        };
        if let Err(e) = ended {
            tracing::debug!(%client_ip, "connection ended: {e}");
            return;
        }
        if parked_at != Some(activity.requests()) {
            // hyper ended it (the client closed or asked to, a response said
            // Connection: close, or the node shuts down): so do we.
            return;
        }
        let parts = conn.into_parts();
        let (unread, inner) = parts.io.into_inner().into_parts();
        io = inner;
        // Even empty, hyper's read buffer holds its whole allocation.
        let read = Bytes::copy_from_slice(&parts.read_buf);
        drop(parts.read_buf);
        drop(parts.service);
        prefix = if read.is_empty() && unread.is_empty() {
            match park(&mut io, &mut serving).await {
                Some(first) => first,
                None => return,
            }
        } else {
            [read, unread].concat().into()
        };
    }
}

/// Waits for the first byte of a parked connection's next request, for at
/// most the idle timeout, or once the node shuts down the drain; `None`
/// when the client closed or the connection idled out.
async fn park<I, H>(io: &mut I, serving: &mut Serving<H>) -> Option<Bytes>
where
    I: AsyncRead + Unpin,
{
    let mut first = [0u8; 1];
    let mut wait = serving.idle_timeout;
    if *serving.shutdown.borrow() {
        wait = wait.min(serving.drain);
    }
    let timer = tokio::time::sleep(wait);
    tokio::pin!(timer);
    let mut draining = *serving.shutdown.borrow();
    loop {
        tokio::select! {
            read = io.read(&mut first) => return match read {
                Ok(1) => Some(Bytes::copy_from_slice(&first)),
                _ => None,
            },
            () = &mut timer => return None,
            _ = serving.shutdown.changed(), if !draining => {
                draining = true;
                let deadline = tokio::time::Instant::now() + serving.drain;
                if deadline < timer.deadline() {
                    timer.as_mut().reset(deadline);
                }
            }
        }
    }
}

/// Serves HTTP/2 on `io` until the client closes, no stream has been open
/// for the idle timeout (GOAWAY), or the node shuts down (GOAWAY, then the
/// open streams finish).
pub(super) async fn serve_http2<I, H, F>(
    builder: &http2::Builder<TokioExecutor>,
    io: I,
    mut serving: Serving<H>,
) where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    H: Fn(hyper::Request<Incoming>, Connection) -> F + Clone + Send + Sync + Unpin + 'static,
    F: Future<Output = hyper::Response<ProxyBody>> + Send + 'static,
{
    let activity = Activity::new();
    let service = service(&serving.handler, &serving.client, &activity);
    let conn = builder.serve_connection(TokioIo::new(io), service);
    tokio::pin!(conn);
    let mut closing = false;
    let ended = loop {
        tokio::select! {
            ended = conn.as_mut() => break ended,
            () = activity.quiet_for(serving.idle_timeout), if !closing => {
                closing = true;
                conn.as_mut().graceful_shutdown();
            }
            _ = serving.shutdown.changed(), if !closing => {
                closing = true;
                conn.as_mut().graceful_shutdown();
            }
        }
    };
    if let Err(e) = ended {
        let client_ip = serving.client.client_ip;
        tracing::debug!(%client_ip, "connection ended: {e}");
    }
}
