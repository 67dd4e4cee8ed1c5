//! Fetches from `primary`; on a connection error, timeout or 5xx tries
//! `secondary`; when both fail, serves a stale cached copy if there is one,
//! else a synthetic 503 page.

#![cfg_attr(not(test), no_std)]

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

#[cfg(test)]
mod tests {
    use super::*;
    use outpost_guest::testing::{failed, TestRequest, TestResponse};
    use outpost_guest::FetchError;

    fn attempt(backend: &str, remaining: u32, stale_available: bool) -> Attempt {
        Attempt { backend: backend.into(), index: 1 - remaining, remaining, stale_available, member: None, failed_members: alloc::vec::Vec::new() }
    }

    #[test]
    fn reads_are_cached_under_host_and_target_writes_are_passed() {
        let get = TestRequest::get("/a?b=1").authority("Shop.Example");
        assert_eq!(
            OriginFallback::on_request(&get.as_request()),
            Decision::lookup("shop.example/a?b=1", Route::to("primary").then("secondary"))
        );
        let post = TestRequest::new("POST", "/cart");
        assert_eq!(
            OriginFallback::on_request(&post.as_request()),
            Decision::pass(Route::to("primary").then("secondary"))
        );
    }

    #[test]
    fn a_failing_primary_moves_on_then_stale_then_a_503_page() {
        let req = TestRequest::get("/");
        let req = req.as_request();
        let down = failed(FetchError::Timeout);
        assert_eq!(OriginFallback::on_response(&req, &attempt("primary", 1, false), &down), ResponseDecision::TryNext);
        let error = TestResponse::new(502).outcome();
        assert_eq!(
            OriginFallback::on_response(&req, &attempt("secondary", 0, true), &error),
            ResponseDecision::ServeStale
        );
        match OriginFallback::on_response(&req, &attempt("secondary", 0, false), &error) {
            ResponseDecision::Respond(page) => assert_eq!(page.status, 503),
            other => panic!("{other:?}"),
        }
        let ok = TestResponse::new(200).outcome();
        assert_eq!(OriginFallback::on_response(&req, &attempt("primary", 1, false), &ok), ResponseDecision::Default);
    }
}
