//! Test fixture: a valid component that is not a policy (it exports nothing
//! of `outpost:edge`). The node must reject it with a message saying so.

#[no_mangle]
pub extern "C" fn answer() -> i32 {
    42
}
