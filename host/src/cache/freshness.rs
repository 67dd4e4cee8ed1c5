//! Whether a response may be stored by a shared cache and for how long
//! (RFC 9111 sections 3 and 4.2, RFC 9213, RFC 5861).

use std::time::{Duration, SystemTime};

use http::{HeaderMap, Method, StatusCode};

use super::directives::{delta_seconds, Directives, DELTA_SECONDS_MAX};

/// The longest lifetime or age the cache computes with (RFC 9111 section
/// 1.2.2: 2^31 seconds); larger values, wherever they come from, count as
/// this, so no time arithmetic can overflow.
pub const MAX_DELTA: Duration = Duration::from_secs(DELTA_SECONDS_MAX);

/// Heuristic freshness is this fraction of the time since Last-Modified
/// (RFC 9111 section 4.2.2 suggests 10%) ...
const HEURISTIC_FRACTION: u32 = 10;
/// ... capped at one day.
const HEURISTIC_CAP: Duration = Duration::from_secs(24 * 3600);

/// Why a response was not stored. Shown in `Cache-Status` and logs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NotStored {
    /// Only GET responses are stored.
    Method,
    /// Status not cacheable by default and no explicit freshness.
    Status,
    /// `no-store` in the request or response (section 5.2.1.5, 5.2.2.5).
    NoStore,
    /// `private` (section 5.2.2.7): a shared cache never stores it.
    Private,
    /// The request carried `Authorization` and the response did not allow
    /// sharing it (section 3.5).
    Authorization,
    /// `Vary: *` can never match a later request (section 4.1).
    VaryStar,
    /// `Set-Cookie` responses are not shared unless the policy says so.
    SetCookie,
    /// No freshness, no validator: nothing could ever reuse it.
    Unusable,
    /// Larger than the configured maximum object size.
    TooLarge,
    /// The policy's response hook said `no-store`.
    Policy,
}

impl NotStored {
    pub fn as_str(self) -> &'static str {
        match self {
            NotStored::Method => "method",
            NotStored::Status => "status",
            NotStored::NoStore => "no-store",
            NotStored::Private => "private",
            NotStored::Authorization => "authorization",
            NotStored::VaryStar => "vary-star",
            NotStored::SetCookie => "set-cookie",
            NotStored::Unusable => "no-freshness",
            NotStored::TooLarge => "too-large",
            NotStored::Policy => "policy",
        }
    }
}

/// How the policy overrides the RFC rules for one response.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Override {
    /// The headers decide.
    None,
    /// The lookup's TTL replaces the freshness lifetime; storability rules
    /// still apply.
    Ttl(u32),
    /// The response hook said `store`: stored for this TTL whatever the
    /// headers say.
    Force(u32),
}

/// The freshness facts of a stored response, kept small: every stored
/// object holds one. The windows are whole seconds (directives, `Age` and
/// HTTP dates are; a heuristic or `Expires` lifetime loses its fraction,
/// which only makes the response stale up to a second sooner), the initial
/// age nanoseconds (it includes the response delay, section 4.2.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Freshness {
    /// Freshness lifetime, seconds (section 4.2.1).
    lifetime: u32,
    /// RFC 5861 windows, seconds.
    stale_while_revalidate: u32,
    stale_if_error: u32,
    /// `corrected_initial_age`, nanoseconds (section 4.2.3; at most
    /// `MAX_DELTA`, 2^31 s, fits).
    initial_age: u64,
    /// `no-cache`: every reuse needs a successful revalidation (5.2.2.4).
    pub always_revalidate: bool,
    /// `must-revalidate`, `proxy-revalidate` or `s-maxage`: never served
    /// stale (sections 4.2.4, 5.2.2.2, 5.2.2.8, 5.2.2.10).
    pub never_stale: bool,
}

impl Freshness {
    /// Fresh for `lifetime` from an age of `initial_age`, no stale windows,
    /// no revalidation rules. Both are capped at `MAX_DELTA`.
    pub fn new(lifetime: Duration, initial_age: Duration) -> Freshness {
        Freshness {
            lifetime: whole_seconds(lifetime),
            stale_while_revalidate: 0,
            stale_if_error: 0,
            initial_age: initial_age.min(MAX_DELTA).as_nanos() as u64,
            always_revalidate: false,
            never_stale: false,
        }
    }

    /// With the RFC 5861 windows.
    pub fn with_stale_windows(self, while_revalidate: Duration, if_error: Duration) -> Freshness {
        Freshness {
            stale_while_revalidate: whole_seconds(while_revalidate),
            stale_if_error: whole_seconds(if_error),
            ..self
        }
    }

    /// Freshness lifetime (section 4.2.1).
    pub fn lifetime(&self) -> Duration {
        Duration::from_secs(self.lifetime.into())
    }

    /// `corrected_initial_age` (section 4.2.3).
    pub fn initial_age(&self) -> Duration {
        Duration::from_nanos(self.initial_age)
    }

    /// `stale-while-revalidate` (RFC 5861 section 3).
    pub fn stale_while_revalidate(&self) -> Duration {
        Duration::from_secs(self.stale_while_revalidate.into())
    }

    /// `stale-if-error` (RFC 5861 section 4).
    pub fn stale_if_error(&self) -> Duration {
        Duration::from_secs(self.stale_if_error.into())
    }
}

/// Whole seconds, capped at `MAX_DELTA`.
fn whole_seconds(d: Duration) -> u32 {
    d.min(MAX_DELTA).as_secs() as u32
}

/// The statuses a cache may store without explicit freshness (RFC 9110
/// section 15.1). 206 is left out: partial content is not stored.
pub fn heuristically_cacheable(status: StatusCode) -> bool {
    matches!(
        status.as_u16(),
        200 | 203 | 204 | 300 | 301 | 308 | 404 | 405 | 410 | 414 | 501
    )
}

/// The statuses whose caching rules this cache implements, for
/// `must-understand` (RFC 9111 section 5.2.2.3): those cacheable by default,
/// and redirects it stores with explicit freshness.
fn understood_status(status: StatusCode) -> bool {
    heuristically_cacheable(status) || matches!(status.as_u16(), 302 | 303 | 307)
}

/// The directives that govern this cache: `CDN-Cache-Control` (RFC 9213),
/// else `Surrogate-Control`, else `Cache-Control`. Returns whether a
/// targeted field was used, in which case `Expires` is ignored too.
///
/// A targeted field that is absent, fails to parse, or carries no usable
/// directive is ignored (RFC 9213 section 2.1). `CDN-Cache-Control` is a
/// Structured Field; `Surrogate-Control` predates them and is read with
/// the `Cache-Control` syntax.
pub fn effective_directives(headers: &HeaderMap) -> (Directives, bool) {
    let targeted = [
        Directives::parse_targeted(headers.get_all("cdn-cache-control")),
        Some(Directives::parse(headers.get_all("surrogate-control"))),
    ];
    if let Some(d) = targeted.into_iter().flatten().find(|d| !d.is_empty()) {
        return (d, true);
    }
    (
        Directives::parse(headers.get_all(http::header::CACHE_CONTROL)),
        false,
    )
}

fn header_date(headers: &HeaderMap, name: http::header::HeaderName) -> Option<SystemTime> {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .and_then(|s| httpdate::parse_http_date(s.trim()).ok())
}

/// What a response to `request` may become in the cache.
pub struct Assessment<'a> {
    pub method: &'a Method,
    pub request_headers: &'a HeaderMap,
    pub status: StatusCode,
    pub response_headers: &'a HeaderMap,
    /// When the request was sent and the response head arrived.
    pub request_time: SystemTime,
    pub response_time: SystemTime,
    pub policy: Override,
}

impl Assessment<'_> {
    /// Decides storability (section 3) and computes freshness (section 4.2).
    pub fn assess(&self) -> Result<Freshness, NotStored> {
        if self.method != Method::GET && self.method != Method::HEAD {
            return Err(NotStored::Method);
        }
        let headers = self.response_headers;
        let (cc, targeted) = effective_directives(headers);
        if let Override::Force(ttl) = self.policy {
            return Ok(
                Freshness::new(Duration::from_secs(ttl.into()), Duration::ZERO)
                    .with_stale_windows(secs(cc.stale_while_revalidate), secs(cc.stale_if_error)),
            );
        }

        if let Some(reason) = self.refusal(&cc) {
            return Err(reason);
        }
        let expires = if targeted {
            None
        } else {
            headers.get(http::header::EXPIRES)
        };
        let explicit = cc.s_maxage.or(cc.max_age).is_some() || expires.is_some();
        if !explicit
            && !cc.public
            && !heuristically_cacheable(self.status)
            && !matches!(self.policy, Override::Ttl(_))
        {
            return Err(NotStored::Status);
        }

        let lifetime = match self.policy {
            Override::Ttl(ttl) => Duration::from_secs(ttl.into()),
            _ => self.lifetime(&cc, expires),
        };
        let has_validator = headers.contains_key(http::header::ETAG)
            || headers.contains_key(http::header::LAST_MODIFIED);
        if lifetime.is_zero() && !has_validator {
            return Err(NotStored::Unusable);
        }
        // Dates parsed only for what is stored.
        let initial_age = self.initial_age();
        Ok(Freshness {
            always_revalidate: cc.no_cache,
            never_stale: cc.must_revalidate || cc.proxy_revalidate || cc.s_maxage.is_some(),
            ..Freshness::new(lifetime, initial_age)
                .with_stale_windows(secs(cc.stale_while_revalidate), secs(cc.stale_if_error))
        })
    }

    /// Why a shared cache must not store the response, if it must not
    /// (RFC 9111 section 3, sections 3.5 and 4.1, and the Set-Cookie rule).
    fn refusal(&self, cc: &Directives) -> Option<NotStored> {
        let headers = self.response_headers;
        let request_cc =
            Directives::parse(self.request_headers.get_all(http::header::CACHE_CONTROL));
        let vary_star = headers.get_all(http::header::VARY).iter().any(|v| {
            v.to_str()
                .is_ok_and(|v| v.split(',').any(|f| f.trim() == "*"))
        });
        let authorized = self
            .request_headers
            .contains_key(http::header::AUTHORIZATION);
        // Section 5.2.2.3: `must-understand` lets a cache that implements
        // the status code's caching rules ignore `no-store`, and keeps every
        // other cache from storing it.
        let understood = understood_status(self.status);
        if cc.must_understand && !understood {
            Some(NotStored::Status)
        } else if request_cc.no_store || (cc.no_store && !(cc.must_understand && understood)) {
            Some(NotStored::NoStore)
        } else if cc.private {
            Some(NotStored::Private)
        } else if authorized && !(cc.must_revalidate || cc.public || cc.s_maxage.is_some()) {
            Some(NotStored::Authorization)
        } else if vary_star {
            Some(NotStored::VaryStar)
        } else if headers.contains_key(http::header::SET_COOKIE) {
            Some(NotStored::SetCookie)
        } else if self.status.is_informational()
            || self.status == StatusCode::PARTIAL_CONTENT
            || self.status == StatusCode::NOT_MODIFIED
        {
            Some(NotStored::Status)
        } else {
            None
        }
    }

    /// Section 4.2.1: s-maxage, max-age, Expires - Date, then heuristics.
    fn lifetime(&self, cc: &Directives, expires: Option<&http::HeaderValue>) -> Duration {
        if let Some(s) = cc.s_maxage.or(cc.max_age) {
            return Duration::from_secs(s);
        }
        let date =
            header_date(self.response_headers, http::header::DATE).unwrap_or(self.response_time);
        if let Some(expires) = expires {
            // An invalid Expires (e.g. "0") means already expired (5.3).
            let expires = expires
                .to_str()
                .ok()
                .and_then(|s| httpdate::parse_http_date(s.trim()).ok());
            return expires
                .and_then(|e| e.duration_since(date).ok())
                .unwrap_or(Duration::ZERO)
                .min(MAX_DELTA);
        }
        // Section 4.2.2: heuristic freshness from Last-Modified.
        if heuristically_cacheable(self.status) || cc.public {
            if let Some(modified) = header_date(self.response_headers, http::header::LAST_MODIFIED)
            {
                if let Ok(since) = date.duration_since(modified) {
                    return (since / HEURISTIC_FRACTION).min(HEURISTIC_CAP);
                }
            }
        }
        Duration::ZERO
    }

    /// Section 4.2.3: corrected_initial_age.
    fn initial_age(&self) -> Duration {
        let date = header_date(self.response_headers, http::header::DATE);
        let apparent_age = date
            .and_then(|d| self.response_time.duration_since(d).ok())
            .unwrap_or(Duration::ZERO);
        // Section 5.1: delta-seconds, the first member of a list; an invalid
        // Age is ignored, a huge one counts as 2^31 (section 1.2.2).
        let age_value = self
            .response_headers
            .get(http::header::AGE)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| delta_seconds(v.split(',').next().unwrap_or("")))
            .unwrap_or(0);
        let response_delay = self
            .response_time
            .duration_since(self.request_time)
            .unwrap_or(Duration::ZERO);
        let corrected_age_value = Duration::from_secs(age_value).saturating_add(response_delay);
        apparent_age.max(corrected_age_value).min(MAX_DELTA)
    }
}

fn secs(s: Option<u64>) -> Duration {
    Duration::from_secs(s.unwrap_or(0))
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    fn assess(
        status: u16,
        headers: &[(&str, &str)],
        request: &[(&str, &str)],
    ) -> Result<Freshness, NotStored> {
        let mut rh = HeaderMap::new();
        for (n, v) in headers {
            rh.append(
                http::header::HeaderName::from_bytes(n.as_bytes()).unwrap(),
                HeaderValue::from_str(v).unwrap(),
            );
        }
        let mut qh = HeaderMap::new();
        for (n, v) in request {
            qh.append(
                http::header::HeaderName::from_bytes(n.as_bytes()).unwrap(),
                HeaderValue::from_str(v).unwrap(),
            );
        }
        let now = SystemTime::now();
        Assessment {
            method: &Method::GET,
            request_headers: &qh,
            status: StatusCode::from_u16(status).unwrap(),
            response_headers: &rh,
            request_time: now,
            response_time: now,
            policy: Override::None,
        }
        .assess()
    }

    #[test]
    fn precedence_is_cdn_cache_control_then_s_maxage_then_max_age() {
        let f = assess(
            200,
            &[
                ("cache-control", "max-age=10, s-maxage=20"),
                ("cdn-cache-control", "max-age=30"),
            ],
            &[],
        );
        assert_eq!(f.unwrap().lifetime(), Duration::from_secs(30));
        let f = assess(200, &[("cache-control", "max-age=10, s-maxage=20")], &[]);
        assert_eq!(f.unwrap().lifetime(), Duration::from_secs(20));
        let f = assess(200, &[("cache-control", "max-age=10")], &[]);
        assert_eq!(f.unwrap().lifetime(), Duration::from_secs(10));
    }

    #[test]
    fn an_invalid_or_mistyped_cdn_cache_control_falls_back_to_cache_control() {
        for cdn in ["max-age=30, (", "max-age=\"30\""] {
            let f = assess(
                200,
                &[("cache-control", "max-age=10"), ("cdn-cache-control", cdn)],
                &[],
            );
            assert_eq!(f.unwrap().lifetime(), Duration::from_secs(10), "{cdn}");
        }
    }

    #[test]
    fn expires_is_relative_to_date_and_invalid_expires_is_stale() {
        let date = SystemTime::now();
        let expires = date + Duration::from_secs(100);
        let f = assess(
            200,
            &[
                ("date", &httpdate::fmt_http_date(date)),
                ("expires", &httpdate::fmt_http_date(expires)),
            ],
            &[],
        )
        .unwrap();
        assert!(
            f.lifetime() >= Duration::from_secs(99) && f.lifetime() <= Duration::from_secs(100)
        );
        assert_eq!(
            assess(200, &[("expires", "0"), ("etag", "\"a\"")], &[])
                .unwrap()
                .lifetime(),
            Duration::ZERO
        );
    }

    #[test]
    fn shared_cache_refuses_private_no_store_and_authorization() {
        assert_eq!(
            assess(200, &[("cache-control", "private, max-age=60")], &[]),
            Err(NotStored::Private)
        );
        assert_eq!(
            assess(200, &[("cache-control", "no-store")], &[]),
            Err(NotStored::NoStore)
        );
        assert_eq!(
            assess(
                200,
                &[("cache-control", "max-age=60")],
                &[("authorization", "Bearer x")]
            ),
            Err(NotStored::Authorization)
        );
        assert!(assess(
            200,
            &[("cache-control", "s-maxage=60")],
            &[("authorization", "Bearer x")]
        )
        .is_ok());
        assert_eq!(
            assess(200, &[("cache-control", "max-age=60"), ("vary", "*")], &[]),
            Err(NotStored::VaryStar)
        );
    }

    #[test]
    fn uncacheable_status_needs_explicit_freshness() {
        assert_eq!(
            assess(302, &[("etag", "\"x\"")], &[]),
            Err(NotStored::Status)
        );
        assert!(assess(302, &[("cache-control", "max-age=5")], &[]).is_ok());
    }

    #[test]
    fn heuristic_freshness_is_a_tenth_of_the_last_modified_age() {
        let now = SystemTime::now();
        let modified = now - Duration::from_secs(1000);
        let f = assess(
            200,
            &[
                ("date", &httpdate::fmt_http_date(now)),
                ("last-modified", &httpdate::fmt_http_date(modified)),
            ],
            &[],
        );
        assert_eq!(f.unwrap().lifetime(), Duration::from_secs(100));
    }

    #[test]
    fn age_header_counts_into_initial_age() {
        let f = assess(200, &[("cache-control", "max-age=60"), ("age", "25")], &[]).unwrap();
        assert_eq!(f.initial_age(), Duration::from_secs(25));
    }

    #[test]
    fn a_list_valued_age_uses_its_first_member() {
        let f = assess(
            200,
            &[("cache-control", "max-age=60"), ("age", "25, 40")],
            &[],
        )
        .unwrap();
        assert_eq!(f.initial_age(), Duration::from_secs(25));
    }

    #[test]
    fn must_understand_overrides_no_store_for_understood_statuses_only() {
        let cc = [("cache-control", "must-understand, no-store, max-age=60")];
        assert_eq!(
            assess(200, &cc, &[]).unwrap().lifetime(),
            Duration::from_secs(60)
        );
        assert_eq!(assess(299, &cc, &[]), Err(NotStored::Status));
        assert_eq!(
            assess(200, &[("cache-control", "no-store, max-age=60")], &[]),
            Err(NotStored::NoStore)
        );
        assert_eq!(
            assess(200, &cc, &[("cache-control", "no-store")]),
            Err(NotStored::NoStore),
            "the request's no-store still holds"
        );
    }

    #[test]
    fn an_age_of_two_to_the_sixty_four_counts_as_two_to_the_thirty_one() {
        let f = assess(
            200,
            &[
                ("cache-control", "max-age=60"),
                ("age", "18446744073709551615"),
            ],
            &[],
        )
        .unwrap();
        assert_eq!(f.initial_age(), MAX_DELTA);
        let f = assess(
            200,
            &[
                ("cache-control", "max-age=60"),
                ("age", "99999999999999999999999"),
            ],
            &[],
        )
        .unwrap();
        assert_eq!(f.initial_age(), MAX_DELTA);
        let mut stored = crate::cache::test_response(
            StatusCode::OK,
            HeaderMap::new(),
            b"",
            Duration::from_secs(60),
        );
        stored.freshness = f;
        assert!(!stored.is_fresh(std::time::Instant::now()));
        assert!(stored.ttl(std::time::Instant::now()) < 0);
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(2048))]

        /// Any Cache-Control, Age, Date, Expires and Last-Modified from an
        /// origin, with any request Cache-Control: assessing never panics,
        /// and neither does any question asked of what would be stored.
        #[test]
        fn any_response_fields_assess_and_age_without_panic(
            cc in crate::http::arbitrary::any_value(),
            age in crate::http::arbitrary::any_value(),
            date in crate::http::arbitrary::any_value(),
            expires in crate::http::arbitrary::any_value(),
            modified in crate::http::arbitrary::any_value(),
            request_cc in crate::http::arbitrary::any_value(),
            status in 100u16..600,
            max_stale in proptest::prelude::any::<u64>(),
        ) {
            let mut response = HeaderMap::new();
            response.insert("cache-control", cc);
            response.insert("age", age);
            response.insert("date", date);
            response.insert("expires", expires);
            response.insert("last-modified", modified);
            let mut request = HeaderMap::new();
            request.insert("cache-control", request_cc);
            let now = SystemTime::now();
            let status = StatusCode::from_u16(status).unwrap();
            let assessed = Assessment {
                method: &Method::GET,
                request_headers: &request,
                status,
                response_headers: &response,
                request_time: now,
                response_time: now,
                policy: Override::None,
            }
            .assess();
            if let Ok(freshness) = assessed {
                proptest::prop_assert!(freshness.lifetime() <= MAX_DELTA);
                proptest::prop_assert!(freshness.initial_age() <= MAX_DELTA);
                let mut stored = crate::cache::test_response(
                    status,
                    response,
                    b"",
                    freshness.lifetime(),
                );
                stored.freshness = freshness;
                let later = std::time::Instant::now() + Duration::from_secs(1 << 32);
                for at in [std::time::Instant::now(), later] {
                    let _ = (stored.ttl(at), stored.is_fresh(at), stored.age(at));
                    let _ = stored.within_stale_if_error(at);
                    let _ = stored.within_stale_while_revalidate(at);
                    let _ = stored.may_serve_stale_for(at, max_stale);
                }
            }
        }
    }
}
