/// mimalloc: the request path allocates small, short-lived objects on every
/// worker thread, where glibc's malloc measured ~10% of the node's CPU.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    outpost::cli::main()
}
