//! The request id: the client's `X-Request-Id` when it is a sane token,
//! else one made here. It goes to every origin the request reaches, back
//! to the client on the response, and into the access log, so one id
//! follows a request through every tier and log.

use http::{HeaderMap, HeaderName, HeaderValue};

/// The field carrying it (the de facto convention of proxies and CDNs). A
/// `HeaderName`, not a `&str`: a map looks a name up without parsing it.
pub const HEADER: HeaderName = HeaderName::from_static("x-request-id");

/// Longest client id accepted; longer ones are replaced.
const MAX_LEN: usize = 128;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestId(HeaderValue);

impl RequestId {
    /// The client's id if it has exactly one that is 1 to 128 characters
    /// of letters, digits and `-_.:+/=` (UUIDs, hex, base64 and the ids of
    /// other proxies; nothing that could split a log line or a header),
    /// else a new one.
    pub fn of(headers: &HeaderMap) -> RequestId {
        let mut values = headers.get_all(HEADER).iter();
        match (values.next(), values.next()) {
            (Some(v), None) if acceptable(v.as_bytes()) => RequestId(v.clone()),
            _ => RequestId::generate(),
        }
    }

    /// 128 random bits as 32 hex digits.
    pub fn generate() -> RequestId {
        let mut id = [0u8; 32];
        super::hex::encode_into(&rand::random::<[u8; 16]>(), &mut id);
        RequestId(HeaderValue::from_bytes(&id).expect("hex is a valid field value"))
    }

    pub fn as_str(&self) -> &str {
        // Only acceptable bytes (ASCII) get in.
        self.0.to_str().unwrap_or("-")
    }

    pub fn header_value(&self) -> HeaderValue {
        self.0.clone()
    }
}

fn acceptable(id: &[u8]) -> bool {
    (1..=MAX_LEN).contains(&id.len())
        && id
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.:+/=".contains(b))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with(values: &[&str]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for v in values {
            h.append(HEADER, HeaderValue::from_str(v).unwrap());
        }
        h
    }

    #[test]
    fn a_sane_client_id_is_kept_and_anything_else_replaced() {
        let uuid = "0b6f8c1e-3f4a-4d2b-9c1d-6e2f7a8b9c0d";
        assert_eq!(RequestId::of(&with(&[uuid])).as_str(), uuid);
        for bad in ["", "has space", "quote\"d", "a,b", &"x".repeat(129)] {
            let id = RequestId::of(&with(&[bad]));
            assert_ne!(id.as_str(), bad);
            assert_eq!(id.as_str().len(), 32);
        }
        // Two ids: which one would the origin believe? Neither.
        assert_eq!(RequestId::of(&with(&["a", "b"])).as_str().len(), 32);
        assert_ne!(RequestId::generate(), RequestId::generate());
    }
}
