//! A bump allocator for per-request instances.
//!
//! Allocation moves a pointer through a static buffer that is part of the
//! module's initial memory, so a fresh instance does not call `memory.grow`
//! (the most expensive part of instantiating a small guest). Memory is never
//! freed: the instance lives for one request. When the arena is exhausted
//! the allocator grows linear memory page by page, so large allocations
//! still work, within the tenant's memory limit.

use core::alloc::{GlobalAlloc, Layout};
use core::cell::UnsafeCell;

const ARENA_BYTES: usize = 256 * 1024;
const PAGE: usize = 64 * 1024;

#[repr(C, align(16))]
struct Arena {
    bytes: UnsafeCell<[u8; ARENA_BYTES]>,
    /// Next free address; 0 until the first allocation.
    next: UnsafeCell<usize>,
    /// End of the region `next` moves through.
    end: UnsafeCell<usize>,
}

// SAFETY: wasm32-wasip2 guests are single-threaded.
unsafe impl Sync for Arena {}

#[global_allocator]
static ARENA: Arena = Arena {
    bytes: UnsafeCell::new([0; ARENA_BYTES]),
    next: UnsafeCell::new(0),
    end: UnsafeCell::new(0),
};

unsafe impl GlobalAlloc for Arena {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let next = &mut *self.next.get();
        let end = &mut *self.end.get();
        if *next == 0 {
            *next = self.bytes.get() as usize;
            *end = *next + ARENA_BYTES;
        }
        let start = (*next + layout.align() - 1) & !(layout.align() - 1);
        let Some(stop) = start.checked_add(layout.size()) else {
            return core::ptr::null_mut();
        };
        if stop <= *end {
            *next = stop;
            return start as *mut u8;
        }
        // Out of arena: take fresh pages at the end of linear memory.
        let pages = (layout.size() + layout.align()).div_ceil(PAGE);
        let old = core::arch::wasm32::memory_grow(0, pages);
        if old == usize::MAX {
            return core::ptr::null_mut();
        }
        let base = old * PAGE;
        let start = (base + layout.align() - 1) & !(layout.align() - 1);
        *next = start + layout.size();
        *end = base + pages * PAGE;
        start as *mut u8
    }

    unsafe fn dealloc(&self, _ptr: *mut u8, _layout: Layout) {}

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // Grow in place when the block is the last one handed out.
        let next = &mut *self.next.get();
        let end = *self.end.get();
        if ptr as usize + layout.size() == *next && ptr as usize + new_size <= end {
            *next = ptr as usize + new_size;
            return ptr;
        }
        let new = self.alloc(Layout::from_size_align_unchecked(new_size, layout.align()));
        if !new.is_null() {
            core::ptr::copy_nonoverlapping(ptr, new, layout.size().min(new_size));
        }
        new
    }
}
