//! The end-to-end test harness: a scripted origin that records what it
//! receives, a node process started with a given config, and a client.
//!
//! Everything is real: sockets on 127.0.0.1, the `outpost` binary, policy
//! components built from `examples/`.

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

pub mod browser;
pub mod chaos;
pub mod etcd;
pub mod fleet;
pub mod metrics;
pub mod relay;
pub mod tls;

/// A node whose tenant `f` (`f.test`, with the admin API) runs the
/// origin-fallback example over two backends: `primary` answers `/item`
/// with a 503, `secondary` with "from the secondary", `no-store`.
pub async fn failing_over() -> (Origin, Origin, Node) {
    let primary = Origin::start("primary").await;
    let secondary = Origin::start("secondary").await;
    primary.reply("/item", Reply::status(503));
    secondary.reply(
        "/item",
        Reply::ok()
            .only("cache-control", "no-store")
            .body("from the secondary"),
    );
    let config = format!(
        "{}{}",
        admin_section(),
        tenant(
            "f",
            &["f.test"],
            "example:origin-fallback",
            &[("primary", &primary.url()), ("secondary", &secondary.url())]
        )
    );
    let node = Node::start(&config);
    (primary, secondary, node)
}

/// The path of an example policy component, as a TOML string literal.
pub fn example(name: &str) -> String {
    format!(
        "{:?}",
        outpost::guests::example_path(name).display().to_string()
    )
}

/// The admin token the tests' configs use.
pub const ADMIN_TOKEN: &str = "test-admin-token-0123456789";

/// An `[admin]` table: a free port on 127.0.0.1 and [`ADMIN_TOKEN`].
pub fn admin_section() -> String {
    format!("[admin]\nlisten = \"127.0.0.1:0\"\ntoken = \"{ADMIN_TOKEN}\"\n\n")
}

/// An example policy's component bytes.
pub fn example_wasm(name: &str) -> Vec<u8> {
    std::fs::read(outpost::guests::example_path(name)).expect("the example policy was built")
}

/// A response body as JSON (admin API answers).
pub fn json(r: &Resp) -> serde_json::Value {
    serde_json::from_slice(&r.body).unwrap_or_else(|e| panic!("not JSON ({e}): {}", r.text()))
}

/// A port nothing listens on (bound, then released).
pub fn closed_port_url() -> String {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    drop(listener);
    format!("http://{addr}")
}

/// What the scripted origin answers for a path.
#[derive(Clone, Debug)]
pub struct Reply {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    /// `None`: the origin's name and the request target.
    pub body: Option<Bytes>,
    pub delay: Duration,
    /// A generated body streamed in chunks instead of `body`.
    pub generated: Option<Generated>,
}

/// A body the origin generates as it sends: `size` bytes (byte `i` is
/// `i % 251`), in 64 KiB chunks, pausing after the first chunk.
#[derive(Clone, Debug)]
pub struct Generated {
    pub size: u64,
    pub pause_after_first: Duration,
    /// Set when the last byte has been handed to the connection.
    pub finished: Arc<std::sync::atomic::AtomicBool>,
}

/// The byte at offset `i` of a generated body.
pub fn generated_byte(i: u64) -> u8 {
    (i % 251) as u8
}

/// A boxed body type for the harness's servers and clients.
pub type TestBody = http_body_util::combinators::BoxBody<Bytes, std::convert::Infallible>;

fn full_body(bytes: Bytes) -> TestBody {
    Full::new(bytes).boxed()
}

/// Bytes `from..to` of a generated body, in chunks.
fn generated_body(g: &Generated, from: u64, to: u64) -> TestBody {
    const CHUNK: u64 = 64 * 1024;
    let g = g.clone();
    let stream = futures::stream::unfold(from, move |offset| {
        let g = g.clone();
        async move {
            if offset >= to {
                g.finished.store(true, std::sync::atomic::Ordering::SeqCst);
                return None;
            }
            if offset == from + CHUNK && !g.pause_after_first.is_zero() {
                tokio::time::sleep(g.pause_after_first).await;
            }
            let len = CHUNK.min(to - offset);
            let chunk: Vec<u8> = (offset..offset + len).map(generated_byte).collect();
            Some((
                Ok::<_, std::convert::Infallible>(hyper::body::Frame::data(Bytes::from(chunk))),
                offset + len,
            ))
        }
    });
    http_body_util::StreamBody::new(stream).boxed()
}

impl Reply {
    /// 200, cacheable for 60 s.
    pub fn ok() -> Reply {
        Reply {
            status: 200,
            headers: vec![("cache-control".into(), "max-age=60".into())],
            body: None,
            delay: Duration::ZERO,
            generated: None,
        }
    }

    /// Streams a generated body of `size` bytes with its Content-Length.
    pub fn generated(
        mut self,
        size: u64,
        pause_after_first: Duration,
    ) -> (Reply, Arc<std::sync::atomic::AtomicBool>) {
        let finished = Arc::new(std::sync::atomic::AtomicBool::new(false));
        self.headers
            .push(("content-length".into(), size.to_string()));
        self.generated = Some(Generated {
            size,
            pause_after_first,
            finished: finished.clone(),
        });
        (self, finished)
    }

    /// A status with no headers.
    pub fn status(status: u16) -> Reply {
        Reply {
            status,
            headers: Vec::new(),
            body: None,
            delay: Duration::ZERO,
            generated: None,
        }
    }

    /// Replaces every header with this one.
    pub fn only(mut self, name: &str, value: &str) -> Reply {
        self.headers = vec![(name.into(), value.into())];
        self
    }

    pub fn header(mut self, name: &str, value: &str) -> Reply {
        self.headers.push((name.into(), value.into()));
        self
    }

    pub fn body(mut self, body: impl Into<Bytes>) -> Reply {
        self.body = Some(body.into());
        self
    }

    pub fn delay(mut self, delay: Duration) -> Reply {
        self.delay = delay;
        self
    }
}

/// A request the origin received.
#[derive(Clone, Debug)]
pub struct Seen {
    pub method: Method,
    pub version: http::Version,
    /// The request URI's authority (HTTP/2's `:authority`), if it had one.
    pub authority: Option<String>,
    pub target: String,
    pub headers: HeaderMap,
    /// Bytes of request body received.
    pub body_len: u64,
}

impl Seen {
    /// Every value of header `name`, as text, in order.
    pub fn values(&self, name: &str) -> Vec<&str> {
        self.headers
            .get_all(name)
            .iter()
            .map(|v| v.to_str().unwrap())
            .collect()
    }
}

/// A request body of `size` bytes (all 7s), streamed in 1 MiB chunks.
pub fn upload_body(size: u64) -> TestBody {
    const CHUNK: u64 = 1 << 20;
    let chunks = futures::stream::iter((0..size.div_ceil(CHUNK)).map(move |i| {
        let len = CHUNK.min(size - i * CHUNK) as usize;
        Ok::<_, std::convert::Infallible>(hyper::body::Frame::data(Bytes::from(vec![7u8; len])))
    }));
    http_body_util::StreamBody::new(chunks).boxed()
}

struct OriginState {
    name: String,
    replies: Mutex<HashMap<String, Reply>>,
    /// The answer for targets without a scripted one (default: [`Reply::ok`]).
    fallback: Mutex<Option<Reply>>,
    seen: Mutex<Vec<Seen>>,
    connections: Mutex<Vec<JoinHandle<()>>>,
    /// Requests being answered now, and the most at once.
    in_flight: AtomicUsize,
    max_in_flight: AtomicUsize,
}

/// A local origin whose answers tests script per path and which records
/// every request. Answers 304 when `If-None-Match` matches the scripted
/// `etag`.
pub struct Origin {
    pub addr: SocketAddr,
    /// Serves over TLS.
    tls: bool,
    state: Arc<OriginState>,
    accept: JoinHandle<()>,
}

impl Origin {
    pub async fn start(name: &str) -> Origin {
        Origin::start_with(name, None, "127.0.0.1:0".parse().unwrap()).await
    }

    /// An origin on `addr` (one that stopped there, started again).
    pub async fn start_at(name: &str, addr: SocketAddr) -> Origin {
        Origin::start_with(name, None, addr).await
    }

    /// An origin that serves over TLS with `tls` (see `tls::Pki::acceptor`).
    pub async fn start_tls(name: &str, tls: tokio_rustls::TlsAcceptor) -> Origin {
        Origin::start_with(name, Some(tls), "127.0.0.1:0".parse().unwrap()).await
    }

    async fn start_with(
        name: &str,
        tls: Option<tokio_rustls::TlsAcceptor>,
        addr: SocketAddr,
    ) -> Origin {
        let with_tls = tls.is_some();
        let listener = TcpListener::bind(addr).await.unwrap();
        let addr = listener.local_addr().unwrap();
        let state = Arc::new(OriginState {
            name: name.to_string(),
            replies: Mutex::default(),
            fallback: Mutex::default(),
            seen: Mutex::default(),
            connections: Mutex::default(),
            in_flight: AtomicUsize::new(0),
            max_in_flight: AtomicUsize::new(0),
        });
        let accept_state = state.clone();
        let accept = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let state = accept_state.clone();
                let tls = tls.clone();
                let conn = tokio::spawn(async move {
                    let service = service_fn(move |req| {
                        let state = state.clone();
                        async move { Ok::<_, std::convert::Infallible>(answer(&state, req).await) }
                    });
                    let builder =
                        hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
                    let _ = match tls {
                        None => {
                            builder
                                .serve_connection(TokioIo::new(stream), service)
                                .await
                        }
                        Some(tls) => match tls.accept(stream).await {
                            Ok(stream) => {
                                builder
                                    .serve_connection(TokioIo::new(stream), service)
                                    .await
                            }
                            Err(_) => return,
                        },
                    };
                });
                accept_state.connections.lock().unwrap().push(conn);
            }
        });
        Origin {
            addr,
            tls: with_tls,
            state,
            accept,
        }
    }

    pub fn url(&self) -> String {
        let scheme = if self.tls { "https" } else { "http" };
        format!("{scheme}://{}", self.addr)
    }

    /// Scripts the answer for a request target (path and query).
    pub fn reply(&self, target: &str, reply: Reply) {
        self.state
            .replies
            .lock()
            .unwrap()
            .insert(target.to_string(), reply);
    }

    /// Scripts the answer for every target without one of its own.
    pub fn reply_to_all(&self, reply: Reply) {
        *self.state.fallback.lock().unwrap() = Some(reply);
    }

    /// Requests received for a target.
    pub fn hits(&self, target: &str) -> usize {
        self.state
            .seen
            .lock()
            .unwrap()
            .iter()
            .filter(|s| s.target == target)
            .count()
    }

    /// Every request received.
    pub fn seen(&self) -> Vec<Seen> {
        self.state.seen.lock().unwrap().clone()
    }

    /// The most requests the origin was answering at the same time.
    pub fn max_in_flight(&self) -> usize {
        self.state.max_in_flight.load(Ordering::SeqCst)
    }

    /// Connections accepted so far.
    pub fn connections(&self) -> usize {
        self.state.connections.lock().unwrap().len()
    }

    /// All requests received.
    pub fn total(&self) -> usize {
        self.state.seen.lock().unwrap().len()
    }

    /// Closes the listener and every connection: the origin is down.
    pub fn stop(&self) {
        self.accept.abort();
        for c in self.state.connections.lock().unwrap().drain(..) {
            c.abort();
        }
    }
}

impl Drop for Origin {
    fn drop(&mut self) {
        self.stop();
    }
}

async fn answer(state: &OriginState, req: Request<Incoming>) -> Response<TestBody> {
    let target = req
        .uri()
        .path_and_query()
        .map(|p| p.as_str().to_string())
        .unwrap_or_else(|| "/".into());
    let (parts, mut body) = req.into_parts();
    // Count the request body without keeping it (uploads may be large).
    let mut body_len = 0u64;
    while let Some(Ok(frame)) = body.frame().await {
        if let Some(data) = frame.data_ref() {
            body_len += data.len() as u64;
        }
    }
    state.seen.lock().unwrap().push(Seen {
        method: parts.method.clone(),
        version: parts.version,
        authority: parts.uri.authority().map(|a| a.to_string()),
        target: target.clone(),
        headers: parts.headers.clone(),
        body_len,
    });
    let reply = state
        .replies
        .lock()
        .unwrap()
        .get(&target)
        .cloned()
        .or_else(|| state.fallback.lock().unwrap().clone())
        .unwrap_or_else(Reply::ok);
    let now = state.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
    state.max_in_flight.fetch_max(now, Ordering::SeqCst);
    if !reply.delay.is_zero() {
        tokio::time::sleep(reply.delay).await;
    }
    state.in_flight.fetch_sub(1, Ordering::SeqCst);
    let etag = reply
        .headers
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case("etag"))
        .map(|(_, v)| v.clone());
    let inm = parts
        .headers
        .get("if-none-match")
        .and_then(|v| v.to_str().ok());
    let not_modified = etag.is_some() && inm == etag.as_deref();
    let mut builder = Response::builder().status(if not_modified { 304 } else { reply.status });
    for (n, v) in &reply.headers {
        builder = builder.header(n, v);
    }
    if let (false, Some(g)) = (not_modified, &reply.generated) {
        // Ranges (one `bytes=a-b`) are honoured for generated bodies.
        let range = parts
            .headers
            .get("range")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("bytes="))
            .and_then(|v| v.split_once('-'))
            .and_then(|(a, b)| Some((a.parse::<u64>().ok()?, b.parse::<u64>().ok()?)));
        if let Some((a, b)) = range.filter(|(a, _)| *a < g.size) {
            let end = (b + 1).min(g.size);
            let mut partial = Response::builder().status(206);
            for (n, v) in reply.headers.iter().filter(|(n, _)| n != "content-length") {
                partial = partial.header(n, v);
            }
            return partial
                .header("content-range", format!("bytes {a}-{}/{}", end - 1, g.size))
                .header("content-length", (end - a).to_string())
                .body(generated_body(g, a, end))
                .unwrap();
        }
        return builder.body(generated_body(g, 0, g.size)).unwrap();
    }
    let body = if not_modified {
        Bytes::new()
    } else {
        reply
            .body
            .clone()
            .unwrap_or_else(|| Bytes::from(format!("{} {}", state.name, target)))
    };
    builder.body(full_body(body)).unwrap()
}

/// An origin that reads each request head and closes the connection
/// without answering: the request reached it, no response came back.
pub struct Breaker {
    pub addr: SocketAddr,
    /// Request heads read.
    requests: Arc<AtomicUsize>,
    accept: JoinHandle<()>,
}

impl Breaker {
    pub async fn start() -> Breaker {
        Breaker::on(TcpListener::bind("127.0.0.1:0").await.unwrap())
    }

    /// On `addr`, once whatever listened there has let go of it.
    pub async fn start_at(addr: SocketAddr) -> Breaker {
        loop {
            match TcpListener::bind(addr).await {
                Ok(listener) => return Breaker::on(listener),
                Err(e) if e.kind() == std::io::ErrorKind::AddrInUse => {
                    tokio::task::yield_now().await
                }
                Err(e) => panic!("bind {addr}: {e}"),
            }
        }
    }

    fn on(listener: TcpListener) -> Breaker {
        let addr = listener.local_addr().unwrap();
        let requests = Arc::new(AtomicUsize::new(0));
        let counted = requests.clone();
        let accept = tokio::spawn(async move {
            while let Ok((mut stream, _)) = listener.accept().await {
                let counted = counted.clone();
                tokio::spawn(async move {
                    use tokio::io::AsyncReadExt;
                    let mut head = Vec::new();
                    let mut buf = [0u8; 4096];
                    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                        match stream.read(&mut buf).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => head.extend_from_slice(&buf[..n]),
                        }
                    }
                    counted.fetch_add(1, Ordering::SeqCst);
                });
            }
        });
        Breaker {
            addr,
            requests,
            accept,
        }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Request heads it read (and answered by closing).
    pub fn requests(&self) -> usize {
        self.requests.load(Ordering::SeqCst)
    }
}

impl Drop for Breaker {
    fn drop(&mut self) {
        self.accept.abort();
    }
}

/// How a [`RawOrigin`] keeps its connections.
#[derive(Clone, Copy, Debug)]
pub enum Keeping {
    /// Answers the first request on a connection and, when a second one
    /// comes on it, reads it whole and closes without answering, as a
    /// server does that timed the connection out just as it was reused.
    OneExchange,
    /// Answers every request, and closes a connection that waited this
    /// long for the next one after answering (a keep-alive timeout).
    IdleFor(Duration),
}

/// An origin on a bare socket, so that how its connections end is the
/// test's: it answers 200 `ok` (`no-store`, kept alive) and records each
/// request line with the connection (numbered from 0) it came on.
pub struct RawOrigin {
    pub addr: SocketAddr,
    seen: Arc<Mutex<Vec<(String, usize)>>>,
    closed: Arc<AtomicUsize>,
    accept: JoinHandle<()>,
}

impl RawOrigin {
    pub async fn start(keeping: Keeping) -> RawOrigin {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let closed = Arc::new(AtomicUsize::new(0));
        let (recorded, counted) = (seen.clone(), closed.clone());
        let accept = tokio::spawn(async move {
            let mut connection = 0;
            while let Ok((stream, _)) = listener.accept().await {
                let (seen, closed) = (recorded.clone(), counted.clone());
                tokio::spawn(async move {
                    serve_raw(stream, connection, keeping, &seen).await;
                    closed.fetch_add(1, Ordering::SeqCst);
                });
                connection += 1;
            }
        });
        RawOrigin {
            addr,
            seen,
            closed,
            accept,
        }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// `"METHOD target"` and the connection of every request read, in order.
    pub fn seen(&self) -> Vec<(String, usize)> {
        self.seen.lock().unwrap().clone()
    }

    /// Waits until it has closed `n` connections (at most `limit`).
    pub async fn wait_closed(&self, n: usize, limit: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + limit;
        while self.closed.load(Ordering::SeqCst) < n {
            if tokio::time::Instant::now() >= deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        true
    }
}

impl Drop for RawOrigin {
    fn drop(&mut self) {
        self.accept.abort();
    }
}

async fn serve_raw(
    mut stream: tokio::net::TcpStream,
    connection: usize,
    keeping: Keeping,
    seen: &Mutex<Vec<(String, usize)>>,
) {
    use tokio::io::AsyncWriteExt;
    let mut buffer = Vec::new();
    for exchange in 0.. {
        let read = read_request(&mut stream, &mut buffer);
        // The wait for a connection's first request is not idleness.
        let line = match keeping {
            Keeping::IdleFor(idle) if exchange > 0 => {
                tokio::time::timeout(idle, read).await.ok().flatten()
            }
            _ => read.await,
        };
        let Some(line) = line else { return };
        seen.lock().unwrap().push((line, connection));
        if matches!(keeping, Keeping::OneExchange) && exchange == 1 {
            return;
        }
        let answer = "HTTP/1.1 200 OK\r\ncontent-length: 2\r\ncache-control: no-store\r\n\r\nok";
        if stream.write_all(answer.as_bytes()).await.is_err() {
            return;
        }
    }
}

/// Reads one request (head and `Content-Length` body) from `stream`, what
/// came after it left in `buffer`: its method and target, or `None` when
/// the connection ended first.
async fn read_request(stream: &mut tokio::net::TcpStream, buffer: &mut Vec<u8>) -> Option<String> {
    use tokio::io::AsyncReadExt;
    let mut more = async |buffer: &mut Vec<u8>| {
        let mut chunk = [0u8; 4096];
        match stream.read(&mut chunk).await {
            Ok(0) | Err(_) => None,
            Ok(n) => {
                buffer.extend_from_slice(&chunk[..n]);
                Some(())
            }
        }
    };
    let end = loop {
        if let Some(at) = buffer.windows(4).position(|w| w == b"\r\n\r\n") {
            break at + 4;
        }
        more(buffer).await?;
    };
    let head = String::from_utf8_lossy(&buffer[..end]).to_string();
    let length: usize = head
        .lines()
        .filter_map(|l| l.split_once(':'))
        .find(|(n, _)| n.trim().eq_ignore_ascii_case("content-length"))
        .and_then(|(_, v)| v.trim().parse().ok())
        .unwrap_or(0);
    while buffer.len() < end + length {
        more(buffer).await?;
    }
    buffer.drain(..end + length);
    let line = head.lines().next().unwrap_or_default();
    Some(line.rsplit_once(' ').map_or(line, |(l, _)| l).to_string())
}

static NEXT_DIR: AtomicUsize = AtomicUsize::new(0);

/// A scratch directory for one test.
pub fn scratch_dir() -> PathBuf {
    let dir = std::env::temp_dir().join(format!(
        "outpost-e2e-{}-{}",
        std::process::id(),
        NEXT_DIR.fetch_add(1, Ordering::Relaxed)
    ));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// A node process; killed when dropped.
pub struct Node {
    pub addr: SocketAddr,
    /// The TLS listener, when the config has one.
    pub tls: Option<SocketAddr>,
    /// The admin listener, when the config has one.
    pub admin: Option<SocketAddr>,
    /// Every line the node printed on stdout so far.
    stdout: Arc<Mutex<Vec<String>>>,
    child: Child,
    log: PathBuf,
}

/// The `outpost` binary under test: the `outpost-node` bin of this package,
/// which cargo builds next to the test executables' `deps/` folder.
pub fn outpost_bin() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let dir = exe.parent().and_then(|deps| deps.parent()).unwrap();
    dir.join(format!("outpost-node{}", std::env::consts::EXE_SUFFIX))
}

impl Node {
    /// Starts a node on `config` (TOML; `server.listen` is set to a free
    /// port) and waits until it listens.
    pub fn start(config: &str) -> Node {
        let dir = scratch_dir();
        let path = dir.join("outpost.toml");
        std::fs::write(&path, config).unwrap();
        Node::spawn(
            &[
                "serve",
                "--config",
                path.to_str().unwrap(),
                "--listen",
                "127.0.0.1:0",
            ],
            &dir,
        )
    }

    /// `start` with extra environment variables (e.g. where secrets come
    /// from); the config's path is returned too.
    pub fn start_env(config: &str, env: &[(&str, &str)]) -> (Node, PathBuf) {
        let dir = scratch_dir();
        let path = dir.join("outpost.toml");
        std::fs::write(&path, config).unwrap();
        let args = [
            "serve",
            "--config",
            path.to_str().unwrap(),
            "--listen",
            "127.0.0.1:0",
        ];
        (Node::spawn_env(&args, &dir, env), path)
    }

    /// Starts a node with these arguments and waits until it listens.
    pub fn spawn(args: &[&str], dir: &std::path::Path) -> Node {
        Node::spawn_env(args, dir, &[])
    }

    /// `spawn` with extra environment variables.
    pub fn spawn_env(args: &[&str], dir: &std::path::Path, env: &[(&str, &str)]) -> Node {
        let mut command = Command::new(outpost_bin());
        command.args(args).envs(env.iter().copied());
        Node::launch(command, dir)
    }

    /// Starts a node on `config` that serves `socket` (passed as systemd's
    /// socket activation does: fd 3, `LISTEN_FDS=1`, `LISTEN_PID` its own),
    /// as a service manager restarting or upgrading a node would.
    pub fn start_on_socket(config: &str, socket: &std::net::TcpListener) -> Node {
        use std::os::fd::AsRawFd;
        use std::os::unix::process::CommandExt;
        let dir = scratch_dir();
        let path = dir.join("outpost.toml");
        std::fs::write(&path, config).unwrap();
        let fd = socket.as_raw_fd();
        let mut command = Command::new("sh");
        // `exec` keeps the shell's pid, which `$$` names.
        command.args([
            "-c",
            "LISTEN_PID=$$ LISTEN_FDS=1 exec \"$0\" \"$@\"",
            outpost_bin().to_str().unwrap(),
            "serve",
            "--config",
            path.to_str().unwrap(),
        ]);
        // Between fork and exec: only async-signal-safe calls (dup2, fcntl).
        unsafe {
            command.pre_exec(move || {
                let ok = if fd == 3 {
                    libc::fcntl(3, libc::F_SETFD, 0) != -1
                } else {
                    libc::dup2(fd, 3) != -1
                };
                if ok {
                    Ok(())
                } else {
                    Err(std::io::Error::last_os_error())
                }
            });
        }
        Node::launch(command, &dir)
    }

    fn launch(mut command: Command, dir: &std::path::Path) -> Node {
        let log = dir.join("node.log");
        if !command.get_envs().any(|(k, _)| k == "OUTPOST_LOG") {
            command.env("OUTPOST_LOG", "info");
        }
        let mut child = command
            .env_remove("RUST_BACKTRACE")
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .expect("start the node");
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        let lines: Arc<Mutex<Vec<String>>> = Arc::default();
        let seen = lines.clone();
        std::thread::spawn(move || {
            let (mut admin, mut tls) = (None, None);
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { return };
                seen.lock().unwrap().push(line.clone());
                let address = |prefix: &str| {
                    let addr = line.strip_prefix(prefix)?;
                    let addr = addr
                        .strip_prefix("http://")
                        .or(addr.strip_prefix("https://"))?;
                    addr.parse::<SocketAddr>().ok()
                };
                if let Some(addr) = address("outpost admin on ") {
                    admin = Some(addr);
                }
                if let Some(addr) = line.strip_prefix("outpost listening on https://") {
                    tls = addr.parse::<SocketAddr>().ok();
                } else if let Some(addr) = line.strip_prefix("outpost listening on http://") {
                    let _ = tx.send((addr.parse::<SocketAddr>().unwrap(), admin, tls));
                }
            }
        });
        match rx.recv_timeout(Duration::from_secs(300)) {
            Ok((addr, admin, tls)) => Node {
                addr,
                tls,
                admin,
                stdout: lines,
                child,
                log,
            },
            Err(_) => {
                let _ = child.kill();
                panic!(
                    "node did not start:\n{}",
                    std::fs::read_to_string(&log).unwrap_or_default()
                );
            }
        }
    }

    /// The node's log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Waits until the node's log contains `text`, for at most `limit` (a
    /// bound, not a timing assertion).
    pub async fn wait_for_log(&self, text: &str, limit: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + limit;
        while tokio::time::Instant::now() < deadline {
            if self.log().contains(text) {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        false
    }

    /// Stops the node with SIGTERM and waits for it to exit.
    pub fn stop(mut self) -> std::process::ExitStatus {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        self.child.wait().unwrap()
    }

    /// Waits until the node prints a stdout line containing `text`, for at
    /// most `limit` (a bound, not a timing assertion).
    pub fn wait_for_stdout(&self, text: &str, after: usize, limit: Duration) -> bool {
        let deadline = std::time::Instant::now() + limit;
        while std::time::Instant::now() < deadline {
            if self
                .stdout
                .lock()
                .unwrap()
                .iter()
                .skip(after)
                .any(|l| l.contains(text))
            {
                return true;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        false
    }

    /// The node's peak resident memory (VmHWM) in KiB.
    pub fn peak_rss_kib(&self) -> u64 {
        self.status_kib("VmHWM:")
    }

    /// The node's resident memory now (VmRSS) in KiB.
    pub fn rss_kib(&self) -> u64 {
        self.status_kib("VmRSS:")
    }

    /// A `kB` field of the node's `/proc/PID/status`.
    fn status_kib(&self, field: &str) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id()))
            .unwrap_or_default();
        status
            .lines()
            .find_map(|l| l.strip_prefix(field))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap_or(0)
    }

    /// The node's process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Every line printed on stdout so far.
    pub fn stdout(&self) -> Vec<String> {
        self.stdout.lock().unwrap().clone()
    }

    /// Lines printed on stdout so far.
    pub fn stdout_lines(&self) -> usize {
        self.stdout.lock().unwrap().len()
    }

    /// Sends SIGHUP (config reload).
    pub fn hangup(&self) {
        let _ = Command::new("kill")
            .args(["-HUP", &self.child.id().to_string()])
            .status();
    }

    /// Whether the process is still running.
    pub fn is_running(&mut self) -> bool {
        self.child.try_wait().unwrap().is_none()
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A response as a test sees it.
#[derive(Debug)]
pub struct Resp {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Resp {
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// The Cache-Status value.
    pub fn cache_status(&self) -> &str {
        self.header("cache-status").unwrap_or("")
    }
}

/// An HTTP client for talking to a node.
#[derive(Clone)]
pub struct Client {
    inner: hyper_util::client::legacy::Client<HttpConnector, TestBody>,
}

impl Default for Client {
    fn default() -> Self {
        Client::new()
    }
}

impl Client {
    pub fn new() -> Client {
        Client {
            inner: hyper_util::client::legacy::Client::builder(TokioExecutor::new()).build_http(),
        }
    }

    /// An HTTP/2 (prior knowledge, h2c) client.
    pub fn http2() -> Client {
        Client {
            inner: hyper_util::client::legacy::Client::builder(TokioExecutor::new())
                .http2_only(true)
                .build_http(),
        }
    }

    /// GET `path` on `node` with this Host.
    pub async fn get(&self, node: &Node, host: &str, path: &str) -> Resp {
        self.send(node, Method::GET, host, path, &[], Bytes::new())
            .await
    }

    /// GET with extra headers.
    pub async fn get_with(
        &self,
        node: &Node,
        host: &str,
        path: &str,
        headers: &[(&str, &str)],
    ) -> Resp {
        self.send(node, Method::GET, host, path, headers, Bytes::new())
            .await
    }

    pub async fn send(
        &self,
        node: &Node,
        method: Method,
        host: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: Bytes,
    ) -> Resp {
        self.send_to(node.addr, method, host, path, headers, body)
            .await
    }

    /// A request to the node's admin API with a bearer token.
    pub async fn admin(
        &self,
        node: &Node,
        method: Method,
        path: &str,
        token: Option<&str>,
        body: impl Into<Bytes>,
    ) -> Resp {
        let auth = token.map(|t| format!("Bearer {t}"));
        let headers: Vec<(&str, &str)> =
            auth.iter().map(|a| ("authorization", a.as_str())).collect();
        let admin = node.admin.expect("the node has an admin listener");
        self.send_to(admin, method, "admin", path, &headers, body.into())
            .await
    }

    /// A request to any address.
    pub async fn send_to(
        &self,
        addr: SocketAddr,
        method: Method,
        host: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: Bytes,
    ) -> Resp {
        let mut builder = Request::builder()
            .method(method)
            .uri(format!("http://{addr}{path}"))
            .header("host", host);
        for (n, v) in headers {
            builder = builder.header(*n, *v);
        }
        let response = tokio::time::timeout(
            Duration::from_secs(30),
            self.inner.request(builder.body(full_body(body)).unwrap()),
        )
        .await
        .expect("response within 30 s")
        .expect("a response");
        let (parts, body) = response.into_parts();
        let body = body.collect().await.expect("a complete body").to_bytes();
        Resp {
            status: parts.status,
            headers: parts.headers,
            body,
        }
    }

    /// GET to `addr`; `Err` when no complete response came (within 30 s).
    pub async fn try_send_to(
        &self,
        addr: SocketAddr,
        host: &str,
        path: &str,
    ) -> Result<Resp, String> {
        let request = Request::builder()
            .uri(format!("http://{addr}{path}"))
            .header("host", host)
            .body(full_body(Bytes::new()))
            .unwrap();
        let response = tokio::time::timeout(Duration::from_secs(30), self.inner.request(request))
            .await
            .map_err(|_| "no response within 30 s".to_string())?
            .map_err(|e| format!("{e:?}"))?;
        collected(response).await
    }

    /// Sends a request with an empty body from a task of its own, so that
    /// several are in flight at once.
    pub fn spawn_send(
        &self,
        addr: SocketAddr,
        method: Method,
        host: &str,
        path: &str,
    ) -> JoinHandle<Resp> {
        let (client, host, path) = (self.clone(), host.to_string(), path.to_string());
        tokio::spawn(async move {
            client
                .send_to(addr, method, &host, &path, &[], Bytes::new())
                .await
        })
    }

    /// GETs `path` and asserts its Cache-Status contains `expected`.
    pub async fn expect_cache_status(&self, node: &Node, host: &str, path: &str, expected: &str) {
        let r = self.get(node, host, path).await;
        assert!(
            r.cache_status().contains(expected),
            "GET {path}: Cache-Status {:?} lacks {expected:?}",
            r.cache_status()
        );
    }

    /// Sends a request and returns the response with its body unread.
    pub async fn open(
        &self,
        node: &Node,
        method: Method,
        host: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: TestBody,
    ) -> Result<Response<Incoming>, String> {
        let mut builder = Request::builder()
            .method(method)
            .uri(format!("http://{}{path}", node.addr))
            .header("host", host);
        for (n, v) in headers {
            builder = builder.header(*n, *v);
        }
        self.inner
            .request(builder.body(body).unwrap())
            .await
            .map_err(|e| e.to_string())
    }

    /// GET whose response body may fail: `Err` when it does.
    pub async fn try_get(&self, node: &Node, host: &str, path: &str) -> Result<Resp, String> {
        let response = self
            .open(node, Method::GET, host, path, &[], full_body(Bytes::new()))
            .await?;
        collected(response).await
    }
}

/// A response read whole; `Err` when its body fails.
async fn collected(response: Response<Incoming>) -> Result<Resp, String> {
    let (parts, body) = response.into_parts();
    let body = body
        .collect()
        .await
        .map_err(|e| format!("body failed: {e}"))?
        .to_bytes();
    Ok(Resp {
        status: parts.status,
        headers: parts.headers,
        body,
    })
}

/// A `[[tenant]]` block: `policy` is `builtin:NAME` or an example's name
/// prefixed with `example:`; `backends` are (name, url) pairs.
pub fn tenant(id: &str, hosts: &[&str], policy: &str, backends: &[(&str, &str)]) -> String {
    tenant_with(id, hosts, policy, backends, "")
}

/// [`tenant`] with extra top-level tenant fields, e.g. `"max_object_mb = 1"`.
pub fn tenant_with(
    id: &str,
    hosts: &[&str],
    policy: &str,
    backends: &[(&str, &str)],
    fields: &str,
) -> String {
    let policy = match policy.strip_prefix("example:") {
        Some(name) => example(name),
        None => format!("{policy:?}"),
    };
    let hosts: Vec<String> = hosts.iter().map(|h| format!("{h:?}")).collect();
    let mut out = format!(
        "[[tenant]]\nid = {id:?}\nhosts = [{}]\npolicy = {policy}\n",
        hosts.join(", ")
    );
    if !fields.is_empty() {
        out.push_str(fields.trim_end());
        out.push('\n');
    }
    for (name, url) in backends {
        out.push_str(&format!("[tenant.backends.{name}]\nurl = {url:?}\nconnect_timeout_ms = 1000\nfirst_byte_timeout_ms = 5000\n"));
    }
    out
}

/// The most common set-up: an admin listener ([`ADMIN_TOKEN`]) and one
/// tenant `t` answering `t.test` with the built-in default policy in front
/// of `origin` (its only backend, `origin`).
pub fn one_tenant(origin: &Origin) -> String {
    format!(
        "{}{}",
        admin_section(),
        tenant(
            "t",
            &["t.test"],
            "builtin:default",
            &[("origin", &origin.url())]
        )
    )
}

/// A scripted origin, a node running [`one_tenant`] in front of it, and a
/// client.
pub async fn start_one_tenant() -> (Origin, Node, Client) {
    let origin = Origin::start("origin").await;
    let node = Node::start(&one_tenant(&origin));
    (origin, node, Client::new())
}

/// Writes `config` to `file` in `dir`, runs `outpost serve` on it, asserts
/// that the node refuses to start (a non-zero exit) and returns what it
/// printed on stderr.
pub fn refused_config(dir: &std::path::Path, file: &str, config: &str) -> String {
    let path = dir.join(file);
    std::fs::write(&path, config).unwrap();
    let out = Command::new(outpost_bin())
        .args(["serve", "--config", path.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(!out.status.success(), "the node started on {config}");
    String::from_utf8_lossy(&out.stderr).into_owned()
}
