//! The HTTP client of one backend: its connector (TCP with the connect
//! timeout, TLS for https members) and the pool of idle HTTP/1.1
//! connections it keeps per member.

use std::path::Path;
use std::time::Duration;

use hyper_rustls::{FixedServerNameResolver, HttpsConnector};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;

use crate::config::{BackendConfig, FieldError};
use crate::http::ProxyBody;

pub(super) type HttpClient = Client<HttpsConnector<HttpConnector>, ProxyBody>;

/// How long an idle pooled connection is kept.
const POOL_IDLE: Duration = Duration::from_secs(60);

/// Idle connections kept per member.
const POOL_MAX_IDLE: usize = 256;

/// The client for a (validated) backend config; relative TLS file paths
/// are resolved against `base_dir`. The error names the field under the
/// backend (`tls.ca`, ...).
pub(super) fn build(config: &BackendConfig, base_dir: &Path) -> Result<HttpClient, FieldError> {
    let mut connector = HttpConnector::new();
    connector.set_connect_timeout(Some(Duration::from_millis(config.connect_timeout_ms)));
    connector.set_nodelay(true);
    connector.enforce_http(false);
    let tls = config.tls.as_ref();
    let builder = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(crate::tls::client_config(tls, base_dir)?)
        .https_or_http();
    let builder = match tls.and_then(|t| t.server_name.clone()) {
        // Checked by `BackendConfig::validate`.
        Some(name) => match rustls_pki_types::ServerName::try_from(name) {
            Ok(name) => builder.with_server_name_resolver(FixedServerNameResolver::new(name)),
            Err(e) => return Err(FieldError::new("tls.server_name", e.to_string())),
        },
        None => builder,
    };
    let https = builder.enable_http1().wrap_connector(connector);
    Ok(Client::builder(TokioExecutor::new())
        .pool_idle_timeout(POOL_IDLE)
        .pool_max_idle_per_host(POOL_MAX_IDLE)
        .build(https))
}
