//! The `nanhunt` command line. See `nanhunt --help`.

mod cli;

fn main() {
    std::process::exit(cli::main());
}
