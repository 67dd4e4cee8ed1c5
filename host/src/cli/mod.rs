//! The `outpost` command line: `serve`, `check`, `dev`, `new`, `status`,
//! `deploy`, `purge`, `sign`.

mod deploy;
mod dev;
mod fleet_purge;
mod fleet_status;
mod new;
mod rollout;
mod serve;
mod sign;
mod status;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use crate::config::{BackendConfig, BackendUrl, Config, LimitsConfig, PolicySource, TenantConfig};
pub use serve::{run, RunOptions};

#[derive(Parser)]
#[command(
    name = "outpost",
    version,
    about = "A programmable CDN edge node: per-tenant wasm policy in front of your origins"
)]
struct Cli {
    /// The node's own log on stderr: `plain` text or one `json` object per
    /// line (for log shippers). The filter is `OUTPOST_LOG` (default
    /// `info`).
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Plain, env = "OUTPOST_LOG_FORMAT")]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum LogFormat {
    Plain,
    Json,
}

#[derive(Subcommand)]
enum Command {
    /// Serve HTTP. With no options: the embedded demo config on 127.0.0.1:8080.
    Serve(ServeArgs),
    /// Check a config file (and compile its policies) without serving.
    Check {
        #[arg(long, short)]
        config: PathBuf,
    },
    /// Develop a policy: build the guest crate, serve it, rebuild and
    /// hot-swap on every change, log each request's decision.
    Dev(dev::DevArgs),
    /// Create a new policy crate: a `no_std` skeleton on the guest SDK with
    /// a native unit test, ready for `cargo test` and `outpost dev NAME`.
    New(new::NewArgs),
    /// The status page in the terminal: tenants, rates, hit ratio,
    /// latency, backend members (from a running node's admin API).
    Status(status::StatusArgs),
    /// Deploy a module to a tenant of a fleet, through etcd: validated here
    /// as the admin API would, then published for every node.
    Deploy(deploy::DeployArgs),
    /// Purge a tenant's cache on every node of a fleet, through etcd;
    /// answers when every live node has done it.
    Purge(fleet_purge::PurgeArgs),
    /// Print a signed link for a tenant's `[tenant.signed_urls]`, made with
    /// its current signing key (read from its secrets, as a node would).
    Sign(sign::SignArgs),
}

#[derive(clap::Args, Default)]
struct ServeArgs {
    /// A TOML config file.
    #[arg(long, short, conflicts_with_all = ["backend", "policy"])]
    config: Option<PathBuf>,
    /// Listen address (overrides the config's `server.listen`).
    #[arg(long, short = 'a')]
    listen: Option<SocketAddr>,
    /// Quick mode: every Host is one tenant whose only backend, `origin`, is this URL.
    #[arg(long, short = 'b')]
    backend: Option<String>,
    /// Quick mode: the policy component (default: the built-in default policy).
    #[arg(long, requires = "backend")]
    policy: Option<PathBuf>,
    /// Join a fleet: its tenants and module versions come from these etcd
    /// endpoints (comma-separated URLs); the config file gives the rest.
    #[arg(long, value_delimiter = ',', conflicts_with_all = ["backend", "policy"])]
    etcd: Vec<String>,
    /// This node's id in the fleet (default: `server.node_id`).
    #[arg(long, requires = "etcd")]
    node_id: Option<String>,
    /// The POP this node belongs to.
    #[arg(long, requires = "etcd", default_value = "default")]
    pop: String,
    /// Where the fleet's keys live in etcd.
    #[arg(long, requires = "etcd", default_value = "/outpost")]
    prefix: String,
    /// Where the node keeps the last state it applied, to serve from when
    /// it starts while etcd is unreachable.
    #[arg(long, requires = "etcd", default_value = "outpost-state")]
    state_dir: PathBuf,
    /// The address the other nodes of the POP reach this node's HTTP
    /// listener at (default: the listener's address; give one when it
    /// listens on 0.0.0.0).
    #[arg(long, requires = "etcd")]
    advertise: Option<std::net::SocketAddr>,
}

/// Runs the command line; the exit code says whether it worked.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging(cli.log_format);
    let result = match cli.command.unwrap_or(Command::Serve(ServeArgs::default())) {
        Command::Serve(args) => serve(args),
        Command::Check { config } => check(&config),
        Command::Dev(args) => dev::run(args),
        Command::New(args) => new::run(args),
        Command::Status(args) => status::run(args),
        Command::Deploy(args) => deploy::run(args),
        Command::Purge(args) => fleet_purge::run(args),
        Command::Sign(args) => sign::run(args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("outpost: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn init_logging(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("OUTPOST_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let logs = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Json => logs.json().init(),
        LogFormat::Plain => {
            // Colours only on a terminal: log files and pipes get plain text.
            use std::io::IsTerminal;
            logs.with_ansi(std::io::stderr().is_terminal()).init();
        }
    }
}

fn serve(args: ServeArgs) -> anyhow::Result<()> {
    // Before any thread: it clears the LISTEN_* variables.
    let listeners = crate::server::Inherited::take().map_err(anyhow::Error::msg)?;
    let mut config = if let Some(path) = &args.config {
        Config::load(path)?
    } else if let Some(backend) = &args.backend {
        quick_config(backend, args.policy.as_deref())?
    } else {
        Config::embedded_default()
    };
    if let Some(listen) = args.listen {
        config.server.listen = listen;
    }
    let fleet = (!args.etcd.is_empty()).then(|| {
        if !config.tenants.is_empty() {
            tracing::info!(
                "in a fleet, tenants come from etcd: the config's tenants are not served"
            );
            config.tenants.clear();
        }
        if let Some(id) = args.node_id.clone() {
            config.server.node_id = Some(id);
        }
        serve::FleetOptions {
            endpoints: args.etcd.clone(),
            prefix: args.prefix.clone(),
            pop: args.pop.clone(),
            state_dir: args.state_dir.clone(),
            advertise: args.advertise,
        }
    });
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let options = RunOptions {
        // In a fleet the file's tenants are not served: nothing to reload.
        config_path: args.config.clone().filter(|_| fleet.is_none()),
        trace_requests: false,
        listeners,
        fleet,
    };
    runtime.block_on(run(config, options, shutdown_signal(), |_, addr| {
        announce(addr)
    }))
}

/// Tests and scripts read this line to find the port.
fn announce(addr: SocketAddr) {
    println!("outpost listening on http://{addr}");
}

/// `outpost check`: the config loads, every tenant builds (policies
/// compiled, secrets read, certificates loaded), and each policy's smoke
/// call is run; its warnings are printed, the check still passes.
fn check(path: &std::path::Path) -> anyhow::Result<()> {
    let config = Config::load(path)?;
    let control = crate::control::Control::build(&config, false)?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    for warning in runtime.block_on(control.check_policies()) {
        println!("warning: {warning}");
    }
    println!("{}: ok", path.display());
    Ok(())
}

/// A config for `serve --backend URL [--policy FILE]`.
fn quick_config(backend: &str, policy: Option<&std::path::Path>) -> anyhow::Result<Config> {
    let mut config = Config::embedded_default();
    config.demo_origin = None;
    config.base_dir = std::env::current_dir()?;
    config.source_name = "--backend/--policy".into();
    config.detach_source();
    config.tenants = vec![TenantConfig {
        id: "default".into(),
        hosts: vec!["*".into()],
        policy: match policy {
            Some(p) => PolicySource::File(p.to_path_buf()),
            None => PolicySource::Builtin("default"),
        },
        limits: LimitsConfig::default(),
        backends: [(
            "origin".to_string(),
            BackendConfig::new(
                BackendUrl::parse(backend).map_err(|m| anyhow::anyhow!("--backend: {m}"))?,
            ),
        )]
        .into(),
        vars: Default::default(),
        cache_quota_mb: None,
        debug_cache_key: false,
        max_object_mb: None,
        max_body_mb: crate::config::DEFAULT_MAX_BODY_MB,
        reuse_instances: false,
        memoize_decisions: true,
        tls: None,
        force_https: false,
        strip_cdn_cache_control: false,
        secrets: Default::default(),
        signed_urls: None,
        limiters: Default::default(),
        counters: Default::default(),
    }];
    config
        .validate()
        .map_err(|e| anyhow::anyhow!("--backend/--policy: {e}"))?;
    Ok(config)
}

/// Resolves on SIGINT or SIGTERM.
async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .expect("SIGTERM handler");
        tokio::select! {
            _ = ctrl_c => {},
            _ = term.recv() => {},
        }
    }
    #[cfg(not(unix))]
    {
        let _ = ctrl_c.await;
    }
    tracing::info!("shutting down: draining requests in flight");
}
