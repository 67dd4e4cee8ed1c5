//! Steers by backend health and hashes by user (the `outpost:edge@0.2`
//! additions): requests go to `primary` while it has a healthy member, else
//! straight to `secondary` without a failed attempt; a pool with
//! `balance = "hash"` keeps one user's requests (`x-user`) on one member.
//! When the last attempt failed it answers 503 saying why (the error as the
//! 0.2 types tell it); `x-show-member: 1` answers which member served, and
//! which failed before it, instead of the origin's response.

#![cfg_attr(not(test), no_std)]

extern crate alloc;

use alloc::format;

use outpost_guest::{
    export_policy, host, Attempt, Decision, Outcome, Policy, Request, Response, ResponseDecision,
    Route,
};

struct PoolSteering;

impl Policy for PoolSteering {
    fn on_request(req: &Request) -> Decision {
        let first = if host::backend_healthy("primary") { "primary" } else { "secondary" };
        let mut route = Route::to(first);
        if first == "primary" {
            route = route.then("secondary");
        }
        if let Some(user) = req.header("x-user") {
            route = route.hash_key(user);
        }
        Decision::pass(route)
    }

    fn on_response(req: &Request, attempt: &Attempt, outcome: &Outcome) -> ResponseDecision {
        match outcome {
            Outcome::Error(_) if attempt.remaining > 0 => ResponseDecision::TryNext,
            Outcome::Error(error) => {
                let body = format!("{}: {error:?}", attempt.backend);
                ResponseDecision::Respond(Response::new(503).header("cache-control", "no-store").body(body))
            }
            Outcome::Response(_) if req.header("x-show-member").is_some() => {
                let member = attempt.member.clone().unwrap_or_default();
                let mut body = format!("{} {member}", attempt.backend);
                for (failed, error) in &attempt.failed_members {
                    body.push_str(&format!(" (after {failed}: {error:?})"));
                }
                ResponseDecision::Respond(Response::new(200).body(body))
            }
            Outcome::Response(_) => ResponseDecision::Default,
        }
    }
}

export_policy!(PoolSteering);

#[cfg(test)]
mod tests {
    use super::*;
    use outpost_guest::testing::{set_unhealthy, TestRequest};

    #[test]
    fn an_unhealthy_primary_is_skipped_before_trying() {
        let req = TestRequest::get("/a").header("x-user", "ada");
        let both = Route::to("primary").then("secondary").hash_key("ada");
        assert_eq!(PoolSteering::on_request(&req.as_request()), Decision::pass(both));
        set_unhealthy("primary");
        let secondary = Route::to("secondary").hash_key("ada");
        assert_eq!(PoolSteering::on_request(&req.as_request()), Decision::pass(secondary));
    }
}
