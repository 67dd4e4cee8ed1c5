//! The built-in policy: every request is a cache lookup keyed by host, path
//! and query, fetched from the tenant's first backend (named `origin`), with
//! freshness and storage decided by the response headers (RFC 9111).

#![no_std]

extern crate alloc;

use alloc::format;

use outpost_guest::{export_policy, Decision, Policy, Request, Route};

struct DefaultPolicy;

impl Policy for DefaultPolicy {
    // No response hook: the host applies RFC 9111 to what the origin
    // answers, and the instance is gone before the origin is asked.
    const RESPONSE_HOOK: bool = false;

    fn on_request(req: &Request) -> Decision {
        let key = format!("{}{}", req.host(), req.path_with_query());
        Decision::lookup(key, Route::to("origin"))
    }
}

export_policy!(DefaultPolicy);
