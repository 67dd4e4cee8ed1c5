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
//!     // No `on_response` below: the host need not run the policy again
//!     // when the origin answers.
//!     const RESPONSE_HOOK: bool = false;
//!
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
//!
//! The SDK itself is `no_std` (it needs only `alloc`). A policy that is
//! `#![no_std]` too, with the `no-std` feature, compiles to a
//! component with no WASI imports at all, which makes every per-request
//! instantiation cheaper still; the examples do this.
//!
//! Policies are unit-tested with plain `cargo test` on the host target:
//! [`testing`] builds requests and backend responses from parts and stands
//! in for the node's capabilities.

#![no_std]

extern crate alloc;

#[cfg(all(feature = "arena", target_arch = "wasm32"))]
mod arena;

/// For `#![no_std]` policies: a panic traps the instance (the host answers
/// that request with a 500 and logs it).
#[cfg(all(feature = "no-std", target_arch = "wasm32"))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    core::arch::wasm32::unreachable()
}

/// For `#![no_std]` policies: the canonical ABI's allocation entry point,
/// which the host calls to pass strings and lists in (std provides it
/// otherwise). Backed by the global allocator.
///
/// # Safety
/// Called by the component runtime only, with the canonical ABI's
/// contract: `old_ptr`/`old_len`/`align` describe a live allocation (or
/// `old_len` is 0).
#[cfg(all(feature = "no-std", target_arch = "wasm32"))]
#[no_mangle]
pub unsafe extern "C" fn cabi_realloc(
    old_ptr: *mut u8,
    old_len: usize,
    align: usize,
    new_len: usize,
) -> *mut u8 {
    use alloc::alloc::{alloc, realloc, Layout};
    let ptr = if old_len == 0 {
        if new_len == 0 {
            return align as *mut u8;
        }
        alloc(Layout::from_size_align_unchecked(new_len, align))
    } else {
        realloc(
            old_ptr,
            Layout::from_size_align_unchecked(old_len, align),
            new_len,
        )
    };
    if ptr.is_null() {
        core::arch::wasm32::unreachable()
    }
    ptr
}

/// For `#![no_std]` policies: `memcmp`, which wasm32-wasip2 code expects
/// from libc (slice and string comparisons call it). Volatile reads keep
/// the compiler from turning this loop back into a `memcmp` call.
///
/// # Safety
/// `a` and `b` must be valid for reads of `n` bytes.
#[cfg(all(feature = "no-std", target_arch = "wasm32"))]
#[no_mangle]
pub unsafe extern "C" fn memcmp(a: *const u8, b: *const u8, n: usize) -> i32 {
    for i in 0..n {
        let (x, y) = (
            core::ptr::read_volatile(a.add(i)),
            core::ptr::read_volatile(b.add(i)),
        );
        if x != y {
            return i32::from(x) - i32::from(y);
        }
    }
    0
}

/// For `#![no_std]` policies: `bcmp` (equality-only `memcmp`).
///
/// # Safety
/// As `memcmp`.
#[cfg(all(feature = "no-std", target_arch = "wasm32"))]
#[no_mangle]
pub unsafe extern "C" fn bcmp(a: *const u8, b: *const u8, n: usize) -> i32 {
    memcmp(a, b, n)
}
mod convert;
pub mod host;
pub mod testing;
mod types;

pub use types::{
    Attempt, Decision, FetchError, OriginResponse, Outcome, Request, Response, ResponseDecision,
    Route, Signature, StoreOptions,
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

    /// Whether the host calls [`Policy::on_response`] after the backend
    /// attempts of this policy's routes (a [`Route::response_hook`] says
    /// otherwise for its own decision).
    ///
    /// A policy that keeps the default `on_response` sets this to `false`:
    /// the host then applies the default itself, releases the instance as
    /// soon as `on_request` returns instead of holding it through the
    /// backend's round trip, and runs no wasm at all for a decision it
    /// reuses. The host still calls `on_response` on a small sample of such
    /// requests, and if it ever answers anything but
    /// [`ResponseDecision::Default`], calls it on every request from then on
    /// and reports the mismatch. `true` by default, so a policy that
    /// implements `on_response` never loses it by omission.
    const RESPONSE_HOOK: bool = true;

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
        P::on_request(&Request::new(head)).into_wit(P::RESPONSE_HOOK)
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
