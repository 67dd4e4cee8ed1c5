//! How a backend's members are judged healthy: active probes (Varnish's
//! model and defaults) and passive ejection of members that keep failing
//! (Envoy's outlier detection).

use serde::Deserialize;

use super::validate::{at_least_one, check};
use super::FieldError;

/// Active health checks: every `interval_ms`, each member is asked for
/// `path`; it is healthy while at least `threshold` of the last `window`
/// probes got `expect_status` within `timeout_ms`.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct ProbeConfig {
    #[serde(default = "default_path")]
    pub path: String,
    #[serde(default = "default_expect_status")]
    pub expect_status: u16,
    #[serde(default = "default_interval_ms")]
    pub interval_ms: u64,
    #[serde(default = "default_timeout_ms")]
    pub timeout_ms: u64,
    #[serde(default = "default_window")]
    pub window: u32,
    #[serde(default = "default_threshold")]
    pub threshold: u32,
    /// How many of the window count as good at start: by default
    /// `threshold`, so a member starts healthy; 0 makes it wait for its
    /// probes.
    pub initial: Option<u32>,
}

/// Passive health: `consecutive_failures` failures in a row (a failed
/// connect, a timeout, a broken response, or a 502, 503 or 504) take a
/// member out for `base_ejection_ms` times the number of times it was taken
/// out, at most `max_ejection_ms`; never more than `max_ejected_percent`
/// of a pool at once.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct EjectionConfig {
    /// 0 turns passive ejection off.
    #[serde(default = "default_consecutive_failures")]
    pub consecutive_failures: u32,
    #[serde(default = "default_base_ejection_ms")]
    pub base_ejection_ms: u64,
    #[serde(default = "default_max_ejection_ms")]
    pub max_ejection_ms: u64,
    #[serde(default = "default_max_ejected_percent")]
    pub max_ejected_percent: u32,
}

impl Default for EjectionConfig {
    fn default() -> Self {
        EjectionConfig {
            consecutive_failures: default_consecutive_failures(),
            base_ejection_ms: default_base_ejection_ms(),
            max_ejection_ms: default_max_ejection_ms(),
            max_ejected_percent: default_max_ejected_percent(),
        }
    }
}

fn default_path() -> String {
    "/".into()
}

fn default_expect_status() -> u16 {
    200
}

fn default_interval_ms() -> u64 {
    5_000
}

fn default_timeout_ms() -> u64 {
    2_000
}

fn default_window() -> u32 {
    8
}

fn default_threshold() -> u32 {
    3
}

fn default_consecutive_failures() -> u32 {
    5
}

fn default_base_ejection_ms() -> u64 {
    30_000
}

fn default_max_ejection_ms() -> u64 {
    300_000
}

fn default_max_ejected_percent() -> u32 {
    50
}

impl ProbeConfig {
    /// How many of the window count as good at start.
    pub fn initial(&self) -> u32 {
        self.initial.unwrap_or(self.threshold)
    }

    pub(super) fn validate(&self) -> Result<(), FieldError> {
        check(
            self.path.starts_with('/')
                && http::uri::PathAndQuery::try_from(self.path.as_str()).is_ok(),
            "path",
            || "must be a path starting with '/'".into(),
        )?;
        check(
            (100..=599).contains(&self.expect_status),
            "expect_status",
            || "must be a status code, 100 to 599".into(),
        )?;
        at_least_one(self.interval_ms, "interval_ms")?;
        at_least_one(self.timeout_ms, "timeout_ms")?;
        check((1..=64).contains(&self.window), "window", || {
            "must be between 1 and 64".into()
        })?;
        check(
            (1..=self.window).contains(&self.threshold),
            "threshold",
            || "must be between 1 and the window".into(),
        )?;
        check(self.initial() <= self.window, "initial", || {
            "must be at most the window".into()
        })
    }
}

impl EjectionConfig {
    pub(super) fn validate(&self) -> Result<(), FieldError> {
        at_least_one(self.base_ejection_ms, "base_ejection_ms")?;
        check(
            self.max_ejection_ms >= self.base_ejection_ms,
            "max_ejection_ms",
            || "must be at least base_ejection_ms".into(),
        )?;
        check(
            self.max_ejected_percent <= 100,
            "max_ejected_percent",
            || "must be a percentage, 0 to 100".into(),
        )
    }
}
