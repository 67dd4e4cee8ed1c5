//! Header rules for an intermediary (RFC 9110 section 7.6).

use http::header::{self, HeaderMap, HeaderName, HeaderValue};

/// Hop-by-hop fields (RFC 9110 section 7.6.1), plus the obsolete ones that
/// clients still send. They describe one connection and are never forwarded.
/// Names, not text: a removal by `&str` parses the name each time.
const HOP_BY_HOP: [HeaderName; 9] = [
    header::CONNECTION,
    HeaderName::from_static("keep-alive"),
    HeaderName::from_static("proxy-connection"),
    header::PROXY_AUTHENTICATE,
    header::PROXY_AUTHORIZATION,
    header::TE,
    header::TRAILER,
    header::TRANSFER_ENCODING,
    header::UPGRADE,
];

/// Removes the hop-by-hop fields, including those named by `Connection`
/// (RFC 9110 section 7.6.1). One look at each name first: most heads have
/// none, and a removal hashes its name.
pub fn strip_hop_by_hop(headers: &mut HeaderMap) {
    if !headers.keys().any(is_hop_by_hop) {
        return;
    }
    for name in &connection_options(headers) {
        headers.remove(name);
    }
    for name in &HOP_BY_HOP {
        headers.remove(name);
    }
}

/// The fields `Connection` names (its connection options, RFC 9110
/// section 7.6.1): none when it is absent.
pub fn connection_options(headers: &HeaderMap) -> Vec<HeaderName> {
    headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|n| HeaderName::from_bytes(n.trim().to_ascii_lowercase().as_bytes()).ok())
        .collect()
}

/// Whether a field is always hop-by-hop.
pub fn is_hop_by_hop(name: &HeaderName) -> bool {
    HOP_BY_HOP.contains(name)
}

/// Fields addressed to this cache only (the Surrogate-Control convention,
/// and purge tags): consumed here, not sent to clients. `CDN-Cache-Control`
/// is not among them: RFC 9213 section 3 lets a CDN remove it, but a child
/// tier needs it to cache as the origin asked, so it goes on unless the
/// tenant strips it.
pub fn strip_cache_targeted(headers: &mut HeaderMap) {
    for name in &CACHE_TARGETED {
        headers.remove(name);
    }
}

/// Fields for this cache only; purge tags are for its index, not clients.
const CACHE_TARGETED: [HeaderName; 3] = [
    HeaderName::from_static("surrogate-control"),
    HeaderName::from_static("surrogate-key"),
    HeaderName::from_static("cache-tag"),
];

/// Whether any field for this cache only is present: a stored response
/// without any is sent without looking for them on every hit.
pub fn has_cache_targeted(headers: &HeaderMap) -> bool {
    CACHE_TARGETED.iter().any(|name| headers.contains_key(name))
}

/// A copy of a head whose values own their bytes.
///
/// A head parsed from the wire keeps every value in slices of one read
/// buffer, so keeping the head keeps that whole buffer, and all its values
/// share one reference count. The cache stores owned copies (an object's
/// memory is then what its weight says), and a hit sends a fresh copy
/// rather than a clone: a clone bumps the shared counts once per field,
/// on every hit, from every worker thread, and copying a few short values
/// costs less than that contention.
pub fn owned_copy(head: &HeaderMap) -> HeaderMap {
    let mut copy = HeaderMap::with_capacity(head.len() + 4);
    for (name, value) in head {
        copy.append(name.clone(), owned_value(value));
    }
    copy
}

/// A value in a buffer of its own, as sensitive as the original.
pub fn owned_value(value: &HeaderValue) -> HeaderValue {
    let mut owned = HeaderValue::from_bytes(value.as_bytes()).unwrap_or_else(|_| value.clone());
    owned.set_sensitive(value.is_sensitive());
    owned
}

/// The Via entry this node adds (RFC 9110 section 7.6.3).
pub fn via_value(version: http::Version) -> HeaderValue {
    HeaderValue::from_static(match version {
        http::Version::HTTP_10 => "1.0 outpost",
        http::Version::HTTP_2 => "2 outpost",
        _ => "1.1 outpost",
    })
}

/// The host part of an authority, lowercased, without the port.
pub fn host_of(authority: &str) -> &str {
    if authority.starts_with('[') {
        return authority.split_inclusive(']').next().unwrap_or(authority);
    }
    authority
        .rsplit_once(':')
        .map(|(h, _)| h)
        .unwrap_or(authority)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connection_named_fields_are_removed() {
        let mut h = HeaderMap::new();
        h.insert(
            header::CONNECTION,
            HeaderValue::from_static("close, x-secret"),
        );
        h.insert("x-secret", HeaderValue::from_static("1"));
        h.insert("x-kept", HeaderValue::from_static("1"));
        h.insert(
            header::TRANSFER_ENCODING,
            HeaderValue::from_static("chunked"),
        );
        strip_hop_by_hop(&mut h);
        assert_eq!(h.len(), 1);
        assert!(h.contains_key("x-kept"));
    }

    #[test]
    fn ports_are_stripped_from_hosts() {
        assert_eq!(host_of("example.com:8080"), "example.com");
        assert_eq!(host_of("example.com"), "example.com");
        assert_eq!(host_of("[::1]:80"), "[::1]");
    }
}
