//! The `nanhunt` command line. See `nanhunt --help`.

use std::process::ExitCode;

mod cli;

/// mimalloc: a step allocates and frees dozens of small tensors, which glibc's malloc made a quarter of a small model's step.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    cli::main()
}
