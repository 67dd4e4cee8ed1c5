//! Running a node: the control plane, its sources (config file on SIGHUP,
//! admin API) and the listeners, until shutdown.

use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use futures::FutureExt;
use tokio::net::TcpListener;

use crate::config::Config;
use crate::control::Control;
use crate::tenant::SniCertificates;
use crate::tls::{Fixed, Terminator};

/// How `run` was asked to serve.
#[derive(Default)]
pub struct RunOptions {
    /// The file to re-read on SIGHUP and `POST /reload`.
    pub config_path: Option<PathBuf>,
    /// Log every request's decision.
    pub trace_requests: bool,
    /// Listening sockets passed in (socket activation), used instead of
    /// binding `server.listen` / `server.tls.listen`.
    pub listeners: crate::server::Inherited,
    /// Tenants from a fleet's etcd instead of the config file.
    pub fleet: Option<FleetOptions>,
}

/// `--etcd` and its companions.
#[derive(Debug, Clone)]
pub struct FleetOptions {
    pub endpoints: Vec<String>,
    pub prefix: String,
    pub pop: String,
    /// Where the last known good state is kept.
    pub state_dir: PathBuf,
    /// Where the POP's other nodes reach this one (default: the listener).
    pub advertise: Option<SocketAddr>,
}

/// Binds the node's listeners and serves until `shutdown` resolves.
/// `on_ready` gets the control plane and the bound address (the port may
/// have been 0).
pub async fn run(
    config: Config,
    options: RunOptions,
    shutdown: impl Future<Output = ()> + Send + 'static,
    on_ready: impl FnOnce(&Arc<Control>, SocketAddr),
) -> anyhow::Result<()> {
    let control = Control::build(&config, options.trace_requests)?;
    if let Some(demo) = &config.demo_origin {
        let listener = bind(demo.listen, "demo_origin.listen").await?;
        tracing::info!("demo origin listening on http://{}", listener.local_addr()?);
        tokio::spawn(crate::demo_origin::serve(listener));
    }
    let fleet_status = options
        .fleet
        .as_ref()
        .map(|_| Arc::new(crate::fleet::FleetStatus::default()));
    if let Some(admin) = &config.admin {
        let reload = options.config_path.clone();
        let link = options.fleet.as_ref().map(|f| crate::fleet::Link {
            endpoints: f.endpoints.clone(),
            layout: crate::fleet::keys::Layout::new(&f.prefix),
        });
        let fleet = (fleet_status.clone(), link);
        start_admin(&config, admin, &control, reload, fleet).await?;
    }
    tokio::spawn(crate::control::sighup::reload_on_sighup(
        control.clone(),
        options.config_path,
    ));
    // The threads requests are served on, one per core.
    let lanes = Arc::new(crate::server::Lanes::per_core()?);
    // Fair shares of guest CPU between tenants (tenant::cpu_share): guests
    // run on the lanes.
    tokio::spawn(crate::tenant::cpu_share::balance(
        control.context().tenants.clone(),
        lanes.count(),
    ));
    let ctx = control.context().clone();
    let handler = move |request, connection| crate::proxy::handle(ctx.clone(), request, connection);
    let shutdown = shutdown.shared();
    let mut tls_listener = None;
    let mut inherited = options.listeners;
    if let Some(tls) = &config.server.tls {
        let listener = match inherited.tls.take() {
            Some(socket) => TcpListener::from_std(socket)?,
            None => crate::server::bind(tls.listen, config.server.listen_backlog)
                .map_err(|e| anyhow::anyhow!("server.tls.listen {}: {e}", tls.listen))?,
        };
        let addr = listener.local_addr()?;
        let _ = control.context().https_port.set(addr.port());
        let certificates = Arc::new(SniCertificates(control.context().tenants.clone()));
        let terminator = Terminator::new(certificates)?;
        // Tests and scripts read this line to find the TLS port.
        println!("outpost listening on https://{addr}");
        tls_listener = Some(tokio::spawn(crate::server::serve(
            listener,
            lanes.clone(),
            Some(terminator),
            handler.clone(),
            config.server.clone(),
            control.context().metrics.clone(),
            shutdown.clone(),
        )));
    }
    let listen = config.server.listen;
    let listener = match inherited.plain.take() {
        Some(socket) => TcpListener::from_std(socket)?,
        None => crate::server::bind(listen, config.server.listen_backlog)
            .map_err(|e| anyhow::anyhow!("server.listen {listen}: {e}"))?,
    };
    if inherited.tls.is_some() {
        anyhow::bail!("LISTEN_FDS passed a TLS socket but the config has no [server.tls]");
    }
    let addr = listener.local_addr()?;
    if let (Some(fleet), Some(status)) = (options.fleet, fleet_status) {
        start_fleet(&control, fleet, status, config.server.node_id(), addr);
    }
    for tenant in control.context().tenants.load().tenants() {
        tracing::info!(
            tenant = &*tenant.id,
            version = &*tenant.policy.load().version,
            "tenant ready"
        );
    }
    on_ready(&control, addr);
    let metrics = control.context().metrics.clone();
    crate::server::serve(
        listener,
        lanes.clone(),
        None,
        handler,
        config.server.clone(),
        metrics,
        shutdown,
    )
    .await;
    if let Some(tls) = tls_listener {
        let _ = tls.await;
    }
    // The spans of the last requests, sent before the process ends. The
    // SDK's thread waits for the export, which runs on this runtime: wait
    // for it off the runtime's threads.
    let ctx = control.context().clone();
    if ctx.spans.is_some() {
        let _ = tokio::task::spawn_blocking(move || ctx.spans.as_ref().map(|s| s.flush())).await;
    }
    Ok(())
}

/// Follows the fleet's etcd in the background, as `node_id`, reachable
/// at `listening` unless `--advertise` says otherwise.
fn start_fleet(
    control: &Arc<Control>,
    fleet: FleetOptions,
    status: Arc<crate::fleet::FleetStatus>,
    node_id: String,
    listening: SocketAddr,
) {
    let address = fleet.advertise.unwrap_or(listening);
    if address.ip().is_unspecified() {
        tracing::warn!(
            "the POP's other nodes are told to reach this one at {address}: \
             give --advertise with an address they can reach"
        );
    }
    let member = crate::fleet::membership::Member {
        node_id,
        pop: fleet.pop,
        address,
    };
    let sync = crate::fleet::sync::Sync::new(
        control.clone(),
        crate::fleet::keys::Layout::new(&fleet.prefix),
        fleet.endpoints,
        status,
        member,
        crate::fleet::snapshot::Snapshot::new(&fleet.state_dir),
    );
    tokio::spawn(sync.run());
}

/// Binds the admin listener (over TLS when `[admin.tls]` is set) and
/// serves it in the background.
async fn start_admin(
    config: &Config,
    admin: &crate::config::AdminConfig,
    control: &Arc<Control>,
    config_path: Option<PathBuf>,
    (fleet, fleet_link): (
        Option<Arc<crate::fleet::FleetStatus>>,
        Option<crate::fleet::Link>,
    ),
) -> anyhow::Result<()> {
    let tls = match &admin.tls {
        None => None,
        Some(files) => {
            let files = files.resolved(&config.base_dir);
            let certificate = crate::tls::load_certificate(&files, &[])
                .map_err(|e| config.field_error(&config.source_name, e.within("admin.tls.")))?;
            Some(Terminator::new(Arc::new(Fixed(certificate)))?)
        }
    };
    let listener = bind(admin.listen, "admin.listen").await?;
    let scheme = if tls.is_some() { "https" } else { "http" };
    // Tests and scripts read this line to find the admin port.
    println!("outpost admin on {scheme}://{}", listener.local_addr()?);
    let admin = crate::admin::Admin {
        control: control.clone(),
        token: admin.resolved_token().unwrap_or_default().into(),
        config_path,
        fleet,
        fleet_link,
    };
    tokio::spawn(crate::admin::serve(listener, admin, tls));
    Ok(())
}

async fn bind(addr: SocketAddr, field: &str) -> anyhow::Result<TcpListener> {
    TcpListener::bind(addr)
        .await
        .map_err(|e| anyhow::anyhow!("{field} {addr}: {e}"))
}
