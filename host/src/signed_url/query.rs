//! The query parameters a token is carried in: found, decoded and removed.

use http::Uri;

/// The value of the first parameter `name` in `query`, percent-decoded
/// (RFC 3986 section 2.1); `+` stays a `+` (tokens are base64url or hex,
/// and a `+` in a signature is a client's mistake to report, not to fix).
pub(super) fn param(query: &str, name: &str) -> Option<String> {
    query
        .split('&')
        .filter_map(|pair| pair.split_once('=').or(Some((pair, ""))))
        .find(|(n, _)| *n == name)
        .map(|(_, v)| percent_decode(v))
}

/// `uri` without the query parameters `names`; `None` when it has none of
/// them. A query left empty is dropped with its `?`.
pub(super) fn without(uri: &Uri, names: &[String]) -> Option<Uri> {
    let query = uri.query()?;
    let kept: Vec<&str> = query
        .split('&')
        .filter(|pair| {
            let name = pair.split_once('=').map_or(*pair, |(n, _)| n);
            !names.iter().any(|n| n == name)
        })
        .collect();
    if kept.len() == query.split('&').count() {
        return None;
    }
    let target = if kept.is_empty() {
        uri.path().to_string()
    } else {
        format!("{}?{}", uri.path(), kept.join("&"))
    };
    let mut parts = uri.clone().into_parts();
    parts.path_and_query = target.parse().ok();
    Uri::from_parts(parts).ok()
}

/// `%XX` sequences decoded; invalid ones kept as they are.
pub(super) fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' && i + 2 < bytes.len() {
            let hex = crate::http::hex::decode(&bytes[i + 1..i + 3]);
            if let Some(&[b]) = hex.as_deref() {
                out.push(b);
                i += 3;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// A cookie's value from the `Cookie` fields (RFC 6265 section 5.4).
pub(super) fn cookie(headers: &http::HeaderMap, name: &str) -> Option<String> {
    headers
        .get_all(http::header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(n, _)| *n == name)
        .map(|(_, v)| percent_decode(v.trim_matches('"')))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parameters_are_found_decoded_and_removed() {
        assert_eq!(
            param("a=1&exp=99&sig=ab%2Fc", "sig").as_deref(),
            Some("ab/c")
        );
        assert_eq!(param("a=1", "sig"), None);
        let uri: Uri = "/f/x.zip?exp=9&user=7&sig=aa".parse().unwrap();
        assert_eq!(
            without(&uri, &["exp".into(), "sig".into()])
                .unwrap()
                .to_string(),
            "/f/x.zip?user=7"
        );
        let uri: Uri = "/f/x.zip?exp=9&sig=aa".parse().unwrap();
        assert_eq!(
            without(&uri, &["exp".into(), "sig".into()])
                .unwrap()
                .to_string(),
            "/f/x.zip"
        );
        let uri: Uri = "/f/x.zip?v=2".parse().unwrap();
        assert_eq!(without(&uri, &["exp".into(), "sig".into()]), None);
        assert_eq!(percent_decode("%7e%zz%4"), "~%zz%4");
    }
}
