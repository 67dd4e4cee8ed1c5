//! The `Cache-Status` response field (RFC 9211) this node writes, built from
//! what happened rather than from text: one type, one rendering.

use std::fmt;

use http::{HeaderName, HeaderValue};

use super::NotStored;
use crate::metrics::Outcome;

/// The cache's name in `Cache-Status` (RFC 9211 section 2).
pub const CACHE_NAME: &str = "Outpost";

/// The field's name, parsed once rather than on every response.
pub const CACHE_STATUS: HeaderName = HeaderName::from_static("cache-status");

/// Why a request went forward (RFC 9211 section 2.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fwd {
    /// Nothing stored under the key.
    UriMiss,
    /// Something stored under the key, for other `Vary` values.
    VaryMiss,
    /// A stored response that could not be used as it was.
    Stale,
    /// The policy passed the request (no cache involved).
    Request,
}

impl Fwd {
    pub fn as_str(self) -> &'static str {
        match self {
            Fwd::UriMiss => "uri-miss",
            Fwd::VaryMiss => "vary-miss",
            Fwd::Stale => "stale",
            Fwd::Request => "request",
        }
    }
}

/// The `detail` parameter (RFC 9211 section 2.8): what else happened.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Detail {
    /// The response was not stored, and why.
    NotStored(NotStored),
    /// Served stale while a background refresh runs (RFC 5861 section 3).
    StaleWhileRevalidate,
    /// Served stale because the backends failed (RFC 5861 section 4) or
    /// the policy chose to.
    StaleServed,
    /// Served stale because no backend could be reached (RFC 9111 section
    /// 4.2.4); why, as the origin error metrics name it (`connect`, `tls`,
    /// `timeout`, ...). Written `stale-unreachable-{why}`.
    StaleUnreachable(&'static str),
    /// A range answered from slices fetched now.
    Slice,
    /// A range answered from slices in the cache.
    SliceHit,
    /// No backend produced a response.
    OriginError,
    /// The node made the response itself.
    Generated,
}

impl Detail {
    pub fn as_str(self) -> &'static str {
        match self {
            Detail::NotStored(reason) => reason.as_str(),
            Detail::StaleWhileRevalidate => "stale-while-revalidate",
            Detail::StaleServed => "stale-served",
            Detail::StaleUnreachable(_) => "stale-unreachable",
            Detail::Slice => "slice",
            Detail::SliceHit => "slice-hit",
            Detail::OriginError => "origin-error",
            Detail::Generated => "generated",
        }
    }
}

/// One `Cache-Status` entry of this node.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CacheStatus {
    /// Served from the cache without going forward.
    pub hit: bool,
    pub fwd: Option<Fwd>,
    /// The status the next hop answered (`fwd-status`).
    pub fwd_status: Option<u16>,
    /// The response was stored (`stored`).
    pub stored: bool,
    /// Served from a fill another request led (`collapsed`).
    pub collapsed: bool,
    /// Freshness left, in seconds, negative when stale (`ttl`).
    pub ttl: Option<i64>,
    pub detail: Option<Detail>,
}

impl CacheStatus {
    /// Served from the cache, `ttl` seconds of freshness left.
    pub fn hit(ttl: i64) -> CacheStatus {
        CacheStatus {
            hit: true,
            ttl: Some(ttl),
            ..CacheStatus::default()
        }
    }

    /// Went forward for this reason.
    pub fn forwarded(fwd: Fwd, fwd_status: Option<u16>) -> CacheStatus {
        CacheStatus {
            fwd: Some(fwd),
            fwd_status,
            ..CacheStatus::default()
        }
    }

    /// A response the node made itself.
    pub fn generated() -> CacheStatus {
        CacheStatus::default().detail(Detail::Generated)
    }

    /// Marks the response as stored with `ttl` seconds of freshness.
    pub fn stored(mut self, ttl: i64) -> CacheStatus {
        self.stored = true;
        self.ttl = Some(ttl);
        self
    }

    pub fn ttl(mut self, ttl: i64) -> CacheStatus {
        self.ttl = Some(ttl);
        self
    }

    pub fn detail(mut self, detail: Detail) -> CacheStatus {
        self.detail = Some(detail);
        self
    }

    /// What the cache did, for the metrics: a stale response served is
    /// `stale`, a stored one refreshed by a 304 `revalidated`, one from
    /// another request's fill `collapsed`.
    pub fn outcome(&self) -> Outcome {
        match (self.fwd, self.detail) {
            (
                _,
                Some(
                    Detail::StaleWhileRevalidate
                    | Detail::StaleServed
                    | Detail::StaleUnreachable(_),
                ),
            ) => Outcome::Stale,
            (_, Some(Detail::Generated)) => Outcome::Synthetic,
            _ if self.collapsed => Outcome::Collapsed,
            _ if self.hit => Outcome::Hit,
            (Some(Fwd::Request), _) => Outcome::Pass,
            (Some(Fwd::Stale), _) if self.fwd_status == Some(304) => Outcome::Revalidated,
            _ => Outcome::Miss,
        }
    }

    /// The field value.
    pub fn to_header(&self) -> HeaderValue {
        // Room for the longest common value, so the text is not regrown.
        let mut text = String::with_capacity(64);
        self.render(&mut text);
        HeaderValue::try_from(text).unwrap_or(HeaderValue::from_static(CACHE_NAME))
    }

    /// RFC 9211 section 2: the cache name, then its parameters. Written
    /// without the formatter: this is on every response.
    fn render(&self, out: &mut String) {
        out.push_str(CACHE_NAME);
        if self.hit {
            out.push_str("; hit");
        }
        if let Some(fwd) = self.fwd {
            out.push_str("; fwd=");
            out.push_str(fwd.as_str());
        }
        if let Some(status) = self.fwd_status {
            out.push_str("; fwd-status=");
            out.push_str(itoa::Buffer::new().format(status));
        }
        if self.stored {
            out.push_str("; stored");
        }
        if self.collapsed {
            out.push_str("; collapsed");
        }
        if let Some(ttl) = self.ttl {
            out.push_str("; ttl=");
            out.push_str(itoa::Buffer::new().format(ttl));
        }
        if let Some(detail) = self.detail {
            out.push_str("; detail=");
            out.push_str(detail.as_str());
            if let Detail::StaleUnreachable(why) = detail {
                out.push('-');
                out.push_str(why);
            }
        }
    }
}

impl fmt::Display for CacheStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut text = String::with_capacity(64);
        self.render(&mut text);
        f.write_str(&text)
    }
}

/// `; key="..."` (RFC 9211 section 2.7), the key as an sf-string (RFC 8941
/// section 3.3.3): printable ASCII, with `"` and `\` escaped; anything else
/// is dropped.
pub fn key_param(key: &str) -> String {
    let mut out = String::with_capacity(key.len() + 8);
    out.push_str("; key=\"");
    for c in key
        .chars()
        .filter(|c| c.is_ascii() && !c.is_ascii_control())
    {
        if c == '"' || c == '\\' {
            out.push('\\');
        }
        out.push(c);
    }
    out.push('"');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parameters_come_in_the_order_the_node_has_always_written_them() {
        assert_eq!(CacheStatus::hit(58).to_string(), "Outpost; hit; ttl=58");
        assert_eq!(
            CacheStatus::forwarded(Fwd::UriMiss, Some(200))
                .stored(60)
                .to_string(),
            "Outpost; fwd=uri-miss; fwd-status=200; stored; ttl=60"
        );
        let mut collapsed = CacheStatus::forwarded(Fwd::UriMiss, Some(200)).ttl(3);
        collapsed.collapsed = true;
        assert_eq!(
            collapsed.to_string(),
            "Outpost; fwd=uri-miss; fwd-status=200; collapsed; ttl=3"
        );
        assert_eq!(
            CacheStatus::forwarded(Fwd::Stale, Some(503))
                .ttl(-4)
                .detail(Detail::StaleServed)
                .to_string(),
            "Outpost; fwd=stale; fwd-status=503; ttl=-4; detail=stale-served"
        );
        assert_eq!(
            CacheStatus::forwarded(Fwd::Request, Some(200))
                .detail(Detail::NotStored(NotStored::Private))
                .to_string(),
            "Outpost; fwd=request; fwd-status=200; detail=private"
        );
        assert_eq!(
            CacheStatus::generated().to_string(),
            "Outpost; detail=generated"
        );
    }

    #[test]
    fn the_key_is_an_escaped_sf_string() {
        assert_eq!(key_param("a\"b\\c\u{7}é"), "; key=\"a\\\"b\\\\c\"");
    }
}
