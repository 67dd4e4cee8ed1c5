//! Request coalescing: concurrent misses for one key produce one origin
//! fetch. The first request leads the fill; the others wait for it by
//! notification (a `watch` channel, no polling). A leader that goes away
//! without finishing (client gone, error) drops its guard, which wakes the
//! waiters with `Abandoned` so none is stranded.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use tokio::sync::watch;

use super::stored::StoredResponse;
use super::CacheKey;

/// How a fill ended, as a waiter sees it.
#[derive(Debug, Clone)]
pub enum FillOutcome {
    /// The response was stored; waiters may serve it.
    Stored(Arc<StoredResponse>),
    /// The leader got a response it did not store (uncacheable, or an
    /// error): waiters must go to the origin themselves.
    NotStored,
    /// The leader went away before finishing.
    Abandoned,
}

#[derive(Debug, Default)]
pub struct Coalescer {
    fills: Mutex<HashMap<CacheKey, watch::Receiver<Option<FillOutcome>>>>,
}

/// Whether this request leads the fill or waits for another.
pub enum Role {
    Leader(FillGuard),
    Waiter(watch::Receiver<Option<FillOutcome>>),
}

/// Held by the request that fetches; finishing or dropping it wakes waiters.
#[derive(Debug)]
pub struct FillGuard {
    coalescer: Arc<Coalescer>,
    key: CacheKey,
    sender: watch::Sender<Option<FillOutcome>>,
}

impl Coalescer {
    /// Joins the fill for `key`, or starts one.
    pub fn join(self: &Arc<Self>, key: &CacheKey) -> Role {
        let mut fills = self.fills.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(rx) = fills.get(key) {
            return Role::Waiter(rx.clone());
        }
        let (sender, rx) = watch::channel(None);
        fills.insert(key.clone(), rx);
        Role::Leader(FillGuard {
            coalescer: self.clone(),
            key: key.clone(),
            sender,
        })
    }
}

impl FillGuard {
    /// Ends the fill and wakes every waiter with its outcome.
    pub fn finish(self, outcome: FillOutcome) {
        self.sender.send_replace(Some(outcome));
        // Drop removes the entry.
    }
}

impl Drop for FillGuard {
    fn drop(&mut self) {
        self.coalescer
            .fills
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&self.key);
        if self.sender.borrow().is_none() {
            self.sender.send_replace(Some(FillOutcome::Abandoned));
        }
    }
}

/// Waits for a fill to end.
pub async fn wait(mut rx: watch::Receiver<Option<FillOutcome>>) -> FillOutcome {
    match rx.wait_for(Option::is_some).await {
        Ok(outcome) => outcome.clone().unwrap_or(FillOutcome::Abandoned),
        Err(_) => FillOutcome::Abandoned,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn key(k: &str) -> CacheKey {
        CacheKey::new(&Arc::from("t"), k)
    }

    fn stored() -> Arc<StoredResponse> {
        Arc::new(crate::cache::test_response(
            http::StatusCode::OK,
            http::HeaderMap::new(),
            b"x",
            Duration::from_secs(60),
        ))
    }

    #[tokio::test]
    async fn the_first_request_leads_and_the_others_get_its_stored_response() {
        let coalescer = Arc::new(Coalescer::default());
        let Role::Leader(guard) = coalescer.join(&key("a")) else {
            panic!("the first request leads");
        };
        let Role::Waiter(rx) = coalescer.join(&key("a")) else {
            panic!("the second request waits");
        };
        assert!(
            matches!(coalescer.join(&key("b")), Role::Leader(_)),
            "keys are apart"
        );
        let response = stored();
        guard.finish(FillOutcome::Stored(response.clone()));
        match wait(rx).await {
            FillOutcome::Stored(got) => assert!(Arc::ptr_eq(&got, &response)),
            other => panic!("{other:?}"),
        }
        assert!(
            matches!(coalescer.join(&key("a")), Role::Leader(_)),
            "the fill is over"
        );
    }

    #[tokio::test]
    async fn a_leader_that_goes_away_wakes_its_waiters_with_abandoned() {
        let coalescer = Arc::new(Coalescer::default());
        let Role::Leader(guard) = coalescer.join(&key("a")) else {
            panic!("the first request leads");
        };
        let Role::Waiter(rx) = coalescer.join(&key("a")) else {
            panic!("the second request waits");
        };
        drop(guard);
        assert!(matches!(wait(rx).await, FillOutcome::Abandoned));
    }
}
