//! The mark on a request one POP member forwards to another:
//! `outpost-pop-forward: by=<node>;for=<client ip>;proto=<http|https>`,
//! with `;invalidate=<hex of a cache key>` when it only tells the owner
//! that an unsafe request elsewhere in the POP invalidated that key, or
//! `;count=<hex of tenant, counter and key, NUL-separated>;add=<delta>`
//! when it asks the owner of a counter's key to add to it
//! (the parameters of RFC 7239's `Forwarded`, in a field of its own so a
//! client's `Forwarded` is left alone). The owner serves a marked request
//! itself, never forwarding it again, and takes the client's address and
//! scheme from it; a mark is only believed from a member's address, and is
//! always removed before anything else sees the request.

use std::net::IpAddr;

use http::{HeaderMap, HeaderName, HeaderValue};

use crate::http::SignatureVerdict;

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
    pub fn header_value(&self) -> HeaderValue {
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
        HeaderValue::from_str(&value).unwrap_or(HeaderValue::from_static("by=-"))
    }

    /// Removes every mark from `headers`; the one there was, if there was
    /// exactly one and it parses.
    pub fn take(headers: &mut HeaderMap) -> Option<Mark> {
        let mut values = match headers.entry(HEADER) {
            http::header::Entry::Occupied(e) => e.remove_entry_mult().1,
            http::header::Entry::Vacant(_) => return None,
        };
        let first = values.next()?;
        if values.next().is_some() {
            return None;
        }
        parse(first.to_str().ok()?)
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

    #[test]
    fn a_mark_reads_back_as_written_and_is_removed() {
        let mark = Mark {
            by: "edge-2".into(),
            client_ip: "2001:db8::7".parse().unwrap(),
            https: true,
            invalidate: None,
            count: None,
            signature: SignatureVerdict::Valid,
        };
        let mut headers = HeaderMap::new();
        headers.insert(HEADER, mark.header_value());
        assert_eq!(Mark::take(&mut headers), Some(mark.clone()));
        assert!(!headers.contains_key(HEADER));
        let invalidation = Mark {
            invalidate: Some("shop.test/a b?é=1;x".into()),
            ..mark
        };
        headers.insert(HEADER, invalidation.header_value());
        assert_eq!(Mark::take(&mut headers), Some(invalidation.clone()));
        let count = Mark {
            invalidate: None,
            count: Some(CountOp {
                tenant: "files".into(),
                counter: "downloads".into(),
                key: "user 7;é".into(),
                delta: 3,
            }),
            ..invalidation
        };
        headers.insert(HEADER, count.header_value());
        assert_eq!(Mark::take(&mut headers), Some(count));
    }

    #[test]
    fn two_marks_or_a_malformed_one_count_as_none_and_are_removed_all_the_same() {
        for values in [
            &[
                "by=a;for=\"1.2.3.4\";proto=http",
                "by=b;for=\"1.2.3.4\";proto=http",
            ][..],
            &["by=a;for=nowhere;proto=http"][..],
            &["by=a;for=\"1.2.3.4\";proto=http;invalidate=zz"][..],
            &["for=\"1.2.3.4\";proto=http"][..],
            &["garbage"][..],
        ] {
            let mut headers = HeaderMap::new();
            for v in values {
                headers.append(HEADER, HeaderValue::from_static(v));
            }
            assert_eq!(Mark::take(&mut headers), None, "{values:?}");
            assert!(!headers.contains_key(HEADER));
        }
    }
}
