//! A stored response's header fields, kept small: one buffer with the
//! values (and the names outside [`KNOWN`]) and a 12-byte entry per field.
//! A `HeaderMap` keeps a hash table with spare slots (about 100 B a slot, a
//! third of them empty) and an allocation per value, and even a list of
//! `(HeaderName, HeaderValue)` costs 72 B a field before its bytes; a
//! cached object keeps its head for as long as it is stored and is looked
//! up by field only a few times, so the compact form is the better trade
//! (the node stores millions of small objects).

use http::header::{self, HeaderName, HeaderValue};
use http::HeaderMap;

/// Names that most responses carry, stored as an index into this table (a
/// clone of a standard name is a copy); any other name keeps its bytes in
/// the buffer.
static KNOWN: [HeaderName; 40] = [
    header::ACCEPT_RANGES,
    header::ACCESS_CONTROL_ALLOW_CREDENTIALS,
    header::ACCESS_CONTROL_ALLOW_HEADERS,
    header::ACCESS_CONTROL_ALLOW_METHODS,
    header::ACCESS_CONTROL_ALLOW_ORIGIN,
    header::ACCESS_CONTROL_EXPOSE_HEADERS,
    header::ACCESS_CONTROL_MAX_AGE,
    header::AGE,
    header::ALLOW,
    header::ALT_SVC,
    header::CACHE_CONTROL,
    header::CONTENT_DISPOSITION,
    header::CONTENT_ENCODING,
    header::CONTENT_LANGUAGE,
    header::CONTENT_LENGTH,
    header::CONTENT_LOCATION,
    header::CONTENT_RANGE,
    header::CONTENT_SECURITY_POLICY,
    header::CONTENT_TYPE,
    header::DATE,
    header::ETAG,
    header::EXPIRES,
    header::LAST_MODIFIED,
    header::LINK,
    header::LOCATION,
    header::PRAGMA,
    header::REFERRER_POLICY,
    header::RETRY_AFTER,
    header::SERVER,
    header::SET_COOKIE,
    header::STRICT_TRANSPORT_SECURITY,
    header::VARY,
    header::VIA,
    header::WARNING,
    header::WWW_AUTHENTICATE,
    header::X_CONTENT_TYPE_OPTIONS,
    header::X_DNS_PREFETCH_CONTROL,
    header::X_FRAME_OPTIONS,
    header::X_XSS_PROTECTION,
    header::TRAILER,
];

/// `Field::known` of a name kept as bytes.
const CUSTOM: u8 = u8::MAX;

/// One field: where its bytes are in the buffer (the name's first, for a
/// custom name, then the value's).
#[derive(Debug, Clone, Copy)]
struct Field {
    start: u32,
    value_len: u32,
    name_len: u16,
    known: u8,
    sensitive: bool,
}

#[derive(Debug, Clone, Default)]
pub struct StoredHead {
    bytes: Box<[u8]>,
    fields: Box<[Field]>,
}

impl StoredHead {
    /// A copy of `head` in storage of its own (nothing shared with the
    /// connection's read buffer, which a slice of it would keep alive).
    /// A field too long for the entry's widths is left out (hyper's limits
    /// on a head are far below them).
    pub fn of(head: &HeaderMap) -> StoredHead {
        let mut bytes = Vec::new();
        let mut fields = Vec::with_capacity(head.len());
        for (name, value) in head {
            let known = KNOWN
                .iter()
                .position(|k| k == name)
                .map_or(CUSTOM, |i| i as u8);
            let name_bytes = if known == CUSTOM {
                name.as_str().as_bytes()
            } else {
                &[]
            };
            let (Ok(start), Ok(name_len), Ok(value_len)) = (
                u32::try_from(bytes.len()),
                u16::try_from(name_bytes.len()),
                u32::try_from(value.len()),
            ) else {
                continue;
            };
            bytes.extend_from_slice(name_bytes);
            bytes.extend_from_slice(value.as_bytes());
            fields.push(Field {
                start,
                value_len,
                name_len,
                known,
                sensitive: value.is_sensitive(),
            });
        }
        StoredHead {
            bytes: bytes.into_boxed_slice(),
            fields: fields.into_boxed_slice(),
        }
    }

    fn is(&self, field: &Field, name: &HeaderName) -> bool {
        match KNOWN.get(usize::from(field.known)) {
            Some(known) => known == name,
            None => self.name_bytes(field) == name.as_str().as_bytes(),
        }
    }

    fn name_bytes(&self, field: &Field) -> &[u8] {
        let start = field.start as usize;
        &self.bytes[start..start + usize::from(field.name_len)]
    }

    fn name(&self, field: &Field) -> Option<HeaderName> {
        match KNOWN.get(usize::from(field.known)) {
            Some(known) => Some(known.clone()),
            None => HeaderName::from_bytes(self.name_bytes(field)).ok(),
        }
    }

    /// The value, in an allocation of its own (see `to_map`).
    fn value(&self, field: &Field) -> Option<HeaderValue> {
        let start = field.start as usize + usize::from(field.name_len);
        let bytes = &self.bytes[start..start + field.value_len as usize];
        let mut value = HeaderValue::from_bytes(bytes).ok()?;
        value.set_sensitive(field.sensitive);
        Some(value)
    }

    /// The first value of `name`.
    pub fn get(&self, name: &HeaderName) -> Option<HeaderValue> {
        self.get_all(name).next()
    }

    /// Every value of `name`, in order.
    pub fn get_all<'a>(&'a self, name: &'a HeaderName) -> impl Iterator<Item = HeaderValue> + 'a {
        self.fields
            .iter()
            .filter(move |f| self.is(f, name))
            .filter_map(|f| self.value(f))
    }

    /// A map of the fields for a response. Its values own their bytes: a
    /// value sharing one buffer would bump that buffer's count on every
    /// hit, from every worker thread. Room for the few fields a response
    /// adds.
    pub fn to_map(&self) -> HeaderMap {
        let mut map = HeaderMap::with_capacity(self.fields.len() + 4);
        for field in self.fields.iter() {
            if let (Some(name), Some(value)) = (self.name(field), self.value(field)) {
                map.append(name, value);
            }
        }
        map
    }

    pub fn len(&self) -> usize {
        self.fields.len()
    }

    pub fn is_empty(&self) -> bool {
        self.fields.is_empty()
    }

    /// Heap bytes it asks for: the buffer and the field entries.
    pub fn heap_bytes(&self) -> (usize, usize) {
        (
            self.bytes.len(),
            self.fields.len() * std::mem::size_of::<Field>(),
        )
    }
}
#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stored_head_keeps_every_field_in_order_and_gives_them_back_as_a_map() {
        let mut head = HeaderMap::new();
        head.append("cache-control", HeaderValue::from_static("max-age=60"));
        head.append("x-tag", HeaderValue::from_static("a"));
        head.append("x-tag", HeaderValue::from_static("b"));
        head.append("etag", HeaderValue::from_static("\"v1\""));
        let stored = StoredHead::of(&head);
        assert_eq!(stored.len(), 4);
        let x_tag = HeaderName::from_static("x-tag");
        let tags: Vec<_> = stored.get_all(&x_tag).collect();
        assert_eq!(tags, ["a", "b"]);
        assert_eq!(stored.get(&http::header::ETAG).unwrap(), "\"v1\"");
        assert!(stored.get(&HeaderName::from_static("x-other")).is_none());
        assert_eq!(stored.get(&http::header::AGE), None);
        assert_eq!(stored.to_map(), head);
        // Custom names keep their bytes, standard ones an index.
        let (bytes, fields) = stored.heap_bytes();
        assert_eq!(bytes, "max-age=60x-tagax-tagb\"v1\"".len());
        assert_eq!(fields, 4 * 12);
    }
}
