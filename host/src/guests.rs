//! Policies that ship inside the binary, and where the build put the example
//! policies' components.

/// The example policies built by `build.rs` for `wasm32-wasip2`.
pub const EXAMPLES_WASM_DIR: &str = env!("OUTPOST_GUEST_WASM_DIR");

/// Policies a config can name as `builtin:NAME`.
pub const BUILTIN: &[(&str, &[u8])] = &[
    (
        "default",
        include_bytes!(concat!(
            env!("OUTPOST_GUEST_WASM_DIR"),
            "/default_policy.wasm"
        )),
    ),
    (
        "router",
        include_bytes!(concat!(env!("OUTPOST_GUEST_WASM_DIR"), "/router.wasm")),
    ),
    (
        "cache-key",
        include_bytes!(concat!(env!("OUTPOST_GUEST_WASM_DIR"), "/cache_key.wasm")),
    ),
    (
        "origin-fallback",
        include_bytes!(concat!(
            env!("OUTPOST_GUEST_WASM_DIR"),
            "/origin_fallback.wasm"
        )),
    ),
];

/// The component of a built-in policy.
pub fn builtin(name: &str) -> Option<&'static [u8]> {
    BUILTIN
        .iter()
        .find(|(n, _)| *n == name)
        .map(|(_, wasm)| *wasm)
}

/// The path of an example policy's component, e.g. `example_path("router")`.
pub fn example_path(name: &str) -> std::path::PathBuf {
    std::path::Path::new(EXAMPLES_WASM_DIR).join(format!("{}.wasm", name.replace('-', "_")))
}

#[cfg(test)]
mod tests {
    #[test]
    fn every_builtin_a_config_can_name_is_embedded() {
        for name in crate::config::BUILTIN_POLICIES {
            assert!(super::builtin(name).is_some(), "{name} is not embedded");
        }
        assert_eq!(super::BUILTIN.len(), crate::config::BUILTIN_POLICIES.len());
    }
}
