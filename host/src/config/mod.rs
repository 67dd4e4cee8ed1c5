//! The node's configuration: a TOML file, or the embedded default.
//!
//! A typed leaf: the schema here, values with a syntax of their own in
//! [`values`] (parsed while the file is, so their errors carry a line),
//! checks across fields in `validate.rs`, and the only file I/O in
//! `load.rs`. Every table rejects unknown fields, so a typo is an error that
//! names the key and its line; every error names the field as a path, e.g.
//! `tenant[1].backends.api.url`.

mod backend;
mod health;
mod load;
mod locate;
mod otlp;
mod platform;
mod tls;
mod validate;
mod values;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;

use serde::Deserialize;

pub use backend::{BackendConfig, Balance, MemberConfig, Protocol};
pub use health::{EjectionConfig, ProbeConfig};
pub use load::{ConfigError, FieldError, DEFAULT_TOML};
pub use otlp::OtlpConfig;
pub use platform::{
    CounterConfig, CounterReset, LimiterConfig, OnInvalid, SecretEncoding, SecretSource,
    SignedUrlFormat, SignedUrlsConfig, TokenIn,
};
pub use tls::{BackendTlsConfig, CertificateFiles, ServerTlsConfig};
pub use values::{BackendUrl, PolicySource, BUILTIN_POLICIES};

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    #[serde(default)]
    pub server: ServerConfig,
    #[serde(default)]
    pub cache: CacheConfig,
    #[serde(default)]
    pub runtime: RuntimeConfig,
    /// A small origin inside the node, for demos and the README tour.
    pub demo_origin: Option<DemoOriginConfig>,
    /// The admin API; absent: no admin listener.
    pub admin: Option<AdminConfig>,
    #[serde(default, rename = "tenant")]
    pub tenants: Vec<TenantConfig>,
    /// The directory relative policy paths are resolved against.
    #[serde(skip)]
    pub base_dir: PathBuf,
    /// Where the config came from (its file), for error messages.
    #[serde(skip)]
    pub source_name: String,
    /// The text the config was read from, to name the line of a field
    /// error found after parsing; `None` once edited.
    #[serde(skip)]
    pub source_text: Option<std::sync::Arc<str>>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServerConfig {
    /// Address of the HTTP listener (HTTP/1.1 and h2c).
    pub listen: SocketAddr,
    /// Time a client has to send a complete request head, in milliseconds
    /// (from its first byte); also how long a new connection may stay open
    /// without sending anything, and the time for a TLS handshake.
    pub header_read_timeout_ms: u64,
    /// How long a keep-alive connection may stay idle between requests, in
    /// milliseconds; an HTTP/2 connection gets a GOAWAY after this long
    /// with no stream open.
    pub idle_timeout_ms: u64,
    /// Longest pause allowed while a client sends a request body, in
    /// milliseconds; past it the request gets 408.
    pub body_read_timeout_ms: u64,
    /// Largest request head accepted, in bytes (HTTP/1.1 buffer, HTTP/2
    /// header list).
    pub max_header_bytes: usize,
    /// Concurrent streams per HTTP/2 connection.
    pub max_concurrent_streams: u32,
    /// Longest request target accepted, in bytes; longer ones get 414.
    pub max_target_bytes: usize,
    /// Open client connections at most; past it, accepting waits.
    pub max_connections: u32,
    /// The listen backlog: connections the kernel queues before accept.
    pub listen_backlog: u32,
    /// A TLS listener beside the plain one.
    pub tls: Option<ServerTlsConfig>,
    /// This node's name in the `CDN-Loop` field it adds to every request to
    /// a backend (RFC 8586), and refuses to see again; by default a
    /// pseudonym made at start.
    pub node_id: Option<String>,
    /// A line per request on stdout: `"off"` (default), `"plain"` or
    /// `"json"`.
    pub access_log: crate::access_log::Format,
    /// On SIGTERM, how long requests in flight (and idle keep-alive
    /// connections' last requests) may take before the node closes, in
    /// seconds.
    pub drain_s: u64,
    /// Spans of sampled requests sent to an OpenTelemetry collector.
    pub otlp: Option<OtlpConfig>,
    /// Unsent bytes a client connection may have queued in the kernel
    /// before the node writes more to it, in KiB (Linux `TCP_NOTSENT_LOWAT`,
    /// tcp(7)); 0 leaves the kernel's default (no limit). Bytes in flight
    /// are not limited, so a distant client's throughput is not; what is
    /// limited is one connection taking a large socket buffer's worth of a
    /// lane's writes while the others wait: with the default, the p99 of 16
    /// clients fetching 10 MiB objects fell from about 500-750 ms to
    /// 85-150 ms here, and throughput rose by a third.
    pub send_lowat_kb: u32,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            header_read_timeout_ms: 10_000,
            idle_timeout_ms: 60_000,
            body_read_timeout_ms: 30_000,
            max_header_bytes: 64 * 1024,
            max_concurrent_streams: 256,
            max_target_bytes: 8 * 1024,
            max_connections: 10_000,
            listen_backlog: 1024,
            tls: None,
            node_id: None,
            access_log: crate::access_log::Format::Off,
            drain_s: 10,
            otlp: None,
            send_lowat_kb: 128,
        }
    }
}

impl ServerConfig {
    /// `node_id`, or a pseudonym made once per process (RFC 8586 section 2
    /// allows either; a random one says nothing about the machine).
    pub fn node_id(&self) -> String {
        static PSEUDONYM: std::sync::OnceLock<String> = std::sync::OnceLock::new();
        match &self.node_id {
            Some(id) => id.clone(),
            None => PSEUDONYM
                .get_or_init(|| format!("outpost-{:08x}", rand::random::<u32>()))
                .clone(),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CacheConfig {
    /// Bound of the whole in-memory cache, in MiB (bodies and headers).
    pub max_size_mb: u64,
    /// Largest response stored, in MiB; larger ones are streamed, not stored.
    pub max_object_mb: u64,
    /// How long a response is kept after it turns stale, in seconds, so it
    /// can be served when origins fail.
    pub stale_retention_s: u64,
    /// How long past its freshness a stored response may be served when no
    /// backend of the route can be reached (RFC 9111 section 4.2.4), in
    /// seconds; 0 turns it off. A copy is kept that long only within
    /// `stale_retention_s`. Never for a response whose
    /// `must-revalidate`, `proxy-revalidate`, `no-cache` or `s-maxage`
    /// forbids serving it stale.
    pub stale_if_unreachable_s: u64,
    /// How long a request waits for another request's fetch of the same key
    /// before going to the origin itself, in milliseconds.
    pub coalesce_wait_ms: u64,
    /// How long a key whose answer was not cacheable skips coalescing, so
    /// its requests do not queue behind one another (hit-for-miss), in s.
    pub hit_for_miss_s: u64,
    /// A Range request on a miss fetches and caches the object in slices
    /// of this size (KiB) instead of fetching it whole.
    pub slice_kb: u64,
}

impl Default for CacheConfig {
    fn default() -> Self {
        CacheConfig {
            max_size_mb: 256,
            max_object_mb: 64,
            stale_retention_s: 3600,
            stale_if_unreachable_s: 3600,
            coalesce_wait_ms: 15_000,
            hit_for_miss_s: 10,
            slice_kb: 1024,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RuntimeConfig {
    /// Guest instances that can exist at once across all tenants (the
    /// pooling allocator's size).
    pub max_instances: u32,
    /// Largest linear memory any tenant may be given, in MiB (a pool slot).
    pub max_memory_mb: u32,
    /// Policy versions kept per tenant for activation and rollback.
    pub keep_versions: usize,
    /// Where compiled policies are cached by content hash, so a restart
    /// does not recompile. Empty: no disk cache.
    pub compiled_cache_dir: Option<PathBuf>,
}

impl Default for RuntimeConfig {
    fn default() -> Self {
        RuntimeConfig {
            max_instances: 1000,
            max_memory_mb: 64,
            keep_versions: 10,
            compiled_cache_dir: None,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AdminConfig {
    pub listen: SocketAddr,
    /// The bearer token; the `OUTPOST_ADMIN_TOKEN` environment variable
    /// takes precedence. One of the two is required.
    pub token: Option<String>,
    /// Serve the admin API over TLS with this certificate (read at start).
    pub tls: Option<CertificateFiles>,
}

/// Environment variable holding the admin token.
pub const ADMIN_TOKEN_ENV: &str = "OUTPOST_ADMIN_TOKEN";

impl AdminConfig {
    /// The token in force, from the environment or the config.
    pub fn resolved_token(&self) -> Option<String> {
        std::env::var(ADMIN_TOKEN_ENV)
            .ok()
            .filter(|t| !t.is_empty())
            .or_else(|| self.token.clone())
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DemoOriginConfig {
    pub listen: SocketAddr,
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct TenantConfig {
    /// Unique name; used in logs, metrics and the cache namespace. (The
    /// admin API takes it from the URL when a body leaves it out.)
    #[serde(default)]
    pub id: String,
    /// Host names (without port) this tenant answers. `*.example.com`
    /// matches one label under `example.com` (as a wildcard certificate
    /// does) unless another tenant lists that host exactly; `*` matches any
    /// host that no other tenant claims.
    pub hosts: Vec<String>,
    /// `builtin:NAME` or a path to a policy component (`.wasm`), relative to
    /// the config file.
    pub policy: PolicySource,
    #[serde(default)]
    pub limits: LimitsConfig,
    /// Backends the policy may route to, by name.
    #[serde(default)]
    pub backends: BTreeMap<String, BackendConfig>,
    /// Values the policy can read with `config-get`.
    #[serde(default)]
    pub vars: BTreeMap<String, String>,
    /// This tenant's guaranteed share of the cache, in MiB. Tenants without
    /// one split what the others leave of `cache.max_size_mb` equally. A
    /// tenant may store more while the node has room (what idle tenants
    /// leave is lent); when the node is full, bytes are taken back from the
    /// tenants furthest over their guarantees, never from one within its
    /// own.
    pub cache_quota_mb: Option<u64>,
    /// Show each response's cache key in Cache-Status (`key=`).
    #[serde(default)]
    pub debug_cache_key: bool,
    /// Reuse guest instances across this tenant's requests instead of a
    /// fresh instance per request (faster). Reset rules: each request gets
    /// a new request head and fresh limits (CPU, host calls, subrequests);
    /// the instance's memory and globals persist between requests of this
    /// tenant and module version (never across tenants or versions); an
    /// instance is retired after 256 requests or any trap or limit hit.
    #[serde(default)]
    pub reuse_instances: bool,
    /// Reuse the request hook's decision for requests whose inputs (the
    /// request fields and config values the policy read) equal an earlier
    /// request's, skipping wasm for them. Applies to policies that import
    /// no clocks, random numbers or sockets and whose hook makes no `log`,
    /// `cache-*` or `fetch` call; one memoized request in 256 still runs the
    /// guest and a difference turns the memo off for that version. Tenants
    /// with `reuse_instances` are never memoized (instances keep state).
    #[serde(default = "default_true")]
    pub memoize_decisions: bool,
    /// Largest request body a client may send this tenant, in MiB: past
    /// it the request gets 413 (before anything is forwarded when
    /// Content-Length says so).
    #[serde(default = "default_max_body_mb")]
    pub max_body_mb: u64,
    /// Largest response this tenant stores, in MiB (default:
    /// `cache.max_object_mb`); larger ones are streamed, not stored.
    pub max_object_mb: Option<u64>,
    /// This tenant's own certificate on the TLS listener, chosen by SNI for
    /// its hosts. A connection made with it serves only this tenant (other
    /// hosts get 421), and a connection made with another certificate never
    /// reaches this tenant.
    pub tls: Option<CertificateFiles>,
    /// Answer plain-HTTP requests with a 308 redirect to the https URL.
    #[serde(default)]
    pub force_https: bool,
    /// Remove `CDN-Cache-Control` from responses to clients. By default it
    /// is forwarded (RFC 9213 section 3 allows either), so a CDN tier
    /// behind this one caches as the origin asked.
    #[serde(default)]
    pub strip_cdn_cache_control: bool,
    /// Secrets by name, and where each node reads each one (an environment
    /// variable or a file, resolved when the tenant is applied). A policy
    /// never reads a value: it names a secret in a host call.
    #[serde(default)]
    pub secrets: BTreeMap<String, SecretSource>,
    /// Signed URLs checked before the policy runs.
    pub signed_urls: Option<SignedUrlsConfig>,
    /// Rate limiters a policy calls `rate-check` on, by name.
    #[serde(default)]
    pub limiters: BTreeMap<String, LimiterConfig>,
    /// Counters a policy calls `counter-add` and `counter-get` on, by name.
    #[serde(default)]
    pub counters: BTreeMap<String, CounterConfig>,
}

#[derive(Debug, Clone, Copy, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct LimitsConfig {
    /// Linear memory cap of one instance, in MiB.
    pub memory_mb: u32,
    /// Guest CPU time allowed per hook call, in milliseconds.
    pub cpu_ms: u64,
    /// Host calls (`fetch`, cache, config, log) allowed per request.
    pub max_host_calls: u32,
    /// `fetch` calls allowed per request.
    pub max_subrequests: u32,
    /// Requests of this tenant running a guest instance at once; past it a
    /// request gets 503, so one hot tenant cannot take every pool slot.
    pub max_concurrent: u32,
    /// The tenant's weight in the node's fair share of guest CPU: while
    /// the node is contended, a tenant gets at most weight / (sum of the
    /// busy tenants' weights) of it (see `tenant::cpu_share`).
    pub cpu_weight: u32,
    /// Quarantine the active (or canary) version after this many of its
    /// requests were cut at `cpu_ms` within `quarantine_window_s`: its
    /// requests then get 503 without running the guest until an operator
    /// clears it or another version is activated (see
    /// `tenant::quarantine`). Unset: never.
    pub quarantine_cpu_cuts: Option<u32>,
    /// The window `quarantine_cpu_cuts` are counted in, in seconds.
    pub quarantine_window_s: u64,
}

impl Default for LimitsConfig {
    fn default() -> Self {
        LimitsConfig {
            memory_mb: 16,
            cpu_ms: 50,
            max_host_calls: 1000,
            max_subrequests: 8,
            max_concurrent: 256,
            cpu_weight: 1,
            quarantine_cpu_cuts: None,
            quarantine_window_s: 60,
        }
    }
}

/// `max_body_mb` when a tenant does not set it: 1 GiB.
pub const DEFAULT_MAX_BODY_MB: u64 = 1024;

fn default_max_body_mb() -> u64 {
    DEFAULT_MAX_BODY_MB
}

fn default_true() -> bool {
    true
}

impl Config {
    /// The bytes of the node's cache a tenant is guaranteed: its own quota,
    /// or an equal share of what the explicit quotas leave (so the
    /// guarantees never add up to more than `cache.max_size_mb`). What a
    /// tenant leaves unused is lent to the others (see `cache::Ledger`).
    pub fn cache_quota_bytes(&self, tenant: &TenantConfig) -> u64 {
        const MIB: u64 = 1024 * 1024;
        if let Some(q) = tenant.cache_quota_mb {
            return q.saturating_mul(MIB);
        }
        let explicit: u64 = self.tenants.iter().filter_map(|t| t.cache_quota_mb).sum();
        let shared = self
            .tenants
            .iter()
            .filter(|t| t.cache_quota_mb.is_none())
            .count()
            .max(1) as u64;
        self.cache.max_size_mb.saturating_sub(explicit) * MIB / shared
    }
}
#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    #[test]
    fn embedded_default_is_valid() {
        let c = Config::embedded_default();
        assert_eq!(c.tenants.len(), 1);
        assert!(c.demo_origin.is_some());
    }

    #[test]
    fn unknown_field_is_named_with_its_line() {
        let err = Config::from_toml(
            "[server]\nlisten = \"127.0.0.1:1\"\nlisten_typo = 3\n",
            "t.toml",
            Path::new("."),
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("listen_typo"), "{err}");
        assert!(err.contains("line 3"), "{err}");
    }

    #[test]
    fn bad_backend_url_names_the_field() {
        let text = r#"
            [[tenant]]
            id = "a"
            hosts = ["a.test"]
            policy = "builtin:default"
            [tenant.backends.origin]
            url = "ftp://example"
        "#;
        let err = Config::from_toml(text, "t.toml", Path::new("."))
            .unwrap_err()
            .to_string();
        assert!(err.contains("tenant[0].backends.origin.url"), "{err}");
        assert!(err.contains("line 7"), "{err}");
    }

    #[test]
    fn a_zero_keepalive_idle_time_is_refused_by_name() {
        let text = "[[tenant]]\nid = \"a\"\nhosts = [\"a.test\"]\npolicy = \"builtin:default\"\n\
                    [tenant.backends.origin]\nurl = \"http://127.0.0.1:9\"\nkeepalive_idle_ms = 0\n";
        let config = Config::from_toml(text, "t.toml", Path::new("."));
        let err = config
            .and_then(|c| c.validate().map_err(|e| c.field_error("t.toml", e)))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("tenant[0].backends.origin.keepalive_idle_ms"),
            "{err}"
        );
    }

    #[test]
    fn an_unknown_builtin_policy_names_the_field_and_line() {
        let text = "[[tenant]]\nid = \"a\"\nhosts = [\"a.test\"]\npolicy = \"builtin:nope\"\n";
        let err = Config::from_toml(text, "t.toml", Path::new("."))
            .unwrap_err()
            .to_string();
        assert!(err.contains("tenant[0].policy"), "{err}");
        assert!(err.contains("line 4"), "{err}");
        assert!(err.contains("cache-key"), "{err}");
    }

    #[test]
    fn a_wildcard_must_be_a_whole_first_label() {
        let with_host = |host: &str| {
            let text = format!(
                "[[tenant]]\nid = \"a\"\nhosts = [{host:?}]\npolicy = \"builtin:default\"\n"
            );
            Config::from_toml(&text, "t.toml", Path::new("."))
        };
        for good in ["a.test", "*.a.test", "*", "[::1]", "127.0.0.1"] {
            assert!(with_host(good).is_ok(), "{good}");
        }
        for bad in ["a*.test", "*a.test", "x.*.test", "*.", "", "a test"] {
            let err = with_host(bad).unwrap_err().to_string();
            assert!(err.contains("tenant[0].hosts"), "{bad}: {err}");
        }
    }

    #[test]
    fn quotas_adding_up_to_more_than_the_cache_are_refused_at_the_one_that_tips_them_over() {
        let text = "[cache]\nmax_size_mb = 100\n\
                    [[tenant]]\nid = \"a\"\nhosts = [\"a.test\"]\npolicy = \"builtin:default\"\n\
                    cache_quota_mb = 60\n\
                    [[tenant]]\nid = \"b\"\nhosts = [\"b.test\"]\npolicy = \"builtin:default\"\n\
                    [[tenant]]\nid = \"c\"\nhosts = [\"c.test\"]\npolicy = \"builtin:default\"\n\
                    cache_quota_mb = 50\n";
        let config = Config::from_toml(text, "t.toml", Path::new("."));
        let err = config
            .and_then(|c| c.validate().map_err(|e| c.field_error("t.toml", e)))
            .unwrap_err()
            .to_string();
        assert!(err.contains("t.toml"), "{err}");
        assert!(err.contains("tenant[2].cache_quota_mb"), "{err}");
        assert!(err.contains("line 16"), "{err}");
        assert!(err.contains("110 MiB"), "{err}");
        let fits = text.replace("cache_quota_mb = 50", "cache_quota_mb = 40");
        let config = Config::from_toml(&fits, "t.toml", Path::new(".")).unwrap();
        assert!(config.validate().is_ok());
    }

    #[test]
    fn a_host_served_twice_is_rejected() {
        let text = r#"
            [[tenant]]
            id = "a"
            hosts = ["x.test"]
            policy = "builtin:default"
            [[tenant]]
            id = "b"
            hosts = ["X.test"]
            policy = "builtin:default"
        "#;
        let err = Config::from_toml(text, "t.toml", Path::new("."))
            .unwrap_err()
            .to_string();
        assert!(err.contains("tenant[1].hosts"), "{err}");
    }
}
