//! A TCP relay that adds a fixed one-way delay in each direction, in user
//! space (this kernel has no `netem`): what a long link between two
//! regions looks like to the programs at its ends. Every chunk read is
//! written to the other side `DELAY_MS` after it arrived, in order, so the
//! link keeps its throughput; a new connection costs one round trip before
//! its first byte gets through, as a TCP handshake over the link would.
//!
//!     latency-relay LISTEN TARGET DELAY_MS
//!     latency-relay 127.0.0.1:19001 127.0.0.1:18081 60
//!
//! Runs until killed.

use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio::time::Instant;

#[tokio::main]
async fn main() -> std::io::Result<()> {
    let mut args = std::env::args().skip(1);
    let usage = "usage: latency-relay LISTEN TARGET DELAY_MS";
    let listen: SocketAddr = args.next().expect(usage).parse().expect(usage);
    let target: SocketAddr = args.next().expect(usage).parse().expect(usage);
    let delay = Duration::from_millis(args.next().expect(usage).parse().expect(usage));
    let listener = TcpListener::bind(listen).await?;
    loop {
        let (client, _) = listener.accept().await?;
        tokio::spawn(async move {
            // The handshake's round trip over the link.
            let open_at = Instant::now() + 2 * delay;
            let Ok(server) = TcpStream::connect(target).await else {
                return;
            };
            let _ = client.set_nodelay(true);
            let _ = server.set_nodelay(true);
            let (client_read, client_write) = client.into_split();
            let (server_read, server_write) = server.into_split();
            tokio::spawn(one_way(client_read, server_write, delay, open_at));
            tokio::spawn(one_way(server_read, client_write, delay, open_at));
        });
    }
}

/// Copies `from` to `to`, each chunk `delay` after it was read (and not
/// before `open_at`); a close goes through after the same delay.
async fn one_way(
    mut from: OwnedReadHalf,
    mut to: OwnedWriteHalf,
    delay: Duration,
    open_at: Instant,
) {
    let (tx, mut rx) = mpsc::unbounded_channel::<(Instant, Vec<u8>)>();
    let writer = tokio::spawn(async move {
        while let Some((at, chunk)) = rx.recv().await {
            tokio::time::sleep_until(at).await;
            if chunk.is_empty() || to.write_all(&chunk).await.is_err() {
                break;
            }
        }
        let _ = to.shutdown().await;
    });
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = from.read(&mut buf).await.unwrap_or(0);
        let at = (Instant::now() + delay).max(open_at + delay);
        if tx.send((at, buf[..n].to_vec())).is_err() || n == 0 {
            break;
        }
    }
    drop(tx);
    let _ = writer.await;
}
