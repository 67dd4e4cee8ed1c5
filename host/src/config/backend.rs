//! A tenant's backend: one URL, or a pool of weighted members, and how
//! requests are sent to it.

use serde::Deserialize;

use super::{BackendTlsConfig, BackendUrl};

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct BackendConfig {
    /// `http://host:port` or `https://host[:port]`, optionally with a path
    /// prefix: a backend of one member. Either this or `members`.
    pub url: Option<BackendUrl>,
    /// A pool: its members and their weights. Either this or `url`.
    #[serde(default)]
    pub members: Vec<MemberConfig>,
    /// How a request picks a member.
    #[serde(default)]
    pub balance: Balance,
    #[serde(default = "default_connect_timeout_ms")]
    pub connect_timeout_ms: u64,
    /// Time allowed for the response head, then between body chunks.
    #[serde(default = "default_response_timeout_ms")]
    pub response_timeout_ms: u64,
    /// Host header sent to this backend; by default the client's is kept.
    pub host_header: Option<String>,
    /// For an https backend: the CAs to trust, a client certificate, the
    /// server name to check.
    pub tls: Option<BackendTlsConfig>,
}

/// One member of a pool.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct MemberConfig {
    pub url: BackendUrl,
    /// Its share of the requests, relative to the other members'.
    #[serde(default = "default_weight")]
    pub weight: u32,
}

/// How a pool spreads requests over its members.
#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum Balance {
    /// Smooth weighted round-robin (nginx's): each member in proportion to
    /// its weight, interleaved rather than in runs.
    #[default]
    RoundRobin,
}

fn default_weight() -> u32 {
    1
}

fn default_connect_timeout_ms() -> u64 {
    2_000
}

fn default_response_timeout_ms() -> u64 {
    15_000
}

impl BackendConfig {
    /// A backend at `url` with the default timeouts.
    pub fn new(url: BackendUrl) -> BackendConfig {
        BackendConfig {
            url: Some(url),
            members: Vec::new(),
            balance: Balance::default(),
            connect_timeout_ms: default_connect_timeout_ms(),
            response_timeout_ms: default_response_timeout_ms(),
            host_header: None,
            tls: None,
        }
    }

    /// The members, `url` being a pool of one.
    pub fn members(&self) -> Vec<MemberConfig> {
        match &self.url {
            Some(url) => vec![MemberConfig {
                url: url.clone(),
                weight: 1,
            }],
            None => self.members.clone(),
        }
    }

    /// Whether the backend is reached over TLS (all members agree; checked
    /// by `validate`).
    pub fn is_https(&self) -> bool {
        self.members().first().is_some_and(|m| m.url.is_https())
    }
}
