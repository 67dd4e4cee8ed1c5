//! Signed URLs: a tenant's links carry a token made with a key the tenant
//! holds, and the node checks it before the policy runs
//! (`[tenant.signed_urls]`). Three formats, those operators migrate from
//! (`formats.rs`): an HMAC-SHA256 over path and expiry (`?exp=&sig=`, the
//! style of Fastly's and bunny.net's tokens), an Akamai EdgeAuth-like token
//! (`st~exp~acl~hmac`) in a query parameter, cookie or header, and nginx's
//! `secure_link` MD5.
//!
//! Every comparison of a signature is in constant time; a token is
//! expired only `max_skew_s` after its expiry; several keys (by key id)
//! are valid at once so keys can be rolled over. The verdicts split as
//! nginx's `$secure_link` does: a missing or bad token is refused with 403,
//! an expired one with 410 (RFC 9110 section 15.5.11: the link is gone for
//! good).
//!
//! An engine: it reads the request's target and fields and knows the
//! tenant's keys; what to answer is the data plane's decision.

mod formats;
mod query;

pub use formats::hmac_sha256;

use std::net::IpAddr;

use http::{HeaderMap, Uri};

use crate::config::{FieldError, OnInvalid, SignedUrlFormat, SignedUrlsConfig, TokenIn};
use crate::http::SignatureVerdict;
use crate::secrets::{Secret, Secrets};

/// The query parameters a token of `config`'s format is carried in.
fn token_params(config: &SignedUrlsConfig) -> Vec<String> {
    let names: &[&str] = match (config.format, config.token_in) {
        (SignedUrlFormat::HmacSha256, _) => &["exp", "kid", "sig"],
        (SignedUrlFormat::NginxMd5, _) => &["md5", "expires"],
        (SignedUrlFormat::EdgeAuth, TokenIn::Query) => return vec![config.token_name.clone()],
        (SignedUrlFormat::EdgeAuth, _) => &[],
    };
    names.iter().map(|n| n.to_string()).collect()
}

/// Shortest signing key accepted, in bytes (half an HMAC-SHA256 block;
/// RFC 2104 section 3 advises no less than the hash's output length).
pub const MIN_KEY_BYTES: usize = 16;

/// A tenant's signed-URL rules with its keys resolved.
#[derive(Debug)]
pub struct SignedUrls {
    format: SignedUrlFormat,
    /// Key ids and keys, in id order.
    keys: Vec<(String, Secret)>,
    /// Index in `keys` of the key new links are signed with.
    signer: usize,
    paths: Vec<String>,
    skew_s: u64,
    pub on_invalid: OnInvalid,
    /// The query parameters removed from a checked request's target
    /// (none when `strip_token` is off), worked out once per config.
    strip_params: Vec<String>,
    token_name: String,
    token_in: TokenIn,
    md5_template: String,
}

/// What a check found, and the target with the token's parameters removed
/// (when there were some to remove).
#[derive(Debug, PartialEq, Eq)]
pub struct Checked {
    pub verdict: SignatureVerdict,
    pub stripped: Option<Uri>,
}

impl SignedUrls {
    /// The rules of `config` with their keys from `secrets`. Errors name the
    /// field (relative to the tenant).
    pub fn new(config: &SignedUrlsConfig, secrets: &Secrets) -> Result<SignedUrls, FieldError> {
        let mut keys = Vec::new();
        for (id, secret_name) in &config.keys {
            let field = format!("signed_urls.keys.{id}");
            let secret = secrets.get(secret_name).ok_or_else(|| {
                FieldError::new(&field, format!("{secret_name:?} is not a secret"))
            })?;
            if secret.len() < MIN_KEY_BYTES {
                return Err(FieldError::new(
                    &field,
                    format!(
                        "the secret {secret_name:?} is {} bytes; a signing key needs at least \
                         {MIN_KEY_BYTES}",
                        secret.len()
                    ),
                ));
            }
            keys.push((id.clone(), secret.clone()));
        }
        let signer_id = config
            .signing_key_id()
            .ok_or_else(|| FieldError::new("signed_urls.sign_with", "name a key"))?;
        let signer = keys
            .iter()
            .position(|(id, _)| id == signer_id)
            .ok_or_else(|| FieldError::new("signed_urls.sign_with", "not one of the keys"))?;
        Ok(SignedUrls {
            format: config.format,
            keys,
            signer,
            paths: config.paths.clone(),
            skew_s: config.max_skew_s,
            on_invalid: config.on_invalid,
            strip_params: if config.strip_token {
                token_params(config)
            } else {
                Vec::new()
            },
            token_name: config.token_name.clone(),
            token_in: config.token_in,
            md5_template: config.md5_template.clone(),
        })
    }

    /// Checks a request at `now` (Unix seconds).
    pub fn check(&self, uri: &Uri, headers: &HeaderMap, client_ip: IpAddr, now: u64) -> Checked {
        let path = uri.path();
        if !self.paths.iter().any(|p| path.starts_with(p.as_str())) {
            return Checked {
                verdict: SignatureVerdict::NotChecked,
                stripped: None,
            };
        }
        let request = formats::Request {
            path,
            query: uri.query().unwrap_or(""),
            headers,
            client_ip,
            now,
        };
        let verdict = match self.format {
            SignedUrlFormat::HmacSha256 => formats::check_hmac(self, &request),
            SignedUrlFormat::EdgeAuth => formats::check_edge_auth(self, &request),
            SignedUrlFormat::NginxMd5 => formats::check_nginx_md5(self, &request),
        };
        let stripped = if self.strip_params.is_empty() {
            None
        } else {
            query::without(uri, &self.strip_params)
        };
        Checked { verdict, stripped }
    }

    /// A link to `path_with_query` valid until `expires` (Unix seconds),
    /// signed at `now` with the signing key; for an EdgeAuth token carried
    /// in a cookie or header, the token itself. `client_ip` fills
    /// `$remote_addr` of an nginx template that uses it.
    pub fn sign(
        &self,
        path_with_query: &str,
        expires: u64,
        now: u64,
        client_ip: Option<IpAddr>,
    ) -> Result<String, String> {
        if !path_with_query.starts_with('/') {
            return Err(format!("{path_with_query:?} must start with /"));
        }
        formats::sign(self, path_with_query, expires, now, client_ip)
    }

    fn signing_key(&self) -> &(String, Secret) {
        &self.keys[self.signer]
    }

    /// The key of `id`, or every key when the token names none.
    fn candidate_keys<'a>(&'a self, id: Option<&'a str>) -> impl Iterator<Item = &'a Secret> {
        self.keys
            .iter()
            .filter(move |(kid, _)| id.is_none_or(|id| id == kid))
            .map(|(_, key)| key)
    }

    /// The verdict for a correctly signed token valid from `start` until
    /// `expires` (Unix seconds), with the allowed skew.
    fn in_time(&self, start: Option<u64>, expires: Option<u64>, now: u64) -> SignatureVerdict {
        if start.is_some_and(|st| st > now.saturating_add(self.skew_s)) {
            return SignatureVerdict::Invalid;
        }
        match expires {
            Some(exp) if now > exp.saturating_add(self.skew_s) => SignatureVerdict::Expired,
            _ => SignatureVerdict::Valid,
        }
    }
}

#[cfg(test)]
mod tests;
