//! A bounded ring of a tenant's recent request heads, for the policy
//! preview. Recording never blocks a request: when the ring is busy the
//! request is simply not recorded.
//!
//! Once the ring is full only one request in [`SAMPLE_EVERY`] is recorded.
//! What is kept is each head flattened into one buffer ([`Recorded`]), and
//! the ring is bounded by bytes as well as by count: a parsed head shares
//! its buffer with the connection's read buffer, and even an owned copy
//! (a `HeaderMap` and a buffer per value) costs over a kilobyte for a head
//! of a few fields, so a thousand tenants' rings of `RequestInfo`s held
//! hundreds of megabytes.

use std::cell::Cell;
use std::collections::VecDeque;
use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use http::{HeaderMap, HeaderName, HeaderValue, Method, Uri};

use crate::http::{RequestId, RequestInfo, Scheme, SignatureVerdict, TraceContext};

/// Request heads kept per tenant, at most.
pub const RECENT_CAPACITY: usize = 256;
/// Bytes of recorded heads kept per tenant, at most: 256 heads of 256 B.
pub const RECENT_BYTES: usize = 64 * 1024;
/// With the ring full, one request in this many replaces the oldest.
const SAMPLE_EVERY: u32 = 16;

thread_local! {
    /// Requests seen by this thread, for sampling without a shared counter.
    static SEEN: Cell<u32> = const { Cell::new(0) };
}

#[derive(Default)]
pub struct RecentRequests {
    ring: Mutex<Ring>,
    /// The ring is at its count or byte bound: skipped requests need not
    /// touch the lock.
    full: AtomicBool,
}

#[derive(Default)]
struct Ring {
    heads: VecDeque<Recorded>,
    /// Sum of the heads' buffer lengths.
    bytes: usize,
}

impl RecentRequests {
    pub fn record(&self, request: &RequestInfo) {
        let sampled = SEEN.with(|seen| {
            let n = seen.get().wrapping_add(1);
            seen.set(n);
            n % SAMPLE_EVERY == 0
        });
        if !sampled && self.full.load(Ordering::Relaxed) {
            return;
        }
        // A head over a quarter of the bound would push out most others.
        let Some(head) = Recorded::of(request).filter(|h| h.len() <= RECENT_BYTES / 4) else {
            return;
        };
        if let Ok(mut ring) = self.ring.try_lock() {
            while ring.heads.len() >= RECENT_CAPACITY
                || (!ring.heads.is_empty() && ring.bytes + head.len() > RECENT_BYTES)
            {
                if let Some(old) = ring.heads.pop_front() {
                    ring.bytes -= old.len();
                }
            }
            ring.bytes += head.len();
            ring.heads.push_back(head);
            let full = ring.heads.len() == RECENT_CAPACITY || ring.bytes * 2 > RECENT_BYTES;
            self.full.store(full, Ordering::Relaxed);
        }
    }

    /// The recorded heads, oldest first, each with a new request id and
    /// trace (they are replayed, not forwarded).
    pub fn snapshot(&self) -> Vec<Arc<RequestInfo>> {
        let ring = self.ring.lock().unwrap_or_else(|p| p.into_inner());
        ring.heads
            .iter()
            .filter_map(|head| head.to_request().map(Arc::new))
            .collect()
    }
}

/// A request head in one buffer: the method, the target, the authority,
/// then each field as a sensitivity byte, its name and its value; every
/// string behind its length as a little-endian `u16` (a head hyper
/// accepts is far shorter than 64 KiB, and a longer one is not recorded).
struct Recorded {
    bytes: Box<[u8]>,
    scheme: Scheme,
    client_ip: IpAddr,
    from_pop_member: bool,
    signature: SignatureVerdict,
}

impl Recorded {
    fn of(request: &RequestInfo) -> Option<Recorded> {
        let target = request.uri.to_string();
        let mut out = Vec::with_capacity(
            16 + target.len()
                + request.authority.len()
                + request
                    .headers
                    .iter()
                    .map(|(n, v)| 5 + n.as_str().len() + v.len())
                    .sum::<usize>(),
        );
        put(&mut out, request.method.as_str().as_bytes())?;
        put(&mut out, target.as_bytes())?;
        put(&mut out, request.authority.as_bytes())?;
        for (name, value) in &request.headers {
            out.push(u8::from(value.is_sensitive()));
            put(&mut out, name.as_str().as_bytes())?;
            put(&mut out, value.as_bytes())?;
        }
        Some(Recorded {
            bytes: out.into_boxed_slice(),
            scheme: request.scheme,
            client_ip: request.client_ip,
            from_pop_member: request.from_pop_member,
            signature: request.signature,
        })
    }

    fn len(&self) -> usize {
        self.bytes.len()
    }

    /// The head again; `None` only if the buffer was not written by
    /// [`Recorded::of`], which cannot happen.
    fn to_request(&self) -> Option<RequestInfo> {
        let mut rest = &self.bytes[..];
        let method = Method::from_bytes(take(&mut rest)?).ok()?;
        let uri = Uri::try_from(take(&mut rest)?).ok()?;
        let authority = std::str::from_utf8(take(&mut rest)?).ok()?.to_owned();
        let mut headers = HeaderMap::new();
        while let Some((&sensitive, after)) = rest.split_first() {
            rest = after;
            let name = HeaderName::from_bytes(take(&mut rest)?).ok()?;
            let mut value = HeaderValue::from_bytes(take(&mut rest)?).ok()?;
            value.set_sensitive(sensitive == 1);
            headers.append(name, value);
        }
        Some(RequestInfo {
            method,
            uri,
            headers,
            scheme: self.scheme,
            authority,
            client_ip: self.client_ip,
            request_id: RequestId::generate(),
            trace: TraceContext::start(),
            from_pop_member: self.from_pop_member,
            signature: self.signature,
        })
    }
}

fn put(out: &mut Vec<u8>, bytes: &[u8]) -> Option<()> {
    out.extend_from_slice(&u16::try_from(bytes.len()).ok()?.to_le_bytes());
    out.extend_from_slice(bytes);
    Some(())
}

fn take<'a>(rest: &mut &'a [u8]) -> Option<&'a [u8]> {
    let (len, after) = rest.split_first_chunk::<2>()?;
    let len = usize::from(u16::from_le_bytes(*len));
    let (bytes, after) = (after.get(..len)?, &after[len..]);
    *rest = after;
    Some(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(target: &str, cookie: &str) -> RequestInfo {
        let mut info = RequestInfo::internal(Method::POST, target.parse().unwrap(), "Shop.Test");
        info.headers
            .append("accept", HeaderValue::from_static("text/html"));
        info.headers
            .append("accept", HeaderValue::from_static("*/*"));
        let mut secret = HeaderValue::from_str(cookie).unwrap();
        secret.set_sensitive(true);
        info.headers.insert("cookie", secret);
        info.scheme = Scheme::Https;
        info.client_ip = IpAddr::from([192, 0, 2, 7]);
        info
    }

    #[test]
    fn a_recorded_head_replays_with_its_method_target_fields_and_their_sensitivity() {
        let recent = RecentRequests::default();
        recent.record(&request("/a?b=c", "id=1"));
        let [replayed] = &recent.snapshot()[..] else {
            panic!("one head expected");
        };
        assert_eq!(replayed.method, Method::POST);
        assert_eq!(replayed.path_and_query(), "/a?b=c");
        assert_eq!(replayed.authority, "shop.test");
        assert_eq!(replayed.scheme, Scheme::Https);
        assert_eq!(replayed.client_ip, IpAddr::from([192, 0, 2, 7]));
        let accept: Vec<_> = replayed.headers.get_all("accept").iter().collect();
        assert_eq!(accept, ["text/html", "*/*"]);
        assert!(replayed.headers["cookie"].is_sensitive());
        assert!(!replayed.headers["accept"].is_sensitive());
    }

    #[test]
    fn a_head_over_a_quarter_of_the_bound_is_not_recorded_and_pushes_nothing_out() {
        let recent = RecentRequests::default();
        recent.record(&request("/small", "id=1"));
        recent.record(&request("/huge", &"x".repeat(RECENT_BYTES / 4)));
        let kept: Vec<_> = recent
            .snapshot()
            .iter()
            .map(|r| r.path_and_query().to_owned())
            .collect();
        assert_eq!(kept, ["/small"]);
    }

    #[test]
    fn the_ring_keeps_the_newest_heads_within_its_byte_bound() {
        let recent = RecentRequests::default();
        let big = "x".repeat(8 * 1024);
        for i in 0..64 {
            recent.record(&request(&format!("/{i}"), &big));
        }
        let kept = recent.snapshot();
        assert!(kept.len() < 8, "kept {} heads of over 8 KiB", kept.len());
        // Once full, only sampled requests are recorded: the newest kept
        // is a recent one, not the first few.
        let newest: usize = kept.last().unwrap().path_and_query()[1..].parse().unwrap();
        assert!(newest >= 48, "newest kept is /{newest}");
    }
}
