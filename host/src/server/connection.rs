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
use hyper::body::Incoming;
use hyper::server::conn::{http1, http2};
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite};
use tokio::sync::watch;

use super::activity::{Activity, Tracked};
use super::rewind::Rewind;
use crate::http::{Connection, ProxyBody};

/// How long an HTTP/1.1 connection stays with hyper after its last
/// response.
pub(super) const PARK_AFTER: Duration = Duration::from_secs(1);

/// What serving a connection needs beyond the connection itself.
pub(super) struct Serving<H> {
    pub(super) handler: H,
    pub(super) client: Connection,
    pub(super) idle_timeout: Duration,
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
        // connection, and a pointer moves cheaper than the state.
        Box::pin(async move {
            let response = handled.await;
            Ok::<_, std::convert::Infallible>(response.map(|body| in_flight.track(body)))
        }) as BoxedResponse
    })
}

/// Serves HTTP/1.1 on `io` until the client closes, the connection idles
/// past the timeout, or the node shuts down.
pub(super) async fn serve_http1<I, H, F>(builder: &http1::Builder, io: I, mut serving: Serving<H>)
where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    H: Fn(hyper::Request<Incoming>, Connection) -> F + Clone + Send + Sync + Unpin + 'static,
    F: Future<Output = hyper::Response<ProxyBody>> + Send + 'static,
{
    let client_ip = serving.client.client_ip;
    let mut prefix = Bytes::new();
    let mut io = io;
    loop {
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
                () = activity.quiet_for(PARK_AFTER), if parked_at.is_none() => {
                    // Lets an idle connection go at once; one that started a
                    // request meanwhile answers it with Connection: close.
                    parked_at = Some(activity.requests());
                    std::pin::Pin::new(&mut *conn).graceful_shutdown();
                }
                _ = serving.shutdown.changed(), if parked_at.is_none() => {
                    parked_at = Some(usize::MAX);
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
/// most the idle timeout; `None` when the client closed, the connection
/// idled out, or the node shuts down.
async fn park<I, H>(io: &mut I, serving: &mut Serving<H>) -> Option<Bytes>
where
    I: AsyncRead + Unpin,
{
    let mut first = [0u8; 1];
    tokio::select! {
        read = io.read(&mut first) => match read {
            Ok(1) => Some(Bytes::copy_from_slice(&first)),
            _ => None,
        },
        () = tokio::time::sleep(serving.idle_timeout) => None,
        _ = serving.shutdown.changed() => None,
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
