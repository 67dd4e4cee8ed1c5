/// mimalloc: the request path allocates small, short-lived objects on every
/// worker thread, where glibc's malloc measured ~10% of the node's CPU.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    return_freed_memory_promptly();
    outpost::cli::main()
}

/// mimalloc gives pages that emptied back to the kernel `purge_delay` ms
/// later (ten times that for its arenas, where large bodies live), and only
/// when it next runs. At its default of 1 s, a node evicting 1 MiB objects
/// kept the bodies of the last seconds resident, and an idle node kept them
/// until traffic came back: RSS 1.17-1.19 times what the cache charged
/// (`bench/memory`), against 1.09-1.13 at 10 ms, mimalloc 2's default,
/// which costs about one `madvise` per 1,000 hits. `MIMALLOC_PURGE_DELAY`
/// still wins.
fn return_freed_memory_promptly() {
    // `mi_option_purge_delay`'s place in mimalloc.h's `mi_option_e`, which
    // libmimalloc-sys does not name; retired options keep their places
    // there, so the place does not move.
    const MI_OPTION_PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;
    if std::env::var_os("MIMALLOC_PURGE_DELAY").is_none() {
        // SAFETY: no other thread exists yet, and the option is an integer
        // mimalloc reads when it purges.
        unsafe { libmimalloc_sys::mi_option_set(MI_OPTION_PURGE_DELAY, 10) };
    }
}
