//! Routes by `X-Service-Name` header first, then by path prefix, to named
//! backends. A service nobody declared gets `404 service not found`.
//!
//! Backends used: `billing`, `search`, `static`, and `web` (the default).

#![no_std]

extern crate alloc;

use alloc::format;

use outpost_guest::{export_policy, Decision, Policy, Request, Response, Route};

struct Router;

/// Path prefixes and the backend that serves them.
const PREFIXES: &[(&str, &str)] = &[("/billing/", "billing"), ("/search/", "search"), ("/static/", "static")];

/// Services a client may name in `X-Service-Name`.
const SERVICES: &[&str] = &["billing", "search", "static", "web"];

impl Policy for Router {
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
