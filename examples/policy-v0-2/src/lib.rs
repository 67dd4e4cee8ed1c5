//! Test fixture: a policy built against `outpost:edge@0.2.0` (the frozen
//! package in `wit/0.2`), without the SDK, as a policy made with the 0.2 SDK
//! was. 0.2 has no `route.response-hook`: its response hook runs after every
//! attempt. Looks `host + path` up under a `v0.2|` key and routes to
//! `primary` then `secondary` with an `x-policy: v0.2` header. Its response
//! hook stores every response for 60 s, tagged `v0.2`, whatever its headers
//! say, and moves on after a failure: a test sees the hook ran by what is
//! stored.

wit_bindgen::generate!({
    path: "../../wit/0.2",
    world: "edge-policy",
});

use exports::outpost::edge::policy::Guest;
use outpost::edge::types::{
    Attempt, Decision, HeaderEdit, Lookup, Outcome, RequestHead, ResponseDecision, Route,
    StoreOptions,
};

struct V02;

impl Guest for V02 {
    fn on_request(request: &RequestHead) -> Decision {
        Decision::Lookup(Lookup {
            key: format!("v0.2|{}{}", request.authority(), request.path()),
            ttl: None,
            route: Route {
                backends: vec!["primary".into(), "secondary".into()],
                request_headers: vec![HeaderEdit::Set(("x-policy".into(), "v0.2".into()))],
                hash_key: None,
            },
        })
    }

    fn on_response(_request: &RequestHead, attempt: Attempt, outcome: Outcome) -> ResponseDecision {
        match outcome {
            Outcome::Response(_) => ResponseDecision::Store(StoreOptions { ttl: 60, tags: vec!["v0.2".into()] }),
            Outcome::Error(_) if attempt.remaining > 0 => ResponseDecision::TryNext,
            Outcome::Error(_) => ResponseDecision::Default,
        }
    }
}

export!(V02);
