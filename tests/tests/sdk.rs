//! The guest SDK as a policy author meets it: policies unit-tested with
//! plain `cargo test` on the host target, and `outpost new` for a new one.

use std::path::{Path, PathBuf};
use std::process::Command;

use outpost_e2e::{Client, Node, Origin, Reply};

/// A target dir of the tests' own for the policy crates built here, so
/// reruns are incremental and the workspace's build is not disturbed.
fn policy_target_dir() -> PathBuf {
    let bin = outpost_e2e::outpost_bin();
    let profile_dir = bin.parent().unwrap();
    profile_dir.parent().unwrap().join("policy-tests")
}

/// `cargo ARGS` in `dir`, without the variables the outer cargo set for
/// itself. Returns the combined output on failure.
fn cargo(dir: &Path, args: &[&str]) -> Result<String, String> {
    let mut cmd = Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()));
    cmd.current_dir(dir).args(args);
    for (key, _) in std::env::vars_os() {
        let key = key.to_string_lossy().into_owned();
        if (key.starts_with("CARGO_") && key != "CARGO_HOME")
            || matches!(key.as_str(), "RUSTFLAGS" | "RUSTC_WRAPPER" | "RUSTDOCFLAGS")
        {
            cmd.env_remove(&key);
        }
    }
    cmd.env("CARGO_TARGET_DIR", policy_target_dir());
    let out = cmd.output().map_err(|e| e.to_string())?;
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    if out.status.success() {
        Ok(text)
    } else {
        Err(text)
    }
}

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

#[test]
fn the_sdk_and_the_example_policies_pass_their_native_unit_tests() {
    for crate_dir in ["guest", "examples"] {
        let out = cargo(&repo().join(crate_dir), &["test", "-q"])
            .unwrap_or_else(|e| panic!("cargo test in {crate_dir} failed:\n{e}"));
        assert!(out.contains("test result: ok"), "{crate_dir}: {out}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn outpost_new_writes_a_policy_that_cargo_test_passes_and_dev_serves() {
    let dir = outpost_e2e::scratch_dir();
    let made = Command::new(outpost_e2e::outpost_bin())
        .args(["new", "my-edge", "--dir", dir.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(
        made.status.success(),
        "{}",
        String::from_utf8_lossy(&made.stderr)
    );
    let policy = dir.join("my-edge");
    let tested = cargo(&policy, &["test"]).unwrap_or_else(|e| panic!("cargo test failed:\n{e}"));
    assert!(tested.contains("2 passed"), "{tested}");

    // A second `new` with the same name refuses to overwrite it.
    let again = Command::new(outpost_e2e::outpost_bin())
        .args(["new", "my-edge", "--dir", dir.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(!again.status.success());
    assert!(String::from_utf8_lossy(&again.stderr).contains("already exists"));

    let origin = Origin::start("origin").await;
    origin.reply("/hello", Reply::ok().body("hi from the origin"));
    let target_dir = policy_target_dir();
    let node = Node::spawn_env(
        &[
            "dev",
            policy.to_str().unwrap(),
            "--backend",
            &origin.url(),
            "--listen",
            "127.0.0.1:0",
        ],
        &dir,
        &[("CARGO_TARGET_DIR", target_dir.to_str().unwrap())],
    );
    let client = Client::new();
    let first = client.get(&node, "site.test", "/hello").await;
    assert_eq!(first.status, 200, "{}", node.log());
    assert_eq!(first.text(), "hi from the origin");
    let second = client.get(&node, "site.test", "/hello").await;
    assert!(
        second.cache_status().contains("hit"),
        "{}",
        second.cache_status()
    );
    assert_eq!(origin.hits("/hello"), 1);
}
