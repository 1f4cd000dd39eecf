//! The `rollout` binary: parses the command line and hands it to the library.

/// mimalloc instead of glibc's malloc: the store and the gRPC stack allocate and free
/// at a high rate, and glibc's arenas kept RSS high and spent a fifth of the CPU time
/// in `_int_malloc` (perf, 100,000-host rollout; see BENCHMARKS.md).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    no_huge_pages();
    rollout::cli::main(rollout::cli::parse())
}

/// Turns transparent huge pages off for this process. mimalloc asks for them, and
/// the kernel zeroes a whole 2 MiB page at the first touch of a fresh one, again
/// after every purge: at a million hosts that zeroing was over half of a resume's
/// CPU time (perf), and the resume took twice as long. Best effort.
fn no_huge_pages() {
    #[cfg(target_os = "linux")]
    // SAFETY: prctl with PR_SET_THP_DISABLE takes plain integers and only sets a flag
    // of this process.
    unsafe {
        libc::prctl(libc::PR_SET_THP_DISABLE, 1, 0, 0, 0);
    }
}
