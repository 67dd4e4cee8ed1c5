//! What a tenant declares for its policy's host calls beyond backends and
//! vars: secrets (where a node reads each), signed URLs checked before the
//! policy runs, rate limiters and counters.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use super::validate::{at_least_one, check};
use super::FieldError;

/// Where a node reads a secret: never the value itself, so neither the
/// config file nor etcd ever holds it.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SecretSource {
    /// An environment variable of the node's process.
    pub env: Option<String>,
    /// A file (relative to the config file), read whole; one trailing
    /// newline is dropped.
    pub file: Option<PathBuf>,
    /// How the text is turned into the secret's bytes.
    #[serde(default)]
    pub encoding: SecretEncoding,
}

/// How a secret's text becomes its bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SecretEncoding {
    /// The bytes as they are.
    #[default]
    Raw,
    /// Hexadecimal text (as Akamai EdgeAuth keys are given).
    Hex,
    /// Base64 (standard or URL-safe alphabet, padding optional).
    Base64,
}

impl SecretSource {
    fn validate(&self) -> Result<(), FieldError> {
        check(self.env.is_some() != self.file.is_some(), "env", || {
            "give exactly one of env (a variable name) or file (a path)".into()
        })?;
        if let Some(var) = &self.env {
            check(!var.is_empty() && !var.contains('='), "env", || {
                format!("{var:?} is not an environment variable name")
            })?;
        }
        Ok(())
    }

    /// The file path resolved against the config's directory.
    pub fn resolved_file(&self, base_dir: &Path) -> Option<PathBuf> {
        self.file.as_ref().map(|f| base_dir.join(f))
    }
}

/// The signed-URL formats a tenant may check (one per tenant).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum SignedUrlFormat {
    /// `?exp=<unix seconds>[&kid=<key id>]&sig=<HMAC-SHA256, hex or
    /// base64url>` over `<path>?exp=<exp>[&kid=<kid>]` (the token style of
    /// Fastly's and bunny.net's signed URLs).
    HmacSha256,
    /// An Akamai EdgeAuth 2.0 style token, `st=..~exp=..~acl=..~hmac=..`
    /// (HMAC-SHA256, hex, over the fields before `~hmac`), in a query
    /// parameter, a cookie or a header.
    EdgeAuth,
    /// nginx `secure_link`: `?md5=<base64url MD5 of md5_template>&expires=`.
    NginxMd5,
}

/// What the node does with a request whose token is missing, invalid or
/// expired.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OnInvalid {
    /// Answer it: 403 for a missing or invalid token, 410 for an expired
    /// one (nginx's split of `$secure_link`), without running the policy.
    #[default]
    Deny,
    /// Run the policy, which reads the verdict (`request-head.signature`)
    /// and answers, e.g. with a page of its own.
    Policy,
}

/// Where an EdgeAuth token is carried.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TokenIn {
    #[default]
    Query,
    Cookie,
    Header,
}

/// `[tenant.signed_urls]`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SignedUrlsConfig {
    pub format: SignedUrlFormat,
    /// Key ids and the secret (of `[tenant.secrets]`) each one is: two ids
    /// are valid at once during a key roll-over.
    pub keys: BTreeMap<String, String>,
    /// The key id new links are signed with (`outpost sign`, `sign-url`);
    /// may be left out when there is one key.
    pub sign_with: Option<String>,
    /// Path prefixes whose requests need a token (default: every path).
    #[serde(default = "every_path")]
    pub paths: Vec<String>,
    /// How far the node's clock and the signer's may disagree, in seconds:
    /// a token is expired only this long after its `exp`.
    #[serde(default = "default_skew")]
    pub max_skew_s: u64,
    #[serde(default)]
    pub on_invalid: OnInvalid,
    /// Remove the token's query parameters before the policy and the cache
    /// see the request (every user's link to an object is then one cache
    /// entry, and the origin never sees tokens).
    #[serde(default = "default_true")]
    pub strip_token: bool,
    /// `edge-auth`: the parameter, cookie or header holding the token.
    #[serde(default = "default_token_name")]
    pub token_name: String,
    #[serde(default)]
    pub token_in: TokenIn,
    /// `nginx-md5`: the text hashed, as nginx's `secure_link_md5`, with
    /// `$secure_link_expires`, `$uri`, `$remote_addr` and `$secret` (the
    /// key) replaced.
    #[serde(default = "default_md5_template")]
    pub md5_template: String,
}

fn every_path() -> Vec<String> {
    vec!["/".into()]
}

fn default_skew() -> u64 {
    30
}

fn default_true() -> bool {
    true
}

fn default_token_name() -> String {
    "hdnts".into()
}

fn default_md5_template() -> String {
    "$secure_link_expires$uri $secret".into()
}

impl SignedUrlsConfig {
    /// The key id links are signed with.
    pub fn signing_key_id(&self) -> Option<&str> {
        match &self.sign_with {
            Some(id) => Some(id),
            None if self.keys.len() == 1 => self.keys.keys().next().map(String::as_str),
            None => None,
        }
    }

    fn validate(&self, secrets: &BTreeMap<String, SecretSource>) -> Result<(), FieldError> {
        check(!self.keys.is_empty(), "keys", || {
            "needs at least one key: `keys = { <key id> = \"<secret name>\" }`".into()
        })?;
        for (id, secret) in &self.keys {
            check(valid_name(id), &format!("keys.{id}"), || {
                format!("key id {id:?} must be letters, digits, '-' or '_'")
            })?;
            check(secrets.contains_key(secret), &format!("keys.{id}"), || {
                format!("{secret:?} is not a secret of this tenant ([tenant.secrets])")
            })?;
        }
        match &self.sign_with {
            Some(id) => check(self.keys.contains_key(id), "sign_with", || {
                format!("{id:?} is not one of the keys")
            })?,
            None => check(self.keys.len() == 1, "sign_with", || {
                "name the key new links are signed with (there are several)".into()
            })?,
        }
        for prefix in &self.paths {
            check(prefix.starts_with('/'), "paths", || {
                format!("{prefix:?} must start with /")
            })?;
        }
        check(self.max_skew_s <= 3600, "max_skew_s", || {
            "must be at most 3600".into()
        })?;
        check(
            self.token_name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-_".contains(&b))
                && !self.token_name.is_empty(),
            "token_name",
            || format!("{:?} must be letters, digits, '-' or '_'", self.token_name),
        )?;
        if self.format == SignedUrlFormat::NginxMd5 {
            check(
                self.md5_template.contains("$secret"),
                "md5_template",
                || "must contain $secret, or the hash proves nothing".into(),
            )?;
        }
        Ok(())
    }
}

/// `[tenant.limiters.NAME]`: a rate per window with a burst, as nginx's
/// `limit_req zone=... rate=<rate/window> burst=<burst> nodelay`, and a
/// penalty time as Fastly's edge rate limiting's penalty box.
#[derive(Debug, Clone, Copy, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LimiterConfig {
    /// Requests (cost units) allowed per `window_s`.
    pub rate: u32,
    /// The window the rate is counted over, in seconds (`rate = 600,
    /// window_s = 60` is 10 per second).
    #[serde(default = "one")]
    pub window_s: u32,
    /// Requests allowed above the rate at once (nginx's `burst`).
    #[serde(default)]
    pub burst: u32,
    /// Seconds a denied key stays denied (0: only until the rate lets it
    /// through again).
    #[serde(default)]
    pub penalty_s: u32,
    /// Keys remembered at most; past it the least recently used is
    /// forgotten (and starts afresh).
    #[serde(default = "default_max_keys")]
    pub max_keys: u32,
}

fn one() -> u32 {
    1
}

fn default_max_keys() -> u32 {
    100_000
}

impl LimiterConfig {
    fn validate(&self) -> Result<(), FieldError> {
        at_least_one(self.rate.into(), "rate")?;
        at_least_one(self.window_s.into(), "window_s")?;
        check(self.window_s <= 86_400, "window_s", || {
            "must be at most 86400 (a day)".into()
        })?;
        at_least_one(self.max_keys.into(), "max_keys")?;
        check(self.max_keys <= 10_000_000, "max_keys", || {
            "must be at most 10000000".into()
        })
    }
}

/// When a counter's totals start again from 0 (UTC).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CounterReset {
    #[default]
    Never,
    Hourly,
    Daily,
}

/// `[tenant.counters.NAME]`: exact totals per key, each kept by the POP
/// member that owns the key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CounterConfig {
    #[serde(default)]
    pub reset: CounterReset,
    /// Keys kept at most per node; past it the least recently used key's
    /// total is forgotten.
    #[serde(default = "default_max_keys")]
    pub max_keys: u32,
}

impl CounterConfig {
    fn validate(&self) -> Result<(), FieldError> {
        at_least_one(self.max_keys.into(), "max_keys")?;
        check(self.max_keys <= 10_000_000, "max_keys", || {
            "must be at most 10000000".into()
        })
    }
}

/// A name a policy passes to a host call: letters, digits, `-` and `_`.
fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// Checks a tenant's secrets, signed URLs, limiters and counters; errors
/// name the field relative to the tenant.
pub(super) fn validate(
    secrets: &BTreeMap<String, SecretSource>,
    signed_urls: Option<&SignedUrlsConfig>,
    limiters: &BTreeMap<String, LimiterConfig>,
    counters: &BTreeMap<String, CounterConfig>,
) -> Result<(), FieldError> {
    for (name, source) in secrets {
        let field = format!("secrets.{name}");
        check(valid_name(name), &field, || {
            format!("secret name {name:?} must be letters, digits, '-' or '_'")
        })?;
        source
            .validate()
            .map_err(|e| e.within(&format!("{field}.")))?;
    }
    if let Some(signed) = signed_urls {
        signed
            .validate(secrets)
            .map_err(|e| e.within("signed_urls."))?;
    }
    for (name, limiter) in limiters {
        let field = format!("limiters.{name}");
        check(valid_name(name), &field, || {
            format!("limiter name {name:?} must be letters, digits, '-' or '_'")
        })?;
        limiter
            .validate()
            .map_err(|e| e.within(&format!("{field}.")))?;
    }
    for (name, counter) in counters {
        let field = format!("counters.{name}");
        check(valid_name(name), &field, || {
            format!("counter name {name:?} must be letters, digits, '-' or '_'")
        })?;
        counter
            .validate()
            .map_err(|e| e.within(&format!("{field}.")))?;
    }
    Ok(())
}
