//! The `nanhunt` command line. See `nanhunt --help`.

use std::process::ExitCode;

mod cli;

fn main() -> ExitCode {
    cli::main()
}
