//! Checks that serde cannot make: ranges, and rules across fields and
//! tenants. Every error names the field as a path.

use std::collections::{HashMap, HashSet};

use super::{Config, FieldError, RuntimeConfig, TenantConfig, ADMIN_TOKEN_ENV};

/// `Err` naming `field` unless `ok`.
pub(super) fn check(
    ok: bool,
    field: &str,
    message: impl FnOnce() -> String,
) -> Result<(), FieldError> {
    if ok {
        Ok(())
    } else {
        Err(FieldError::new(field, message()))
    }
}

/// `Err` naming `field` unless `value` is at least 1.
pub(super) fn at_least_one(value: u64, field: &str) -> Result<(), FieldError> {
    check(value > 0, field, || "must be at least 1".into())
}

impl Config {
    /// Checks the whole config; the error names the field.
    pub fn validate(&self) -> Result<(), FieldError> {
        at_least_one(
            self.server.header_read_timeout_ms,
            "server.header_read_timeout_ms",
        )?;
        at_least_one(self.server.idle_timeout_ms, "server.idle_timeout_ms")?;
        if let Some(id) = &self.server.node_id {
            // A cdn-id: a host[:port] or a token (RFC 8586 section 2).
            let valid = !id.is_empty()
                && id
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"-._~:[]".contains(&b));
            check(valid, "server.node_id", || {
                format!("{id:?} must be a host name, host:port or a token")
            })?;
        }
        at_least_one(
            self.server.body_read_timeout_ms,
            "server.body_read_timeout_ms",
        )?;
        at_least_one(
            self.server.max_target_bytes as u64,
            "server.max_target_bytes",
        )?;
        at_least_one(
            u64::from(self.server.max_connections),
            "server.max_connections",
        )?;
        at_least_one(self.cache.max_size_mb, "cache.max_size_mb")?;
        at_least_one(
            u64::from(self.runtime.max_instances),
            "runtime.max_instances",
        )?;
        if let Some(tls) = &self.server.tls {
            check(
                tls.cert.is_some() == tls.key.is_some(),
                "server.tls.cert",
                || "cert and key go together: set both or neither".into(),
            )?;
            check(
                tls.ocsp.is_none() || tls.cert.is_some(),
                "server.tls.ocsp",
                || "an OCSP response needs the certificate it is for (cert)".into(),
            )?;
        }
        if let Some(otlp) = &self.server.otlp {
            otlp.validate().map_err(|e| e.within("server.otlp."))?;
        }
        if let Some(admin) = &self.admin {
            match admin.resolved_token() {
                None => {
                    return Err(FieldError::new(
                        "admin.token",
                        format!("required (or set {ADMIN_TOKEN_ENV})"),
                    ))
                }
                Some(t) => check(t.len() >= 16, "admin.token", || {
                    "must be at least 16 characters".into()
                })?,
            }
        }
        // Guarantees the node cannot keep are refused, at the quota that
        // tips their sum over (its line is the one to change).
        let mut guaranteed = 0u64;
        for (i, t) in self.tenants.iter().enumerate() {
            let Some(quota) = t.cache_quota_mb else {
                continue;
            };
            guaranteed = guaranteed.saturating_add(quota);
            check(
                guaranteed <= self.cache.max_size_mb,
                &format!("tenant[{i}].cache_quota_mb"),
                || {
                    format!(
                        "the quotas up to this tenant's add up to {guaranteed} MiB, more than \
                         cache.max_size_mb ({})",
                        self.cache.max_size_mb
                    )
                },
            )?;
        }
        let mut ids = HashSet::new();
        let mut hosts = HashMap::new();
        for (i, t) in self.tenants.iter().enumerate() {
            let prefix = format!("tenant[{i}].");
            t.validate(&self.runtime).map_err(|e| e.within(&prefix))?;
            if self.server.tls.is_none() {
                check(t.tls.is_none(), &format!("{prefix}tls"), || {
                    "a tenant certificate needs a TLS listener ([server.tls])".into()
                })?;
                check(!t.force_https, &format!("{prefix}force_https"), || {
                    "redirecting to https needs a TLS listener ([server.tls])".into()
                })?;
            }
            check(ids.insert(t.id.as_str()), &format!("{prefix}id"), || {
                format!("tenant {:?} is declared twice", t.id)
            })?;
            for host in &t.hosts {
                let host = host.to_ascii_lowercase();
                if let Some(other) = hosts.insert(host.clone(), t.id.as_str()) {
                    return Err(FieldError::new(
                        format!("{prefix}hosts"),
                        format!("host {host:?} is already served by tenant {other:?}"),
                    ));
                }
            }
        }
        Ok(())
    }
}

impl TenantConfig {
    /// Checks one tenant against the node's runtime settings; the error
    /// names the field relative to the tenant.
    pub fn validate(&self, runtime: &RuntimeConfig) -> Result<(), FieldError> {
        let valid_id = !self.id.is_empty()
            && self
                .id
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
        check(valid_id, "id", || {
            format!(
                "{:?} must be non-empty letters, digits, '-' or '_'",
                self.id
            )
        })?;
        check(!self.hosts.is_empty(), "hosts", || {
            "must list at least one host".into()
        })?;
        for host in &self.hosts {
            check(valid_host_pattern(host), "hosts", || {
                format!("{host:?} is not a host name, `*.` and a host name, or `*`")
            })?;
        }
        let limits = &self.limits;
        check(
            (1..=runtime.max_memory_mb).contains(&limits.memory_mb),
            "limits.memory_mb",
            || {
                format!(
                    "must be between 1 and runtime.max_memory_mb ({})",
                    runtime.max_memory_mb
                )
            },
        )?;
        check(
            (1..=runtime.max_instances).contains(&limits.max_concurrent),
            "limits.max_concurrent",
            || {
                format!(
                    "must be between 1 and runtime.max_instances ({})",
                    runtime.max_instances
                )
            },
        )?;
        at_least_one(limits.cpu_ms, "limits.cpu_ms")?;
        check(
            (1..=1000).contains(&limits.cpu_weight),
            "limits.cpu_weight",
            || "must be between 1 and 1000".into(),
        )?;
        if let Some(cuts) = limits.quarantine_cpu_cuts {
            at_least_one(cuts.into(), "limits.quarantine_cpu_cuts")?;
        }
        at_least_one(limits.quarantine_window_s, "limits.quarantine_window_s")?;
        for (name, backend) in &self.backends {
            backend
                .validate()
                .map_err(|e| e.within(&format!("backends.{name}.")))?;
        }
        super::platform::validate(
            &self.secrets,
            self.signed_urls.as_ref(),
            &self.limiters,
            &self.counters,
        )
    }
}

/// A host a tenant may list: a name, `*.` and a name, or `*`. The name
/// part is what a Host header or an SNI name can be (RFC 9110 section
/// 4.2.3: a reg-name; IP literals included).
fn valid_host_pattern(host: &str) -> bool {
    let name = match host.strip_prefix("*.") {
        _ if host == "*" => return true,
        Some(rest) => rest,
        None => host,
    };
    !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-._:[]".contains(&b))
}
