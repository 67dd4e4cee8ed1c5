//! `outpost new NAME`: a new policy crate, ready for `cargo test` and
//! `outpost dev NAME`, as `spin new` and `fastly compute init` do it.

use std::path::{Path, PathBuf};

#[derive(clap::Args)]
pub struct NewArgs {
    /// The policy's crate name, also its folder: lowercase letters, digits,
    /// `-` and `_`, starting with a letter.
    name: String,
    /// The folder to create it in (default: the current one).
    #[arg(long)]
    dir: Option<PathBuf>,
}

/// The guest SDK this node was built with; the new crate depends on it by
/// path (it is not published to a registry).
const SDK_DIR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../guest");

pub fn run(args: NewArgs) -> anyhow::Result<()> {
    let name = &args.name;
    let valid = name.starts_with(|c: char| c.is_ascii_lowercase())
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_');
    if !valid {
        anyhow::bail!(
            "{name:?}: a policy name is lowercase letters, digits, '-' and '_', starting with a letter"
        );
    }
    let parent = match args.dir {
        Some(dir) => dir,
        None => std::env::current_dir()?,
    };
    let root = parent.join(name);
    if root.exists() {
        anyhow::bail!("{} already exists; choose another name", root.display());
    }
    let sdk = Path::new(SDK_DIR)
        .canonicalize()
        .map_err(|e| anyhow::anyhow!("the guest SDK at {SDK_DIR}: {e}"))?;
    std::fs::create_dir_all(root.join("src"))?;
    let write = |path: &str, text: String| {
        std::fs::write(root.join(path), text)
            .map_err(|e| anyhow::anyhow!("{}: {e}", root.join(path).display()))
    };
    write("Cargo.toml", manifest(name, &sdk))?;
    write("src/lib.rs", skeleton(name))?;
    write(".gitignore", "/target\n/Cargo.lock\n".into())?;
    write(
        "rust-toolchain.toml",
        "[toolchain]\nchannel = \"1.95.0\"\ntargets = [\"wasm32-wasip2\"]\n".into(),
    )?;
    println!("created policy {name} in {}", root.display());
    println!(
        "  cd {} && cargo test        # its unit tests, natively",
        root.display()
    );
    println!(
        "  outpost dev {}              # serve it, reload on every change",
        root.display()
    );
    Ok(())
}

fn manifest(name: &str, sdk: &Path) -> String {
    format!(
        r#"[package]
name = "{name}"
version = "0.1.0"
edition = "2021"
publish = false

[lib]
# A wasm32-wasip2 cdylib is a component: the file `outpost dev` serves.
crate-type = ["cdylib"]

[dependencies]
outpost-guest = {{ path = {sdk:?}, features = ["no-std"] }}

# A policy is a workspace of its own.
[workspace]

[profile.release]
opt-level = "s"
lto = true
codegen-units = 1
panic = "abort"
strip = true
"#,
        sdk = sdk.display().to_string()
    )
}

fn skeleton(name: &str) -> String {
    let type_name: String = name
        .split(['-', '_'])
        .map(|part| {
            let mut chars = part.chars();
            chars
                .next()
                .map(|c| c.to_ascii_uppercase().to_string() + chars.as_str())
                .unwrap_or_default()
        })
        .collect();
    SKELETON
        .replace("NAME", name)
        .replace("TypeName", &type_name)
}

const SKELETON: &str = r#"//! NAME: an Outpost edge policy.
//!
//! `cargo test` runs the tests below natively; `outpost dev .` serves the
//! policy in front of an origin and reloads it on every change.

#![cfg_attr(not(test), no_std)]

extern crate alloc;

use alloc::format;

use outpost_guest::{export_policy, Decision, Policy, Request, Route};

struct TypeName;

impl Policy for TypeName {
    // No `on_response`: the host applies RFC 9111 to what the origin
    // answers without running the policy again. Set this to `true` (or
    // remove it) when you add one.
    const RESPONSE_HOOK: bool = false;

    fn on_request(req: &Request) -> Decision {
        // Reads share one cache entry per host and target, fetched from the
        // tenant's `origin` backend on a miss; writes go straight through.
        let route = Route::to("origin");
        if matches!(req.method().as_str(), "GET" | "HEAD") {
            Decision::lookup(format!("{}{}", req.host(), req.path_with_query()), route)
        } else {
            Decision::pass(route)
        }
    }
}

export_policy!(TypeName);

#[cfg(test)]
mod tests {
    use super::*;
    use outpost_guest::testing::TestRequest;

    #[test]
    fn reads_are_cached_by_host_and_target() {
        let req = TestRequest::get("/hello?x=1").authority("example.com");
        assert_eq!(
            TypeName::on_request(&req.as_request()),
            Decision::lookup("example.com/hello?x=1", Route::to("origin"))
        );
    }

    #[test]
    fn writes_are_passed_to_the_origin() {
        let req = TestRequest::new("POST", "/form");
        assert_eq!(TypeName::on_request(&req.as_request()), Decision::pass(Route::to("origin")));
    }
}
"#;
