//! A file-sharing site behind the edge: presigned download links, a daily
//! download quota per user, and a counter a user's page can read.
//!
//! - `GET /dl/<user>/<file>?exp=..&kid=..&sig=..` is a link the site
//!   signed (or `outpost sign`, or a policy's `host::sign_url`), checked by
//!   the node before this policy runs (`[tenant.signed_urls]` with
//!   `on_invalid = "policy"`, so the pages below are this policy's). The
//!   user is part of the signed path, so a link cannot be moved to another
//!   user. A valid link counts one download against the user's daily
//!   quota (`[tenant.counters.downloads] reset = "daily"`, var
//!   `daily_quota`, 5 by default) and is served from the cache under
//!   `/files/<file>`, the path the origin is asked for: every user's link
//!   to one file is one cache entry and one origin fetch.
//! - Over the quota: `429` with `Retry-After` and a page.
//! - A missing or bad signature: `403` page; an expired link: `410` page.
//! - `GET /downloads/<user>`: the user's downloads today (refused attempts
//!   past the quota included), as JSON.
//! - `GET /link/<user>/<file>`: a fresh link for the site to hand out,
//!   signed by the node (`host::sign_url`, valid for the `link_ttl_s` var,
//!   3600 s by default). Only the site may ask: the request carries
//!   `x-app-signature`, the hex HMAC-SHA256 of its path under the tenant's
//!   `app_key` secret, which the policy checks with `host::hmac_sha256`
//!   without ever seeing the key.
//!
//! Backend used: `files`.

#![cfg_attr(not(test), no_std)]

extern crate alloc;

use alloc::format;
use alloc::string::String;

use outpost_guest::host::{self, CallError};
use outpost_guest::{export_policy, Decision, Policy, Request, Response, Route, Signature};

struct SignedDownloads;

/// Downloads a user may make per day unless the tenant's `daily_quota`
/// var says otherwise.
const DEFAULT_QUOTA: u64 = 5;

impl Policy for SignedDownloads {
    const RESPONSE_HOOK: bool = false;

    fn on_request(req: &Request) -> Decision {
        let path = req.path();
        if let Some(user) = path.strip_prefix("/downloads/") {
            return downloads_of(user);
        }
        if let Some(rest) = path.strip_prefix("/link/") {
            return mint_link(req, &path, rest);
        }
        let Some(rest) = path.strip_prefix("/dl/") else {
            return Decision::respond(Response::text(404, "not found\n"));
        };
        match req.signature() {
            Signature::Valid => {}
            Signature::Expired => {
                return Decision::respond(page(410, "This link has expired", "Ask for a new link."));
            }
            _ => {
                return Decision::respond(page(403, "This link is not valid", "Check that you copied all of it."));
            }
        }
        let Some((user, file)) = rest.split_once('/').filter(|(u, f)| !u.is_empty() && !f.is_empty()) else {
            return Decision::respond(Response::text(404, "not found\n"));
        };
        let quota = host::config("daily_quota").and_then(|q| q.parse().ok()).unwrap_or(DEFAULT_QUOTA);
        match host::counter_add("downloads", user, 1) {
            Ok(today) if today > quota => {
                let body = format!("You have used your {quota} downloads for today. The count starts again at 00:00 UTC.");
                return Decision::respond(page(429, "Daily download limit reached", &body).header("retry-after", "3600"));
            }
            Ok(_) => {}
            // The counter's keeper is out of reach: serve rather than
            // refuse a paying user (say so in the log).
            Err(CallError::Unavailable(why)) => host::warn(&format!("downloads of {user} not counted: {why}")),
            Err(e) => return Decision::respond(Response::text(500, format!("counter: {e:?}\n"))),
        }
        let target = format!("/files/{file}");
        Decision::lookup(target.clone(), Route::to("files").rewrite(target))
    }
}

/// A signed link to `/dl/<rest>`, for a request the site signed.
fn mint_link(req: &Request, path: &str, rest: &str) -> Decision {
    let expected = match host::hmac_sha256("app_key", path.as_bytes()) {
        Ok(mac) => hex(&mac),
        Err(e) => return Decision::respond(Response::text(500, format!("app_key: {e:?}\n"))),
    };
    let given = req.header("x-app-signature").unwrap_or_default();
    if !same(given.as_bytes(), expected.as_bytes()) {
        return Decision::respond(Response::text(403, "only the site may ask for links\n"));
    }
    let ttl = host::config("link_ttl_s").and_then(|t| t.parse().ok()).unwrap_or(3600);
    match host::sign_url(&format!("/dl/{rest}"), ttl) {
        Ok(link) => Decision::respond(
            Response::new(200).header("cache-control", "no-store").header("content-type", "text/plain").body(link),
        ),
        Err(e) => Decision::respond(Response::text(500, format!("signing: {e:?}\n"))),
    }
}

/// Lowercase hex.
fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Equal bytes, compared without stopping at the first difference (the
/// time taken says nothing of where they differ).
fn same(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// `{"user": .., "downloads_today": ..}`.
fn downloads_of(user: &str) -> Decision {
    match host::counter_get("downloads", user) {
        Ok(n) => Decision::respond(
            Response::new(200)
                .header("content-type", "application/json")
                .header("cache-control", "no-store")
                .body(format!("{{\"user\":{},\"downloads_today\":{n}}}\n", json_string(user))),
        ),
        Err(e) => Decision::respond(Response::text(503, format!("counter unavailable: {e:?}\n"))),
    }
}

/// A small HTML page.
fn page(status: u16, title: &str, text: &str) -> Response {
    Response::new(status)
        .header("content-type", "text/html; charset=utf-8")
        .header("cache-control", "no-store")
        .body(format!("<!doctype html><title>{title}</title><h1>{title}</h1><p>{text}</p>\n"))
}

/// `s` as a JSON string literal.
fn json_string(s: &str) -> String {
    let mut out = String::from("\"");
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

export_policy!(SignedDownloads);

#[cfg(test)]
mod tests {
    use super::*;
    use outpost_guest::testing::{declare_counter, enable_signing, set_counter, set_secret, set_var, TestRequest};

    fn download(user: &str, verdict: Signature) -> Decision {
        let req = TestRequest::get(&format!("/dl/{user}/report.pdf")).signature(verdict);
        SignedDownloads::on_request(&req.as_request())
    }

    #[test]
    fn every_users_link_to_a_file_is_one_cache_entry_at_the_files_path() {
        declare_counter("downloads");
        let expected = Decision::lookup("/files/report.pdf", Route::to("files").rewrite("/files/report.pdf"));
        assert_eq!(download("alice", Signature::Valid), expected);
        assert_eq!(download("bob", Signature::Valid), expected);
    }

    #[test]
    fn bad_and_expired_links_get_pages_of_their_own() {
        declare_counter("downloads");
        for (verdict, status) in [(Signature::Missing, 403), (Signature::Invalid, 403), (Signature::Expired, 410)] {
            match download("alice", verdict) {
                Decision::Respond(r) => assert_eq!(r.status, status, "{verdict:?}"),
                other => panic!("{other:?}"),
            }
        }
        // Refused links are not counted.
        assert_eq!(host::counter_get("downloads", "alice"), Ok(0));
    }

    #[test]
    fn only_the_site_gets_fresh_links() {
        set_secret("app_key", b"app-key-for-tests-0123456789");
        enable_signing();
        let mac = hex(&host::hmac_sha256("app_key", b"/link/alice/report.pdf").unwrap());
        let req = TestRequest::get("/link/alice/report.pdf").header("x-app-signature", &mac);
        match SignedDownloads::on_request(&req.as_request()) {
            Decision::Respond(r) => {
                assert_eq!(r.status, 200);
                assert_eq!(r.body, b"/dl/alice/report.pdf?exp=+3600&sig=test");
            }
            other => panic!("{other:?}"),
        }
        let forged = TestRequest::get("/link/alice/report.pdf").header("x-app-signature", "00");
        assert!(matches!(SignedDownloads::on_request(&forged.as_request()), Decision::Respond(r) if r.status == 403));
    }

    #[test]
    fn the_quota_counts_each_download_and_answers_429_past_it() {
        set_var("daily_quota", "2");
        set_counter("downloads", "alice", 1);
        assert!(matches!(download("alice", Signature::Valid), Decision::Lookup { .. }));
        match download("alice", Signature::Valid) {
            Decision::Respond(r) => {
                assert_eq!(r.status, 429);
                assert!(r.headers.iter().any(|(n, _)| n == "retry-after"));
            }
            other => panic!("{other:?}"),
        }
        let req = TestRequest::get("/downloads/alice");
        match SignedDownloads::on_request(&req.as_request()) {
            Decision::Respond(r) => assert_eq!(r.body, b"{\"user\":\"alice\",\"downloads_today\":3}\n"),
            other => panic!("{other:?}"),
        }
    }
}
