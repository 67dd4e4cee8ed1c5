//! The mark on a request one POP member forwards to another:
//! `outpost-pop-forward: by=<node>;for=<client ip>;proto=<http|https>`,
//! with `;invalidate=<hex of a cache key>` when it only tells the owner
//! that an unsafe request elsewhere in the POP invalidated that key
//! (the parameters of RFC 7239's `Forwarded`, in a field of its own so a
//! client's `Forwarded` is left alone). The owner serves a marked request
//! itself, never forwarding it again, and takes the client's address and
//! scheme from it; a mark is only believed from a member's address, and is
//! always removed before anything else sees the request.

use std::net::IpAddr;

use http::{HeaderMap, HeaderName, HeaderValue};

pub const HEADER: HeaderName = HeaderName::from_static("outpost-pop-forward");

/// What a mark says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mark {
    pub by: String,
    pub client_ip: IpAddr,
    pub https: bool,
    /// A key to drop, instead of a request to serve.
    pub invalidate: Option<String>,
}

impl Mark {
    pub fn header_value(&self) -> HeaderValue {
        let proto = if self.https { "https" } else { "http" };
        let mut value = format!("by={};for=\"{}\";proto={proto}", self.by, self.client_ip);
        if let Some(key) = &self.invalidate {
            value.push_str(";invalidate=");
            for b in key.bytes() {
                value.push_str(&format!("{b:02x}"));
            }
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
    for param in value.split(';') {
        let (name, v) = param.trim().split_once('=')?;
        let v = v.trim_matches('"');
        match name.to_ascii_lowercase().as_str() {
            "by" if !v.is_empty() => by = Some(v.to_string()),
            "for" => client_ip = v.parse().ok(),
            "proto" => https = Some(v.eq_ignore_ascii_case("https")),
            "invalidate" => invalidate = Some(unhex(v)?),
            _ => {}
        }
    }
    Some(Mark {
        by: by?,
        client_ip: client_ip?,
        https: https?,
        invalidate,
    })
}

/// A key spelled in hex, back.
fn unhex(v: &str) -> Option<String> {
    if !v.len().is_multiple_of(2) {
        return None;
    }
    let bytes: Option<Vec<u8>> = (0..v.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(v.get(i..i + 2)?, 16).ok())
        .collect();
    String::from_utf8(bytes?).ok()
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
        assert_eq!(Mark::take(&mut headers), Some(invalidation));
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
