//! Builds the guest SDK's example policies for `wasm32-wasip2`.
//!
//! The inner cargo gets its own target dir (`target/guests`) and an
//! environment cleared of the outer build's `CARGO_*`/`RUSTFLAGS` variables,
//! so it neither waits on the outer build's lock nor builds for the host.

use std::path::{Path, PathBuf};
use std::process::Command;

/// Policies embedded in the binary (`builtin:NAME` in a config).
const EMBEDDED: &[&str] = &["default_policy", "router", "cache_key", "origin_fallback"];

fn main() {
    let manifest_dir = PathBuf::from(std::env::var_os("CARGO_MANIFEST_DIR").unwrap());
    let root = manifest_dir.parent().unwrap().to_path_buf();
    for watched in ["wit", "guest", "examples"] {
        println!("cargo:rerun-if-changed={}", root.join(watched).display());
    }

    let out_dir = PathBuf::from(std::env::var_os("OUT_DIR").unwrap());
    // OUT_DIR is <target>/<profile>/build/outpost-<hash>/out.
    let target_dir = out_dir
        .ancestors()
        .nth(4)
        .unwrap_or(&out_dir)
        .join("guests");
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    ensure_wasm_target();

    let mut cmd = Command::new(cargo);
    cmd.current_dir(root.join("examples"))
        .args([
            "build",
            "--release",
            "--target",
            "wasm32-wasip2",
            "--target-dir",
        ])
        .arg(&target_dir);
    for (key, _) in std::env::vars_os() {
        let key = key.to_string_lossy().into_owned();
        let outer_only = (key.starts_with("CARGO_") && key != "CARGO_HOME")
            || matches!(
                key.as_str(),
                "RUSTFLAGS"
                    | "RUSTC_WRAPPER"
                    | "RUSTC_WORKSPACE_WRAPPER"
                    | "RUSTDOCFLAGS"
                    | "TARGET"
                    | "HOST"
            );
        if outer_only {
            cmd.env_remove(&key);
        }
    }
    let status = cmd
        .status()
        .expect("running cargo to build the example policies");
    assert!(
        status.success(),
        "building the example policies for wasm32-wasip2 failed"
    );

    let wasm_dir = target_dir.join("wasm32-wasip2").join("release");
    for name in EMBEDDED {
        assert!(
            exists(&wasm_dir.join(format!("{name}.wasm"))),
            "missing {name}.wasm"
        );
    }
    println!(
        "cargo:rustc-env=OUTPOST_GUEST_WASM_DIR={}",
        wasm_dir.display()
    );
}

/// rust-toolchain.toml lists the target, but rustup adds listed targets
/// only when it installs the toolchain; add it here if it is missing so
/// a plain `cargo build` works on a fresh machine.
fn ensure_wasm_target() {
    let rustc = std::env::var_os("RUSTC").unwrap_or_else(|| "rustc".into());
    let sysroot = Command::new(rustc).args(["--print", "sysroot"]).output();
    let Ok(sysroot) = sysroot else { return };
    let sysroot = PathBuf::from(String::from_utf8_lossy(&sysroot.stdout).trim());
    if sysroot.join("lib/rustlib/wasm32-wasip2").is_dir() {
        return;
    }
    let mut add = Command::new("rustup");
    add.args(["target", "add", "wasm32-wasip2"]);
    if let Some(name) = sysroot.file_name() {
        // The toolchain directory name is the toolchain rustup knows.
        add.args(["--toolchain", &name.to_string_lossy()]);
    }
    match add.status() {
        Ok(s) if s.success() => {}
        _ => println!("cargo:warning=could not add the wasm32-wasip2 target; run `rustup target add wasm32-wasip2`"),
    }
}

fn exists(path: &Path) -> bool {
    path.is_file()
}
