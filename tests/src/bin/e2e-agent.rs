//! The agent program under a test name, so end-to-end tests can run it
//! as a process and kill it.

/// mimalloc: see palisade-malloc for why.
#[global_allocator]
static ALLOCATOR: palisade_malloc::Allocator = palisade_malloc::Allocator;

fn main() -> std::process::ExitCode {
    palisade_malloc::without_huge_pages();
    palisade_agent::cli::main()
}
