//! Running a node: the control plane, its sources (config file on SIGHUP,
//! admin API) and the listeners, until shutdown.

use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use tokio::net::TcpListener;

use crate::config::Config;
use crate::control::Control;

/// How `run` was asked to serve.
#[derive(Default)]
pub struct RunOptions {
    /// The file to re-read on SIGHUP.
    pub config_path: Option<PathBuf>,
    /// Log every request's decision.
    pub trace_requests: bool,
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
    if let Some(admin) = &config.admin {
        let listener = bind(admin.listen, "admin.listen").await?;
        let token: Arc<str> = admin.resolved_token().unwrap_or_default().into();
        // Tests and scripts read this line to find the admin port.
        println!("outpost admin on http://{}", listener.local_addr()?);
        tokio::spawn(crate::admin::serve(listener, control.clone(), token));
    }
    if let Some(path) = options.config_path {
        tokio::spawn(crate::control::sighup::reload_on_sighup(
            control.clone(),
            path,
        ));
    }
    let listen = config.server.listen;
    let listener = crate::server::bind(listen, config.server.listen_backlog)
        .map_err(|e| anyhow::anyhow!("server.listen {listen}: {e}"))?;
    let addr = listener.local_addr()?;
    let ctx = control.context().clone();
    for tenant in ctx.tenants.load().tenants() {
        tracing::info!(
            tenant = &*tenant.id,
            version = &*tenant.policy.load().version,
            "tenant ready"
        );
    }
    on_ready(&control, addr);
    let handler = move |request, client_ip| crate::proxy::handle(ctx.clone(), request, client_ip);
    crate::server::serve(listener, handler, &config.server, shutdown).await;
    Ok(())
}

async fn bind(addr: SocketAddr, field: &str) -> anyhow::Result<TcpListener> {
    TcpListener::bind(addr)
        .await
        .map_err(|e| anyhow::anyhow!("{field} {addr}: {e}"))
}
