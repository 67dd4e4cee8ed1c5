//! Security and browser headers on every response, decided in the request
//! hook so a cache hit runs no policy code to get them (a decision the node
//! reuses carries them):
//!
//! - CORS for the origins in the tenant's `cors_origins` var (comma
//!   separated): `Access-Control-Allow-Origin` naming the request's
//!   `Origin` when it is listed, with `Vary: Origin`; preflights
//!   (`OPTIONS` with `Access-Control-Request-Method`) answered `204` here;
//! - `Strict-Transport-Security` (two years, subdomains);
//! - `X-Content-Type-Options: nosniff` and `Referrer-Policy`;
//! - `Server` removed;
//! - a browser `Cache-Control` (`browser_max_age` var, 60 s by default)
//!   apart from the edge's lifetime (`edge_ttl` var, 3600 s by default):
//!   the edge keeps a page an hour while browsers ask again after a minute.
//!
//! Backend used: `origin`.

#![cfg_attr(not(test), no_std)]

extern crate alloc;

use alloc::format;
use alloc::string::String;

use outpost_guest::host;
use outpost_guest::{export_policy, Decision, Policy, Request, Response, Route};

struct SecurityHeaders;

impl Policy for SecurityHeaders {
    const RESPONSE_HOOK: bool = false;

    fn on_request(req: &Request) -> Decision {
        let allowed_origin = req.header("origin").filter(|origin| {
            host::config("cors_origins")
                .is_some_and(|list| list.split(',').any(|o| o.trim().eq_ignore_ascii_case(origin)))
        });
        if req.method() == "OPTIONS" && req.header("access-control-request-method").is_some() {
            return Decision::respond(preflight(allowed_origin));
        }
        let browser_max_age = var_u32("browser_max_age", 60);
        let edge_ttl = var_u32("edge_ttl", 3600);
        let mut route = Route::to("origin")
            .set_response_header("strict-transport-security", "max-age=63072000; includeSubDomains")
            .set_response_header("x-content-type-options", "nosniff")
            .set_response_header("referrer-policy", "strict-origin-when-cross-origin")
            .remove_response_header("server")
            .set_response_header("cache-control", format!("public, max-age={browser_max_age}"))
            .append_response_header("vary", "origin");
        if let Some(origin) = allowed_origin {
            route = route.set_response_header("access-control-allow-origin", origin);
        }
        if matches!(req.method().as_str(), "GET" | "HEAD") {
            Decision::lookup(req.path_with_query(), route).with_ttl(edge_ttl)
        } else {
            Decision::pass(route)
        }
    }
}

/// The answer to a CORS preflight: allowed for a listed origin, without
/// the allow headers (so the browser refuses) for any other.
fn preflight(allowed_origin: Option<String>) -> Response {
    let response = Response::new(204).header("vary", "origin");
    match allowed_origin {
        Some(origin) => response
            .header("access-control-allow-origin", origin)
            .header("access-control-allow-methods", "GET, HEAD, POST, PUT, DELETE")
            .header("access-control-allow-headers", "content-type, authorization")
            .header("access-control-max-age", "600"),
        None => response,
    }
}

fn var_u32(name: &str, default: u32) -> u32 {
    host::config(name).and_then(|v| v.trim().parse().ok()).unwrap_or(default)
}

export_policy!(SecurityHeaders);

#[cfg(test)]
mod tests {
    use super::*;
    use outpost_guest::testing::{set_var, TestRequest};

    /// The route every response gets, with this browser lifetime and CORS
    /// origin.
    fn expected(browser_max_age: u32, cors: Option<&str>) -> Route {
        let route = Route::to("origin")
            .set_response_header("strict-transport-security", "max-age=63072000; includeSubDomains")
            .set_response_header("x-content-type-options", "nosniff")
            .set_response_header("referrer-policy", "strict-origin-when-cross-origin")
            .remove_response_header("server")
            .set_response_header("cache-control", format!("public, max-age={browser_max_age}"))
            .append_response_header("vary", "origin");
        match cors {
            Some(origin) => route.set_response_header("access-control-allow-origin", origin),
            None => route,
        }
    }

    #[test]
    fn a_listed_origin_gets_cors_and_every_response_gets_the_security_headers() {
        set_var("cors_origins", "https://app.example, https://admin.example");
        let req = TestRequest::get("/api/items").header("origin", "https://app.example");
        assert_eq!(
            SecurityHeaders::on_request(&req.as_request()),
            Decision::lookup("/api/items", expected(60, Some("https://app.example"))).with_ttl(3600)
        );
    }

    #[test]
    fn an_unlisted_origin_gets_no_cors_header() {
        set_var("cors_origins", "https://app.example");
        let req = TestRequest::get("/").header("origin", "https://evil.example");
        assert_eq!(SecurityHeaders::on_request(&req.as_request()), Decision::lookup("/", expected(60, None)).with_ttl(3600));
        let req = TestRequest::new("OPTIONS", "/api").header("origin", "https://evil.example").header("access-control-request-method", "PUT");
        match SecurityHeaders::on_request(&req.as_request()) {
            Decision::Respond(r) => {
                assert_eq!(r.status, 204);
                assert!(!r.headers.iter().any(|(n, _)| n == "access-control-allow-origin"));
            }
            other => panic!("{other:?}"),
        }
        let req = TestRequest::new("OPTIONS", "/api").header("origin", "https://app.example").header("access-control-request-method", "PUT");
        match SecurityHeaders::on_request(&req.as_request()) {
            Decision::Respond(r) => assert!(r.headers.contains(&("access-control-allow-origin".into(), "https://app.example".into()))),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn the_browser_lifetime_and_the_edge_lifetime_are_set_apart() {
        set_var("browser_max_age", "30");
        set_var("edge_ttl", "86400");
        let req = TestRequest::get("/page");
        assert_eq!(
            SecurityHeaders::on_request(&req.as_request()),
            Decision::lookup("/page", expected(30, None)).with_ttl(86400)
        );
    }
}
