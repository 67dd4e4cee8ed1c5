//! A tiny origin inside the node, so the embedded default config has
//! something to cache: `/` is a cacheable page, `/time` is not cacheable.

use std::time::SystemTime;

use bytes::Bytes;
use http::{header, Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use tokio::net::TcpListener;

/// Serves the demo origin until the process ends.
pub async fn serve(listener: TcpListener) {
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            // Out of file descriptors and the like: back off, go on.
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
            continue;
        };
        tokio::spawn(async move {
            let service = service_fn(|req: Request<Incoming>| async move {
                Ok::<_, std::convert::Infallible>(answer(&req))
            });
            let _ = auto::Builder::new(TokioExecutor::new())
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

fn answer(req: &Request<Incoming>) -> Response<Full<Bytes>> {
    let now = httpdate::fmt_http_date(SystemTime::now());
    let (status, cache_control, body) = match req.uri().path() {
        "/time" => (StatusCode::OK, "no-store", format!("{now}\n")),
        "/" | "/index.html" => (
            StatusCode::OK,
            "public, max-age=60",
            format!(
                "Hello from the Outpost demo origin.\nThis page was generated at {now} and may be cached for 60 s.\n"
            ),
        ),
        _ => (StatusCode::NOT_FOUND, "public, max-age=10", "not found\n".to_string()),
    };
    Response::builder()
        .status(status)
        .header(header::CONTENT_TYPE, "text/plain; charset=utf-8")
        .header(header::CACHE_CONTROL, cache_control)
        .header(header::DATE, now)
        .body(Full::new(Bytes::from(body)))
        .expect("static response parts")
}
