//! Conditional requests answered from the cache (RFC 9110 section 13).

use http::header::{self, HeaderMap, HeaderValue};

use crate::cache::head::StoredHead;
use crate::cache::StoredResponse;

/// Whether a GET/HEAD with these headers should get 304 Not Modified for
/// `stored` (RFC 9110 section 13.2.2: If-None-Match, which uses weak
/// comparison, takes precedence over If-Modified-Since).
pub fn not_modified(request: &HeaderMap, stored: &StoredResponse) -> bool {
    if let Some(inm) = request.get(header::IF_NONE_MATCH) {
        let Some(etag) = stored.etag() else {
            return false;
        };
        return none_match_fails(inm, &etag);
    }
    if let Some(ims) = request.get(header::IF_MODIFIED_SINCE) {
        let (Some(since), Some(modified)) = (http_date(ims), last_modified(stored)) else {
            return false;
        };
        return modified <= since;
    }
    false
}

/// The date an If-Modified-Since is compared with: the stored
/// Last-Modified, else the stored Date (RFC 9111 section 4.3.2).
fn last_modified(stored: &StoredResponse) -> Option<std::time::SystemTime> {
    stored
        .last_modified()
        .and_then(|v| http_date(&v))
        .or_else(|| {
            stored
                .headers
                .get(&header::DATE)
                .and_then(|v| http_date(&v))
        })
}

/// If-None-Match evaluates false when any listed tag weakly matches, or
/// the field is `*` (section 13.1.2).
fn none_match_fails(field: &HeaderValue, etag: &HeaderValue) -> bool {
    let Ok(field) = field.to_str() else {
        return false;
    };
    if field.trim() == "*" {
        return true;
    }
    let ours = weak_form(etag.to_str().unwrap_or(""));
    field
        .split(',')
        .map(|t| weak_form(t.trim()))
        .any(|t| !t.is_empty() && t == ours)
}

/// The opaque tag without a `W/` prefix (weak comparison, section 8.8.3.2).
fn weak_form(tag: &str) -> &str {
    tag.trim().strip_prefix("W/").unwrap_or(tag.trim())
}

fn http_date(value: &HeaderValue) -> Option<std::time::SystemTime> {
    httpdate::parse_http_date(value.to_str().ok()?.trim()).ok()
}

/// The fields a 304 carries (RFC 9110 section 15.4.5).
pub fn not_modified_headers(stored: &StoredHead) -> HeaderMap {
    let mut out = HeaderMap::new();
    for name in [
        header::CACHE_CONTROL,
        header::CONTENT_LOCATION,
        header::DATE,
        header::ETAG,
        header::EXPIRES,
        header::VARY,
        header::LAST_MODIFIED,
    ] {
        for v in stored.get_all(&name) {
            out.append(name.clone(), v);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn if_modified_since_falls_back_to_the_stored_date() {
        let mut stored = HeaderMap::new();
        stored.insert(
            header::DATE,
            HeaderValue::from_static("Tue, 01 Dec 2026 08:00:00 GMT"),
        );
        let stored = crate::cache::test_ok(stored);
        let mut request = HeaderMap::new();
        request.insert(
            header::IF_MODIFIED_SINCE,
            HeaderValue::from_static("Tue, 01 Dec 2026 09:00:00 GMT"),
        );
        assert!(not_modified(&request, &stored));
        request.insert(
            header::IF_MODIFIED_SINCE,
            HeaderValue::from_static("Tue, 01 Dec 2026 07:00:00 GMT"),
        );
        assert!(!not_modified(&request, &stored));
    }

    #[test]
    fn weak_comparison_matches_across_w_prefix() {
        let etag = HeaderValue::from_static("\"abc\"");
        assert!(none_match_fails(
            &HeaderValue::from_static("W/\"abc\""),
            &etag
        ));
        assert!(none_match_fails(
            &HeaderValue::from_static("\"x\", \"abc\""),
            &etag
        ));
        assert!(!none_match_fails(&HeaderValue::from_static("\"x\""), &etag));
        assert!(none_match_fails(&HeaderValue::from_static("*"), &etag));
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(2048))]

        /// RFC 9110 section 13.1: any If-None-Match or If-Modified-Since
        /// against any stored ETag and Last-Modified.
        #[test]
        fn any_conditions_evaluate_without_panic(
            inm in crate::http::arbitrary::any_value(),
            ims in crate::http::arbitrary::any_value(),
            etag in crate::http::arbitrary::any_value(),
            modified in crate::http::arbitrary::any_value(),
            use_inm in proptest::prelude::any::<bool>(),
        ) {
            let mut stored = HeaderMap::new();
            stored.insert(header::ETAG, etag);
            stored.insert(header::LAST_MODIFIED, modified);
            let stored = crate::cache::test_ok(stored);
            let mut request = HeaderMap::new();
            if use_inm {
                request.insert(header::IF_NONE_MATCH, inm);
            }
            request.insert(header::IF_MODIFIED_SINCE, ims);
            let _ = not_modified(&request, &stored);
            let _ = not_modified_headers(&stored.headers);
        }
    }
}
