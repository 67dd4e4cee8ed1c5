//! A stored response's header fields, kept small: exactly its fields in
//! order, their values slices of one buffer. A `HeaderMap` keeps a hash
//! table with spare slots (about 100 B a slot, a third of them empty) and
//! an allocation per value; a cached object keeps its head for as long as
//! it is stored and is never looked up by field more than a few times, so
//! a list is the better trade (the node stores millions of small objects).

use bytes::{Bytes, BytesMut};
use http::header::{HeaderName, HeaderValue};
use http::HeaderMap;

use crate::http::headers::owned_value;

#[derive(Debug, Clone, Default)]
pub struct StoredHead {
    fields: Box<[(HeaderName, HeaderValue)]>,
}

impl StoredHead {
    /// A copy of `head` in storage of its own (a head parsed from the wire
    /// shares the connection's read buffer, see `owned_copy`).
    pub fn of(head: &HeaderMap) -> StoredHead {
        let total: usize = head.values().map(HeaderValue::len).sum();
        let mut block = BytesMut::with_capacity(total);
        for value in head.values() {
            block.extend_from_slice(value.as_bytes());
        }
        let block: Bytes = block.freeze();
        let mut at = 0;
        let fields = head
            .iter()
            .map(|(name, value)| {
                let bytes = block.slice(at..at + value.len());
                at += value.len();
                let mut owned =
                    HeaderValue::from_maybe_shared(bytes).unwrap_or_else(|_| value.clone());
                owned.set_sensitive(value.is_sensitive());
                (name.clone(), owned)
            })
            .collect();
        StoredHead { fields }
    }

    /// The first value of `name`.
    pub fn get(&self, name: &HeaderName) -> Option<&HeaderValue> {
        self.fields.iter().find(|(n, _)| n == name).map(|(_, v)| v)
    }

    /// Every value of `name`, in order.
    pub fn get_all<'a>(&'a self, name: &'a HeaderName) -> impl Iterator<Item = &'a HeaderValue> {
        self.fields
            .iter()
            .filter(move |(n, _)| n == name)
            .map(|(_, v)| v)
    }

    pub fn iter(&self) -> impl Iterator<Item = (&HeaderName, &HeaderValue)> {
        self.fields.iter().map(|(n, v)| (n, v))
    }

    /// A map of the fields for a response, whose values own their bytes
    /// (for the reason `owned_copy` gives: a clone would bump the buffer's
    /// one shared count on every hit, from every worker thread). Room for
    /// the few fields a response adds.
    pub fn to_map(&self) -> HeaderMap {
        let mut map = HeaderMap::with_capacity(self.fields.len() + 4);
        for (name, value) in self.fields.iter() {
            map.append(name.clone(), owned_value(value));
        }
        map
    }

    pub fn len(&self) -> usize {
        self.fields.len()
    }

    pub fn is_empty(&self) -> bool {
        self.fields.is_empty()
    }

    /// Bytes of the values' shared buffer.
    pub fn value_bytes(&self) -> usize {
        self.fields.iter().map(|(_, v)| v.len()).sum()
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
        assert_eq!(stored.get(&http::header::AGE), None);
        assert_eq!(stored.to_map(), head);
        assert_eq!(stored.value_bytes(), "max-age=60ab\"v1\"".len());
    }
}
