//! Decision memoization: a request whose policy-visible inputs equal an
//! earlier request's gets the earlier decision without running wasm.
//!
//! A policy's request hook sees the world only through the request head's
//! getters and the host calls. The host records which of those a fresh
//! instance used while deciding (its *reads*, in order), like a `Vary` for
//! decisions that the policy declares by what it reads. A later request
//! with the same values for the same reads would drive the same code down
//! the same path, so it gets the same decision, provided that:
//!
//! - the instance was fresh (no state carried from earlier requests);
//! - the component imports nothing that differs between runs (clocks,
//!   random numbers, sockets): see [`is_deterministic_import`];
//! - the hook made no call with an effect or an answer that changes over
//!   time (`log`, `cache-lookup`, `cache-purge`, `fetch`). `config-get` is
//!   a read: the value is part of the key.
//!
//! A policy with several code paths has several read sequences ("shapes");
//! each is kept once and a lookup tries them in turn. To stay honest, one
//! memoized request in [`CHECK_EVERY`] still runs the guest, and so does
//! every request that needs the response hook (which runs in the instance
//! that made the decision); any difference disables the memo for that
//! module version.
//!
//! The decisions of all module versions of a node share one table
//! ([`MemoTable`]), each key led by its memo's id: an empty moka cache costs
//! about 35 KiB, which a node of a thousand tenants paid a thousand times,
//! and one bound for the node is what an operator can plan with (moka's
//! TinyLFU keeps a small tenant's frequent decisions when a large one
//! brings many rare ones).
//!
//! A decision enters the table only when its key comes a second time (a
//! doorkeeper, as in TinyLFU): a stream of unique URLs, every one a miss,
//! would otherwise pay a table insert per request for entries never read.
//! Until then it waits in a small direct-mapped array of first sightings,
//! which a key that comes back finds (and moves into the table), so the
//! second request is already decided without the guest. Two keys that
//! share a slot take it from each other, so which keys were seen is also
//! kept in a Bloom filter: a key whose sighting was taken runs the guest
//! once more and then enters the table (without it, colliding keys, a
//! fifth of a thousand tenants' hot keys, never did).

use std::cell::Cell;
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;

use arc_swap::{ArcSwap, ArcSwapOption};

use super::policy::Decision;
use crate::http::RequestInfo;

/// One memoized request in this many (per worker thread) runs the guest to
/// check the memo.
pub const CHECK_EVERY: u64 = 256;
/// Distinct read sequences kept per module version; requests taking other
/// paths through the policy are not memoized.
const MAX_SHAPES: usize = 16;
/// Decisions kept for the whole node (least valuable go first).
const MAX_ENTRIES: u64 = 8 * 1024;
/// Slots of the first sightings: each holds the last decision whose key
/// hashed to it, so a key that comes back within a few thousand others is
/// still found.
const FIRST_SIGHTING_SLOTS: usize = 4 * 1024;
/// Bits of the filter of keys seen, and how many keys it takes before it
/// starts again (about 2 % false positives on average, 5 % at the end:
/// those keys enter the table on their first sighting).
const SEEN_BITS: usize = 64 * 1024;
const SEEN_RESET_AFTER: usize = 8 * 1024;

/// One input of the request hook.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Field {
    Method,
    Scheme,
    Authority,
    Path,
    Query,
    /// `header(name)`, name lowercased.
    Header(Box<str>),
    /// `header-values(name)`, name lowercased.
    HeaderValues(Box<str>),
    /// `headers()`: every field.
    Headers,
    ClientAddr,
    /// `config-get(key)`.
    Config(Box<str>),
    /// `signature()`: the signed-URL verdict.
    Signature,
}

/// What one run of the request hook read, and whether it did anything that
/// rules out reusing its decision.
#[derive(Debug, Default)]
pub struct Reads {
    fields: Vec<Field>,
    unrepeatable: bool,
}

impl Reads {
    pub(crate) fn note(&mut self, field: Field) {
        if !self.fields.contains(&field) {
            self.fields.push(field);
        }
    }

    /// The hook made a call whose effect or answer a memo cannot repeat.
    pub(crate) fn taint(&mut self) {
        self.unrepeatable = true;
    }
}

/// A memoized decision for a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Recall {
    /// Use it without running the guest (until the response hook needs
    /// an instance).
    Use(Arc<Decision>),
    /// Run the guest anyway and compare: this request checks the memo.
    Verify(Arc<Decision>),
}

impl Recall {
    pub fn decision(&self) -> &Arc<Decision> {
        match self {
            Recall::Use(d) | Recall::Verify(d) => d,
        }
    }
}

/// The node's memoized decisions, of every module version (a handle).
#[derive(Clone)]
pub struct MemoTable {
    entries: moka::sync::Cache<Box<[u8]>, Arc<Decision>>,
    next_id: Arc<AtomicU64>,
    /// Decisions whose key was seen once, by hash of the key.
    first_sightings: Arc<[ArcSwapOption<Sighting>]>,
    seen: Arc<Seen>,
}

/// The keys seen since the filter last started again: a Bloom filter of
/// two bits per key.
struct Seen {
    bits: Box<[AtomicU64]>,
    added: AtomicUsize,
}

impl Seen {
    fn new() -> Seen {
        Seen {
            bits: (0..SEEN_BITS / 64).map(|_| AtomicU64::new(0)).collect(),
            added: AtomicUsize::new(0),
        }
    }

    /// Marks the key of `hash` seen; whether it was (or seemed) already.
    fn check_and_mark(&self, hash: u64) -> bool {
        let set = |bit: usize| {
            let mask = 1 << (bit % 64);
            self.bits[bit / 64].fetch_or(mask, Ordering::Relaxed) & mask != 0
        };
        let first = set(hash as usize % SEEN_BITS);
        let second = set((hash >> 32) as usize % SEEN_BITS);
        let seen = first && second;
        if !seen && self.added.fetch_add(1, Ordering::Relaxed) + 1 >= SEEN_RESET_AFTER {
            // Full enough that most keys would look seen: start again (as
            // TinyLFU resets its doorkeeper).
            self.added.store(0, Ordering::Relaxed);
            for word in &self.bits {
                word.store(0, Ordering::Relaxed);
            }
        }
        seen
    }
}

/// A decision made once, waiting for its key to come again.
struct Sighting {
    key: Box<[u8]>,
    decision: Arc<Decision>,
}

impl MemoTable {
    pub fn new() -> MemoTable {
        MemoTable::with_slots(FIRST_SIGHTING_SLOTS)
    }

    fn with_slots(slots: usize) -> MemoTable {
        MemoTable {
            entries: moka::sync::Cache::new(MAX_ENTRIES),
            next_id: Arc::new(AtomicU64::new(0)),
            first_sightings: (0..slots).map(|_| ArcSwapOption::empty()).collect(),
            seen: Arc::new(Seen::new()),
        }
    }

    fn hash(key: &[u8]) -> u64 {
        use std::hash::{Hash, Hasher};
        let mut hasher = std::hash::DefaultHasher::new();
        key.hash(&mut hasher);
        hasher.finish()
    }

    /// The first-sighting slot of a key's hash.
    fn slot(&self, hash: u64) -> &ArcSwapOption<Sighting> {
        &self.first_sightings[hash as usize % self.first_sightings.len()]
    }

    /// The decision stored under `key`: in the table, or seen once, in
    /// which case this second sighting moves it into the table.
    fn get(&self, key: &[u8]) -> Option<Arc<Decision>> {
        if let Some(decision) = self.entries.get(key) {
            return Some(decision);
        }
        let slot = self.slot(MemoTable::hash(key));
        let sighting = slot.load();
        let seen = sighting.as_ref().filter(|s| *s.key == *key)?;
        let decision = seen.decision.clone();
        self.entries.insert(key.into(), decision.clone());
        // Unless another key took the slot meanwhile.
        slot.compare_and_swap(&sighting, None);
        Some(decision)
    }

    /// Keeps a decision made for `key` by a fresh instance: it waits among
    /// the first sightings until the key comes again, or enters the table
    /// if the key was seen before (its sighting lost to another key's).
    fn put(&self, key: Vec<u8>, decision: &Decision) {
        let hash = MemoTable::hash(&key);
        if self.seen.check_and_mark(hash) {
            self.entries
                .insert(key.into_boxed_slice(), Arc::new(decision.clone()));
            return;
        }
        let slot = self.slot(hash);
        slot.store(Some(Arc::new(Sighting {
            key: key.into_boxed_slice(),
            decision: Arc::new(decision.clone()),
        })));
    }
}

impl Default for MemoTable {
    fn default() -> Self {
        MemoTable::new()
    }
}

/// The memoized decisions of one policy module version.
pub struct DecisionMemo {
    shapes: ArcSwap<Vec<Arc<[Field]>>>,
    table: MemoTable,
    /// Leads each of this memo's keys in the table.
    id: u64,
    enabled: AtomicBool,
}

thread_local! {
    /// Memoized requests served by this thread, to pick the ones to check
    /// without a counter shared between threads.
    static RECALLED: Cell<u64> = const { Cell::new(0) };
}

impl DecisionMemo {
    pub fn new(table: &MemoTable) -> DecisionMemo {
        DecisionMemo {
            shapes: ArcSwap::from_pointee(Vec::new()),
            table: table.clone(),
            id: table.next_id.fetch_add(1, Ordering::Relaxed),
            enabled: AtomicBool::new(true),
        }
    }

    pub fn is_enabled(&self) -> bool {
        self.enabled.load(Ordering::Relaxed)
    }

    /// Turns the memo off for good (a checked decision differed). Its
    /// entries are never read again and leave the table as it needs room,
    /// as do those of a version no longer loaded.
    pub fn disable(&self) {
        self.enabled.store(false, Ordering::Relaxed);
    }

    /// The decision an earlier request with the same inputs got, and
    /// whether this request should run the guest anyway to check it.
    pub fn recall(&self, request: &RequestInfo, vars: &BTreeMap<String, String>) -> Option<Recall> {
        if !self.is_enabled() {
            return None;
        }
        let shapes = self.shapes.load();
        let mut key = Vec::with_capacity(128);
        for (index, shape) in shapes.iter().enumerate() {
            key.clear();
            key.extend_from_slice(&self.id.to_le_bytes());
            encode(&mut key, index, shape, request, vars);
            if let Some(decision) = self.table.get(&key) {
                let check = RECALLED.with(|n| {
                    n.set(n.get().wrapping_add(1));
                    n.get() % CHECK_EVERY == 0
                });
                return Some(if check {
                    Recall::Verify(decision)
                } else {
                    Recall::Use(decision)
                });
            }
        }
        None
    }

    /// Keeps the decision a fresh instance made, if it can be repeated.
    pub fn remember(
        &self,
        reads: Reads,
        request: &RequestInfo,
        vars: &BTreeMap<String, String>,
        decision: &Decision,
    ) {
        if reads.unrepeatable || !self.is_enabled() {
            return;
        }
        let Some(index) = self.shape_index(reads.fields) else {
            return;
        };
        let shape = self.shapes.load()[index].clone();
        let mut key = Vec::with_capacity(128);
        key.extend_from_slice(&self.id.to_le_bytes());
        encode(&mut key, index, &shape, request, vars);
        self.table.put(key, decision);
    }

    /// The index of a read sequence, added if new and there is room.
    fn shape_index(&self, fields: Vec<Field>) -> Option<usize> {
        let find = |shapes: &Vec<Arc<[Field]>>| shapes.iter().position(|s| **s == *fields);
        if let Some(index) = find(&self.shapes.load()) {
            return Some(index);
        }
        let fields: Arc<[Field]> = fields.into();
        let mut index = None;
        self.shapes.rcu(|shapes| {
            index = shapes.iter().position(|s| *s == fields);
            let mut shapes = (**shapes).clone();
            if index.is_none() && shapes.len() < MAX_SHAPES {
                index = Some(shapes.len());
                shapes.push(fields.clone());
            }
            shapes
        });
        index
    }
}

/// Whether an import gives a guest the same answers on every run in the
/// sandbox the node builds (no environment, arguments, preopens or stdio):
/// the `outpost:edge` imports and the inert parts of WASI. Clocks, random
/// numbers, sockets and HTTP differ between runs.
pub fn is_deterministic_import(name: &str) -> bool {
    const INERT: [&str; 4] = ["outpost:edge/", "wasi:cli/", "wasi:io/", "wasi:filesystem/"];
    INERT.iter().any(|prefix| name.starts_with(prefix))
}

/// The memo key (after the memo's id): the shape's index, then each read's value as the getter
/// would see it. Two requests with equal keys are indistinguishable to a
/// policy that reads exactly these fields. Raw bytes are used where the
/// getter would decode, so the key never conflates what the guest could
/// tell apart.
fn encode(
    key: &mut Vec<u8>,
    index: usize,
    shape: &[Field],
    request: &RequestInfo,
    vars: &BTreeMap<String, String>,
) {
    key.push(index as u8);
    for field in shape {
        match field {
            Field::Method => value(key, Some(request.method.as_str().as_bytes())),
            Field::Scheme => value(key, Some(request.scheme.as_str().as_bytes())),
            Field::Authority => value(key, Some(request.authority.as_bytes())),
            Field::Path => value(key, Some(request.uri.path().as_bytes())),
            Field::Query => value(key, request.uri.query().map(str::as_bytes)),
            Field::Header(name) => value(key, request.headers.get(&**name).map(|v| v.as_bytes())),
            Field::HeaderValues(name) => {
                let values = request.headers.get_all(&**name);
                key.extend_from_slice(&(values.iter().count() as u32).to_le_bytes());
                for v in values {
                    value(key, Some(v.as_bytes()));
                }
            }
            Field::Headers => {
                key.extend_from_slice(&(request.headers.len() as u32).to_le_bytes());
                for (name, v) in &request.headers {
                    value(key, Some(name.as_str().as_bytes()));
                    value(key, Some(v.as_bytes()));
                }
            }
            Field::ClientAddr => match request.client_ip {
                std::net::IpAddr::V4(ip) => value(key, Some(&ip.octets())),
                std::net::IpAddr::V6(ip) => value(key, Some(&ip.octets())),
            },
            Field::Config(name) => value(key, vars.get(&**name).map(String::as_bytes)),
            Field::Signature => value(key, Some(request.signature.as_str().as_bytes())),
        }
    }
}

fn value(key: &mut Vec<u8>, bytes: Option<&[u8]>) {
    match bytes {
        None => key.push(0),
        Some(b) => {
            key.push(1);
            key.extend_from_slice(&(b.len() as u32).to_le_bytes());
            key.extend_from_slice(b);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runtime::{Lookup, Route};

    fn request(path: &str, ua: Option<&str>) -> RequestInfo {
        let mut headers = http::HeaderMap::new();
        if let Some(ua) = ua {
            headers.insert("user-agent", ua.parse().unwrap());
        }
        RequestInfo {
            method: http::Method::GET,
            uri: path.parse().unwrap(),
            headers,
            scheme: crate::http::Scheme::Http,
            authority: "a.test".into(),
            client_ip: "127.0.0.1".parse().unwrap(),
            request_id: crate::http::RequestId::generate(),
            trace: crate::http::TraceContext::start(),
            from_pop_member: false,
            signature: Default::default(),
        }
    }

    fn lookup(key: &str) -> Decision {
        Decision::Lookup(Lookup {
            key: key.into(),
            ttl: None,
            route: Route::to(vec!["origin".into()]),
        })
    }

    #[test]
    fn a_decision_enters_the_table_only_when_its_inputs_come_back() {
        let table = MemoTable::new();
        let memo = DecisionMemo::new(&table);
        let vars = BTreeMap::new();
        let once = request("/once", None);
        memo.remember(reads(&[Field::Path]), &once, &vars, &lookup("once"));
        table.entries.run_pending_tasks();
        assert_eq!(
            table.entries.entry_count(),
            0,
            "seen once: not in the table"
        );
        // The second request with those inputs finds it, and moves it in.
        assert_eq!(
            **memo.recall(&once, &vars).unwrap().decision(),
            lookup("once")
        );
        table.entries.run_pending_tasks();
        assert_eq!(table.entries.entry_count(), 1);
        assert!(memo.recall(&once, &vars).is_some());
    }

    #[test]
    fn two_keys_that_share_a_first_sighting_slot_both_enter_the_table() {
        // One slot: each key's first sighting takes it from the other's.
        let table = MemoTable::with_slots(1);
        let memo = DecisionMemo::new(&table);
        let vars = BTreeMap::new();
        let (a, b) = (request("/a", None), request("/b", None));
        for _ in 0..2 {
            for (r, name) in [(&a, "a"), (&b, "b")] {
                if memo.recall(r, &vars).is_none() {
                    memo.remember(reads(&[Field::Path]), r, &vars, &lookup(name));
                }
            }
        }
        // Each ran the guest twice and is now decided from the table.
        assert_eq!(**memo.recall(&a, &vars).unwrap().decision(), lookup("a"));
        assert_eq!(**memo.recall(&b, &vars).unwrap().decision(), lookup("b"));
        table.entries.run_pending_tasks();
        assert_eq!(table.entries.entry_count(), 2);
    }

    #[test]
    fn the_filter_of_keys_seen_starts_again_when_full() {
        let seen = Seen::new();
        assert!(!seen.check_and_mark(42 | 7 << 32));
        assert!(seen.check_and_mark(42 | 7 << 32));
        // Keys of bits of their own, none 7 or 42, until the filter is full.
        for i in 0..SEEN_RESET_AFTER as u64 {
            assert!(!seen.check_and_mark((1000 + 2 * i) | (1001 + 2 * i) << 32));
        }
        assert!(!seen.check_and_mark(42 | 7 << 32), "not forgotten");
    }

    fn reads(fields: &[Field]) -> Reads {
        let mut r = Reads::default();
        for f in fields {
            r.note(f.clone());
        }
        r
    }

    #[test]
    fn a_decision_is_recalled_only_for_equal_values_of_what_was_read() {
        let memo = DecisionMemo::new(&MemoTable::new());
        let vars = BTreeMap::new();
        let shape = [Field::Path, Field::Header("user-agent".into())];
        let first = request("/a?x=1", Some("phone"));
        memo.remember(reads(&shape), &first, &vars, &lookup("phone/a"));
        // The query was not read: it does not matter.
        let same = request("/a?x=2", Some("phone"));
        let recalled = memo.recall(&same, &vars).unwrap();
        assert_eq!(**recalled.decision(), lookup("phone/a"));
        assert_ne!(**recalled.decision(), lookup("desk/a"));
        assert!(memo.recall(&request("/a", Some("desk")), &vars).is_none());
        assert!(memo.recall(&request("/a", None), &vars).is_none());
        assert!(memo.recall(&request("/b", Some("phone")), &vars).is_none());
    }

    #[test]
    fn memos_sharing_the_table_never_recall_each_others_decisions() {
        let table = MemoTable::new();
        let (shop, blog) = (DecisionMemo::new(&table), DecisionMemo::new(&table));
        let vars = BTreeMap::new();
        let same = request("/", None);
        shop.remember(reads(&[Field::Path]), &same, &vars, &lookup("shop"));
        assert!(blog.recall(&same, &vars).is_none());
        blog.remember(reads(&[Field::Path]), &same, &vars, &lookup("blog"));
        assert_eq!(
            **blog.recall(&same, &vars).unwrap().decision(),
            lookup("blog")
        );
        assert_eq!(
            **shop.recall(&same, &vars).unwrap().decision(),
            lookup("shop")
        );
    }

    #[test]
    fn an_absent_value_differs_from_an_empty_one() {
        let memo = DecisionMemo::new(&MemoTable::new());
        let vars = BTreeMap::new();
        memo.remember(
            reads(&[Field::Query]),
            &request("/", None),
            &vars,
            &lookup("none"),
        );
        assert!(memo.recall(&request("/?", None), &vars).is_none());
        assert!(memo.recall(&request("/", None), &vars).is_some());
    }

    #[test]
    fn calls_with_effects_are_never_memoized_and_disable_forgets_everything() {
        let memo = DecisionMemo::new(&MemoTable::new());
        let vars = BTreeMap::new();
        let mut tainted = reads(&[Field::Path]);
        tainted.taint();
        memo.remember(tainted, &request("/", None), &vars, &lookup("x"));
        assert!(memo.recall(&request("/", None), &vars).is_none());
        memo.remember(
            reads(&[Field::Path]),
            &request("/", None),
            &vars,
            &lookup("x"),
        );
        assert!(memo.recall(&request("/", None), &vars).is_some());
        memo.disable();
        assert!(memo.recall(&request("/", None), &vars).is_none());
    }

    #[test]
    fn one_recall_in_check_every_asks_for_a_check() {
        let memo = DecisionMemo::new(&MemoTable::new());
        let vars = BTreeMap::new();
        memo.remember(
            reads(&[Field::Path]),
            &request("/", None),
            &vars,
            &lookup("x"),
        );
        let checks = (0..CHECK_EVERY * 3)
            .filter(|_| {
                matches!(
                    memo.recall(&request("/", None), &vars),
                    Some(Recall::Verify(_))
                )
            })
            .count();
        assert_eq!(checks, 3);
    }

    #[test]
    fn only_inert_imports_count_as_deterministic() {
        assert!(is_deterministic_import("outpost:edge/host@0.1.0"));
        assert!(is_deterministic_import("wasi:cli/environment@0.2.0"));
        assert!(!is_deterministic_import("wasi:clocks/wall-clock@0.2.0"));
        assert!(!is_deterministic_import("wasi:random/random@0.2.0"));
        assert!(!is_deterministic_import("wasi:sockets/tcp@0.2.0"));
    }
}
