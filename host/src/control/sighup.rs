//! The config file as a source of desired state: re-read on every SIGHUP.

use std::path::PathBuf;
use std::sync::Arc;

use super::{Control, ControlError};
use crate::config::Config;

/// Re-reads `path` on every SIGHUP and applies it; a bad file is logged and
/// the running tenants stay as they are.
pub async fn reload_on_sighup(control: Arc<Control>, path: PathBuf) {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        let Ok(mut hup) = signal(SignalKind::hangup()) else {
            return;
        };
        let source_name = path.display().to_string();
        while hup.recv().await.is_some() {
            let result = match Config::load(&path) {
                Ok(config) => control.reload(config, &source_name).await,
                Err(e) => Err(ControlError::Config(e)),
            };
            match result {
                Ok(()) => tracing::info!("reloaded {source_name}"),
                Err(e) => tracing::error!("reload failed, keeping the running tenants: {e}"),
            }
        }
    }
    #[cfg(not(unix))]
    let _ = (control, path);
}
