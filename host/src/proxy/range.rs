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
        let etag = stored.etag();
        let etag = etag.as_ref().and_then(|e| e.to_str().ok()).unwrap_or("");
        return !condition.starts_with("W/") && !etag.starts_with("W/") && condition == etag.trim();
    }
    let modified = stored
        .last_modified()
        .and_then(|v| httpdate::parse_http_date(v.to_str().ok()?).ok());
    match (httpdate::parse_http_date(condition).ok(), modified) {
        (Some(a), Some(b)) => a == b,
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2048))]

        /// RFC 9110 sections 13.1.5 and 14.2: any Range with any If-Range,
        /// against any stored validators and length: parts stay inside.
        #[test]
        fn any_range_and_if_range_evaluate_inside_the_body(
            range in crate::http::arbitrary::any_value(),
            if_range in crate::http::arbitrary::any_value(),
            etag in crate::http::arbitrary::any_value(),
            len in any::<u64>(),
        ) {
            let mut stored = HeaderMap::new();
            stored.insert(header::ETAG, etag);
            let stored = crate::cache::test_ok(stored);
            let mut request = HeaderMap::new();
            request.insert(header::RANGE, range);
            request.insert(header::IF_RANGE, if_range);
            if let Ranges::Parts(parts) = evaluate(&request, &stored, len) {
                for (start, end) in parts {
                    prop_assert!(start < end && end <= len);
                }
            }
        }
    }
}
