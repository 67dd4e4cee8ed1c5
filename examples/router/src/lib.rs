//! Routes by `X-Service-Name` header first, then by path prefix, to named
//! backends. A service nobody declared gets `404 service not found`.
//!
//! Backends used: `billing`, `search`, `static`, and `web` (the default).

#![cfg_attr(not(test), no_std)]

extern crate alloc;

use alloc::format;

use outpost_guest::{export_policy, Decision, Policy, Request, Response, Route};

struct Router;

/// Path prefixes and the backend that serves them.
const PREFIXES: &[(&str, &str)] = &[("/billing/", "billing"), ("/search/", "search"), ("/static/", "static")];

/// Services a client may name in `X-Service-Name`.
const SERVICES: &[&str] = &["billing", "search", "static", "web"];

impl Policy for Router {
    // No response hook: the host applies RFC 9111 to what the origin
    // answers, and the instance is gone before the origin is asked.
    const RESPONSE_HOOK: bool = false;

    fn on_request(req: &Request) -> Decision {
        let backend = match req.header("x-service-name") {
            Some(service) => {
                let service = service.trim().to_ascii_lowercase();
                match SERVICES.iter().find(|s| **s == service) {
                    Some(s) => *s,
                    None => return Decision::respond(Response::text(404, "service not found\n")),
                }
            }
            None => {
                let path = req.path();
                PREFIXES
                    .iter()
                    .find(|(prefix, _)| path.starts_with(prefix))
                    .map(|(_, backend)| *backend)
                    .unwrap_or("web")
            }
        };
        // The service is part of the key: two services may share a path.
        let key = format!("{}|{}{}", backend, req.host(), req.path_with_query());
        let route = Route::to(backend).set_header("x-service-name", backend);
        if matches!(req.method().as_str(), "GET" | "HEAD") {
            Decision::lookup(key, route)
        } else {
            Decision::pass(route)
        }
    }
}

export_policy!(Router);

#[cfg(test)]
mod tests {
    use super::*;
    use outpost_guest::testing::TestRequest;

    #[test]
    fn the_service_header_wins_over_the_path() {
        let req = TestRequest::get("/search/q").authority("api.test").header("X-Service-Name", " Billing ");
        assert_eq!(
            Router::on_request(&req.as_request()),
            Decision::lookup("billing|api.test/search/q", Route::to("billing").set_header("x-service-name", "billing"))
        );
    }

    #[test]
    fn paths_pick_backends_and_unknown_services_get_404() {
        let req = TestRequest::get("/static/app.js").authority("api.test");
        assert_eq!(
            Router::on_request(&req.as_request()),
            Decision::lookup("static|api.test/static/app.js", Route::to("static").set_header("x-service-name", "static"))
        );
        let req = TestRequest::get("/").header("x-service-name", "nope");
        match Router::on_request(&req.as_request()) {
            Decision::Respond(r) => assert_eq!(r.status, 404),
            other => panic!("{other:?}"),
        }
    }
}
