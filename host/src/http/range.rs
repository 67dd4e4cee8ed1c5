//! The one parser of the `Range` request field (RFC 9110 section 14.1-14.2),
//! used both to answer ranges from a stored response and to fetch a miss
//! in slices. Arithmetic saturates: any `u64` a client writes is safe.

/// Ranges accepted in one request; more is treated as abuse and the Range
/// field ignored (RFC 9110 section 14.2 allows ignoring it).
pub const MAX_RANGES: usize = 64;

/// One `byte-range-spec` or `suffix-range` (RFC 9110 section 14.1.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RangeSpec {
    /// `first-last`, both inclusive, `first <= last`.
    FromTo(u64, u64),
    /// `first-`: from `first` to the end.
    From(u64),
    /// `-n`: the last `n` bytes.
    Suffix(u64),
}

/// What a Range field asks of a representation of a known length.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ranges {
    /// No (usable) Range: the whole representation, 200.
    Whole,
    /// Satisfiable ranges as `start..end` (end exclusive, never past the
    /// length), 206.
    Parts(Vec<(u64, u64)>),
    /// Nothing satisfiable: 416.
    Unsatisfiable,
}

/// Parses `bytes=a-b, c-, -n`. `None` when the field must be ignored: another
/// unit, a malformed spec, no spec at all, or more than [`MAX_RANGES`].
pub fn parse_specs(value: &str) -> Option<Vec<RangeSpec>> {
    let spec = value.trim().strip_prefix("bytes=")?;
    let mut specs = Vec::new();
    for item in spec.split(',').map(str::trim).filter(|i| !i.is_empty()) {
        let (first, last) = item.split_once('-')?;
        let (first, last) = (first.trim(), last.trim());
        let parsed = match (first.is_empty(), last.is_empty()) {
            (true, true) => return None,
            (true, false) => RangeSpec::Suffix(digits(last)?),
            (false, true) => RangeSpec::From(digits(first)?),
            (false, false) => {
                let (a, b) = (digits(first)?, digits(last)?);
                if b < a {
                    return None;
                }
                RangeSpec::FromTo(a, b)
            }
        };
        specs.push(parsed);
        if specs.len() > MAX_RANGES {
            return None;
        }
    }
    (!specs.is_empty()).then_some(specs)
}

/// 1*DIGIT, saturating at `u64::MAX` (a position past any length).
fn digits(text: &str) -> Option<u64> {
    if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    Some(text.parse().unwrap_or(u64::MAX))
}

impl RangeSpec {
    /// The bytes this spec selects of a representation of `len` bytes, as
    /// `start..end`; `None` when unsatisfiable (section 14.1.1).
    pub fn resolve(self, len: u64) -> Option<(u64, u64)> {
        match self {
            RangeSpec::Suffix(n) => (n > 0 && len > 0).then(|| (len.saturating_sub(n), len)),
            RangeSpec::From(a) => (a < len).then_some((a, len)),
            RangeSpec::FromTo(a, b) => (a < len).then(|| (a, b.saturating_add(1).min(len))),
        }
    }
}

/// Evaluates a Range field value against a representation of `len` bytes.
pub fn parse(value: &str, len: u64) -> Ranges {
    let Some(specs) = parse_specs(value) else {
        return Ranges::Whole;
    };
    let parts: Vec<(u64, u64)> = specs.iter().filter_map(|s| s.resolve(len)).collect();
    if parts.is_empty() {
        Ranges::Unsatisfiable
    } else {
        Ranges::Parts(parts)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn parses_the_three_forms() {
        assert_eq!(parse("bytes=0-4", 10), Ranges::Parts(vec![(0, 5)]));
        assert_eq!(parse("bytes=5-", 10), Ranges::Parts(vec![(5, 10)]));
        assert_eq!(parse("bytes=-3", 10), Ranges::Parts(vec![(7, 10)]));
        assert_eq!(parse("bytes=8-100", 10), Ranges::Parts(vec![(8, 10)]));
        assert_eq!(
            parse("bytes=0-0,-1", 10),
            Ranges::Parts(vec![(0, 1), (9, 10)])
        );
    }

    #[test]
    fn unsatisfiable_and_malformed() {
        assert_eq!(parse("bytes=10-", 10), Ranges::Unsatisfiable);
        assert_eq!(parse("bytes=-0", 10), Ranges::Unsatisfiable);
        assert_eq!(parse("bytes=5-2", 10), Ranges::Whole);
        assert_eq!(parse("items=0-1", 10), Ranges::Whole);
        assert_eq!(parse("bytes=a-b", 10), Ranges::Whole);
        assert_eq!(parse("bytes=-", 10), Ranges::Whole);
        assert_eq!(parse("bytes=", 10), Ranges::Whole);
    }

    #[test]
    fn the_largest_last_position_selects_to_the_end() {
        let max = u64::MAX;
        assert_eq!(
            parse(&format!("bytes=0-{max}"), 10),
            Ranges::Parts(vec![(0, 10)])
        );
        assert_eq!(
            parse("bytes=0-99999999999999999999999", 10),
            Ranges::Parts(vec![(0, 10)])
        );
        assert_eq!(
            RangeSpec::FromTo(max, max).resolve(max),
            None,
            "a start at the length is unsatisfiable"
        );
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2048))]

        #[test]
        fn any_field_value_parses_without_panic(value in ".{0,80}", len in any::<u64>()) {
            let _ = parse(&value, len);
        }

        #[test]
        fn resolved_parts_are_inside_the_representation(
            specs in "bytes=([0-9]{0,21}-[0-9]{0,21},?){1,4}",
            len in any::<u64>(),
        ) {
            if let Ranges::Parts(parts) = parse(&specs, len) {
                for (start, end) in parts {
                    prop_assert!(start < end && end <= len);
                }
            }
        }
    }
}
