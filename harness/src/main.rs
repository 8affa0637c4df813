//! The `nanhunt` command line. See `nanhunt --help`.

use std::process::ExitCode;

mod cli;

/// mimalloc for the dozens of small tensors a step makes, the system allocator for large blocks (see `nanhunt::alloc`).
#[global_allocator]
static GLOBAL: nanhunt::alloc::Allocator = nanhunt::alloc::Allocator;

fn main() -> ExitCode {
    cli::main()
}
