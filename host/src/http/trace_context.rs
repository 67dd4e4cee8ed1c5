//! W3C Trace Context (Recommendation, 2021): the `traceparent` and
//! `tracestate` fields. The node is a participant in the client's trace:
//! it keeps the trace id and flags, and tells origins its own span as the
//! parent. A request without a valid `traceparent` starts a new trace here.

use http::{HeaderMap, HeaderName, HeaderValue};

pub const TRACEPARENT: HeaderName = HeaderName::from_static("traceparent");
pub const TRACESTATE: HeaderName = HeaderName::from_static("tracestate");

/// `trace-flags` bit 0 (section 3.2.2.5): the caller may have recorded
/// the trace, and the node exports its span when it sends spans at all.
const SAMPLED: u8 = 0x01;

/// Longest `tracestate` passed on (section 3.3.1.5: at least 512
/// characters SHOULD be propagated; a longer one is dropped whole rather
/// than cut in a list member).
const MAX_TRACESTATE: usize = 512;

/// The request's place in a trace.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TraceContext {
    pub trace_id: [u8; 16],
    /// The node's span: the parent the origin is told of.
    pub span_id: [u8; 8],
    /// The client's span, when the client was in a trace.
    pub parent_id: Option<[u8; 8]>,
    /// `trace-flags` (bit 0: sampled), kept from the client.
    pub flags: u8,
    /// The client's `tracestate`, passed on unchanged (only with a valid
    /// `traceparent`, section 3.3).
    pub state: Option<HeaderValue>,
}

impl TraceContext {
    /// The client's trace continued with a span of the node's, or a new
    /// trace when the request has no valid `traceparent`.
    pub fn of(headers: &HeaderMap) -> TraceContext {
        let mut parents = headers.get_all(TRACEPARENT).iter();
        let parent = match (parents.next(), parents.next()) {
            (Some(v), None) => v.to_str().ok().and_then(parse_traceparent),
            // Several traceparent fields are invalid (section 3.2).
            _ => None,
        };
        let Some((trace_id, parent_id, flags)) = parent else {
            return TraceContext::start();
        };
        TraceContext {
            trace_id,
            span_id: span_id(),
            parent_id: Some(parent_id),
            flags,
            state: tracestate(headers),
        }
    }

    /// A new trace, started here; not sampled unless [`Self::sample`] is
    /// called.
    pub fn start() -> TraceContext {
        let mut trace_id = rand::random::<[u8; 16]>();
        if trace_id == [0; 16] {
            trace_id[15] = 1;
        }
        TraceContext {
            trace_id,
            span_id: span_id(),
            parent_id: None,
            flags: 0,
            state: None,
        }
    }

    /// Whether the trace is sampled: the client said so, or the node
    /// decided to when it started the trace.
    pub fn sampled(&self) -> bool {
        self.flags & SAMPLED != 0
    }

    /// Marks a trace the node started as sampled; a client's trace keeps
    /// the client's decision (its `sampled` flag), so that the caller's
    /// and the edge's spans are recorded together or not at all.
    pub fn sample(&mut self) {
        if self.parent_id.is_none() {
            self.flags |= SAMPLED;
        }
    }

    /// `traceparent` for a request the node sends on (version 00).
    pub fn traceparent(&self) -> HeaderValue {
        // `00-` 32 digits `-` 16 digits `-` 2 digits.
        let mut value = *b"00-00000000000000000000000000000000-0000000000000000-00";
        super::hex::encode_into(&self.trace_id, &mut value[3..35]);
        super::hex::encode_into(&self.span_id, &mut value[36..52]);
        super::hex::encode_into(&[self.flags], &mut value[53..55]);
        HeaderValue::from_bytes(&value).expect("hex is a valid field value")
    }

    pub fn trace_id_hex(&self) -> String {
        super::hex::encode(&self.trace_id)
    }
}

/// A span id, never all zeros (section 3.2.2.4).
fn span_id() -> [u8; 8] {
    let mut id = rand::random::<[u8; 8]>();
    if id == [0; 8] {
        id[7] = 1;
    }
    id
}

/// Section 3.2.2: `version-trace_id-parent_id-flags`, lowercase hex. A
/// version 00 field is exactly that; a later version may append fields
/// after a `-`, which a version 00 reader ignores (section 3.2.4).
fn parse_traceparent(value: &str) -> Option<([u8; 16], [u8; 8], u8)> {
    let value = value.trim_matches([' ', '\t']);
    let bytes = value.as_bytes();
    if bytes.len() < 55 {
        return None;
    }
    let version = from_hex::<1>(&value[..2])?[0];
    if version == 0xff || bytes[2] != b'-' || bytes[35] != b'-' || bytes[52] != b'-' {
        return None;
    }
    match bytes.len() {
        55 => {}
        _ if version == 0 => return None,
        _ if bytes[55] != b'-' => return None,
        _ => {}
    }
    let trace_id = from_hex::<16>(&value[3..35])?;
    let parent_id = from_hex::<8>(&value[36..52])?;
    let flags = from_hex::<1>(&value[53..55])?[0];
    if trace_id == [0; 16] || parent_id == [0; 8] {
        return None;
    }
    Some((trace_id, parent_id, flags))
}

/// The `tracestate` fields joined (several are one list, section 3.3.1),
/// if short enough to pass on whole.
fn tracestate(headers: &HeaderMap) -> Option<HeaderValue> {
    let values: Vec<&str> = headers
        .get_all(TRACESTATE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .map(str::trim)
        .filter(|v| !v.is_empty())
        .collect();
    let joined = values.join(",");
    if joined.is_empty() || joined.len() > MAX_TRACESTATE {
        return None;
    }
    HeaderValue::from_str(&joined).ok()
}

/// Lowercase hex digits only (section 3.2.2: uppercase is invalid).
fn from_hex<const N: usize>(text: &str) -> Option<[u8; N]> {
    let digits = text.as_bytes();
    if digits.len() != 2 * N {
        return None;
    }
    let nibble = |d: u8| match d {
        b'0'..=b'9' => Some(d - b'0'),
        b'a'..=b'f' => Some(d - b'a' + 10),
        _ => None,
    };
    let mut out = [0u8; N];
    for (i, pair) in digits.chunks(2).enumerate() {
        out[i] = (nibble(pair[0])? << 4) | nibble(pair[1])?;
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    const CLIENT: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

    fn headers(pairs: &[(HeaderName, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(k, HeaderValue::from_str(v).unwrap());
        }
        h
    }

    #[test]
    fn a_valid_traceparent_is_continued_with_a_span_of_the_node() {
        let t = TraceContext::of(&headers(&[(TRACEPARENT, CLIENT), (TRACESTATE, "a=1")]));
        assert_eq!(t.trace_id_hex(), "4bf92f3577b34da6a3ce929d0e0e4736");
        assert_eq!(
            t.parent_id,
            Some([0x00, 0xf0, 0x67, 0xaa, 0x0b, 0xa9, 0x02, 0xb7])
        );
        let sent = t.traceparent();
        let sent = sent.to_str().unwrap();
        assert!(
            sent.starts_with("00-4bf92f3577b34da6a3ce929d0e0e4736-"),
            "{sent}"
        );
        assert!(sent.ends_with("-01"), "{sent}");
        assert_ne!(&sent[36..52], "00f067aa0ba902b7");
        assert_eq!(t.state.unwrap(), "a=1");
    }

    #[test]
    fn invalid_traceparents_start_a_new_trace_and_drop_the_tracestate() {
        let invalid = [
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00F067AA0BA902B7-01", // uppercase
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01", // zero trace
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01", // zero parent
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01", // version ff
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-x", // 00 with more
            "00-4bf92f3577b34da6a3ce929d0e0e473-00f067aa0ba902b7-01",  // short id
            "00_4bf92f3577b34da6a3ce929d0e0e4736_00f067aa0ba902b7_01", // separators
        ];
        for value in invalid {
            let t = TraceContext::of(&headers(&[(TRACEPARENT, value), (TRACESTATE, "a=1")]));
            assert_eq!(t.parent_id, None, "{value}");
            assert_eq!(t.state, None, "{value}");
            assert_ne!(t.trace_id, [0; 16]);
            assert_eq!(t.flags, 0);
        }
        let two = headers(&[(TRACEPARENT, CLIENT), (TRACEPARENT, CLIENT)]);
        assert_eq!(TraceContext::of(&two).parent_id, None);
    }

    #[test]
    fn a_later_version_is_read_by_its_version_00_fields() {
        let future = "cc-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-09-what-comes";
        let t = TraceContext::of(&headers(&[(TRACEPARENT, future)]));
        assert_eq!(t.trace_id_hex(), "4bf92f3577b34da6a3ce929d0e0e4736");
        assert_eq!(t.flags, 0x09);
        // ... and passed on as version 00.
        assert!(t.traceparent().to_str().unwrap().starts_with("00-"));
    }

    #[test]
    fn several_tracestate_fields_are_one_list_and_an_oversized_one_is_dropped() {
        let h = headers(&[
            (TRACEPARENT, CLIENT),
            (TRACESTATE, "a=1"),
            (TRACESTATE, "b=2"),
        ]);
        assert_eq!(TraceContext::of(&h).state.unwrap(), "a=1,b=2");
        let long = format!("a={}", "x".repeat(600));
        let h = headers(&[(TRACEPARENT, CLIENT), (TRACESTATE, &long)]);
        assert_eq!(TraceContext::of(&h).state, None);
    }
}
