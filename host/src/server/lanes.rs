//! Thread-per-core serving: one single-threaded tokio runtime ("lane") per
//! core, each driving the connections it was given from accept to close.
//!
//! A connection's task, its socket, its pooled origin connections and the
//! timers it sets then stay on one thread and one epoll instance, as an
//! nginx worker's do. Under tokio's work-stealing scheduler a connection's
//! task ran wherever its last wake-up landed, and every wake-up of the
//! other worker cost a futex call and an inter-processor interrupt: on a
//! two-core machine a single worker served uncacheable traffic faster than
//! two (30k against 21-26k req/s, `bench/run`'s `pass`).
//!
//! The listeners are still accepted on by the node's main runtime, which
//! hands each accepted socket to the lane serving the fewest connections
//! (so a burst of connects is spread evenly, where lanes accepting on a
//! shared socket race for it and `SO_REUSEPORT` splits by a hash), and
//! keeps the control plane, the admin API and the fleet's watch.

use std::future::Future;
use std::io;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use tokio::net::TcpStream;
use tokio::runtime::Handle;
use tokio::sync::oneshot;

/// The lanes of a node. Dropping it stops them: tasks still on a lane are
/// dropped with it, so it outlives the listeners' draining.
pub struct Lanes {
    lanes: Box<[Lane]>,
}

struct Lane {
    handle: Handle,
    /// Connections this lane serves now.
    open: Arc<AtomicUsize>,
    /// Ends the lane's thread when sent or dropped.
    _stop: oneshot::Sender<()>,
}

impl Lanes {
    /// Starts one lane per core the process may run on.
    pub fn per_core() -> io::Result<Lanes> {
        Lanes::start(crate::lane::count())
    }

    /// Starts `count` lanes (at least one), each on its own thread.
    pub fn start(count: usize) -> io::Result<Lanes> {
        let lanes = (0..count.max(1))
            .map(Lane::start)
            .collect::<io::Result<Vec<_>>>()?;
        Ok(Lanes {
            lanes: lanes.into_boxed_slice(),
        })
    }

    /// How many lanes serve (the threads guest CPU is shared over).
    pub fn count(&self) -> usize {
        self.lanes.len()
    }

    /// Serves `stream` on the lane with the fewest connections: `serve`
    /// gets the socket registered with that lane's reactor, and its future
    /// runs there to the end.
    pub fn spawn<S, F>(&self, stream: TcpStream, serve: S) -> io::Result<()>
    where
        S: FnOnce(TcpStream) -> F + Send + 'static,
        F: Future<Output = ()> + Send + 'static,
    {
        let lane = self
            .lanes
            .iter()
            .min_by_key(|lane| lane.open.load(Ordering::Relaxed))
            .expect("at least one lane");
        // Out of the accepting runtime's reactor, into the lane's.
        let stream = stream.into_std()?;
        let open = lane.open.clone();
        open.fetch_add(1, Ordering::Relaxed);
        let counted = Open(open);
        lane.handle.spawn(async move {
            let _counted = counted;
            match TcpStream::from_std(stream) {
                // Boxed: an idle lane task should not keep the room of a
                // whole connection's state.
                Ok(stream) => Box::pin(serve(stream)).await,
                Err(e) => tracing::warn!("a lane could not take a connection: {e}"),
            }
        });
        Ok(())
    }
}

impl Lane {
    fn start(index: usize) -> io::Result<Lane> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        let handle = runtime.handle().clone();
        let (stop, stopped) = oneshot::channel::<()>();
        std::thread::Builder::new()
            .name(format!("outpost-lane-{index}"))
            .spawn(move || {
                crate::lane::enter(index);
                // Runs the lane's tasks until the `Lanes` are dropped.
                let _ = runtime.block_on(stopped);
            })?;
        Ok(Lane {
            handle,
            open: Arc::new(AtomicUsize::new(0)),
            _stop: stop,
        })
    }
}

/// A connection counted on its lane until its task ends.
struct Open(Arc<AtomicUsize>);

impl Drop for Open {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use tokio::io::AsyncReadExt;
    use tokio::net::TcpListener;
    use tokio::sync::mpsc;

    use super::*;

    #[tokio::test]
    async fn connections_go_to_the_lane_serving_fewest_and_stay_on_its_thread() {
        let lanes = Lanes::start(2).unwrap();
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (seen, mut threads) = mpsc::unbounded_channel();
        let mut clients = Vec::new();
        for _ in 0..4 {
            clients.push(TcpStream::connect(addr).await.unwrap());
            let (stream, _) = listener.accept().await.unwrap();
            let seen = seen.clone();
            lanes
                .spawn(stream, move |mut stream| async move {
                    let thread = std::thread::current().name().map(str::to_owned);
                    let _ = seen.send((thread, crate::lane::current()));
                    // Open until the client closes.
                    let _ = stream.read(&mut [0u8; 1]).await;
                })
                .unwrap();
        }
        let mut per_lane = BTreeMap::new();
        for _ in 0..4 {
            let (thread, lane) = threads.recv().await.unwrap();
            let lane = lane.expect("served on a lane");
            assert_eq!(thread, Some(format!("outpost-lane-{lane}")));
            *per_lane.entry(lane).or_insert(0) += 1;
        }
        assert_eq!(per_lane, BTreeMap::from([(0, 2), (1, 2)]));
    }
}
