//! `outpost dev`: the local development loop for a policy.
//!
//! Builds the guest crate for `wasm32-wasip2`, serves it, watches its
//! sources, rebuilds and hot-swaps on every change, and logs each request's
//! decision (cache key, backends, hit/miss) plus the guest's own log lines.
//! A failed build prints the compiler's errors and keeps the last good
//! version serving.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use super::{announce, quick_config, run as run_node, shutdown_signal, RunOptions};
use crate::config::{Config, PolicySource};
use crate::control::{Control, ControlError};

#[derive(clap::Args)]
pub struct DevArgs {
    /// A config file; the policy being developed replaces the policy of
    /// `--tenant` (default: the first tenant).
    #[arg(long, short)]
    config: Option<PathBuf>,
    /// The tenant that runs the policy being developed.
    #[arg(long, requires = "config")]
    tenant: Option<String>,
    /// Listen address (overrides the config's).
    #[arg(long, short = 'a')]
    listen: Option<SocketAddr>,
    /// Without --config: the backend `origin` every request goes to
    /// (default: the built-in demo origin on 127.0.0.1:8081).
    #[arg(long, short = 'b', conflicts_with = "config")]
    backend: Option<String>,
    /// The guest crate to build and watch.
    #[arg(default_value = ".")]
    crate_dir: PathBuf,
}

/// How often the sources are checked for changes.
const POLL: Duration = Duration::from_millis(300);

pub fn run(args: DevArgs) -> anyhow::Result<()> {
    let crate_dir = args
        .crate_dir
        .canonicalize()
        .map_err(|e| anyhow::anyhow!("guest crate {}: {e}", args.crate_dir.display()))?;
    if !crate_dir.join("Cargo.toml").is_file() {
        anyhow::bail!(
            "{} has no Cargo.toml: give the path of a policy crate",
            crate_dir.display()
        );
    }
    let mut config = match (&args.config, &args.backend) {
        (Some(path), _) => Config::load(path)?,
        (None, Some(backend)) => quick_config(backend, None)?,
        (None, None) => {
            let mut c = Config::embedded_default();
            c.tenants[0].hosts = vec!["*".into()];
            c
        }
    };
    if let Some(listen) = args.listen {
        config.server.listen = listen;
    }
    let index = match &args.tenant {
        Some(id) => config
            .tenants
            .iter()
            .position(|t| t.id == *id)
            .ok_or_else(|| anyhow::anyhow!("--tenant {id:?}: no such tenant in the config"))?,
        None if config.tenants.is_empty() => {
            anyhow::bail!("the config has no tenant to run the policy")
        }
        None => 0,
    };
    let tenant_id = config.tenants[index].id.clone();

    say(&format!("building {}", crate_dir.display()));
    match build(&crate_dir) {
        Ok(wasm) => config.tenants[index].policy = PolicySource::File(wasm),
        Err(errors) => {
            eprintln!("{errors}");
            say("build failed: serving the tenant's configured policy until a build succeeds");
        }
    }

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let options = RunOptions {
        config_path: None,
        trace_requests: true,
        ..RunOptions::default()
    };
    runtime.block_on(run_node(
        config,
        options,
        shutdown_signal(),
        |control, addr| {
            announce(addr);
            say(&format!(
                "serving tenant {tenant_id:?}; watching {} for changes",
                crate_dir.display()
            ));
            tokio::spawn(watch(control.clone(), tenant_id, crate_dir));
        },
    ))
}

/// A status line for the developer (stdout, so scripts can follow it).
fn say(message: &str) {
    println!("outpost dev: {message}");
}

/// Rebuilds and hot-swaps whenever the crate's sources change.
async fn watch(control: Arc<Control>, tenant_id: String, crate_dir: PathBuf) {
    let mut last = fingerprint(&crate_dir);
    loop {
        tokio::time::sleep(POLL).await;
        let now = fingerprint(&crate_dir);
        if now == last {
            continue;
        }
        last = now;
        say("change detected, rebuilding");
        let dir = crate_dir.clone();
        let built = tokio::task::spawn_blocking(move || build(&dir)).await;
        let wasm = match built {
            Ok(Ok(path)) => path,
            Ok(Err(errors)) => {
                eprintln!("{errors}");
                say("build failed; the previous version keeps serving");
                continue;
            }
            Err(e) => {
                say(&format!("build task failed: {e}"));
                continue;
            }
        };
        match swap_in(&control, &tenant_id, &wasm).await {
            Ok(version) => say(&format!(
                "reloaded: tenant {tenant_id:?} now runs {version}"
            )),
            Err(m) => say(&format!("not reloaded: {m}")),
        }
    }
}

/// Deploys and activates a freshly built component (validated and
/// smoke-called like any deploy).
async fn swap_in(
    control: &Control,
    tenant_id: &str,
    wasm: &Path,
) -> Result<Arc<str>, ControlError> {
    let bytes = std::fs::read(wasm)
        .map_err(|e| ControlError::Invalid(format!("cannot read {}: {e}", wasm.display())))?;
    let deployed = control.deploy(tenant_id, bytes.into(), true).await?;
    for warning in &deployed.warnings {
        eprintln!("warning: {warning}");
    }
    Ok(deployed.version)
}

/// Builds the crate for wasm32-wasip2; the component's path, or the
/// compiler's output.
fn build(crate_dir: &Path) -> Result<PathBuf, String> {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut cmd = Command::new(cargo);
    cmd.current_dir(crate_dir).args([
        "build",
        "--release",
        "--target",
        "wasm32-wasip2",
        "--message-format=json-render-diagnostics",
    ]);
    // Variables that a parent cargo (e.g. `cargo run`) meant for itself.
    for (key, _) in std::env::vars_os() {
        let key = key.to_string_lossy().into_owned();
        let keep = matches!(key.as_str(), "CARGO_HOME" | "CARGO_TARGET_DIR");
        if (key.starts_with("CARGO_") && !keep)
            || matches!(
                key.as_str(),
                "RUSTFLAGS" | "RUSTC_WRAPPER" | "RUSTC_WORKSPACE_WRAPPER"
            )
        {
            cmd.env_remove(&key);
        }
    }
    let out = cmd.output().map_err(|e| format!("cannot run cargo: {e}"))?;
    if !out.status.success() {
        return Err(String::from_utf8_lossy(&out.stderr).into_owned());
    }
    let stdout = String::from_utf8_lossy(&out.stdout);
    stdout
        .lines()
        .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
        .filter(|m| m["reason"] == "compiler-artifact")
        .flat_map(|m| {
            m["filenames"]
                .as_array()
                .cloned()
                .unwrap_or_default()
                .into_iter()
                .filter_map(|f| f.as_str().map(PathBuf::from))
                .collect::<Vec<_>>()
        })
        .rfind(|f| f.extension().is_some_and(|e| e == "wasm"))
        .ok_or_else(|| "the build produced no .wasm component: is the crate a cdylib?".to_string())
}

/// What changes when a source file changes: the number of files, their
/// total size and the newest modification time (`target/` and dot-dirs are
/// skipped).
fn fingerprint(dir: &Path) -> (usize, u64, SystemTime) {
    let mut acc = (0usize, 0u64, SystemTime::UNIX_EPOCH);
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for entry in entries.flatten() {
            let name = entry.file_name();
            let name = name.to_string_lossy();
            if name.starts_with('.') || name == "target" {
                continue;
            }
            let Ok(meta) = entry.metadata() else { continue };
            if meta.is_dir() {
                stack.push(entry.path());
            } else {
                acc.0 += 1;
                acc.1 += meta.len();
                if let Ok(modified) = meta.modified() {
                    acc.2 = acc.2.max(modified);
                }
            }
        }
    }
    acc
}
