//! The client-facing listeners: plain (HTTP/1.1 and h2c by prior knowledge
//! on one port) or TLS (HTTP/1.1 and HTTP/2 by ALPN), with limits on what a client may send, and graceful
//! shutdown that lets requests in flight finish.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::{GracefulShutdown, Watcher};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;

use crate::config::ServerConfig;
use crate::http::{Connection, ProxyBody};
use crate::tls::Terminator;

/// How long shutdown waits for requests in flight.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(10);

/// HTTP/2 PINGs on a quiet connection, and how long the answer may take:
/// a dead h2c peer is noticed and its connection closed.
const H2_PING_INTERVAL: Duration = Duration::from_secs(30);
const H2_PING_TIMEOUT: Duration = Duration::from_secs(10);

/// The HTTP/2 connection preface (RFC 9113 section 3.4).
const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// A listening socket with this accept backlog (mio's default is 128,
/// which drops connects in a burst; nginx uses 511).
pub fn bind(addr: SocketAddr, backlog: u32) -> std::io::Result<TcpListener> {
    let socket = socket2::Socket::new(
        socket2::Domain::for_address(addr),
        socket2::Type::STREAM,
        Some(socket2::Protocol::TCP),
    )?;
    // A restarted node can bind while old connections are in TIME_WAIT.
    socket.set_reuse_address(true)?;
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    socket.listen(i32::try_from(backlog).unwrap_or(i32::MAX))?;
    TcpListener::from_std(socket.into())
}

/// The protocol a connection speaks, from its first bytes.
enum Protocol {
    Http1,
    Http2,
}

/// Tells HTTP/1.1 from h2c prior knowledge by the first bytes, without
/// consuming them. `None` when the client sends nothing (or closes) within
/// `timeout`: such a connection is closed instead of waiting forever.
async fn sniff(stream: &TcpStream, timeout: Duration) -> Option<Protocol> {
    let deadline = tokio::time::Instant::now() + timeout;
    let mut first = [0u8; H2_PREFACE.len()];
    loop {
        let n = tokio::time::timeout_at(deadline, stream.peek(&mut first))
            .await
            .ok()?
            .ok()?;
        if n == 0 {
            return None;
        }
        if first[..n] != H2_PREFACE[..n] {
            return Some(Protocol::Http1);
        }
        if n == H2_PREFACE.len() {
            return Some(Protocol::Http2);
        }
        // Part of the preface so far (rare): peek returns at once while
        // those bytes wait, so pause before looking again.
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// The HTTP/1.1 and the HTTP/2 connection builders, with the limits.
fn builders(config: &ServerConfig) -> (auto::Builder<TokioExecutor>, auto::Builder<TokioExecutor>) {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        // Also closes a keep-alive connection idle for this long.
        .header_read_timeout(Duration::from_millis(config.header_read_timeout_ms))
        .max_buf_size(config.max_header_bytes.max(8192));
    builder
        .http2()
        .timer(TokioTimer::new())
        .keep_alive_interval(H2_PING_INTERVAL)
        .keep_alive_timeout(H2_PING_TIMEOUT)
        .max_concurrent_streams(config.max_concurrent_streams)
        .max_header_list_size(config.max_header_bytes as u32);
    (builder.clone().http1_only(), builder.http2_only())
}

/// Accepts connections until `shutdown` resolves, then drains. Each
/// request goes to `handler` with its connection; the handler never fails
/// (every problem is a response). With `tls`, every connection starts with
/// a TLS handshake (within the header timeout) and speaks the protocol ALPN
/// chose; without, HTTP/1.1 and h2c are told apart by their first bytes.
/// Past `max_connections` open connections, accepting waits (the backlog
/// holds the rest).
pub async fn serve<H, F>(
    listener: TcpListener,
    tls: Option<Terminator>,
    handler: H,
    config: ServerConfig,
    shutdown: impl Future<Output = ()> + Send + 'static,
) where
    H: Fn(hyper::Request<hyper::body::Incoming>, Connection) -> F + Clone + Send + Sync + 'static,
    F: Future<Output = hyper::Response<ProxyBody>> + Send + 'static,
{
    let header_timeout = Duration::from_millis(config.header_read_timeout_ms);
    let (http1, http2) = builders(&config);
    let slots = Arc::new(Semaphore::new(config.max_connections as usize));

    let graceful = GracefulShutdown::new();
    tokio::pin!(shutdown);
    loop {
        let slot = tokio::select! {
            slot = slots.clone().acquire_owned() => slot.expect("the semaphore is never closed"),
            () = &mut shutdown => break,
        };
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(conn) => conn,
                Err(e) => {
                    // Out of file descriptors and the like: back off, go on.
                    tracing::warn!("accept failed: {e}");
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let _ = stream.set_nodelay(true);
        let handler = handler.clone();
        let (http1, http2) = (http1.clone(), http2.clone());
        let watcher = graceful.watcher();
        let tls = tls.clone();
        tokio::spawn(async move {
            let _slot = slot;
            let Some(tls) = tls else {
                let Some(protocol) = sniff(&stream, header_timeout).await else {
                    tracing::debug!(%peer, "closed a connection that sent nothing");
                    return;
                };
                let builder = match protocol {
                    Protocol::Http1 => &http1,
                    Protocol::Http2 => &http2,
                };
                let client = Connection::plain(peer.ip());
                serve_connection(builder, TokioIo::new(stream), handler, client, watcher).await;
                return;
            };
            let Some(accepted) = tls.handshake(stream, header_timeout).await else {
                return;
            };
            let builder = if accepted.http2 { &http2 } else { &http1 };
            let client = Connection {
                client_ip: peer.ip(),
                tls: Some(Arc::new(accepted.session)),
            };
            let io = TokioIo::new(accepted.stream);
            serve_connection(builder, io, handler, client, watcher).await;
        });
    }
    drop(listener);
    if tokio::time::timeout(DRAIN_TIMEOUT, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!("shutdown: requests still running after {DRAIN_TIMEOUT:?}; closing");
    }
}

/// Serves one connection's requests with `handler` until it closes.
async fn serve_connection<I, H, F>(
    builder: &auto::Builder<TokioExecutor>,
    io: I,
    handler: H,
    connection: Connection,
    watcher: Watcher,
) where
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
    H: Fn(hyper::Request<hyper::body::Incoming>, Connection) -> F + Clone + Send + Sync + 'static,
    F: Future<Output = hyper::Response<ProxyBody>> + Send + 'static,
{
    let client_ip = connection.client_ip;
    let service = service_fn(move |request| {
        // Boxed: hyper moves the request future around while it polls
        // the connection, and a pointer moves cheaper than the state.
        let handled = Box::pin(handler(request, connection.clone()));
        async move { Ok::<_, std::convert::Infallible>(handled.await) }
    });
    if let Err(e) = watcher.watch(builder.serve_connection(io, service)).await {
        tracing::debug!(%client_ip, "connection ended: {e}");
    }
}
