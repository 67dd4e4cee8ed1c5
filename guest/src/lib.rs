//! The SDK for Outpost edge policies.
//!
//! A policy is a type that implements [`Policy`], exported with
//! [`export_policy!`], built as a `cdylib` for `wasm32-wasip2`:
//!
//! ```ignore
//! use outpost_guest::{export_policy, Decision, Policy, Request, Route};
//!
//! struct Everything;
//!
//! impl Policy for Everything {
//!     fn on_request(req: &Request) -> Decision {
//!         Decision::lookup(req.path_with_query(), Route::to("origin"))
//!     }
//! }
//!
//! export_policy!(Everything);
//! ```
//!
//! The host creates a fresh instance for every client request, calls
//! [`Policy::on_request`] with the request head, and, after each backend
//! attempt, [`Policy::on_response`] in the same instance. Nothing survives
//! from one request to the next, so a policy never needs to free memory: the
//! default `arena` feature installs a bump allocator over a static buffer,
//! which keeps instantiation cheap.

#[cfg(all(feature = "arena", target_arch = "wasm32"))]
mod arena;
mod convert;
pub mod host;
mod types;

pub use types::{
    Attempt, Decision, FetchError, OriginResponse, Outcome, Request, Response, ResponseDecision,
    Route,
};

/// The raw bindings generated from `wit/edge.wit`. Policies use the types
/// re-exported at the crate root instead; these are public only for the
/// [`export_policy!`] macro.
#[doc(hidden)]
pub mod bindings {
    wit_bindgen::generate!({
        path: "../wit",
        world: "edge-policy",
        pub_export_macro: true,
        export_macro_name: "__export_edge_policy",
        default_bindings_module: "::outpost_guest::bindings",
    });
}

/// What a policy decides. Both hooks are plain functions: a policy has no
/// state that outlives a request.
pub trait Policy {
    /// Decides what the host does with a client request: answer it, look it
    /// up in the cache (fetching on a miss), or pass it to a backend.
    fn on_request(req: &Request) -> Decision;

    /// Decides what the host does with one backend attempt. The default
    /// follows RFC 9111: store what the response's headers allow, try the
    /// next backend on a connection error, then answer 502/504.
    fn on_response(req: &Request, attempt: &Attempt, outcome: &Outcome) -> ResponseDecision {
        let _ = (req, attempt, outcome);
        ResponseDecision::Default
    }
}

/// Glue used by [`export_policy!`]; not part of the API.
#[doc(hidden)]
pub mod __private {
    pub use crate::bindings::__export_edge_policy;
    pub use crate::bindings::exports::outpost::edge::policy::Guest;
    use crate::bindings::outpost::edge::types as wit;
    pub use crate::bindings::outpost::edge::types::{
        Attempt as WitAttempt, Decision as WitDecision, Outcome as WitOutcome,
        ResponseDecision as WitResponseDecision,
    };
    use crate::{Attempt, Outcome, Policy, Request};

    /// How wit-bindgen passes `borrow<request-head>` to an export.
    pub type RequestHeadParam<'a> = &'a wit::RequestHead;

    pub fn on_request<P: Policy>(head: &wit::RequestHead) -> wit::Decision {
        P::on_request(&Request::new(head)).into()
    }

    pub fn on_response<P: Policy>(
        head: &wit::RequestHead,
        attempt: wit::Attempt,
        outcome: wit::Outcome,
    ) -> wit::ResponseDecision {
        let attempt = Attempt::from(attempt);
        let outcome = Outcome::from(outcome);
        P::on_response(&Request::new(head), &attempt, &outcome).into()
    }
}

/// Exports a [`Policy`] implementation as the component's `policy` interface.
#[macro_export]
macro_rules! export_policy {
    ($policy:ty) => {
        #[doc(hidden)]
        pub struct __OutpostPolicyExport;

        impl $crate::__private::Guest for __OutpostPolicyExport {
            fn on_request(
                request: $crate::__private::RequestHeadParam<'_>,
            ) -> $crate::__private::WitDecision {
                $crate::__private::on_request::<$policy>(request)
            }

            fn on_response(
                request: $crate::__private::RequestHeadParam<'_>,
                attempt: $crate::__private::WitAttempt,
                outcome: $crate::__private::WitOutcome,
            ) -> $crate::__private::WitResponseDecision {
                $crate::__private::on_response::<$policy>(request, attempt, outcome)
            }
        }

        $crate::__private::__export_edge_policy!(
            __OutpostPolicyExport with_types_in $crate::bindings
        );
    };
}
