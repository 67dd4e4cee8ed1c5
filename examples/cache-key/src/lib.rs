//! Normalises the cache key so equivalent URLs share one entry:
//! - the host is lowercased (and its port dropped);
//! - query parameters are sorted;
//! - tracking parameters (`utm_*`, `fbclid`, `gclid`) are dropped;
//! - mobile and desktop clients get separate variants, by User-Agent class.
//!
//! The request sent to the origin is unchanged: only the key is normalised.

#![cfg_attr(not(test), no_std)]

extern crate alloc;

use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;

use outpost_guest::{export_policy, Decision, Policy, Request, Route};

struct CacheKey;

fn is_tracking(name: &str) -> bool {
    name.starts_with("utm_") || name == "fbclid" || name == "gclid"
}

/// Sorted query without tracking parameters; `None` when nothing is left.
fn normalise_query(query: &str) -> Option<String> {
    let mut params: Vec<&str> = query
        .split('&')
        .filter(|p| !p.is_empty())
        .filter(|p| !is_tracking(p.split('=').next().unwrap_or("")))
        .collect();
    if params.is_empty() {
        return None;
    }
    params.sort_unstable();
    Some(params.join("&"))
}

/// `mobile` or `desktop`, from the User-Agent.
fn device_class(user_agent: Option<&str>) -> &'static str {
    let ua = user_agent.unwrap_or("");
    const MOBILE: &[&str] = &["Mobile", "Android", "iPhone", "iPad", "iPod", "Opera Mini", "IEMobile"];
    if MOBILE.iter().any(|m| ua.contains(m)) {
        "mobile"
    } else {
        "desktop"
    }
}

impl Policy for CacheKey {
    // No response hook: the host applies RFC 9111 to what the origin
    // answers, and the instance is gone before the origin is asked.
    const RESPONSE_HOOK: bool = false;

    fn on_request(req: &Request) -> Decision {
        let host = req.host().to_ascii_lowercase();
        let mut key = format!("{}|{}{}", device_class(req.header("user-agent").as_deref()), host, req.path());
        if let Some(query) = req.query().as_deref().and_then(normalise_query) {
            key.push('?');
            key.push_str(&query);
        }
        Decision::lookup(key, Route::to("origin"))
    }
}

export_policy!(CacheKey);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tracking_parameters_are_dropped_and_the_rest_sorted() {
        assert_eq!(normalise_query("b=2&a=1&utm_source=x").as_deref(), Some("a=1&b=2"));
        assert_eq!(normalise_query("fbclid=1&gclid=2"), None);
    }

    #[test]
    fn phones_are_mobile() {
        assert_eq!(device_class(Some("Mozilla/5.0 (iPhone; CPU iPhone OS 17_0)")), "mobile");
        assert_eq!(device_class(Some("Mozilla/5.0 (X11; Linux x86_64)")), "desktop");
        assert_eq!(device_class(None), "desktop");
    }
}
