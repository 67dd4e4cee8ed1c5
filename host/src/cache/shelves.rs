//! A tenant's objects on two shelves (moka caches): `own`, the size of its
//! guaranteed quota, and `lent`, what it holds beyond that in bytes the
//! node lends (see `ledger`), with the bookkeeping that keeps the ledger,
//! the shelves and the tag index in step.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, Weak};
use std::time::{Duration, Instant};

use moka::notification::RemovalCause;
use moka::sync::Cache;

use super::ledger::{Borrower, Ledger};
use super::StoredResponse;
use crate::metrics::Counter;

/// The responses stored under one key: one per combination of the request
/// fields they vary on (RFC 9111 section 4.1), newest first.
pub struct Variants {
    pub(super) list: Box<[Arc<StoredResponse>]>,
    /// What the key was charged when stored (a filling body's weight
    /// changes; its release must match its charge).
    pub(super) weight: u32,
    /// Replaced by a newer list on the other shelf: its removal leaves the
    /// tag index to the newer one.
    superseded: AtomicBool,
}

impl Variants {
    pub(super) fn new(key: &str, list: Vec<Arc<StoredResponse>>) -> Variants {
        let tags = list.iter().map(|v| v.tags.len()).sum();
        let key = super::weight::key(key, list.len(), tags);
        let weight = list
            .iter()
            .fold(key.min(u64::from(u32::MAX)) as u32, |sum, v| {
                sum.saturating_add(v.weight())
            });
        Variants {
            list: list.into_boxed_slice(),
            weight,
            superseded: AtomicBool::new(false),
        }
    }

    pub(super) fn carries(&self, tag: &str) -> bool {
        self.list.iter().any(|v| v.tags.iter().any(|t| t == tag))
    }
}

/// tag -> keys carrying it (or that did: a replaced key's old tags may
/// linger, so a purge checks the key still carries the tag). (A store is
/// cloned as a handle: its parts are shared.)
pub(super) type TagIndex = Arc<Mutex<HashMap<Box<str>, HashSet<Box<str>>>>>;

type Shelf = Cache<Box<str>, Arc<Variants>>;

/// A tenant's objects. `own` is as large as the tenant's quota was when the
/// store was made; moka keeps the most valuable objects there (TinyLFU) and
/// moves the others to `lent` (see `Account::may_keep`). `lent` holds them
/// in bytes the node lends, and gives them back, in no particular order,
/// when a tenant within its guarantee needs them.
pub(super) struct Shelves {
    own: Shelf,
    /// What `own` was made to hold.
    own_capacity: u64,
    lent: Arc<Lent>,
    account: Arc<Account>,
}

/// The `lent` shelf, made when the first object moves there: an empty moka
/// cache costs about 35 KiB, and most tenants of a large node never borrow.
struct Lent {
    shelf: OnceLock<Shelf>,
    tags: TagIndex,
    account: Arc<Account>,
    retention: Retention,
}

impl Lent {
    fn get(&self) -> Option<&Shelf> {
        self.shelf.get()
    }

    fn get_or_make(&self) -> &Shelf {
        self.shelf.get_or_init(|| {
            let (index, account) = (self.tags.clone(), self.account.clone());
            // Unbounded by moka: the ledger bounds it.
            Cache::builder()
                .expire_after(self.retention)
                .eviction_listener(move |key: Arc<Box<str>>, value: Arc<Variants>, cause| {
                    account.removed(&index, &key, &value, cause, true);
                })
                .build()
        })
    }
}

/// What a tenant holds against the node's ledger; shared with the shelves'
/// removal listeners.
struct Account {
    ledger: Arc<Ledger>,
    guarantee: AtomicU64,
    /// Bytes on both shelves.
    held: AtomicU64,
    /// Bytes on `lent`.
    lent: AtomicU64,
    /// Keys pushed out to make room (not expired, purged or replaced).
    evictions: Counter,
}

impl Account {
    fn charge(&self, bytes: u32) {
        self.held.fetch_add(u64::from(bytes), Ordering::Relaxed);
        self.ledger.charge(u64::from(bytes));
    }

    fn release(&self, bytes: u32) {
        self.held.fetch_sub(u64::from(bytes), Ordering::Relaxed);
        self.ledger.release(u64::from(bytes));
    }

    /// Whether an object `own` has no room for moves to `lent` (else it is
    /// dropped): while the node has room, or while the tenant is within
    /// its guarantee (its `own` may be smaller than that, if the guarantee
    /// grew since), the ledger then taking bytes back from whoever is
    /// furthest over.
    fn may_keep(&self) -> bool {
        self.ledger.has_room(0)
            || self.held.load(Ordering::Relaxed) <= self.guarantee.load(Ordering::Relaxed)
    }

    /// Bookkeeping for a key leaving either shelf (`lent` tells which).
    fn removed(
        &self,
        tags: &TagIndex,
        key: &str,
        value: &Variants,
        cause: RemovalCause,
        lent: bool,
    ) {
        if lent {
            self.lent
                .fetch_sub(u64::from(value.weight), Ordering::Relaxed);
        }
        self.release(value.weight);
        // A replaced entry's key is still there (with new tags).
        if cause != RemovalCause::Replaced && !value.superseded.load(Ordering::Relaxed) {
            unindex(tags, key, value);
        }
    }
}

impl Shelves {
    /// Shelves guaranteed `quota_bytes` of the node's `ledger`, registered
    /// with it; their removals keep `tags` up to date.
    pub(super) fn new(
        ledger: &Arc<Ledger>,
        quota_bytes: u64,
        stale_retention: Duration,
        tags: &TagIndex,
    ) -> Arc<Shelves> {
        let retention = Retention(stale_retention);
        let account = Arc::new(Account {
            ledger: ledger.clone(),
            guarantee: AtomicU64::new(quota_bytes),
            held: AtomicU64::new(0),
            lent: AtomicU64::new(0),
            evictions: Counter::default(),
        });
        let lent = Arc::new(Lent {
            shelf: OnceLock::new(),
            tags: tags.clone(),
            account: account.clone(),
            retention,
        });
        let (index, on_own, moved_to) = (tags.clone(), account.clone(), lent.clone());
        let own: Shelf = Cache::builder()
            // moka stores nothing at all with a capacity of 0, and tells
            // no listener; with 1 every object moves on to `lent`.
            .max_capacity(quota_bytes.max(1))
            .weigher(|_key, value: &Arc<Variants>| value.weight)
            .expire_after(retention)
            .eviction_listener(move |key: Arc<Box<str>>, value: Arc<Variants>, cause| {
                if cause == RemovalCause::Size && on_own.may_keep() {
                    // Still charged: it only moves.
                    on_own
                        .lent
                        .fetch_add(u64::from(value.weight), Ordering::Relaxed);
                    moved_to
                        .get_or_make()
                        .insert(Box::<str>::clone(&key), value);
                } else {
                    if cause == RemovalCause::Size {
                        on_own.evictions.inc();
                    }
                    on_own.removed(&index, &key, &value, cause, false);
                }
            })
            .build();
        let shelves = Arc::new(Shelves {
            own,
            own_capacity: quota_bytes,
            lent,
            account,
        });
        let weak: Weak<Shelves> = Arc::downgrade(&shelves);
        ledger.register(weak);
        shelves
    }

    /// Where a key is, `own` first.
    pub(super) fn find(&self, key: &str) -> Option<Found> {
        if let Some(variants) = self.own.get(key) {
            return Some(Found {
                variants,
                lent: false,
            });
        }
        // Most tenants borrow nothing: no second lookup for them.
        if self.account.lent.load(Ordering::Relaxed) == 0 {
            return None;
        }
        self.lent.get()?.get(key).map(|variants| Found {
            variants,
            lent: true,
        })
    }

    /// Puts a key's list on `own`, taking the key off `lent` if it was
    /// there, and brings the node back within its bytes.
    pub(super) fn put(&self, key: &str, list: Vec<Arc<StoredResponse>>, existing: Option<Found>) {
        if let Some(found) = existing.filter(|f| f.lent) {
            found.variants.superseded.store(true, Ordering::Relaxed);
            if let Some(lent) = self.lent.get() {
                lent.invalidate(key);
            }
        }
        let variants = Arc::new(Variants::new(key, list));
        self.account.charge(variants.weight);
        self.own.insert(key.into(), variants);
        // Apply the byte bound now rather than at moka's next maintenance:
        // an insert is a miss, already paying for an origin fetch.
        self.own.run_pending_tasks();
        self.account.ledger.reclaim();
    }

    /// Removes a key from both shelves; true if it was on either.
    pub(super) fn remove(&self, key: &str) -> bool {
        let own = self.own.remove(key).is_some();
        let lent = self.lent.get().is_some_and(|l| l.remove(key).is_some());
        lent || own
    }

    /// Drops everything, in constant time (moka invalidates lazily, and
    /// releases the bytes as it does).
    pub(super) fn clear(&self) {
        self.own.invalidate_all();
        if let Some(lent) = self.lent.get() {
            lent.invalidate_all();
        }
    }

    pub(super) fn set_guarantee(&self, bytes: u64) {
        self.account.guarantee.store(bytes, Ordering::Relaxed);
        self.account.ledger.reclaim();
    }

    /// (keys, bytes held, bytes guaranteed, keys evicted for room).
    pub(super) fn usage(&self) -> (u64, u64, u64, u64) {
        let a = &self.account;
        (
            self.own.entry_count() + self.lent.get().map_or(0, Cache::entry_count),
            a.held.load(Ordering::Relaxed),
            a.guarantee.load(Ordering::Relaxed),
            a.evictions.get(),
        )
    }

    /// Lets moka finish its pending work (evictions, listeners).
    pub(super) fn settle(&self) {
        self.own.run_pending_tasks();
        if let Some(lent) = self.lent.get() {
            lent.run_pending_tasks();
        }
    }

    /// What `own` holds beyond the guarantee because the guarantee shrank
    /// since it was made (otherwise moka keeps `own` within it).
    fn own_beyond_guarantee(&self) -> u64 {
        let guarantee = self.account.guarantee.load(Ordering::Relaxed);
        self.own_capacity.saturating_sub(guarantee)
    }
}

impl Borrower for Shelves {
    /// Held beyond the guarantee and held where it can be given back.
    fn excess(&self) -> u64 {
        let a = &self.account;
        let held = a.held.load(Ordering::Relaxed);
        let over = held.saturating_sub(a.guarantee.load(Ordering::Relaxed));
        let lent = a.lent.load(Ordering::Relaxed);
        over.min(lent + self.own_beyond_guarantee())
    }

    /// Borrowed objects go first; then, if the guarantee has shrunk below
    /// what `own` was made for, some of those.
    fn give_back(&self, bytes: u64) -> u64 {
        let mut freed = 0;
        let shelves = if self.own_beyond_guarantee() > 0 {
            [self.lent.get(), Some(&self.own)]
        } else {
            [self.lent.get(), None]
        };
        for shelf in shelves.into_iter().flatten() {
            for (key, value) in shelf.iter() {
                if freed >= bytes {
                    return freed;
                }
                if shelf.remove(&*key).is_some() {
                    freed += u64::from(value.weight);
                    self.account.evictions.inc();
                }
            }
        }
        freed
    }
}

impl Drop for Shelves {
    /// moka drops its entries without telling the listeners.
    fn drop(&mut self) {
        let held = self.account.held.swap(0, Ordering::Relaxed);
        self.account.ledger.release(held);
    }
}

/// Keeps each key until its longest-lived variant's freshness ends, plus
/// the stale retention (or its RFC 5861 windows, if longer).
#[derive(Clone, Copy)]
struct Retention(Duration);

impl Retention {
    fn of(&self, value: &StoredResponse) -> Duration {
        let f = &value.freshness;
        let remaining = f.lifetime().saturating_sub(f.initial_age());
        // Bounded: moka adds this to an `Instant`.
        remaining
            .saturating_add(
                self.0
                    .max(f.stale_while_revalidate())
                    .max(f.stale_if_error()),
            )
            .min(super::freshness::MAX_DELTA.saturating_mul(2))
    }
}

impl moka::Expiry<Box<str>, Arc<Variants>> for Retention {
    fn expire_after_create(
        &self,
        _key: &Box<str>,
        value: &Arc<Variants>,
        _now: Instant,
    ) -> Option<Duration> {
        value.list.iter().map(|v| self.of(v)).max()
    }

    fn expire_after_update(
        &self,
        key: &Box<str>,
        value: &Arc<Variants>,
        now: Instant,
        _current: Option<Duration>,
    ) -> Option<Duration> {
        self.expire_after_create(key, value, now)
    }
}

/// Where a key was found.
pub(super) struct Found {
    pub(super) variants: Arc<Variants>,
    lent: bool,
}

fn unindex(index: &TagIndex, key: &str, value: &Variants) {
    let mut tags = index.lock().unwrap_or_else(|p| p.into_inner());
    for tag in value.list.iter().flat_map(|v| v.tags.iter()) {
        if let Some(keys) = tags.get_mut(tag.as_str()) {
            keys.remove(key);
            if keys.is_empty() {
                tags.remove(tag.as_str());
            }
        }
    }
}
