//! Range requests answered from a stored response (RFC 9110 section 14).

use http::header::{self, HeaderMap};

use crate::cache::StoredResponse;
pub use crate::http::range::Ranges;

/// Evaluates Range and If-Range for a GET on a complete stored response.
pub fn evaluate(request: &HeaderMap, stored: &StoredResponse, len: u64) -> Ranges {
    let Some(range) = request.get(header::RANGE).and_then(|v| v.to_str().ok()) else {
        return Ranges::Whole;
    };
    if stored.status != http::StatusCode::OK || !if_range_holds(request, stored) {
        return Ranges::Whole;
    }
    crate::http::range::parse(range, len)
}

/// If-Range (section 13.1.5): a strong ETag that matches exactly, or a date
/// equal to Last-Modified; otherwise the whole representation is sent.
fn if_range_holds(request: &HeaderMap, stored: &StoredResponse) -> bool {
    let Some(condition) = request.get(header::IF_RANGE).and_then(|v| v.to_str().ok()) else {
        return true;
    };
    let condition = condition.trim();
    if condition.starts_with('"') || condition.starts_with("W/") {
        let etag = stored.etag().and_then(|e| e.to_str().ok()).unwrap_or("");
        return !condition.starts_with("W/") && !etag.starts_with("W/") && condition == etag.trim();
    }
    let modified = stored
        .last_modified()
        .and_then(|v| v.to_str().ok())
        .and_then(|v| httpdate::parse_http_date(v).ok());
    match (httpdate::parse_http_date(condition).ok(), modified) {
        (Some(a), Some(b)) => a == b,
        _ => false,
    }
}
