//! The three token formats: how each is found in a request, what its
//! signature covers, and how a link of it is made.

use std::net::IpAddr;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use hmac::{Hmac, Mac};
use md5::{Digest, Md5};
use sha2::Sha256;
use subtle::ConstantTimeEq;

use super::query::{cookie, param, percent_decode};
use super::SignedUrls;
use crate::config::{SignedUrlFormat, TokenIn};
use crate::http::hex;
use crate::http::SignatureVerdict;
use crate::secrets::Secret;

/// What a check reads of a request.
pub(super) struct Request<'a> {
    pub path: &'a str,
    pub query: &'a str,
    pub headers: &'a http::HeaderMap,
    pub client_ip: IpAddr,
    pub now: u64,
}

type HmacSha256 = Hmac<Sha256>;

fn hmac(key: &Secret, message: &[u8]) -> HmacSha256 {
    let mut mac = HmacSha256::new_from_slice(key.expose()).expect("HMAC takes keys of any length");
    mac.update(message);
    mac
}

/// HMAC-SHA256 of `message` under `key` (RFC 2104).
pub fn hmac_sha256(key: &Secret, message: &[u8]) -> [u8; 32] {
    hmac(key, message).finalize().into_bytes().into()
}

/// Whether one of `keys` signed `message` with `signature`, compared in
/// constant time (`Mac::verify_slice`).
fn signed_by_any<'a>(
    mut keys: impl Iterator<Item = &'a Secret>,
    message: &[u8],
    signature: &[u8],
) -> bool {
    keys.any(|key| hmac(key, message).verify_slice(signature).is_ok())
}

/// A signature in lowercase or uppercase hex, or unpadded base64url.
fn decode_signature(text: &str) -> Option<Vec<u8>> {
    hex::decode(text.as_bytes()).or_else(|| URL_SAFE_NO_PAD.decode(text.trim_end_matches('=')).ok())
}

/// The message an `hmac-sha256` signature covers:
/// `<path>?exp=<exp>[&kid=<kid>]`.
fn hmac_message(path: &str, exp: &str, kid: Option<&str>) -> String {
    match kid {
        Some(kid) => format!("{path}?exp={exp}&kid={kid}"),
        None => format!("{path}?exp={exp}"),
    }
}

/// `?exp=<unix seconds>[&kid=<id>]&sig=<hmac>`.
pub(super) fn check_hmac(urls: &SignedUrls, r: &Request) -> SignatureVerdict {
    let (Some(exp_text), Some(sig)) = (param(r.query, "exp"), param(r.query, "sig")) else {
        return if param(r.query, "sig").is_some() || param(r.query, "exp").is_some() {
            SignatureVerdict::Invalid
        } else {
            SignatureVerdict::Missing
        };
    };
    let (Ok(exp), Some(sig)) = (exp_text.parse::<u64>(), decode_signature(&sig)) else {
        return SignatureVerdict::Invalid;
    };
    let kid = param(r.query, "kid");
    let message = hmac_message(r.path, &exp_text, kid.as_deref());
    if !signed_by_any(
        urls.candidate_keys(kid.as_deref()),
        message.as_bytes(),
        &sig,
    ) {
        return SignatureVerdict::Invalid;
    }
    urls.in_time(None, Some(exp), r.now)
}

/// An EdgeAuth token: `~`-separated `name=value` fields, `hmac` last, over
/// the text before `~hmac=`.
pub(super) fn check_edge_auth(urls: &SignedUrls, r: &Request) -> SignatureVerdict {
    let token = match urls.token_in {
        TokenIn::Query => param(r.query, &urls.token_name),
        TokenIn::Cookie => cookie(r.headers, &urls.token_name),
        TokenIn::Header => r
            .headers
            .get(urls.token_name.as_str())
            .and_then(|v| v.to_str().ok())
            .map(str::to_string),
    };
    let Some(token) = token.filter(|t| !t.is_empty()) else {
        return SignatureVerdict::Missing;
    };
    let Some((signed, mac)) = token.rsplit_once("~hmac=") else {
        return SignatureVerdict::Invalid;
    };
    let field = |name: &str| {
        signed
            .split('~')
            .filter_map(|f| f.split_once('='))
            .find(|(n, _)| *n == name)
            .map(|(_, v)| v)
    };
    let Some(mac) = hex::decode(mac.as_bytes()) else {
        return SignatureVerdict::Invalid;
    };
    if !signed_by_any(urls.candidate_keys(field("kid")), signed.as_bytes(), &mac) {
        return SignatureVerdict::Invalid;
    }
    let number = |name| field(name).map(|v| v.parse::<u64>().ok());
    let (Some(Some(exp)), start) = (number("exp"), number("st")) else {
        return SignatureVerdict::Invalid;
    };
    let Some(start) = start.unwrap_or(Some(0)) else {
        return SignatureVerdict::Invalid;
    };
    let covered = match (field("acl"), field("url")) {
        (Some(acl), _) => acl.split('!').any(|pattern| glob(pattern, r.path)),
        (None, Some(url)) => percent_decode(url) == r.path,
        (None, None) => false,
    };
    if !covered {
        return SignatureVerdict::Invalid;
    }
    urls.in_time(Some(start), Some(exp), r.now)
}

/// Whether `path` matches `pattern`, where `*` matches any run of
/// characters (EdgeAuth's ACL wildcard, e.g. `/downloads/*`).
fn glob(pattern: &str, path: &str) -> bool {
    let Some((first, rest)) = pattern.split_once('*') else {
        return pattern == path;
    };
    let Some(mut remaining) = path.strip_prefix(first) else {
        return false;
    };
    let mut pieces = rest.split('*').peekable();
    while let Some(piece) = pieces.next() {
        if pieces.peek().is_none() {
            return remaining.ends_with(piece);
        }
        match remaining.find(piece) {
            Some(at) => remaining = &remaining[at + piece.len()..],
            None => return false,
        }
    }
    true
}

/// nginx `secure_link $arg_md5,$arg_expires` with `secure_link_md5
/// <template>`: the base64url MD5 of the expanded template.
pub(super) fn check_nginx_md5(urls: &SignedUrls, r: &Request) -> SignatureVerdict {
    let Some(md5) = param(r.query, "md5") else {
        return SignatureVerdict::Missing;
    };
    let expires = param(r.query, "expires");
    let Ok(expires_at) = expires.as_deref().map(str::parse::<u64>).transpose() else {
        return SignatureVerdict::Invalid;
    };
    let Ok(given) = URL_SAFE_NO_PAD.decode(md5.trim_end_matches('=')) else {
        return SignatureVerdict::Invalid;
    };
    let uri = percent_decode(r.path);
    let matches = urls.candidate_keys(None).any(|key| {
        let text = expand(
            &urls.md5_template,
            expires.as_deref().unwrap_or(""),
            &uri,
            Some(r.client_ip),
            key,
        );
        bool::from(Md5::digest(&text).as_slice().ct_eq(&given))
    });
    if !matches {
        return SignatureVerdict::Invalid;
    }
    // As nginx: a link without `expires` does not expire.
    urls.in_time(None, expires_at, r.now)
}

/// The nginx template with its variables replaced.
fn expand(
    template: &str,
    expires: &str,
    uri: &str,
    client_ip: Option<IpAddr>,
    key: &Secret,
) -> Vec<u8> {
    let ip = client_ip.map(|ip| ip.to_string()).unwrap_or_default();
    let mut out = Vec::with_capacity(template.len() + uri.len() + key.len() + 16);
    let mut rest = template;
    while let Some(at) = rest.find('$') {
        out.extend_from_slice(&rest.as_bytes()[..at]);
        rest = &rest[at..];
        let vars: [(&str, &[u8]); 4] = [
            ("$secure_link_expires", expires.as_bytes()),
            ("$remote_addr", ip.as_bytes()),
            ("$secret", key.expose()),
            ("$uri", uri.as_bytes()),
        ];
        match vars.iter().find(|(name, _)| rest.starts_with(name)) {
            Some((name, value)) => {
                out.extend_from_slice(value);
                rest = &rest[name.len()..];
            }
            None => {
                out.push(b'$');
                rest = &rest[1..];
            }
        }
    }
    out.extend_from_slice(rest.as_bytes());
    out
}

/// A link (or an EdgeAuth token for a cookie or header) in the tenant's
/// format, signed with its signing key.
pub(super) fn sign(
    urls: &SignedUrls,
    path_with_query: &str,
    expires: u64,
    now: u64,
    client_ip: Option<IpAddr>,
) -> Result<String, String> {
    let (path, query) = match path_with_query.split_once('?') {
        Some((p, q)) => (p, Some(q)),
        None => (path_with_query, None),
    };
    let (kid, key) = urls.signing_key();
    let with = |params: String| match query {
        Some(q) if !q.is_empty() => format!("{path}?{q}&{params}"),
        _ => format!("{path}?{params}"),
    };
    Ok(match urls.format {
        SignedUrlFormat::HmacSha256 => {
            let exp = expires.to_string();
            let message = hmac_message(path, &exp, Some(kid));
            let sig = hex::encode(&hmac_sha256(key, message.as_bytes()));
            with(format!("exp={exp}&kid={kid}&sig={sig}"))
        }
        SignedUrlFormat::EdgeAuth => {
            let signed = format!("st={now}~exp={expires}~acl={path}~kid={kid}");
            let mac = hex::encode(&hmac_sha256(key, signed.as_bytes()));
            let token = format!("{signed}~hmac={mac}");
            match urls.token_in {
                TokenIn::Query => with(format!("{}={token}", urls.token_name)),
                TokenIn::Cookie | TokenIn::Header => token,
            }
        }
        SignedUrlFormat::NginxMd5 => {
            if client_ip.is_none() && urls.md5_template.contains("$remote_addr") {
                return Err("the md5 template uses $remote_addr: give the client's address".into());
            }
            let exp = expires.to_string();
            let uri = percent_decode(path);
            let text = expand(&urls.md5_template, &exp, &uri, client_ip, key);
            let md5 = URL_SAFE_NO_PAD.encode(Md5::digest(&text));
            with(format!("md5={md5}&expires={exp}"))
        }
    })
}
