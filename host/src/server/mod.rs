//! The client-facing listeners: plain (HTTP/1.1 and h2c by prior knowledge
//! on one port) or TLS (HTTP/1.1 and HTTP/2 by ALPN), with limits on what
//! a client may send, and graceful shutdown that lets requests in flight
//! finish. One connection's life is in `connection.rs`.

mod activity;
mod connection;
mod inherit;
mod lanes;
mod rewind;

pub use inherit::Inherited;
pub use lanes::Lanes;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use hyper::server::conn::{http1, http2};
use hyper_util::rt::{TokioExecutor, TokioTimer};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{watch, Semaphore};

use connection::{serve_http1, serve_http2, Serving};

use crate::config::ServerConfig;
use crate::http::{Connection, ProxyBody};
use crate::metrics::{self, Metrics};
use crate::tls::Terminator;

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

/// The connection builders, with the limits.
pub(super) struct Builders {
    pub(super) h1: http1::Builder,
    /// For a connection's last request while the node drains: its
    /// response says `Connection: close`.
    pub(super) h1_last: http1::Builder,
    pub(super) h2: http2::Builder<TokioExecutor>,
}

fn builders(config: &ServerConfig) -> Builders {
    let mut h1 = http1::Builder::new();
    h1.timer(TokioTimer::new())
        .header_read_timeout(Duration::from_millis(config.header_read_timeout_ms))
        // Twice the head limit: a head up to that size reaches the request
        // path, which tells a long target (414) from a large head (431);
        // past it hyper answers 431 itself.
        .max_buf_size((2 * config.max_header_bytes).max(8192));
    let mut h1_last = h1.clone();
    h1_last.keep_alive(false);
    let mut h2 = http2::Builder::new(TokioExecutor::new());
    h2.timer(TokioTimer::new())
        .keep_alive_interval(H2_PING_INTERVAL)
        .keep_alive_timeout(H2_PING_TIMEOUT)
        .max_concurrent_streams(config.max_concurrent_streams)
        .max_header_list_size(u32::try_from(2 * config.max_header_bytes).unwrap_or(u32::MAX));
    Builders { h1, h1_last, h2 }
}

/// Accepts connections until `shutdown` resolves, then drains. Each
/// request goes to `handler` with its connection; the handler never fails
/// (every problem is a response). With `tls`, every connection starts with
/// a TLS handshake (within the header timeout) and speaks the protocol ALPN
/// chose; without, HTTP/1.1 and h2c are told apart by their first bytes.
/// Past `max_connections` open connections, accepting waits (the backlog
/// holds the rest). Each connection is served on one of `lanes`.
pub async fn serve<H, F>(
    listener: TcpListener,
    lanes: Arc<Lanes>,
    tls: Option<Terminator>,
    handler: H,
    config: ServerConfig,
    metrics: Arc<Metrics>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) where
    H: Fn(hyper::Request<hyper::body::Incoming>, Connection) -> F
        + Clone
        + Send
        + Sync
        + Unpin
        + 'static,
    F: Future<Output = hyper::Response<ProxyBody>> + Send + 'static,
{
    let header_timeout = Duration::from_millis(config.header_read_timeout_ms);
    let idle_timeout = Duration::from_millis(config.idle_timeout_ms);
    let drain = Duration::from_secs(config.drain_s);
    let send_lowat = config.send_lowat_kb.saturating_mul(1024);
    let builders = Arc::new(builders(&config));
    let slots = Arc::new(Semaphore::new(config.max_connections as usize));
    let (stopping, stop) = watch::channel(false);
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
        if send_lowat > 0 {
            let _ = socket2::SockRef::from(&stream).set_tcp_notsent_lowat(send_lowat);
        }
        metrics.node.accepted.inc();
        let serving = Serving {
            handler: handler.clone(),
            client: Connection::plain(peer.ip()),
            idle_timeout,
            drain,
            shutdown: stop.clone(),
        };
        let (builders, tls, metrics) = (builders.clone(), tls.clone(), metrics.clone());
        // Each stage is boxed: a task is as large as its largest state, and
        // an idle HTTP/1.1 connection should not keep room for an HTTP/2
        // connection or a TLS handshake.
        let served = lanes.spawn(stream, move |stream| async move {
            let _slot = slot;
            let Builders { h2, .. } = &*builders;
            let node = &metrics.node;
            let Some(tls) = tls else {
                match sniff(&stream, header_timeout).await {
                    None => tracing::debug!(%peer, "closed a connection that sent nothing"),
                    Some(Protocol::Http1) => {
                        let _open = node.opened(metrics::Protocol::Http1, false);
                        Box::pin(serve_http1(&builders, stream, serving)).await;
                    }
                    Some(Protocol::Http2) => {
                        let _open = node.opened(metrics::Protocol::Http2, false);
                        Box::pin(serve_http2(h2, stream, serving)).await;
                    }
                }
                return;
            };
            let Some(accepted) = Box::pin(tls.handshake(stream, header_timeout)).await else {
                node.tls_handshake_failures.inc();
                return;
            };
            node.tls_handshakes.inc();
            let serving = Serving {
                client: Connection {
                    client_ip: peer.ip(),
                    tls: Some(Arc::new(accepted.session)),
                },
                ..serving
            };
            if accepted.http2 {
                let _open = node.opened(metrics::Protocol::Http2, true);
                Box::pin(serve_http2(h2, accepted.stream, serving)).await;
            } else {
                let _open = node.opened(metrics::Protocol::Http1, true);
                Box::pin(serve_http1(&builders, accepted.stream, serving)).await;
            }
        });
        if let Err(e) = served {
            tracing::warn!(%peer, "could not hand a connection to a lane: {e}");
        }
    }
    drop(listener);
    let _ = stopping.send(true);
    // Every connection holds a slot until it is done: HTTP/2 ones after
    // their GOAWAY and open streams, HTTP/1.1 ones after a last response
    // that says Connection: close (or the drain's end, for the idle).
    let all = config.max_connections;
    if tokio::time::timeout(drain, slots.acquire_many(all))
        .await
        .is_err()
    {
        tracing::warn!(
            "shutdown: connections still open after {drain:?} (server.drain_s); closing"
        );
    }
}
