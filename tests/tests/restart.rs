//! Restarts without loss: a new node takes over the listening socket (as a
//! service manager hands it, socket activation) while the old one drains
//! on SIGTERM; under a bounded load no request fails. And the drain
//! itself: requests in flight finish, and an idle keep-alive connection
//! still gets an answer, with `Connection: close`.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use outpost_e2e::*;

fn config(origin: &Origin) -> String {
    tenant(
        "t",
        &["t.test"],
        "builtin:default",
        &[("origin", &origin.url())],
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn a_node_taking_over_the_socket_while_the_old_one_drains_loses_no_request() {
    let origin = Origin::start("origin").await;
    // Every request goes to the origin and takes a moment: some are always
    // in flight when the old node is told to stop.
    origin.reply_to_all(
        Reply::ok()
            .only("cache-control", "no-store")
            .delay(Duration::from_millis(5)),
    );
    let socket = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let old = Node::start_on_socket(&config(&origin), &socket);
    let addr = old.addr;
    assert_eq!(addr, socket.local_addr().unwrap());

    let (stop, ok, failed) = (
        Arc::new(AtomicBool::new(false)),
        Arc::new(AtomicUsize::new(0)),
        Arc::new(AtomicUsize::new(0)),
    );
    let workers: Vec<_> = (0..8)
        .map(|w| {
            let (stop, ok, failed) = (stop.clone(), ok.clone(), failed.clone());
            let client = Client::new();
            tokio::spawn(async move {
                let mut n = 0;
                // Bounded: until told to stop, at most 5,000 requests each.
                while !stop.load(Ordering::Relaxed) && n < 5_000 {
                    n += 1;
                    let path = format!("/w{w}/{n}");
                    let r = client.try_send_to(addr, "t.test", &path).await;
                    match r {
                        Ok(r) if r.status == 200 => ok.fetch_add(1, Ordering::Relaxed),
                        _ => failed.fetch_add(1, Ordering::Relaxed),
                    };
                }
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let new = Node::start_on_socket(&config(&origin), &socket);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let served_before_stop = ok.load(Ordering::Relaxed);
    let exit = tokio::task::spawn_blocking(move || old.stop())
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;
    stop.store(true, Ordering::Relaxed);
    for w in workers {
        w.await.unwrap();
    }
    assert!(
        exit.success(),
        "the old node drained and exited cleanly: {exit:?}"
    );
    let (ok, failed) = (ok.load(Ordering::Relaxed), failed.load(Ordering::Relaxed));
    assert_eq!(failed, 0, "{failed} of {} requests failed", ok + failed);
    assert!(ok > served_before_stop, "the new node went on serving");
    // The new node alone serves now.
    let r = Client::new()
        .try_send_to(addr, "t.test", "/after")
        .await
        .unwrap();
    assert_eq!(r.status, 200);
    drop(new);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_draining_node_answers_an_idle_connections_next_request_and_closes_it() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let origin = Origin::start("origin").await;
    let node = Node::start(&format!("[server]\ndrain_s = 5\n\n{}", config(&origin)));
    let mut conn = tokio::net::TcpStream::connect(node.addr).await.unwrap();
    let request = b"GET /a HTTP/1.1\r\nHost: t.test\r\n\r\n";
    conn.write_all(request).await.unwrap();
    let mut buf = vec![0u8; 4096];
    let n = conn.read(&mut buf).await.unwrap();
    assert!(buf[..n].starts_with(b"HTTP/1.1 200"));
    // Idle past the parking delay, then the node is told to stop.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let pid = node.pid();
    std::process::Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status()
        .unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    conn.write_all(request).await.unwrap();
    let mut reply = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), conn.read_to_end(&mut reply))
        .await
        .expect("the node closes the connection after answering")
        .unwrap();
    let reply = String::from_utf8_lossy(&reply).to_ascii_lowercase();
    assert!(reply.starts_with("http/1.1 200"), "{reply}");
    assert!(reply.contains("connection: close"), "{reply}");
}
