//! The `nanhunt` command line. See `nanhunt --help`.

use std::process::ExitCode;

mod cli;

/// mimalloc: a step allocates and frees dozens of small tensors, which glibc's malloc made a quarter of a small model's step.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    keep_freed_pages();
    cli::main()
}

/// Keeps freed pages mapped instead of returning them to the OS (mimalloc
/// decommits them 10 ms to 1 s after a free): a wide model's step frees and
/// reallocates megabytes every few milliseconds, and re-faulting them (the
/// kernel zeroing each page) took a third of its time (perf, issue 15). In
/// mimalloc's `mi_option_e` (v2 and v3 alike), 5 is `purge_decommits` (0:
/// reset instead of decommit) and 15 is `purge_delay` (-1: never purge).
fn keep_freed_pages() {
    // SAFETY: setting an option is safe at any time; these only change when and how mimalloc purges.
    unsafe {
        libmimalloc_sys::mi_option_set(5, 0);
        libmimalloc_sys::mi_option_set(15, -1);
    }
}
