//! Fetches from `primary`; on a connection error, timeout or 5xx tries
//! `secondary`; when both fail, serves a stale cached copy if there is one,
//! else a synthetic 503 page.

#![no_std]

extern crate alloc;

use alloc::format;

use outpost_guest::{
    export_policy, Attempt, Decision, Outcome, Policy, Request, Response, ResponseDecision, Route,
};

struct OriginFallback;

const UNAVAILABLE_PAGE: &str = "<!doctype html>\n<title>Temporarily unavailable</title>\n\
<h1>Temporarily unavailable</h1>\n<p>The site is unavailable right now. Please try again in a minute.</p>\n";

impl Policy for OriginFallback {
    fn on_request(req: &Request) -> Decision {
        let key = format!("{}{}", req.host(), req.path_with_query());
        let route = Route::to("primary").then("secondary");
        if matches!(req.method().as_str(), "GET" | "HEAD") {
            Decision::lookup(key, route)
        } else {
            Decision::pass(route)
        }
    }

    fn on_response(_req: &Request, attempt: &Attempt, outcome: &Outcome) -> ResponseDecision {
        if !outcome.is_failure() {
            return ResponseDecision::Default;
        }
        if attempt.remaining > 0 {
            ResponseDecision::TryNext
        } else if attempt.stale_available {
            ResponseDecision::ServeStale
        } else {
            ResponseDecision::Respond(
                Response::new(503)
                    .header("content-type", "text/html; charset=utf-8")
                    .header("retry-after", "30")
                    .header("cache-control", "no-store")
                    .body(UNAVAILABLE_PAGE),
            )
        }
    }
}

export_policy!(OriginFallback);
