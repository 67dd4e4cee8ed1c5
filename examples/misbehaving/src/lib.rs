//! A deliberately broken policy for testing the sandbox. Never deploy it.
//!
//! - `/trap`: panics (a wasm trap);
//! - `/loop`: spins forever (cut off by the tenant's CPU deadline);
//! - `/grow`: allocates until memory runs out (the tenant's memory limit);
//! - `/fetch/NAME`: fetches `/` from backend NAME through the host;
//! - `/fetch-many/N/NAME`: fetches `/` from NAME N times;
//! - `/vars/KEY`: answers with config value KEY;
//! - `/undeclared-hook`: a lookup to `origin` whose route declares no
//!   response hook, while `on_response` stores every response for 60 s
//!   whatever its headers say (the host's check must catch it);
//! - `/count`: answers how many requests this instance has served (always 1
//!   with a fresh instance per request; grows when the tenant reuses them);
//! - anything else: a normal lookup to backend `origin`.

#![no_std]

extern crate alloc;

use alloc::format;
use alloc::string::ToString;
use alloc::vec::Vec;
use alloc::vec;

use outpost_guest::{
    export_policy, host, Attempt, Decision, Outcome, Policy, Request, Response, ResponseDecision, Route,
};

struct Misbehaving;

impl Policy for Misbehaving {
    fn on_request(req: &Request) -> Decision {
        let path = req.path();
        match path.as_str() {
            "/trap" => panic!("the misbehaving policy panicked on purpose"),
            "/loop" => {
                let mut n: u64 = 0;
                loop {
                    n = core::hint::black_box(n.wrapping_add(1));
                }
            }
            "/grow" => {
                let mut hoard: Vec<Vec<u8>> = Vec::new();
                loop {
                    hoard.push(vec![1u8; 1 << 20]);
                    core::hint::black_box(&hoard);
                }
            }
            _ => {}
        }
        if let Some(name) = path.strip_prefix("/fetch/") {
            return match host::fetch(name, "/") {
                Ok(r) => Decision::respond(Response::new(r.status).body(r.body)),
                Err(e) => Decision::respond(Response::text(502, format!("fetch failed: {e:?}\n"))),
            };
        }
        if let Some(rest) = path.strip_prefix("/fetch-many/") {
            let (count, name) = rest.split_once('/').unwrap_or(("1", rest));
            let count: u32 = count.parse().unwrap_or(1);
            for i in 0..count {
                if let Err(e) = host::fetch(name, "/") {
                    return Decision::respond(Response::text(502, format!("fetch {i} failed: {e:?}\n")));
                }
            }
            return Decision::respond(Response::text(200, format!("{count} fetches\n")));
        }
        if path == "/count" {
            static SERVED: core::sync::atomic::AtomicU32 = core::sync::atomic::AtomicU32::new(0);
            let n = SERVED.fetch_add(1, core::sync::atomic::Ordering::Relaxed) + 1;
            return Decision::respond(Response::text(200, format!("{n}")));
        }
        if let Some(key) = path.strip_prefix("/vars/") {
            let value = host::config(key).unwrap_or_else(|| "<unset>".to_string());
            return Decision::respond(Response::text(200, value));
        }
        if path == "/undeclared-hook" {
            return Decision::lookup(req.path_with_query(), Route::to("origin").response_hook(false));
        }
        Decision::lookup(req.path_with_query(), Route::to("origin"))
    }

    fn on_response(req: &Request, _attempt: &Attempt, outcome: &Outcome) -> ResponseDecision {
        match outcome {
            Outcome::Response(_) if req.path() == "/undeclared-hook" => {
                ResponseDecision::Store(outpost_guest::StoreOptions::new().ttl(60))
            }
            _ => ResponseDecision::Default,
        }
    }
}

export_policy!(Misbehaving);
