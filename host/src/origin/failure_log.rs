//! The warning every failed attempt at a member leaves: tenant, backend,
//! member and reason, at most [`LINES_PER_SECOND`] a second for the whole
//! node so an outage does not flood the log (the metrics count them all).

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use super::OriginError;

const LINES_PER_SECOND: u64 = 10;

pub(super) fn member_failed(tenant: &str, backend: &str, member: &str, error: &OriginError) {
    if !within_log_budget() {
        return;
    }
    tracing::warn!(
        tenant,
        backend,
        member,
        reason = reason(error),
        "origin member failed: {error}"
    );
}

/// A short stable name, as the fetch error's in the metrics.
fn reason(error: &OriginError) -> &'static str {
    match error {
        OriginError::Connect(_) => "connect",
        OriginError::Timeout => "timeout",
        OriginError::Tls(_) => "tls",
        OriginError::Invalid(_) => "invalid",
        OriginError::RequestBody(_) => "request_body",
        OriginError::TooLarge(_) => "too_large",
        OriginError::Unavailable(_) => "unavailable",
    }
}

/// Whether one more origin warning fits this second's budget (shared by
/// the member warnings here and the route's "origin failed" line).
pub(crate) fn within_log_budget() -> bool {
    static WINDOW: AtomicU64 = AtomicU64::new(0);
    static LOGGED: AtomicU64 = AtomicU64::new(0);
    let second = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    if WINDOW.swap(second, Ordering::Relaxed) != second {
        LOGGED.store(0, Ordering::Relaxed);
    }
    LOGGED.fetch_add(1, Ordering::Relaxed) < LINES_PER_SECOND
}
