//! The node's allocator: mimalloc, and how soon it gives memory back.
//! A leaf: both binaries (`outpost`, and the tests' `outpost-node`) install
//! it.

use std::alloc::{GlobalAlloc, Layout};
use std::ffi::c_void;

use libmimalloc_sys as mi;

/// mimalloc (the request path allocates small, short-lived objects on every
/// worker thread, where glibc's malloc measured ~10% of the node's CPU),
/// asked with its aligned calls only when the layout needs more
/// than the word alignment every block has. (The `mimalloc` crate always
/// asks `mi_malloc_aligned`, whose fast path covers blocks up to 1 KiB:
/// each larger one, a boxed future or a read buffer, took its generic
/// aligned path, about 200 instructions, some ten times per origin-bound
/// request.)
pub struct Mimalloc;

/// The alignment of every mimalloc block.
const WORD: usize = std::mem::size_of::<usize>();

// SAFETY: mimalloc's functions meet `GlobalAlloc`'s contract: blocks of at
// least the size asked, aligned to a word or to the alignment passed, freed
// by `mi_free` whichever call made them.
unsafe impl GlobalAlloc for Mimalloc {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if layout.align() <= WORD {
            mi::mi_malloc(layout.size()).cast()
        } else {
            mi::mi_malloc_aligned(layout.size(), layout.align()).cast()
        }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        if layout.align() <= WORD {
            mi::mi_zalloc(layout.size()).cast()
        } else {
            mi::mi_zalloc_aligned(layout.size(), layout.align()).cast()
        }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, _layout: Layout) {
        mi::mi_free(ptr.cast::<c_void>());
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        if layout.align() <= WORD {
            mi::mi_realloc(ptr.cast(), new_size).cast()
        } else {
            mi::mi_realloc_aligned(ptr.cast(), new_size, layout.align()).cast()
        }
    }
}

/// mimalloc gives pages that emptied back to the kernel `purge_delay` ms
/// later (ten times that for its arenas, where large bodies live), and only
/// when it next runs. At its default of 1 s, a node evicting 1 MiB objects
/// kept the bodies of the last seconds resident, and an idle node kept them
/// until traffic came back: RSS 1.17-1.19 times what the cache charged
/// (`bench/memory`), against 1.09-1.13 at 10 ms, mimalloc 2's default,
/// which costs about one `madvise` per 1,000 hits. `MIMALLOC_PURGE_DELAY`
/// still wins.
pub fn return_freed_memory_promptly() {
    // `mi_option_purge_delay`'s place in mimalloc.h's `mi_option_e`, which
    // libmimalloc-sys does not name; retired options keep their places
    // there, so the place does not move.
    const MI_OPTION_PURGE_DELAY: mi::mi_option_t = 15;
    if std::env::var_os("MIMALLOC_PURGE_DELAY").is_none() {
        // SAFETY: no other thread exists yet, and the option is an integer
        // mimalloc reads when it purges.
        unsafe { mi::mi_option_set(MI_OPTION_PURGE_DELAY, 10) };
    }
}
