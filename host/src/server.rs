//! The client-facing listener: HTTP/1.1 and HTTP/2 (h2c, prior knowledge)
//! on one port, with limits on what a client may send, and graceful
//! shutdown that lets requests in flight finish.

use std::future::Future;
use std::net::IpAddr;
use std::time::Duration;

use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;

use crate::config::ServerConfig;
use crate::http::ProxyBody;

/// How long shutdown waits for requests in flight.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(10);

/// Accepts connections until `shutdown` resolves, then drains. Each
/// request goes to `handler` with the client's address; the handler never
/// fails (every problem is a response).
pub async fn serve<H, F>(
    listener: TcpListener,
    handler: H,
    config: &ServerConfig,
    shutdown: impl Future<Output = ()> + Send + 'static,
) where
    H: Fn(hyper::Request<hyper::body::Incoming>, IpAddr) -> F + Clone + Send + Sync + 'static,
    F: Future<Output = hyper::Response<ProxyBody>> + Send + 'static,
{
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(Duration::from_millis(config.header_read_timeout_ms))
        .max_buf_size(config.max_header_bytes.max(8192));
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_concurrent_streams(config.max_concurrent_streams)
        .max_header_list_size(config.max_header_bytes as u32);

    let graceful = GracefulShutdown::new();
    tokio::pin!(shutdown);
    loop {
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
        let service = service_fn(move |request| {
            // Boxed: hyper moves the request future around while it polls
            // the connection, and a pointer moves cheaper than the state.
            let handled = Box::pin(handler(request, peer.ip()));
            async move { Ok::<_, std::convert::Infallible>(handled.await) }
        });
        let connection = builder
            .serve_connection(TokioIo::new(stream), service)
            .into_owned();
        let connection = graceful.watch(connection);
        tokio::spawn(async move {
            if let Err(e) = connection.await {
                tracing::debug!(%peer, "connection ended: {e}");
            }
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
