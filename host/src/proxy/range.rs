//! Range requests answered from a stored response (RFC 9110 section 14).

use http::header::{self, HeaderMap};

use crate::cache::StoredResponse;

/// Ranges accepted in one request; more is treated as abuse and the Range
/// header ignored (RFC 9110 section 14.2 allows ignoring it).
const MAX_RANGES: usize = 64;

/// What a Range header asks of a representation of `len` bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ranges {
    /// No (usable) Range: the whole representation, 200.
    Whole,
    /// Satisfiable ranges as `start..end` (end exclusive), 206.
    Parts(Vec<(u64, u64)>),
    /// Nothing satisfiable: 416.
    Unsatisfiable,
}

/// Evaluates Range and If-Range for a GET on a complete stored response.
pub fn evaluate(request: &HeaderMap, stored: &StoredResponse, len: u64) -> Ranges {
    let Some(range) = request.get(header::RANGE).and_then(|v| v.to_str().ok()) else {
        return Ranges::Whole;
    };
    if stored.status != http::StatusCode::OK || !if_range_holds(request, stored) {
        return Ranges::Whole;
    }
    parse(range, len)
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

/// Parses `bytes=a-b, c-, -n` (section 14.1.2). Anything malformed, or
/// another unit, means the header is ignored.
pub fn parse(value: &str, len: u64) -> Ranges {
    let Some(spec) = value.trim().strip_prefix("bytes=") else {
        return Ranges::Whole;
    };
    let mut parts = Vec::new();
    let mut any = false;
    for item in spec.split(',') {
        let item = item.trim();
        if item.is_empty() {
            continue;
        }
        any = true;
        let Some((first, last)) = item.split_once('-') else {
            return Ranges::Whole;
        };
        let (first, last) = (first.trim(), last.trim());
        let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
        let range = if first.is_empty() {
            // Suffix: the last n bytes.
            if !digits(last) {
                return Ranges::Whole;
            }
            let n: u64 = last.parse().unwrap_or(u64::MAX);
            (n > 0 && len > 0).then(|| (len.saturating_sub(n), len))
        } else {
            if !digits(first) || !(last.is_empty() || digits(last)) {
                return Ranges::Whole;
            }
            let start: u64 = first.parse().unwrap_or(u64::MAX);
            let end = if last.is_empty() {
                len
            } else {
                last.parse::<u64>()
                    .unwrap_or(u64::MAX)
                    .saturating_add(1)
                    .min(len)
            };
            if !last.is_empty() && last.parse::<u64>().unwrap_or(u64::MAX) < start {
                return Ranges::Whole;
            }
            (start < len).then_some((start, end))
        };
        parts.extend(range);
        if parts.len() > MAX_RANGES {
            return Ranges::Whole;
        }
    }
    match (any, parts.is_empty()) {
        (false, _) => Ranges::Whole,
        (true, true) => Ranges::Unsatisfiable,
        (true, false) => Ranges::Parts(parts),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_three_forms() {
        assert_eq!(parse("bytes=0-4", 10), Ranges::Parts(vec![(0, 5)]));
        assert_eq!(parse("bytes=5-", 10), Ranges::Parts(vec![(5, 10)]));
        assert_eq!(parse("bytes=-3", 10), Ranges::Parts(vec![(7, 10)]));
        assert_eq!(parse("bytes=8-100", 10), Ranges::Parts(vec![(8, 10)]));
        assert_eq!(
            parse("bytes=0-0,-1", 10),
            Ranges::Parts(vec![(0, 1), (9, 10)])
        );
    }

    #[test]
    fn unsatisfiable_and_malformed() {
        assert_eq!(parse("bytes=10-", 10), Ranges::Unsatisfiable);
        assert_eq!(parse("bytes=-0", 10), Ranges::Unsatisfiable);
        assert_eq!(parse("bytes=5-2", 10), Ranges::Whole);
        assert_eq!(parse("items=0-1", 10), Ranges::Whole);
        assert_eq!(parse("bytes=a-b", 10), Ranges::Whole);
    }
}
