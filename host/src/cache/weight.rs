//! What a stored object costs in memory, which is what the cache charges
//! it against `max_size_mb` and the tenant's quota: not only its body and
//! header bytes, but every allocation that storing it makes (the response,
//! its body buffer, a fill's shared body and channel, the head, the key,
//! the variant list, moka's bookkeeping, the tag index), each rounded as
//! the allocator rounds it.
//!
//! The fixed parts were measured with `bench/memory` (RSS added per object
//! against the charge: 0.91 to 1.05 from 100 B to 1 MiB).

use std::mem::size_of;

use super::body::{SharedBody, StoredBody};
use super::head::StoredHead;
use super::StoredResponse;
use http::header::HeaderName;

/// What moka keeps per key beyond the key and value themselves: the entry
/// and its info block, the access-order, write-order and timer-wheel
/// nodes, and the hash table's bucket (moka 0.12; measured, see above).
const CACHE_ENTRY: u64 = 480;

/// tokio's watch channel of a fill's body (its value, lock and nine
/// `Notify`s), which readers of the fill wait on.
const FILL_CHANNEL: u64 = 448;

/// What `Bytes` allocates when a buffer it owns is first cloned.
const SHARED_BYTES: u64 = 32;

/// A fill's chunk list once compacted to one chunk.
const CHUNK_LIST: u64 = 32;

/// What one tag of an object adds to the tag index: the tag's entry and a
/// copy of the key in its set (beyond the two strings).
const TAG_ENTRY: u64 = 64;

/// Heap bytes taken by an allocation of `n` bytes: the allocator rounds a
/// request up to its size class (16 B steps for small ones, classes
/// 12.5 % apart above that), on average by about a sixteenth.
pub(super) fn allocation(n: usize) -> u64 {
    if n == 0 {
        return 0;
    }
    let n = n as u64;
    n.div_ceil(16) * 16 + n / 16
}

/// An `Arc`'d value: its two counts and the value.
fn arc_of<T>() -> u64 {
    allocation(16 + size_of::<T>())
}

/// A stored head: its buffer and its field entries (see `StoredHead`).
fn head(headers: &StoredHead) -> u64 {
    let (bytes, fields) = headers.heap_bytes();
    allocation(bytes) + allocation(fields)
}

/// A stored body: its buffer and the header `Bytes` puts in front of one
/// when it is first shared (the first hit); a fill's body also its shared
/// state, chunk list and channel.
fn body(body: &StoredBody) -> u64 {
    match body {
        StoredBody::Whole(bytes) => allocation(bytes.len()) + SHARED_BYTES,
        StoredBody::Fill(fill) => {
            let bytes = fill.weight().try_into().unwrap_or(usize::MAX);
            arc_of::<SharedBody>() + FILL_CHANNEL + allocation(bytes) + SHARED_BYTES + CHUNK_LIST
        }
    }
}

/// What one stored response costs, under whatever key.
pub(super) fn response(stored: &StoredResponse) -> u64 {
    let vary: u64 = stored
        .vary
        .iter()
        .map(|(name, value)| {
            (size_of::<(HeaderName, Option<String>)>() as u64)
                + allocation(name.as_str().len())
                + value.as_ref().map_or(0, |v| allocation(v.len()))
        })
        .sum();
    let tags: u64 = stored
        .tags
        .iter()
        .map(|t| size_of::<String>() as u64 + allocation(t.len()) + TAG_ENTRY)
        .sum();
    arc_of::<StoredResponse>() + body(&stored.body) + head(&stored.headers) + vary + tags
}

/// What a key costs besides its responses: the key (moka keeps it behind
/// an `Arc`), the variant list (an `Arc`'d boxed slice, its weight and a
/// flag),
/// and moka's entry; plus one tag index copy of the key per tag of each
/// response.
pub(super) fn key(key: &str, variants: usize, tags: usize) -> u64 {
    let key_bytes = allocation(key.len());
    allocation(16 + size_of::<Box<str>>())
        + key_bytes
        + allocation(16 + size_of::<Box<[usize]>>() + 8)
        + allocation(variants * size_of::<usize>())
        + CACHE_ENTRY
        + tags as u64 * key_bytes
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn allocations_round_up_to_the_allocators_classes() {
        assert_eq!(allocation(0), 0);
        assert_eq!(allocation(1), 16);
        assert_eq!(allocation(16), 17);
        assert!(allocation(1024) >= 1024 + 64);
        assert!(allocation(1 << 20) < (1 << 20) * 11 / 10);
    }

    #[test]
    fn a_stored_response_keeps_to_160_bytes_with_its_counts() {
        // Every stored object holds one: 16 B of counts and 144 B fill
        // mimalloc's 160 B class; a field more costs 32 B per object.
        assert!(size_of::<StoredResponse>() <= 144);
        assert!(size_of::<super::super::freshness::Freshness>() <= 24);
    }
}
