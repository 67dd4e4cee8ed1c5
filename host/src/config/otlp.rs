//! `[server.otlp]`: where the node sends the spans of its requests, over
//! OTLP/HTTP with protobuf bodies (the OpenTelemetry Protocol
//! specification, "OTLP/HTTP").

use std::collections::BTreeMap;

use serde::Deserialize;

use super::validate::{at_least_one, check};
use super::{BackendTlsConfig, FieldError};

#[derive(Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct OtlpConfig {
    /// The collector's traces URL, path included (the OTLP/HTTP default is
    /// `http://localhost:4318/v1/traces`); `http` or `https`.
    pub endpoint: String,
    /// Of the traces that start at the node (the client sent no
    /// `traceparent`), the share that is sampled and exported, 0 to 1. A
    /// client's own decision (its `sampled` flag) is always followed.
    #[serde(default = "default_sample_ratio")]
    pub sample_ratio: f64,
    /// Longest wait before queued spans are sent, in milliseconds.
    #[serde(default = "default_flush_interval_ms")]
    pub flush_interval_ms: u64,
    /// Time one export may take, in milliseconds.
    #[serde(default = "default_timeout_ms")]
    pub timeout_ms: u64,
    /// Fields sent with every export (a collector's API key, say). Never
    /// logged: `Debug` shows only their names.
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    /// Whom an `https` collector is trusted by (its CA file, else the
    /// Mozilla roots) and the client certificate it is shown.
    pub tls: Option<BackendTlsConfig>,
}

fn default_sample_ratio() -> f64 {
    1.0
}

fn default_flush_interval_ms() -> u64 {
    5_000
}

fn default_timeout_ms() -> u64 {
    10_000
}

impl std::fmt::Debug for OtlpConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OtlpConfig")
            .field("endpoint", &self.endpoint)
            .field("sample_ratio", &self.sample_ratio)
            .field("flush_interval_ms", &self.flush_interval_ms)
            .field("timeout_ms", &self.timeout_ms)
            .field("headers", &self.headers.keys().collect::<Vec<_>>())
            .field("tls", &self.tls)
            .finish()
    }
}

impl OtlpConfig {
    /// Checks the fields; errors name them relative to `server.otlp.`.
    pub(super) fn validate(&self) -> Result<(), FieldError> {
        let uri = self.endpoint.parse::<http::Uri>().ok();
        let valid = uri.as_ref().is_some_and(|u| {
            matches!(u.scheme_str(), Some("http" | "https")) && u.authority().is_some()
        });
        check(valid, "endpoint", || {
            format!(
                "{:?} must be an http:// or https:// URL (e.g. http://127.0.0.1:4318/v1/traces)",
                self.endpoint
            )
        })?;
        check(
            (0.0..=1.0).contains(&self.sample_ratio),
            "sample_ratio",
            || "must be between 0 and 1".into(),
        )?;
        at_least_one(self.flush_interval_ms, "flush_interval_ms")?;
        at_least_one(self.timeout_ms, "timeout_ms")?;
        for (name, value) in &self.headers {
            check(
                http::HeaderName::try_from(name.as_str()).is_ok(),
                "headers",
                || format!("{name:?} is not a field name"),
            )?;
            // The value is not quoted back: it is likely a secret.
            check(
                http::HeaderValue::try_from(value.as_str()).is_ok(),
                "headers",
                || format!("the value of {name:?} is not a valid field value"),
            )?;
        }
        Ok(())
    }
}
