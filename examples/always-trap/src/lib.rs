//! Test fixture: a policy that panics on every request. The admin API must
//! refuse to deploy it (its smoke call traps).

#![no_std]

extern crate alloc;


use outpost_guest::{export_policy, Decision, Policy, Request};

struct AlwaysTrap;

impl Policy for AlwaysTrap {
    fn on_request(_req: &Request) -> Decision {
        panic!("always-trap panics on every request")
    }
}

export_policy!(AlwaysTrap);
