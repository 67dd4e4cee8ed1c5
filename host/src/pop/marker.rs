//! The mark on a request one POP member forwards to another:
//! `outpost-pop-forward: by=<node>;for=<client ip>;proto=<http|https>`,
//! with `;invalidate=<hex of a cache key>` when it only tells the owner
//! that an unsafe request elsewhere in the POP invalidated that key, or
//! `;count=<hex of tenant, counter and key, NUL-separated>;add=<delta>`
//! when it asks the owner of a counter's key to add to it
//! (the parameters of RFC 7239's `Forwarded`, in a field of its own so a
//! client's `Forwarded` is left alone). The owner serves a marked request
//! itself, never forwarding it again, and takes the client's address and
//! scheme from it.
//!
//! A mark cannot be forged: it ends with `;t=<unix seconds>;mac=<hex>`, an
//! HMAC-SHA256 (RFC 2104) of everything before `;mac=` under the fleet's
//! mark key (kept in etcd, `fleet::sync`), checked in constant time and
//! believed for [`VALID_FOR_S`] seconds either side of the receiver's
//! clock. A mark that fails is removed all the same, and the request is
//! served as a client's.

use std::net::IpAddr;

use http::{HeaderMap, HeaderName, HeaderValue};
use subtle::ConstantTimeEq;

use crate::http::SignatureVerdict;
use crate::secrets::Secret;

/// How far a mark's time may be from the receiver's clock, in seconds.
pub const VALID_FOR_S: u64 = 30;

pub const HEADER: HeaderName = HeaderName::from_static("outpost-pop-forward");

/// What a mark says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mark {
    pub by: String,
    pub client_ip: IpAddr,
    pub https: bool,
    /// A key to drop, instead of a request to serve.
    pub invalidate: Option<String>,
    /// A counter's key to add to, instead of a request to serve.
    pub count: Option<CountOp>,
    /// What the forwarding member's signed-URL check found (the token is
    /// gone from the target by then).
    pub signature: SignatureVerdict,
}

/// An addition to a counter's key, sent to the member that keeps it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CountOp {
    pub tenant: String,
    pub counter: String,
    pub key: String,
    /// 0 reads the total.
    pub delta: u64,
}

impl Mark {
    /// The mark signed with `key` at `now` (Unix seconds).
    pub fn signed(&self, key: &Secret, now: u64) -> HeaderValue {
        let fields = format!("{};t={now}", self.fields());
        let mac = crate::signed_url::hmac_sha256(key, fields.as_bytes());
        let value = format!("{fields};mac={}", crate::http::hex::encode(&mac));
        HeaderValue::from_str(&value).unwrap_or(HeaderValue::from_static("by=-"))
    }

    /// Removes every mark from `headers`; the one there was, if there was
    /// exactly one, it parses, and `key` signed it within [`VALID_FOR_S`]
    /// of `now`. Without a key no mark is believed.
    pub fn take(headers: &mut HeaderMap, key: Option<&Secret>, now: u64) -> Option<Mark> {
        let mut values = match headers.entry(HEADER) {
            http::header::Entry::Occupied(e) => e.remove_entry_mult().1,
            http::header::Entry::Vacant(_) => return None,
        };
        let first = values.next()?;
        if values.next().is_some() {
            return None;
        }
        let (signed, mac) = first.to_str().ok()?.rsplit_once(";mac=")?;
        let mac = crate::http::hex::decode(mac.as_bytes())?;
        let expected = crate::signed_url::hmac_sha256(key?, signed.as_bytes());
        if !bool::from(expected.as_slice().ct_eq(&mac)) {
            return None;
        }
        let (fields, t) = signed.rsplit_once(";t=")?;
        let t: u64 = t.parse().ok()?;
        if t.abs_diff(now) > VALID_FOR_S {
            return None;
        }
        parse(fields)
    }

    /// The fields, unsigned.
    fn fields(&self) -> String {
        let proto = if self.https { "https" } else { "http" };
        let mut value = format!("by={};for=\"{}\";proto={proto}", self.by, self.client_ip);
        if let Some(key) = &self.invalidate {
            value.push_str(";invalidate=");
            value.push_str(&crate::http::hex::encode(key.as_bytes()));
        }
        if self.signature != SignatureVerdict::NotChecked {
            value.push_str(";signature=");
            value.push_str(self.signature.as_str());
        }
        if let Some(op) = &self.count {
            let names = format!("{}\0{}\0{}", op.tenant, op.counter, op.key);
            value.push_str(";count=");
            value.push_str(&crate::http::hex::encode(names.as_bytes()));
            value.push_str(&format!(";add={}", op.delta));
        }
        value
    }
}

fn parse(value: &str) -> Option<Mark> {
    let (mut by, mut client_ip, mut https, mut invalidate) = (None, None, None, None);
    let (mut count, mut add) = (None, None);
    let mut signature = SignatureVerdict::NotChecked;
    for param in value.split(';') {
        let (name, v) = param.trim().split_once('=')?;
        let v = v.trim_matches('"');
        match name.to_ascii_lowercase().as_str() {
            "by" if !v.is_empty() => by = Some(v.to_string()),
            "for" => client_ip = v.parse().ok(),
            "proto" => https = Some(v.eq_ignore_ascii_case("https")),
            "invalidate" => invalidate = Some(unhex(v)?),
            "count" => count = Some(unhex(v)?),
            "add" => add = Some(v.parse::<u64>().ok()?),
            "signature" => signature = SignatureVerdict::parse(v)?,
            _ => {}
        }
    }
    let count = match (count, add) {
        (None, None) => None,
        (Some(names), Some(delta)) => {
            let mut parts = names.splitn(3, '\0');
            Some(CountOp {
                tenant: parts.next()?.to_string(),
                counter: parts.next()?.to_string(),
                key: parts.next()?.to_string(),
                delta,
            })
        }
        _ => return None,
    };
    Some(Mark {
        by: by?,
        client_ip: client_ip?,
        https: https?,
        invalidate,
        count,
        signature,
    })
}

/// A key spelled in hex, back.
fn unhex(v: &str) -> Option<String> {
    String::from_utf8(crate::http::hex::decode(v.as_bytes())?).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: u64 = 1_800_000_000;

    fn key() -> Secret {
        Secret::from(&b"fleet-mark-key-0123456789abcdef"[..])
    }

    fn mark() -> Mark {
        Mark {
            by: "edge-2".into(),
            client_ip: "2001:db8::7".parse().unwrap(),
            https: true,
            invalidate: None,
            count: None,
            signature: SignatureVerdict::Valid,
        }
    }

    fn round_trip(value: HeaderValue, key: Option<&Secret>, now: u64) -> (Option<Mark>, bool) {
        let mut headers = HeaderMap::new();
        headers.insert(HEADER, value);
        let taken = Mark::take(&mut headers, key, now);
        (taken, headers.contains_key(HEADER))
    }

    #[test]
    fn a_signed_mark_reads_back_as_written_and_is_removed() {
        let (taken, left) = round_trip(mark().signed(&key(), NOW), Some(&key()), NOW + 5);
        assert_eq!(taken, Some(mark()));
        assert!(!left);
        let invalidation = Mark {
            invalidate: Some("shop.test/a b?é=1;x".into()),
            ..mark()
        };
        let signed = invalidation.signed(&key(), NOW);
        assert_eq!(round_trip(signed, Some(&key()), NOW).0, Some(invalidation));
        let count = Mark {
            count: Some(CountOp {
                tenant: "files".into(),
                counter: "downloads".into(),
                key: "user 7;é".into(),
                delta: 3,
            }),
            ..mark()
        };
        let signed = count.signed(&key(), NOW);
        assert_eq!(round_trip(signed, Some(&key()), NOW).0, Some(count));
    }

    #[test]
    fn forged_tampered_stale_or_unkeyed_marks_count_as_none_and_are_removed() {
        let good = mark().signed(&key(), NOW);
        let text = good.to_str().unwrap().to_string();
        let other_key = Secret::from(&b"another-key-0123456789abcdef"[..]);
        let forged = format!("by=edge-2;for=\"203.0.113.9\";proto=http;t={NOW};mac=00");
        let cases = [
            (HeaderValue::from_str(&forged).unwrap(), Some(key()), NOW),
            (
                HeaderValue::from_str(&text.replace("2001:db8::7", "2001:db8::8")).unwrap(),
                Some(key()),
                NOW,
            ),
            (mark().signed(&other_key, NOW), Some(key()), NOW),
            (good.clone(), Some(key()), NOW + VALID_FOR_S + 1),
            (good.clone(), Some(key()), NOW - VALID_FOR_S - 1),
            (good.clone(), None, NOW),
            (
                HeaderValue::from_static("by=a;for=\"1.2.3.4\";proto=http"),
                Some(key()),
                NOW,
            ),
        ];
        for (value, key, now) in cases {
            let shown = format!("{value:?} at {now}");
            let (taken, left) = round_trip(value, key.as_ref(), now);
            assert_eq!(taken, None, "{shown}");
            assert!(!left, "{shown}");
        }
        // Two marks, even two good ones, count as none.
        let mut headers = HeaderMap::new();
        headers.append(HEADER, good.clone());
        headers.append(HEADER, good);
        assert_eq!(Mark::take(&mut headers, Some(&key()), NOW), None);
        assert!(!headers.contains_key(HEADER));
    }
}
