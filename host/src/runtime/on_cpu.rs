//! The CPU a future uses: the time a worker thread spends inside its polls.
//! A guest hook yields every epoch tick and awaits its host calls' I/O, so
//! wall time from start to end counts the time it waited for a worker (long
//! when the node is busy, the very time fair shares are about) while the
//! time in its polls is the CPU it took from everyone else.

use std::future::Future;
use std::time::{Duration, Instant};

/// Runs `future`, adding the time spent polling it to `spent`.
pub async fn timed<F: Future>(future: F, spent: &mut Duration) -> F::Output {
    let mut future = std::pin::pin!(future);
    std::future::poll_fn(|cx| {
        let started = Instant::now();
        let polled = future.as_mut().poll(cx);
        *spent += started.elapsed();
        polled
    })
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn time_waiting_is_not_counted_but_time_working_is() {
        let mut spent = Duration::ZERO;
        timed(tokio::time::sleep(Duration::from_millis(50)), &mut spent).await;
        assert!(spent < Duration::from_millis(25), "{spent:?}");
        let busy = async {
            let until = Instant::now() + Duration::from_millis(20);
            while Instant::now() < until {}
        };
        timed(busy, &mut spent).await;
        assert!(spent >= Duration::from_millis(20));
    }
}
