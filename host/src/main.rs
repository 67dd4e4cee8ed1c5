#[global_allocator]
static ALLOCATOR: outpost::alloc::Mimalloc = outpost::alloc::Mimalloc;

fn main() -> std::process::ExitCode {
    outpost::alloc::return_freed_memory_promptly();
    outpost::cli::main()
}
