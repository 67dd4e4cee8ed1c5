//! The waker a connection driven in a request's task is polled with.
//!
//! hyper's HTTP/1 client talks to its connection over channels (the
//! request in, the response head and body chunks out), each of which wakes
//! the other side. With both sides polled by the same task, every such
//! wake would reschedule the task that is running it: tokio treats that
//! as a yield and wakes another worker thread to look for work, which
//! then takes the request over to its own core. The relay takes a wake
//! that comes while the task polls as "poll once more" instead, and passes
//! any other (the socket being ready, a timer) to the task.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll, Wake, Waker};

use futures::task::AtomicWaker;

/// Polls in a row before a wake from inside goes to the task after all,
/// as hyper's own yields ask, so one busy connection cannot hold a worker.
const MAX_AGAIN: usize = 4;

pub(super) struct Relay {
    shared: Arc<Shared>,
    waker: Waker,
}

struct Shared {
    /// The task polling now, or that polled last.
    task: AtomicWaker,
    /// Set while that task polls: wakes are taken as `again`.
    polling: AtomicBool,
    again: AtomicBool,
}

impl Wake for Shared {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        if self.polling.load(Ordering::Acquire) {
            self.again.store(true, Ordering::Release);
        } else {
            self.task.wake();
        }
    }
}

impl Relay {
    pub fn new() -> Relay {
        let shared = Arc::new(Shared {
            task: AtomicWaker::new(),
            polling: AtomicBool::new(false),
            again: AtomicBool::new(false),
        });
        Relay {
            waker: Waker::from(shared.clone()),
            shared,
        }
    }

    /// Runs `step` (which polls the connection and what it feeds) with the
    /// relay's waker until it is ready or nothing woke it while it ran.
    pub fn poll<R>(
        &self,
        cx: &mut Context<'_>,
        mut step: impl FnMut(&mut Context<'_>) -> Poll<R>,
    ) -> Poll<R> {
        let shared = &self.shared;
        shared.task.register(cx.waker());
        let mut inner = Context::from_waker(&self.waker);
        for _ in 0..MAX_AGAIN {
            shared.again.store(false, Ordering::Relaxed);
            shared.polling.store(true, Ordering::Release);
            let polled = step(&mut inner);
            shared.polling.store(false, Ordering::Release);
            if polled.is_ready() {
                return polled;
            }
            if !shared.again.load(Ordering::Acquire) {
                return Poll::Pending;
            }
        }
        cx.waker().wake_by_ref();
        Poll::Pending
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicUsize;

    #[derive(Default)]
    struct Count(AtomicUsize);

    impl Wake for Count {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Ordering::Relaxed);
        }
    }

    #[test]
    fn a_wake_from_inside_polls_again_and_one_from_outside_reaches_the_task() {
        let count = Arc::new(Count::default());
        let task = Waker::from(count.clone());
        let mut cx = Context::from_waker(&task);
        let relay = Relay::new();
        let mut steps = 0;
        let polled = relay.poll(&mut cx, |inner| {
            steps += 1;
            if steps == 1 {
                inner.waker().wake_by_ref();
                return Poll::Pending;
            }
            Poll::Ready(steps)
        });
        assert_eq!(polled, Poll::Ready(2));
        assert_eq!(count.0.load(Ordering::Relaxed), 0, "the task was woken");

        // A waker kept by what was polled, woken later: the task runs.
        let mut kept = None;
        let polled: Poll<()> = relay.poll(&mut cx, |inner| {
            kept = Some(inner.waker().clone());
            Poll::Pending
        });
        assert!(polled.is_pending());
        kept.unwrap().wake();
        assert_eq!(count.0.load(Ordering::Relaxed), 1);
    }

    #[test]
    fn a_step_that_keeps_waking_itself_yields_to_the_task() {
        let count = Arc::new(Count::default());
        let task = Waker::from(count.clone());
        let mut cx = Context::from_waker(&task);
        let relay = Relay::new();
        let polled: Poll<()> = relay.poll(&mut cx, |inner| {
            inner.waker().wake_by_ref();
            Poll::Pending
        });
        assert!(polled.is_pending());
        assert_eq!(count.0.load(Ordering::Relaxed), 1);
    }
}
