//! A tenant's backend: one URL, or a pool of weighted members, how a
//! request picks a member, and how long each step may take.

use serde::Deserialize;

use super::validate::{at_least_one, check};
use super::{BackendTlsConfig, BackendUrl, EjectionConfig, FieldError, ProbeConfig};

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
    /// For `balance = "hash"`: no member takes more than this percentage of
    /// its weighted share of the requests in flight (HAProxy's
    /// `hash-balance-factor`); the next member on the ring takes the excess.
    /// 0 turns the bound off.
    #[serde(default = "default_hash_balance_factor")]
    pub hash_balance_factor: u32,
    #[serde(default = "default_connect_timeout_ms")]
    pub connect_timeout_ms: u64,
    /// Time allowed from the end of the request body to the response head,
    /// and for each pause while the body is sent. (`response_timeout_ms`,
    /// its earlier name, is still read.)
    #[serde(
        default = "default_first_byte_timeout_ms",
        alias = "response_timeout_ms"
    )]
    pub first_byte_timeout_ms: u64,
    /// Time allowed between two chunks of the response body; a body that
    /// stalls longer is cut, and the client sees it aborted.
    #[serde(default = "default_between_bytes_timeout_ms")]
    pub between_bytes_timeout_ms: u64,
    /// How long an idle pooled connection to a member is kept open.
    #[serde(default = "default_keepalive_idle_ms")]
    pub keepalive_idle_ms: u64,
    /// How many other members a request may be retried on after its
    /// attempt failed: after a failed connect for any method, after the
    /// request was sent only for idempotent ones (RFC 9110 section 9.2.2).
    #[serde(default = "default_retries")]
    pub retries: u32,
    /// Most retries as a percentage of the backend's requests over the last
    /// 10 s, so an outage does not multiply the load on what is left.
    #[serde(default = "default_retry_budget_percent")]
    pub retry_budget_percent: u32,
    /// A member that comes back (probe passed again, ejection over) takes
    /// its full share only after this long, ramping up linearly.
    #[serde(default = "default_slow_start_ms")]
    pub slow_start_ms: u64,
    /// Most connections to one member: for HTTP/1.1, requests in flight
    /// (one per connection); a member at its bound is passed over. An
    /// HTTP/2 member (`protocol = "h2c"`, or `"auto"` once ALPN chose h2)
    /// takes every request on one connection, bounded by `max_streams`.
    /// 0: no bound.
    #[serde(default)]
    pub max_connections: u32,
    /// Most requests in flight on an HTTP/2 member's connection; a member
    /// at its bound is passed over. 0: no bound.
    #[serde(default)]
    pub max_streams: u32,
    /// Request bodies up to this many KiB are read whole before they are
    /// sent, so that a request whose member cannot be reached (refused,
    /// TLS failure) goes to the next member, a POST included. Larger bodies
    /// stream as they come and are never sent twice. 0: stream every body.
    #[serde(default = "default_replay_body_kb")]
    pub replay_body_kb: u64,
    /// The HTTP version spoken to the members.
    #[serde(default)]
    pub protocol: Protocol,
    /// Host header sent to this backend; by default the client's is kept.
    pub host_header: Option<String>,
    /// For an https backend: the CAs to trust, a client certificate, the
    /// server name to check.
    pub tls: Option<BackendTlsConfig>,
    /// Active health checks; none when absent.
    pub probe: Option<ProbeConfig>,
    /// Passive health: members that keep failing are taken out for a while.
    #[serde(default)]
    pub ejection: EjectionConfig,
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
    /// The member with the fewest requests in flight for its weight.
    LeastOutstanding,
    /// Of two members drawn at random, the one with fewer requests in
    /// flight for its weight.
    PowerOfTwo,
    /// Consistent hashing on the cache key (or the path, for requests that
    /// pass the cache): Ketama, 160 points per unit of weight, as nginx's
    /// `hash ... consistent`, with load bounded by `hash_balance_factor`.
    Hash,
}

/// The HTTP version spoken to a backend's members.
#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum Protocol {
    /// HTTP/1.1.
    #[default]
    Http1,
    /// HTTP/2 for https members whose TLS handshake selects `h2` (ALPN,
    /// RFC 9113 section 3.2), HTTP/1.1 otherwise.
    Auto,
    /// HTTP/2 with prior knowledge over plain TCP (RFC 9113 section 3.3).
    H2c,
}

fn default_replay_body_kb() -> u64 {
    64
}

fn default_weight() -> u32 {
    1
}

fn default_hash_balance_factor() -> u32 {
    125
}

fn default_connect_timeout_ms() -> u64 {
    2_000
}

fn default_first_byte_timeout_ms() -> u64 {
    15_000
}

fn default_between_bytes_timeout_ms() -> u64 {
    15_000
}

fn default_keepalive_idle_ms() -> u64 {
    60_000
}

fn default_retries() -> u32 {
    2
}

fn default_retry_budget_percent() -> u32 {
    20
}

fn default_slow_start_ms() -> u64 {
    10_000
}

impl BackendConfig {
    /// A backend at `url` with the default settings.
    pub fn new(url: BackendUrl) -> BackendConfig {
        BackendConfig {
            url: Some(url),
            members: Vec::new(),
            balance: Balance::default(),
            hash_balance_factor: default_hash_balance_factor(),
            connect_timeout_ms: default_connect_timeout_ms(),
            first_byte_timeout_ms: default_first_byte_timeout_ms(),
            between_bytes_timeout_ms: default_between_bytes_timeout_ms(),
            keepalive_idle_ms: default_keepalive_idle_ms(),
            retries: default_retries(),
            retry_budget_percent: default_retry_budget_percent(),
            slow_start_ms: default_slow_start_ms(),
            max_connections: 0,
            max_streams: 0,
            replay_body_kb: default_replay_body_kb(),
            protocol: Protocol::default(),
            host_header: None,
            tls: None,
            probe: None,
            ejection: EjectionConfig::default(),
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
        let first = self.url.as_ref().or(self.members.first().map(|m| &m.url));
        first.is_some_and(BackendUrl::is_https)
    }

    /// Checks what serde cannot; the error names the field relative to the
    /// backend.
    pub fn validate(&self) -> Result<(), FieldError> {
        at_least_one(self.connect_timeout_ms, "connect_timeout_ms")?;
        at_least_one(self.first_byte_timeout_ms, "first_byte_timeout_ms")?;
        at_least_one(self.between_bytes_timeout_ms, "between_bytes_timeout_ms")?;
        at_least_one(self.keepalive_idle_ms, "keepalive_idle_ms")?;
        check(self.url.is_some() == self.members.is_empty(), "url", || {
            "set either url or members (a pool), not both".into()
        })?;
        let https = self.is_https();
        check(
            self.members.iter().all(|m| m.url.is_https() == https),
            "members",
            || "members must all be http:// or all https://".into(),
        )?;
        check(self.members.iter().all(|m| m.weight > 0), "members", || {
            "a member's weight must be at least 1".into()
        })?;
        check(
            self.hash_balance_factor == 0 || self.hash_balance_factor >= 100,
            "hash_balance_factor",
            || "must be 0 (no bound) or a percentage of at least 100".into(),
        )?;
        check(
            self.retry_budget_percent <= 100,
            "retry_budget_percent",
            || "must be a percentage, 0 to 100".into(),
        )?;
        check(
            self.protocol != Protocol::H2c || !self.is_https(),
            "protocol",
            || "h2c is HTTP/2 over plain TCP: it needs http:// members (\"auto\" for https)".into(),
        )?;
        if let Some(tls) = &self.tls {
            check(self.is_https(), "tls", || {
                "TLS settings need an https:// url".into()
            })?;
            tls.validate()?;
        }
        if let Some(h) = &self.host_header {
            check(
                http::HeaderValue::from_str(h).is_ok(),
                "host_header",
                || "is not a valid header value".into(),
            )?;
        }
        if let Some(probe) = &self.probe {
            probe.validate().map_err(|e| e.within("probe."))?;
        }
        self.ejection.validate().map_err(|e| e.within("ejection."))
    }
}
