//! Clients that are slow, broken or malicious, over raw TCP: each gets a
//! clear answer (or a closed connection), nothing reaches the origin, and
//! the next request is served.

use std::time::Duration;

use outpost_e2e::{one_tenant, Client, Node, Origin};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Sends raw bytes and reads until the node closes or `limit` passes.
async fn exchange(node: &Node, bytes: &[u8], limit: Duration) -> String {
    let mut stream = TcpStream::connect(node.addr).await.unwrap();
    stream.write_all(bytes).await.unwrap();
    read_all(&mut stream, limit).await
}

async fn read_all(stream: &mut TcpStream, limit: Duration) -> String {
    let mut out = Vec::new();
    let _ = tokio::time::timeout(limit, async {
        let mut buf = [0u8; 4096];
        while let Ok(n) = stream.read(&mut buf).await {
            if n == 0 {
                break;
            }
            out.extend_from_slice(&buf[..n]);
        }
    })
    .await;
    String::from_utf8_lossy(&out).into_owned()
}

/// The node still serves: a bad client spoiled nothing for the next one.
async fn next_request_is_served(node: &Node) {
    let r = Client::new().get(node, "t.test", "/next").await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.text(), "origin /next");
}

fn node_with(origin: &Origin, server: &str) -> Node {
    Node::start(&format!("[server]\n{server}\n{}", one_tenant(origin)))
}

#[tokio::test(flavor = "multi_thread")]
async fn an_unknown_transfer_coding_gets_501_and_reaches_no_origin() {
    let origin = Origin::start("origin").await;
    let node = node_with(&origin, "");
    let reply = exchange(
        &node,
        b"POST /upload HTTP/1.1\r\nHost: t.test\r\nTransfer-Encoding: gzip, chunked\r\n\
          Connection: close\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
        Duration::from_secs(10),
    )
    .await;
    assert!(reply.starts_with("HTTP/1.1 501"), "{reply}");
    assert_eq!(origin.total(), 0);
    next_request_is_served(&node).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_connection_that_sends_nothing_is_closed_after_the_header_timeout() {
    let origin = Origin::start("origin").await;
    let node = node_with(&origin, "header_read_timeout_ms = 300");
    let mut silent = TcpStream::connect(node.addr).await.unwrap();
    // A bound, not a timing assertion: without the timeout the connection
    // stays open for good and this read sees nothing before the limit.
    let mut buf = [0u8; 16];
    let read = tokio::time::timeout(Duration::from_secs(20), silent.read(&mut buf)).await;
    assert!(
        matches!(read, Ok(Ok(0)) | Ok(Err(_))),
        "the silent connection was not closed: {read:?}"
    );
    next_request_is_served(&node).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_slowloris_head_is_cut_at_the_header_timeout() {
    let origin = Origin::start("origin").await;
    let node = node_with(&origin, "header_read_timeout_ms = 300");
    let mut slow = TcpStream::connect(node.addr).await.unwrap();
    slow.write_all(b"GET /slow HTTP/1.1\r\nHost: t.test\r\n")
        .await
        .unwrap();
    // The head never ends: the node closes the connection.
    let reply = read_all(&mut slow, Duration::from_secs(20)).await;
    assert!(!reply.contains("200 OK"), "{reply}");
    assert_eq!(origin.hits("/slow"), 0);
    next_request_is_served(&node).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn past_max_connections_a_new_connection_waits_for_a_free_slot() {
    let origin = Origin::start("origin").await;
    let node = node_with(&origin, "max_connections = 1");
    let request = b"GET /a HTTP/1.1\r\nHost: t.test\r\n\r\n";
    let mut first = TcpStream::connect(node.addr).await.unwrap();
    first.write_all(request).await.unwrap();
    let mut buf = [0u8; 4096];
    let n = first.read(&mut buf).await.unwrap();
    assert!(String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 200"));
    // The first connection is kept alive: the second is not served yet.
    let mut second = TcpStream::connect(node.addr).await.unwrap();
    second.write_all(request).await.unwrap();
    let waiting = tokio::time::timeout(Duration::from_millis(500), second.read(&mut buf)).await;
    assert!(waiting.is_err(), "served past max_connections");
    drop(first);
    let reply = read_all(&mut second, Duration::from_secs(5)).await;
    assert!(reply.starts_with("HTTP/1.1 200"), "{reply}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_head_with_more_than_100_fields_gets_431_and_reaches_no_origin() {
    let origin = Origin::start("origin").await;
    let node = node_with(&origin, "");
    let mut request = String::from("GET /many HTTP/1.1\r\nHost: t.test\r\n");
    for i in 0..120 {
        request.push_str(&format!("x-field-{i}: {i}\r\n"));
    }
    request.push_str("Connection: close\r\n\r\n");
    let reply = exchange(&node, request.as_bytes(), Duration::from_secs(10)).await;
    assert!(reply.starts_with("HTTP/1.1 431"), "{reply}");
    assert_eq!(origin.total(), 0);
    next_request_is_served(&node).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn an_invalid_chunked_body_gets_400_and_is_not_an_origin_error() {
    let origin = Origin::start("origin").await;
    let node = node_with(&origin, "");
    let reply = exchange(
        &node,
        b"POST /upload HTTP/1.1\r\nHost: t.test\r\nTransfer-Encoding: chunked\r\n\
          Connection: close\r\n\r\nzz\r\nhello\r\n0\r\n\r\n",
        Duration::from_secs(10),
    )
    .await;
    assert!(reply.starts_with("HTTP/1.1 400"), "{reply}");
    let metrics = Client::new()
        .admin(
            &node,
            http::Method::GET,
            "/metrics",
            Some(outpost_e2e::ADMIN_TOKEN),
            "",
        )
        .await
        .text();
    assert!(
        !metrics.contains("outpost_origin_errors_total"),
        "{metrics}"
    );
    assert!(!node.log().contains("origin failed"), "{}", node.log());
    next_request_is_served(&node).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn an_origin_that_is_down_is_logged_with_tenant_backend_and_reason() {
    let node = Node::start(&outpost_e2e::tenant(
        "t",
        &["t.test"],
        "builtin:default",
        &[("origin", &outpost_e2e::closed_port_url())],
    ));
    let r = Client::new().get(&node, "t.test", "/x").await;
    assert_eq!(r.status, 502);
    let mut logged = false;
    for _ in 0..50 {
        let log = node.log();
        if log.contains("origin failed") {
            assert!(
                log.contains("tenant=\"t\"") || log.contains("tenant=t"),
                "{log}"
            );
            assert!(
                log.contains("backend=\"origin\"") || log.contains("backend=origin"),
                "{log}"
            );
            assert!(log.contains("connect"), "{log}");
            logged = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(logged, "no log line: {}", node.log());
}

fn small_body_node(origin: &Origin) -> Node {
    Node::start(&outpost_e2e::tenant_with(
        "t",
        &["t.test"],
        "builtin:default",
        &[("origin", &origin.url())],
        "max_body_mb = 1",
    ))
}

#[tokio::test(flavor = "multi_thread")]
async fn a_body_announced_over_max_body_mb_gets_413_before_the_origin_sees_it() {
    let origin = Origin::start("origin").await;
    let node = small_body_node(&origin);
    let head = format!(
        "POST /upload HTTP/1.1\r\nHost: t.test\r\nContent-Length: {}\r\n\r\n",
        2 * 1024 * 1024
    );
    let reply = exchange(&node, head.as_bytes(), Duration::from_secs(10)).await;
    assert!(reply.starts_with("HTTP/1.1 413"), "{reply}");
    assert_eq!(origin.total(), 0);
    let small = Client::new()
        .send(
            &node,
            http::Method::POST,
            "t.test",
            "/upload",
            &[],
            bytes::Bytes::from(vec![b'x'; 1000]),
        )
        .await;
    assert_eq!(small.status, 200);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_chunked_body_past_max_body_mb_gets_413() {
    let origin = Origin::start("origin").await;
    let node = small_body_node(&origin);
    let mut stream = TcpStream::connect(node.addr).await.unwrap();
    stream
        .write_all(b"POST /upload HTTP/1.1\r\nHost: t.test\r\nTransfer-Encoding: chunked\r\n\r\n")
        .await
        .unwrap();
    let chunk = vec![b'x'; 64 * 1024];
    for _ in 0..40 {
        let mut framed = format!("{:x}\r\n", chunk.len()).into_bytes();
        framed.extend_from_slice(&chunk);
        framed.extend_from_slice(b"\r\n");
        if stream.write_all(&framed).await.is_err() {
            break; // the node stopped reading: it has answered
        }
    }
    let _ = stream.write_all(b"0\r\n\r\n").await;
    let reply = read_all(&mut stream, Duration::from_secs(10)).await;
    assert!(reply.starts_with("HTTP/1.1 413"), "{reply}");
    next_request_is_served(&node).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_request_body_that_stalls_gets_408_and_the_origin_never_gets_it_whole() {
    let origin = Origin::start("origin").await;
    let node = node_with(&origin, "body_read_timeout_ms = 300");
    let mut stream = TcpStream::connect(node.addr).await.unwrap();
    stream
        .write_all(
            b"POST /upload HTTP/1.1\r\nHost: t.test\r\nContent-Length: 100\r\n\r\n0123456789",
        )
        .await
        .unwrap();
    // Then nothing: the other 90 bytes never come.
    let reply = read_all(&mut stream, Duration::from_secs(10)).await;
    assert!(reply.starts_with("HTTP/1.1 408"), "{reply}");
    assert!(
        reply.to_ascii_lowercase().contains("connection: close"),
        "{reply}"
    );
    assert!(
        origin.seen().iter().all(|s| s.body_len < 100),
        "the origin got a whole body"
    );
    assert!(!node.log().contains("origin failed"), "{}", node.log());
    next_request_is_served(&node).await;
}

/// Reads one response with a Content-Length body from a raw connection.
/// `pending` holds bytes read past the previous response: pipelined
/// responses may arrive in one read, and each call returns exactly one.
async fn read_response(stream: &mut TcpStream, pending: &mut Vec<u8>) -> String {
    let mut buf = [0u8; 4096];
    loop {
        if let Some(end) = pending.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&pending[..end]).to_ascii_lowercase();
            let length = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length:"))
                .and_then(|v| v.trim().parse::<usize>().ok())
                .unwrap_or(0);
            let total = end + 4 + length;
            if pending.len() >= total {
                let rest = pending.split_off(total);
                let response = std::mem::replace(pending, rest);
                return String::from_utf8_lossy(&response).into_owned();
            }
        }
        let n = tokio::time::timeout(Duration::from_secs(10), stream.read(&mut buf))
            .await
            .expect("a response within 10 s")
            .unwrap();
        assert!(
            n > 0,
            "closed mid-response: {}",
            String::from_utf8_lossy(pending)
        );
        pending.extend_from_slice(&buf[..n]);
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_keep_alive_connection_serves_again_after_idling_and_closes_after_the_idle_timeout() {
    let origin = Origin::start("origin").await;
    let node = node_with(&origin, "idle_timeout_ms = 2500");
    let mut stream = TcpStream::connect(node.addr).await.unwrap();
    let mut pending = Vec::new();
    let get = |path: &str| format!("GET {path} HTTP/1.1\r\nHost: t.test\r\n\r\n");
    stream.write_all(get("/one").as_bytes()).await.unwrap();
    assert!(read_response(&mut stream, &mut pending)
        .await
        .starts_with("HTTP/1.1 200"));
    // Quiet for longer than the node keeps hyper's state for a connection
    // (it is parked), but less than the idle timeout: still served, and
    // two pipelined requests sent at once are both answered.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let pipelined = format!("{}{}", get("/two"), get("/three"));
    stream.write_all(pipelined.as_bytes()).await.unwrap();
    let two = read_response(&mut stream, &mut pending).await;
    assert!(
        two.starts_with("HTTP/1.1 200") && two.ends_with("origin /two"),
        "{two}"
    );
    let three = read_response(&mut stream, &mut pending).await;
    assert!(three.contains("origin /three"), "{three}");
    // Then idle: the node closes it (within a bound, not a timing check).
    let rest = read_all(&mut stream, Duration::from_secs(20)).await;
    assert!(pending.is_empty() && rest.is_empty(), "the node sent more");
    let mut probe = [0u8; 1];
    let closed = tokio::time::timeout(Duration::from_secs(1), stream.read(&mut probe)).await;
    assert!(
        matches!(closed, Ok(Ok(0)) | Ok(Err(_))),
        "still open after the idle timeout"
    );
    next_request_is_served(&node).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_response_slower_than_the_park_time_keeps_the_connection_alive() {
    let origin = Origin::start("origin").await;
    origin.reply(
        "/slow",
        outpost_e2e::Reply::ok().delay(Duration::from_millis(1500)),
    );
    let node = node_with(&origin, "");
    let mut stream = TcpStream::connect(node.addr).await.unwrap();
    let mut pending = Vec::new();
    let get = |path: &str| format!("GET {path} HTTP/1.1\r\nHost: t.test\r\n\r\n");
    stream.write_all(get("/slow").as_bytes()).await.unwrap();
    let slow = read_response(&mut stream, &mut pending).await;
    assert!(slow.starts_with("HTTP/1.1 200"), "{slow}");
    assert!(
        !slow.to_ascii_lowercase().contains("connection: close"),
        "{slow}"
    );
    stream.write_all(get("/after").as_bytes()).await.unwrap();
    let after = read_response(&mut stream, &mut pending).await;
    assert!(after.ends_with("origin /after"), "{after}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_100_kib_target_gets_414_and_a_head_over_64_kib_gets_431() {
    let origin = Origin::start("origin").await;
    let node = node_with(&origin, "");
    let long_target = format!(
        "GET /{} HTTP/1.1\r\nHost: t.test\r\nConnection: close\r\n\r\n",
        "a".repeat(100 * 1024)
    );
    let reply = exchange(&node, long_target.as_bytes(), Duration::from_secs(10)).await;
    assert!(
        reply.starts_with("HTTP/1.1 414"),
        "{}",
        &reply[..reply.len().min(200)]
    );
    let large_head = format!(
        "GET /big HTTP/1.1\r\nHost: t.test\r\nX-Big: {}\r\nConnection: close\r\n\r\n",
        "b".repeat(80 * 1024)
    );
    let reply = exchange(&node, large_head.as_bytes(), Duration::from_secs(10)).await;
    assert!(
        reply.starts_with("HTTP/1.1 431"),
        "{}",
        &reply[..reply.len().min(200)]
    );
    assert_eq!(origin.total(), 0);
    next_request_is_served(&node).await;
}
