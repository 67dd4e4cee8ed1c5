//! A policy's edits of header sections: of the request sent to a backend,
//! of the response a client receives, and of what the cache stores; and the
//! check of a route's forwarded target.

use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::uri::PathAndQuery;

use crate::http::headers::is_hop_by_hop;
use crate::runtime::{Decision, HeaderEdit};

/// Applies `edits` in order. Edits of the fields that frame a message or
/// belong to one connection (`Content-Length` and the hop-by-hop fields of
/// RFC 9110 section 7.6.1) are skipped: the node writes those itself, and a
/// wrong one would desynchronise the connection (RFC 9112 section 6.3). So
/// is an edit whose name or value is not a valid field (RFC 9110 section
/// 5.5).
pub(super) fn apply(headers: &mut HeaderMap, edits: &[HeaderEdit]) {
    for edit in edits {
        let (name, value) = match edit {
            HeaderEdit::Set(n, v) | HeaderEdit::Append(n, v) => (n, Some(v)),
            HeaderEdit::Remove(n) => (n, None),
        };
        let Ok(name) = HeaderName::from_bytes(name.to_ascii_lowercase().as_bytes()) else {
            tracing::debug!("policy header edit of {name:?}: not a field name; skipped");
            continue;
        };
        if name == header::CONTENT_LENGTH || is_hop_by_hop(&name) {
            tracing::debug!("policy header edit of {name}: framing field; skipped");
            continue;
        }
        match (edit, value.map(|v| HeaderValue::from_str(v))) {
            (HeaderEdit::Set(..), Some(Ok(v))) => {
                headers.insert(name, v);
            }
            (HeaderEdit::Append(..), Some(Ok(v))) => {
                headers.append(name, v);
            }
            (HeaderEdit::Remove(_), _) => {
                headers.remove(name);
            }
            _ => tracing::debug!("policy header edit for {name} has an invalid value; skipped"),
        }
    }
}

/// What is wrong with a decision's forwarded target, if anything: it must
/// be an origin-form path and query (RFC 9112 section 3.2.1).
pub(super) fn check(decision: &Decision) -> Result<(), String> {
    let route = match decision {
        Decision::Respond(_) => return Ok(()),
        Decision::Lookup(l) => &l.route,
        Decision::Pass(r) => r,
    };
    match route.forward_target.as_deref() {
        None => Ok(()),
        Some(t) if t.starts_with('/') && PathAndQuery::try_from(t).is_ok() => Ok(()),
        Some(t) => Err(format!(
            "forward-target {t:?} is not a path and query starting with /"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn edited(edits: &[HeaderEdit]) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert("server", HeaderValue::from_static("origin/1.0"));
        headers.insert("content-length", HeaderValue::from_static("5"));
        apply(&mut headers, edits);
        headers
    }

    #[test]
    fn edits_set_append_and_remove_fields_in_order() {
        let set = |n: &str, v: &str| HeaderEdit::Set(n.into(), v.into());
        let append = |n: &str, v: &str| HeaderEdit::Append(n.into(), v.into());
        let h = edited(&[
            HeaderEdit::Remove("Server".into()),
            set("Strict-Transport-Security", "max-age=63072000"),
            append("vary", "origin"),
            append("vary", "accept"),
        ]);
        assert!(h.get("server").is_none());
        assert_eq!(h["strict-transport-security"], "max-age=63072000");
        assert_eq!(h.get_all("vary").iter().count(), 2);
    }

    #[test]
    fn framing_and_connection_fields_and_invalid_ones_cannot_be_edited() {
        let h = edited(&[
            HeaderEdit::Set("content-length".into(), "99".into()),
            HeaderEdit::Remove("Content-Length".into()),
            HeaderEdit::Set("transfer-encoding".into(), "chunked".into()),
            HeaderEdit::Set("connection".into(), "close".into()),
            HeaderEdit::Set("bad name".into(), "x".into()),
            HeaderEdit::Set("x-ok".into(), "line\nbreak".into()),
        ]);
        assert_eq!(h["content-length"], "5");
        assert!(h.get("transfer-encoding").is_none());
        assert!(h.get("connection").is_none());
        assert!(h.get("x-ok").is_none());
    }

    #[test]
    fn a_forward_target_must_be_a_path_and_query() {
        let pass = |t: &str| {
            let mut route = crate::runtime::Route::to(vec!["origin".into()]);
            route.forward_target = Some(t.into());
            Decision::Pass(route)
        };
        assert!(check(&pass("/items?id=3")).is_ok());
        assert!(check(&pass("items")).is_err());
        assert!(check(&pass("http://evil.example/")).is_err());
        assert!(check(&pass("/a b")).is_err());
    }
}
