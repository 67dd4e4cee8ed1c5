//! An API gateway: the service comes from `X-Service-Name` or the first
//! path segment, the prefix is stripped before forwarding (`/billing/v1/x`
//! reaches the billing service as `/v1/x`, as nginx's `proxy_pass
//! http://billing/;` in a `location /billing/` does), and every call of an
//! API key (`X-Api-Key`, else the client's address) is held to the
//! tenant's `per-key` limiter, answered `429` with `Retry-After` past it.
//!
//! GETs are cached per service and forwarded target: the origins' own
//! `Cache-Control` decides for how long, and the response hook tags what is
//! stored with the service's name (so `purge --tag billing` drops one
//! service's objects) and removes `Set-Cookie` from it first, without
//! overriding the lifetime. Other methods are passed.
//!
//! Backends used: one per service in `SERVICES`.

#![cfg_attr(not(test), no_std)]

extern crate alloc;

use alloc::format;

use outpost_guest::host::{self, CallError, RateVerdict};
use outpost_guest::{
    export_policy, Attempt, Decision, Outcome, Policy, Request, Response, ResponseDecision, Route, StoreOptions,
};

struct Gateway;

/// The services behind the gateway; each is a backend of the same name.
const SERVICES: &[&str] = &["billing", "search", "users"];

impl Policy for Gateway {
    // Only cached GETs ask for the response hook (`Route::response_hook`).
    const RESPONSE_HOOK: bool = false;

    fn on_request(req: &Request) -> Decision {
        // Every call counts against its key, unknown services included.
        let caller = req.header("x-api-key").unwrap_or_else(|| req.client_addr());
        match host::rate_check("per-key", &caller, 1) {
            Ok(RateVerdict::Allow) => {}
            Ok(RateVerdict::Deny { retry_after }) => {
                return Decision::respond(
                    problem(429, "rate limit exceeded").header("retry-after", format!("{retry_after}")),
                );
            }
            // A gateway without the limiter declared is misconfigured:
            // say so rather than run unlimited.
            Err(CallError::Undeclared(name)) => {
                return Decision::respond(problem(500, &format!("the limiter {name} is not declared")));
            }
            Err(_) => return Decision::respond(problem(503, "the limiter is unavailable")),
        }
        let path = req.path();
        let (service, route) = match req.header("x-service-name") {
            Some(named) => {
                let named = named.trim().to_ascii_lowercase();
                let Some(service) = SERVICES.iter().find(|s| **s == named) else {
                    return Decision::respond(problem(404, "no such service"));
                };
                (*service, Route::to(*service))
            }
            None => {
                let first = path.trim_start_matches('/').split('/').next().unwrap_or("");
                let Some(service) = SERVICES.iter().find(|s| **s == first) else {
                    return Decision::respond(problem(404, "no such service"));
                };
                let prefix = format!("/{service}");
                (*service, Route::to(*service).strip_prefix(req, &prefix))
            }
        };
        let route = route.set_header("x-service-name", service);
        if matches!(req.method().as_str(), "GET" | "HEAD") {
            let key = format!("{service}|{}", route.forwarded_target(req));
            Decision::lookup(key, route.response_hook(true))
        } else {
            Decision::pass(route)
        }
    }

    fn on_response(_req: &Request, attempt: &Attempt, outcome: &Outcome) -> ResponseDecision {
        match outcome {
            Outcome::Response(r) if r.status() < 400 => {
                ResponseDecision::Store(StoreOptions::new().tag(attempt.backend.clone()).remove_header("set-cookie"))
            }
            _ => ResponseDecision::Default,
        }
    }
}

/// An RFC 9457 problem document.
fn problem(status: u16, title: &str) -> Response {
    let mut body = format!("{{\"status\":{status},\"title\":\"");
    for c in title.chars() {
        match c {
            '"' | '\\' => {
                body.push('\\');
                body.push(c);
            }
            c if (c as u32) < 0x20 => body.push(' '),
            c => body.push(c),
        }
    }
    body.push_str("\"}\n");
    Response::new(status).header("content-type", "application/problem+json").body(body)
}

export_policy!(Gateway);

#[cfg(test)]
mod tests {
    use super::*;
    use outpost_guest::testing::{attempt, declare_limiter, deny, TestRequest, TestResponse};

    #[test]
    fn the_prefix_picks_the_service_and_is_stripped_before_forwarding() {
        declare_limiter("per-key");
        let req = TestRequest::get("/billing/v1/invoices?id=3").header("x-api-key", "k1");
        let route = Route::to("billing").rewrite("/v1/invoices?id=3").set_header("x-service-name", "billing");
        assert_eq!(
            Gateway::on_request(&req.as_request()),
            Decision::lookup("billing|/v1/invoices?id=3", route.response_hook(true))
        );
        let req = TestRequest::new("POST", "/users");
        let route = Route::to("users").rewrite("/").set_header("x-service-name", "users");
        assert_eq!(Gateway::on_request(&req.as_request()), Decision::pass(route));
    }

    #[test]
    fn the_service_header_keeps_the_path_as_it_is() {
        declare_limiter("per-key");
        let req = TestRequest::get("/v1/search?q=a").header("X-Service-Name", "Search");
        let route = Route::to("search").set_header("x-service-name", "search").response_hook(true);
        assert_eq!(Gateway::on_request(&req.as_request()), Decision::lookup("search|/v1/search?q=a", route));
        let req = TestRequest::get("/v1/x").header("x-service-name", "payroll");
        assert!(matches!(Gateway::on_request(&req.as_request()), Decision::Respond(r) if r.status == 404));
    }

    #[test]
    fn what_is_stored_is_tagged_with_the_service_and_loses_its_cookies() {
        let req = TestRequest::get("/billing/v1");
        let ok = TestResponse::new(200).header("set-cookie", "s=1").outcome();
        assert_eq!(
            Gateway::on_response(&req.as_request(), &attempt("billing"), &ok),
            ResponseDecision::Store(StoreOptions::new().tag("billing").remove_header("set-cookie"))
        );
        let failed = TestResponse::new(503).outcome();
        assert_eq!(Gateway::on_response(&req.as_request(), &attempt("billing"), &failed), ResponseDecision::Default);
    }

    #[test]
    fn a_key_over_its_rate_gets_429_with_retry_after() {
        deny("per-key", "k2", 7);
        let req = TestRequest::get("/search/q").header("x-api-key", "k2");
        match Gateway::on_request(&req.as_request()) {
            Decision::Respond(r) => {
                assert_eq!(r.status, 429);
                assert!(r.headers.contains(&("retry-after".into(), "7".into())));
            }
            other => panic!("{other:?}"),
        }
        // Another key is not held back.
        let req = TestRequest::get("/search/q").header("x-api-key", "k3");
        assert!(matches!(Gateway::on_request(&req.as_request()), Decision::Lookup { .. }));
    }
}
