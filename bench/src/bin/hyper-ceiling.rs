//! The ceiling for any hyper-based server on this machine: HTTP/1.1 with
//! keep-alive, a fixed body from memory chosen by path, nothing else.
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
                let found = bodies.iter().find(|(path, _)| *path == req.uri().path());
                let response = match found {
                    Some((_, b)) => Response::builder()
                        .header("cache-control", "public, max-age=3600")
                        .body(Full::new(b.clone())),
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

fn body(len: usize) -> Bytes {
    Bytes::from((0..len).map(|i| b'a' + (i % 26) as u8).collect::<Vec<u8>>())
}
