//! Test fixture: a policy built against `outpost:edge@0.1.0` (the frozen
//! package in `wit/0.1`), without the SDK. Looks `host + path` up under a
//! `v0.1|` key, routes to `primary` then `secondary` with an `x-policy: v0.1`
//! header; on failures it moves on, and when the last backend fails it
//! answers 503 with every failure it was told of, as the 0.1 types say it.

use std::cell::RefCell;

wit_bindgen::generate!({
    path: "../../wit/0.1",
    world: "edge-policy",
});

use exports::outpost::edge::policy::Guest;
use outpost::edge::types::{
    Attempt, Decision, HeaderEdit, Lookup, Outcome, RequestHead, ResponseDecision, Route,
    SyntheticResponse,
};

std::thread_local! {
    /// The failures of this request's attempts (an instance serves one).
    static FAILURES: RefCell<Vec<String>> = const { RefCell::new(Vec::new()) };
}

struct V01;

impl Guest for V01 {
    fn on_request(request: &RequestHead) -> Decision {
        Decision::Lookup(Lookup {
            key: format!("v0.1|{}{}", request.authority(), request.path()),
            ttl: None,
            route: Route {
                backends: vec!["primary".into(), "secondary".into()],
                request_headers: vec![HeaderEdit::Set(("x-policy".into(), "v0.1".into()))],
            },
        })
    }

    fn on_response(_request: &RequestHead, attempt: Attempt, outcome: Outcome) -> ResponseDecision {
        let Outcome::Error(error) = outcome else {
            return ResponseDecision::Default;
        };
        FAILURES.with(|f| f.borrow_mut().push(format!("{}: {error:?}", attempt.backend)));
        if attempt.remaining > 0 {
            return ResponseDecision::TryNext;
        }
        let body = FAILURES.with(|f| f.borrow().join("\n"));
        ResponseDecision::Respond(SyntheticResponse {
            status: 503,
            headers: vec![("cache-control".into(), "no-store".into())],
            body: body.into_bytes(),
        })
    }
}

export!(V01);
