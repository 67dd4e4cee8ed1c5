//! Cache-Control directives (RFC 9111 section 5.2), as found in
//! `Cache-Control`, `CDN-Cache-Control` (RFC 9213) or `Surrogate-Control`.

use http::header::GetAll;
use http::HeaderValue;
use sfv::{BareItem, ListEntry};

/// Largest delta-seconds value honoured (RFC 9111 section 1.2.2: 2^31).
pub const DELTA_SECONDS_MAX: u64 = 1 << 31;

/// The directives that matter to a shared cache.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Directives {
    pub no_store: bool,
    /// `no-cache`, with or without field names (treated as unqualified).
    pub no_cache: bool,
    /// `private`, with or without field names (a shared cache stores neither).
    pub private: bool,
    pub public: bool,
    pub must_revalidate: bool,
    pub proxy_revalidate: bool,
    /// `must-understand` (RFC 9111 section 5.2.2.3).
    pub must_understand: bool,
    pub max_age: Option<u64>,
    pub s_maxage: Option<u64>,
    /// RFC 5861 section 3.
    pub stale_while_revalidate: Option<u64>,
    /// RFC 5861 section 4.
    pub stale_if_error: Option<u64>,
    /// Request only: `only-if-cached` (RFC 9111 section 5.2.1.7).
    pub only_if_cached: bool,
    /// Request only: `max-stale` (section 5.2.1.2); `u64::MAX` when unbounded.
    pub max_stale: Option<u64>,
    /// Request only: `min-fresh` (section 5.2.1.3).
    pub min_fresh: Option<u64>,
}

impl Directives {
    /// Parses every line of a directive header field. Unknown directives are
    /// ignored (section 5.2.3). A malformed delta-seconds value counts as 0,
    /// so the response is treated as stale (section 4.2.1); for repeated
    /// directives the first occurrence wins.
    pub fn parse(values: GetAll<'_, HeaderValue>) -> Directives {
        let mut d = Directives::default();
        for value in values {
            let Ok(text) = value.to_str() else { continue };
            for (name, arg) in split_directives(text) {
                let seconds = || Some(arg.as_deref().map(parse_delta).unwrap_or(0));
                match name.to_ascii_lowercase().as_str() {
                    "no-store" => d.no_store = true,
                    "no-cache" => d.no_cache = true,
                    "private" => d.private = true,
                    "public" => d.public = true,
                    "must-revalidate" => d.must_revalidate = true,
                    "proxy-revalidate" => d.proxy_revalidate = true,
                    "must-understand" => d.must_understand = true,
                    "only-if-cached" => d.only_if_cached = true,
                    "max-age" => d.max_age = d.max_age.or_else(seconds),
                    "s-maxage" => d.s_maxage = d.s_maxage.or_else(seconds),
                    "stale-while-revalidate" => {
                        d.stale_while_revalidate = d.stale_while_revalidate.or_else(seconds)
                    }
                    "stale-if-error" => d.stale_if_error = d.stale_if_error.or_else(seconds),
                    "min-fresh" => d.min_fresh = d.min_fresh.or_else(seconds),
                    "max-stale" => {
                        d.max_stale = d
                            .max_stale
                            .or(Some(arg.as_deref().map(parse_delta).unwrap_or(u64::MAX)))
                    }
                    _ => {}
                }
            }
        }
        d
    }

    /// A targeted cache-control field such as `CDN-Cache-Control` (RFC 9213
    /// section 2.1): an RFC 8941 Dictionary, its lines combined with commas
    /// (RFC 8941 section 4.2). `None` when the field fails to parse: it is
    /// then ignored as if absent. A directive whose value has the wrong type
    /// is not used: the boolean ones need a true Boolean (a bare key), the
    /// delta-seconds ones a non-negative Integer (`max-age="10"` counts for
    /// nothing); `no-cache` and `private` may also carry field names (a
    /// String, Token or Inner List), treated as unqualified, as in
    /// `Cache-Control`. Integers saturate at 2^31 (RFC 9111 section 1.2.2).
    pub fn parse_targeted(values: GetAll<'_, HeaderValue>) -> Option<Directives> {
        let mut combined = Vec::new();
        for value in values {
            if !combined.is_empty() {
                combined.extend_from_slice(b", ");
            }
            combined.extend_from_slice(value.as_bytes());
        }
        let dictionary = sfv::Parser::parse_dictionary(&combined).ok()?;
        let mut d = Directives::default();
        for (key, member) in &dictionary {
            let item = match member {
                ListEntry::Item(item) => Some(&item.bare_item),
                ListEntry::InnerList(_) => None,
            };
            let flag = matches!(item, Some(BareItem::Boolean(true)));
            let with_fields = flag
                || item.is_none()
                || matches!(item, Some(BareItem::String(_) | BareItem::Token(_)));
            let seconds = match item {
                Some(BareItem::Integer(n)) => {
                    u64::try_from(*n).ok().map(|n| n.min(DELTA_SECONDS_MAX))
                }
                _ => None,
            };
            match key.as_str() {
                "no-store" => d.no_store = flag,
                "no-cache" => d.no_cache = with_fields,
                "private" => d.private = with_fields,
                "public" => d.public = flag,
                "must-revalidate" => d.must_revalidate = flag,
                "proxy-revalidate" => d.proxy_revalidate = flag,
                "must-understand" => d.must_understand = flag,
                "max-age" => d.max_age = seconds,
                "s-maxage" => d.s_maxage = seconds,
                "stale-while-revalidate" => d.stale_while_revalidate = seconds,
                "stale-if-error" => d.stale_if_error = seconds,
                _ => {}
            }
        }
        Some(d)
    }

    /// Whether any directive is present that a `CDN-Cache-Control` or
    /// `Surrogate-Control` field must carry to take over from
    /// `Cache-Control` (RFC 9213 section 2.1: an invalid field is ignored).
    pub fn is_empty(&self) -> bool {
        *self == Directives::default()
    }
}

/// delta-seconds (RFC 9111 section 1.2.2) in a directive: invalid counts
/// as 0.
fn parse_delta(text: &str) -> u64 {
    delta_seconds(text).unwrap_or(0)
}

/// delta-seconds (RFC 9111 section 1.2.2): digits only, saturating at 2^31;
/// `None` for anything else.
pub fn delta_seconds(text: &str) -> Option<u64> {
    let text = text.trim();
    if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    Some(
        text.parse::<u64>()
            .unwrap_or(DELTA_SECONDS_MAX)
            .min(DELTA_SECONDS_MAX),
    )
}

/// Splits `a, b=1, c="x, y"` into (name, argument) pairs, honouring quoted
/// strings (RFC 9110 section 5.6.4).
fn split_directives(text: &str) -> Vec<(String, Option<String>)> {
    let mut out = Vec::new();
    let mut chars = text.chars().peekable();
    loop {
        while chars.peek().is_some_and(|c| *c == ',' || c.is_whitespace()) {
            chars.next();
        }
        if chars.peek().is_none() {
            return out;
        }
        let mut name = String::new();
        while let Some(&c) = chars.peek() {
            if c == ',' || c == '=' {
                break;
            }
            name.push(c);
            chars.next();
        }
        let mut arg = None;
        if chars.peek() == Some(&'=') {
            chars.next();
            let mut value = String::new();
            if chars.peek() == Some(&'"') {
                chars.next();
                while let Some(c) = chars.next() {
                    match c {
                        '\\' => value.extend(chars.next()),
                        '"' => break,
                        c => value.push(c),
                    }
                }
                while chars.peek().is_some_and(|c| *c != ',') {
                    chars.next();
                }
            } else {
                while let Some(&c) = chars.peek() {
                    if c == ',' {
                        break;
                    }
                    value.push(c);
                    chars.next();
                }
            }
            arg = Some(value.trim().to_string());
        }
        let name = name.trim().to_string();
        if !name.is_empty() {
            out.push((name, arg));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderMap;

    fn parse(value: &str) -> Directives {
        let mut h = HeaderMap::new();
        h.insert("cache-control", HeaderValue::from_str(value).unwrap());
        Directives::parse(h.get_all("cache-control"))
    }

    #[test]
    fn parses_common_directives() {
        let d = parse("public, max-age=60, s-maxage=120, stale-while-revalidate=30");
        assert!(d.public);
        assert_eq!(
            (d.max_age, d.s_maxage, d.stale_while_revalidate),
            (Some(60), Some(120), Some(30))
        );
    }

    #[test]
    fn quoted_arguments_do_not_split_directives() {
        let d = parse("no-cache=\"set-cookie, x-foo\", max-age=5");
        assert!(d.no_cache);
        assert_eq!(d.max_age, Some(5));
    }

    #[test]
    fn invalid_delta_seconds_count_as_zero_and_first_wins() {
        assert_eq!(parse("max-age=abc").max_age, Some(0));
        assert_eq!(parse("max-age=10, max-age=20").max_age, Some(10));
        assert_eq!(
            parse("MAX-AGE=99999999999999").max_age,
            Some(DELTA_SECONDS_MAX)
        );
        assert_eq!(parse("max-age=\"30\"").max_age, Some(30));
    }

    fn targeted(lines: &[&str]) -> Option<Directives> {
        let mut h = HeaderMap::new();
        for line in lines {
            h.append("cdn-cache-control", HeaderValue::from_str(line).unwrap());
        }
        Directives::parse_targeted(h.get_all("cdn-cache-control"))
    }

    #[test]
    fn cdn_cache_control_is_a_dictionary_over_all_its_lines() {
        let d = targeted(&["max-age=60, must-revalidate", "stale-if-error=30"]).unwrap();
        assert_eq!((d.max_age, d.stale_if_error), (Some(60), Some(30)));
        assert!(d.must_revalidate);
        assert_eq!(
            targeted(&["max-age=99999999999999"]).unwrap().max_age,
            Some(DELTA_SECONDS_MAX)
        );
    }

    #[test]
    fn cdn_cache_control_that_is_not_a_dictionary_is_ignored() {
        for bad in [
            "max-age=60, (",
            "max-age=60,,",
            "Max-Age=60",
            "max-age=6.0.0",
            "max-age=60;",
        ] {
            assert_eq!(targeted(&[bad]), None, "{bad}");
        }
    }

    #[test]
    fn cdn_cache_control_directives_of_the_wrong_type_are_not_used() {
        let d = targeted(&["max-age=\"10\", s-maxage=-5, no-store=?0, public=1"]).unwrap();
        assert!(d.is_empty(), "{d:?}");
        let d = targeted(&["no-store, private=\"set-cookie\", no-cache=(a b)"]).unwrap();
        assert!(d.no_store && d.private && d.no_cache);
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(2048))]

        /// Any CDN-Cache-Control parses or is ignored, without panic, and
        /// every delta-seconds stays within 2^31.
        #[test]
        fn any_cdn_cache_control_parses_or_is_ignored(
            value in crate::http::arbitrary::any_value(),
        ) {
            let mut h = HeaderMap::new();
            h.insert("cdn-cache-control", value);
            if let Some(d) = Directives::parse_targeted(h.get_all("cdn-cache-control")) {
                for delta in [d.max_age, d.s_maxage, d.stale_if_error, d.stale_while_revalidate]
                    .into_iter()
                    .flatten()
                {
                    proptest::prop_assert!(delta <= DELTA_SECONDS_MAX);
                }
            }
        }

        /// Any Cache-Control a client or origin sends parses, and every
        /// delta-seconds stays within 2^31.
        #[test]
        fn any_field_value_parses_with_bounded_deltas(
            value in crate::http::arbitrary::any_value(),
        ) {
            let mut h = HeaderMap::new();
            h.insert("cache-control", value);
            let d = Directives::parse(h.get_all("cache-control"));
            for delta in [d.max_age, d.s_maxage, d.stale_if_error, d.stale_while_revalidate, d.min_fresh]
                .into_iter()
                .flatten()
            {
                proptest::prop_assert!(delta <= DELTA_SECONDS_MAX);
            }
        }
    }
}
