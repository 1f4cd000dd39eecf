//! The `rollout` binary: parses the command line and hands it to the library.

use clap::Parser;

/// mimalloc instead of glibc's malloc: the store and the gRPC stack allocate and free
/// at a high rate, and glibc's arenas kept RSS high and spent a fifth of the CPU time
/// in `_int_malloc` (perf, 100,000-host rollout; see BENCHMARKS.md).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    rollout::cli::main(rollout::cli::Cli::parse())
}
