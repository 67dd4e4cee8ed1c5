//! The config file as a source of desired state: re-read on every SIGHUP.

use std::path::PathBuf;
use std::sync::Arc;

use super::Control;

/// Re-reads `path` on every SIGHUP and applies it; a bad file is logged and
/// the running tenants (and certificates) stay as they are.
pub async fn reload_on_sighup(control: Arc<Control>, path: PathBuf) {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        let Ok(mut hup) = signal(SignalKind::hangup()) else {
            return;
        };
        while hup.recv().await.is_some() {
            // `reload_file` logs the outcome.
            let _ = control.reload_file(&path).await;
        }
    }
    #[cfg(not(unix))]
    let _ = (control, path);
}
