//! The config file as a source of desired state: re-read on every SIGHUP.

use std::path::PathBuf;
use std::sync::Arc;

use super::Control;

/// Re-reads `path` on every SIGHUP and applies it; a bad file is logged and
/// the running tenants (and certificates) stay as they are. Without a file
/// to re-read (a fleet node, whose tenants come from etcd; quick mode), a
/// SIGHUP is logged and changes nothing: it never stops the node, as the
/// signal's default action would.
pub async fn reload_on_sighup(control: Arc<Control>, path: Option<PathBuf>) {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        let Ok(mut hup) = signal(SignalKind::hangup()) else {
            return;
        };
        while hup.recv().await.is_some() {
            match &path {
                // `reload_file` logs the outcome.
                Some(path) => {
                    let _ = control.reload_file(path).await;
                }
                None => tracing::warn!(
                    "SIGHUP: nothing to re-read (a fleet node's tenants come from etcd; \
                     its config file's other settings take effect at a restart)"
                ),
            }
        }
    }
    #[cfg(not(unix))]
    let _ = (control, path);
}
