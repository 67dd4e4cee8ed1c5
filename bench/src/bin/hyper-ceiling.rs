//! The ceiling for any hyper-based server on this machine: HTTP/1.1 with
//! keep-alive, a fixed body from memory chosen by path, nothing else. Also
//! the origin of the memory workload: `/size/N/anything` answers N bytes
//! (at most 16 MiB), cacheable, so every path is a new object of that size;
//! `/api/anything` answers 1 KiB with `Cache-Control: no-store` (the
//! origin-bound counts of `bench/instructions`).
//!
//!     hyper-ceiling 127.0.0.1:18085

use std::convert::Infallible;
use std::net::SocketAddr;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;

#[tokio::main]
async fn main() -> std::io::Result<()> {
    let addr: SocketAddr = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:18085".into())
        .parse()
        .expect("usage: hyper-ceiling ADDR");
    let bodies: &'static [(&str, Bytes)] = Box::leak(Box::new([
        ("/1k", body(1024)),
        ("/100k", body(100 * 1024)),
        ("/10m", body(10 * 1024 * 1024)),
    ]));
    let listener = tokio::net::TcpListener::bind(addr).await?;
    loop {
        let (stream, _) = listener.accept().await?;
        let _ = stream.set_nodelay(true);
        tokio::spawn(async move {
            let service = service_fn(move |req: Request<Incoming>| async move {
                let found = bodies
                    .iter()
                    .find(|(path, _)| *path == req.uri().path())
                    .map(|(_, b)| b.clone())
                    .or_else(|| sized(req.uri().path()));
                let api = req.uri().path().starts_with("/api/");
                let found = found.or_else(|| api.then(|| bodies[0].1.clone()));
                let cache_control = if api {
                    "no-store"
                } else {
                    "public, max-age=3600"
                };
                let response = match found {
                    Some(b) => Response::builder()
                        .header("cache-control", cache_control)
                        .body(Full::new(b)),
                    None => Response::builder()
                        .status(404)
                        .body(Full::new(Bytes::new())),
                };
                Ok::<_, Infallible>(response.expect("a valid response"))
            });
            let _ = auto::Builder::new(TokioExecutor::new())
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

/// Largest body `/size/N/...` answers.
const MAX_SIZED: usize = 16 * 1024 * 1024;

/// The body of `/size/N/...`: N bytes, a slice of one static buffer.
fn sized(path: &str) -> Option<Bytes> {
    static ALL: std::sync::OnceLock<Bytes> = std::sync::OnceLock::new();
    let n: usize = path
        .strip_prefix("/size/")?
        .split('/')
        .next()?
        .parse()
        .ok()?;
    let all = ALL.get_or_init(|| body(MAX_SIZED));
    Some(all.slice(..n.min(MAX_SIZED)))
}

fn body(len: usize) -> Bytes {
    Bytes::from((0..len).map(|i| b'a' + (i % 26) as u8).collect::<Vec<u8>>())
}
