//! The floor for origin-bound traffic on this machine: what a hyper server
//! with hyper-util's pooled client and a moka map does on a miss or a pass,
//! and nothing else (no policy, no RFC 9111, no header work beyond copying
//! the origin's fields). A miss fetches the path from the origin, keeps the
//! body in moka unless the origin said `no-store`, and answers with it; a
//! path moka holds is answered from there. `bench/run` reports Outpost's
//! miss and pass workloads against it, as it reports hits against the hyper
//! ceiling.
//!
//! With `--per-core` it runs one single-threaded runtime per core, each
//! with its own listener (SO_REUSEPORT) and client pool, as Outpost's
//! lanes and nginx's workers do; without, one work-stealing runtime.
//!
//!     floor 127.0.0.1:18097 http://127.0.0.1:18081 [--per-core]

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use http::header::{HeaderMap, CACHE_CONTROL, CONTENT_TYPE, HOST};
use http::{Request, Response, StatusCode, Uri};
use http_body_util::{BodyExt, Empty, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;

/// A stored answer: the fields the origin sent that the floor copies, and
/// the body.
#[derive(Clone)]
struct Stored {
    headers: HeaderMap,
    body: Bytes,
}

struct Floor {
    origin: Uri,
    client: Client<HttpConnector, Empty<Bytes>>,
    cache: moka::sync::Cache<String, Stored>,
}

fn main() -> std::io::Result<()> {
    let mut args = std::env::args().skip(1);
    let usage = "usage: floor LISTEN_ADDR ORIGIN_URL [--per-core]";
    let addr: SocketAddr = args.next().expect(usage).parse().expect(usage);
    let origin: Uri = args.next().expect(usage).parse().expect(usage);
    let per_core = match args.next().as_deref() {
        None => false,
        Some("--per-core") => true,
        Some(_) => panic!("{usage}"),
    };
    let cache = moka::sync::Cache::builder()
        .weigher(|k: &String, v: &Stored| (k.len() + v.body.len()) as u32)
        .max_capacity(1 << 30)
        .build();
    if !per_core {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()?;
        return runtime.block_on(serve(addr, Floor::new(origin, cache)));
    }
    // One single-threaded runtime per core, each accepting on its own
    // SO_REUSEPORT socket with its own client pool: nginx's shape.
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let threads: Vec<_> = (0..cores)
        .map(|_| {
            let floor = Floor::new(origin.clone(), cache.clone());
            std::thread::spawn(move || {
                tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()?
                    .block_on(serve(addr, floor))
            })
        })
        .collect();
    for thread in threads {
        thread.join().expect("a serving thread panicked")?;
    }
    Ok(())
}

/// Accepts and serves connections on `addr` (shared with the other
/// threads' listeners by SO_REUSEPORT).
async fn serve(addr: SocketAddr, floor: Floor) -> std::io::Result<()> {
    let socket = socket2::Socket::new(
        socket2::Domain::for_address(addr),
        socket2::Type::STREAM,
        None,
    )?;
    socket.set_reuse_address(true)?;
    socket.set_reuse_port(true)?;
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    socket.listen(4096)?;
    let listener = tokio::net::TcpListener::from_std(socket.into())?;
    let floor = Arc::new(floor);
    loop {
        let (stream, _) = listener.accept().await?;
        let _ = stream.set_nodelay(true);
        let floor = floor.clone();
        tokio::spawn(async move {
            let service = service_fn(move |req: Request<Incoming>| {
                let floor = floor.clone();
                async move { Ok::<_, Infallible>(floor.serve(req).await) }
            });
            let _ = auto::Builder::new(TokioExecutor::new())
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

impl Floor {
    fn new(origin: Uri, cache: moka::sync::Cache<String, Stored>) -> Floor {
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        let client = Client::builder(TokioExecutor::new())
            .pool_max_idle_per_host(256)
            .build(connector);
        Floor {
            origin,
            client,
            cache,
        }
    }

    async fn serve(&self, req: Request<Incoming>) -> Response<Full<Bytes>> {
        let target = req.uri().path_and_query().map_or("/", |p| p.as_str());
        if let Some(stored) = self.cache.get(target) {
            return respond(StatusCode::OK, stored.headers, stored.body);
        }
        let uri = format!(
            "{}{}",
            self.origin.to_string().trim_end_matches('/'),
            target
        );
        let mut forwarded = Request::get(uri)
            .body(Empty::new())
            .expect("a valid request");
        if let Some(host) = req.headers().get(HOST) {
            forwarded.headers_mut().insert(HOST, host.clone());
        }
        let response = match self.client.request(forwarded).await {
            Ok(r) => r,
            Err(_) => return respond(StatusCode::BAD_GATEWAY, HeaderMap::new(), Bytes::new()),
        };
        let (parts, body) = response.into_parts();
        let Ok(body) = body.collect().await.map(|b| b.to_bytes()) else {
            return respond(StatusCode::BAD_GATEWAY, HeaderMap::new(), Bytes::new());
        };
        let mut headers = HeaderMap::new();
        for name in [CONTENT_TYPE, CACHE_CONTROL] {
            if let Some(v) = parts.headers.get(&name) {
                headers.insert(name, v.clone());
            }
        }
        let no_store = parts
            .headers
            .get(CACHE_CONTROL)
            .is_some_and(|v| v.as_bytes().windows(8).any(|w| w == b"no-store"));
        if parts.status == StatusCode::OK && !no_store {
            let stored = Stored {
                headers: headers.clone(),
                body: body.clone(),
            };
            self.cache.insert(target.to_string(), stored);
        }
        respond(parts.status, headers, body)
    }
}

fn respond(status: StatusCode, headers: HeaderMap, body: Bytes) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(body));
    *response.status_mut() = status;
    *response.headers_mut() = headers;
    response
}
