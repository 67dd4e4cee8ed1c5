//! The node's cache bytes, shared by its tenants: each tenant is guaranteed
//! its quota, and what a tenant leaves unused is lent to tenants that need
//! more. When the node is full, the bytes are taken back from the tenants
//! furthest over their guarantees, never from a tenant at or below its own:
//! one tenant's fills can use an idle node but never evict a neighbour below
//! what it was promised.
//!
//! The ledger only counts and chooses; each tenant's store decides which of
//! its objects go (see `store`).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};

/// A tenant's side of the ledger, as the ledger sees it.
pub trait Borrower: Send + Sync {
    /// Bytes held beyond the guarantee.
    fn excess(&self) -> u64;
    /// Removes objects held beyond the guarantee, at least `bytes` of them
    /// where there are that many; returns the bytes freed.
    fn give_back(&self, bytes: u64) -> u64;
}

/// The bytes stored on the node against its `cache.max_size_mb`.
pub struct Ledger {
    capacity: AtomicU64,
    used: AtomicU64,
    /// Every tenant store still alive; also serialises reclaims, so two
    /// fills do not both evict for the same overshoot.
    borrowers: Mutex<Vec<Weak<dyn Borrower>>>,
}

impl Ledger {
    pub fn new(capacity_bytes: u64) -> Arc<Ledger> {
        Arc::new(Ledger {
            capacity: AtomicU64::new(capacity_bytes),
            used: AtomicU64::new(0),
            borrowers: Mutex::new(Vec::new()),
        })
    }

    /// A reload may change `cache.max_size_mb`; the next fill brings the
    /// node within it.
    pub fn set_capacity(&self, bytes: u64) {
        self.capacity.store(bytes, Ordering::Relaxed);
    }

    pub fn capacity(&self) -> u64 {
        self.capacity.load(Ordering::Relaxed)
    }

    pub fn used(&self) -> u64 {
        self.used.load(Ordering::Relaxed)
    }

    pub fn register(&self, borrower: Weak<dyn Borrower>) {
        let mut all = self.borrowers.lock().unwrap_or_else(|p| p.into_inner());
        all.retain(|b| b.strong_count() > 0);
        all.push(borrower);
    }

    pub fn charge(&self, bytes: u64) {
        self.used.fetch_add(bytes, Ordering::Relaxed);
    }

    pub fn release(&self, bytes: u64) {
        // Saturating: a release never runs before its charge, but a
        // wrapped counter would make the node look full forever.
        let _ = self
            .used
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |u| {
                Some(u.saturating_sub(bytes))
            });
    }

    /// Whether `bytes` more fit on the node without taking any back.
    pub fn has_room(&self, bytes: u64) -> bool {
        self.used().saturating_add(bytes) <= self.capacity()
    }

    /// Brings the node back within its capacity, taking bytes from the
    /// tenant furthest over its guarantee, then the next. Stops when no
    /// tenant is over its guarantee (the guarantees add up to at most the
    /// capacity, so the node is then within it too).
    pub fn reclaim(&self) {
        if self.has_room(0) {
            return;
        }
        let all = self.borrowers.lock().unwrap_or_else(|p| p.into_inner());
        loop {
            let over = self.used().saturating_sub(self.capacity());
            if over == 0 {
                return;
            }
            let furthest = all
                .iter()
                .filter_map(Weak::upgrade)
                .map(|b| (b.excess(), b))
                .max_by_key(|(excess, _)| *excess);
            let Some((excess, borrower)) = furthest.filter(|(excess, _)| *excess > 0) else {
                return;
            };
            if borrower.give_back(over.min(excess)) == 0 {
                return;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A borrower holding `held` bytes against a guarantee, charged to the
    /// ledger it was made with.
    struct Tenant {
        ledger: Arc<Ledger>,
        guarantee: u64,
        held: AtomicU64,
    }

    impl Tenant {
        fn new(ledger: &Arc<Ledger>, guarantee: u64) -> Arc<Tenant> {
            let t = Arc::new(Tenant {
                ledger: ledger.clone(),
                guarantee,
                held: AtomicU64::new(0),
            });
            let weak: Weak<dyn Borrower> = Arc::downgrade(&t) as Weak<Tenant>;
            ledger.register(weak);
            t
        }

        fn store(&self, bytes: u64) {
            self.held.fetch_add(bytes, Ordering::Relaxed);
            self.ledger.charge(bytes);
            self.ledger.reclaim();
        }

        fn held(&self) -> u64 {
            self.held.load(Ordering::Relaxed)
        }
    }

    impl Borrower for Tenant {
        fn excess(&self) -> u64 {
            self.held().saturating_sub(self.guarantee)
        }

        fn give_back(&self, bytes: u64) -> u64 {
            let freed = bytes.min(self.excess());
            self.held.fetch_sub(freed, Ordering::Relaxed);
            self.ledger.release(freed);
            freed
        }
    }

    #[test]
    fn an_idle_tenants_share_is_lent_and_taken_back_down_to_the_guarantee() {
        let ledger = Ledger::new(100);
        let (busy, idle) = (Tenant::new(&ledger, 50), Tenant::new(&ledger, 50));
        busy.store(90);
        assert_eq!(busy.held(), 90, "the idle tenant's share is lent");
        idle.store(30);
        assert_eq!((busy.held(), idle.held()), (70, 30));
        idle.store(20);
        assert_eq!(
            (busy.held(), idle.held()),
            (50, 50),
            "back to each guarantee"
        );
        idle.store(10);
        assert_eq!(
            (busy.held(), idle.held()),
            (50, 50),
            "a tenant at its guarantee keeps it: the one over its own gives back"
        );
        assert_eq!(ledger.used(), 100);
        assert!(ledger.has_room(0));
    }

    #[test]
    fn a_smaller_capacity_is_applied_at_the_next_fill() {
        let ledger = Ledger::new(100);
        let t = Tenant::new(&ledger, 10);
        t.store(100);
        ledger.set_capacity(40);
        t.store(0);
        assert_eq!(t.held(), 40);
    }
}
