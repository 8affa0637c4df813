//! The `nanhunt` command line: one file per subcommand, each a clap `Args`
//! struct with an `exec` method, as cargo-fuzz has `options/run.rs`.
//!
//! Exit codes are for CI: 0 finite (or all passed), 1 non-finite (or a check
//! failed), 2 error (bad input, refused run, or a failure of the run itself).

use std::process::ExitCode;

use clap::{Parser, Subcommand};
use nanhunt::scenario::{LoadOptions, DEFAULT_MAX_SCENARIO_BYTES};

mod check;
mod corpus;
mod fuzz_shrink;
mod hunt;
mod margins;
mod merge;
mod progress;
mod replay;
mod run;
mod torch;

/// Find, shrink and replay the training runs whose loss turns NaN.
#[derive(Parser)]
#[command(name = "nanhunt", version, about)]
struct Cli {
    /// CPU threads for Candle's kernels, 1 to 1024 (recorded in the outcome).
    #[arg(long, global = true, default_value_t = 1, value_parser = clap::value_parser!(u16).range(1..=MAX_THREADS))]
    threads: u16,
    /// Largest scenario file read, in MiB (parsing takes about 30× the file's size in memory).
    #[arg(long, global = true, default_value_t = DEFAULT_MAX_SCENARIO_BYTES >> 20, value_parser = clap::value_parser!(u64).range(1..=4096))]
    max_scenario_mb: u64,
    /// Let a scenario's CSV path point outside the scenario's folder.
    #[arg(long, global = true)]
    allow_outside_paths: bool,
    #[command(subcommand)]
    command: Command,
}

/// Most CPU threads `--threads` accepts.
const MAX_THREADS: i64 = 1024;

/// What every subcommand needs from the global options.
pub(crate) struct Context {
    /// Limits on reading scenario files.
    pub(crate) load: LoadOptions,
}

#[derive(Subcommand)]
enum Command {
    /// Train one scenario and report where it first went non-finite.
    Run(run::Run),
    /// Search a scenario's neighbourhood for mutants that go non-finite; shrink and report each (exit 1 if any found).
    Hunt(hunt::Hunt),
    /// How far each knob can move alone before the run goes non-finite; for a failing run, how far it must move to be fixed.
    Margins(margins::MarginsCmd),
    /// Keep a hunt's corpus bounded: `corpus prune DIR` (0 within its cap, 1 still over it, 2 error).
    #[command(subcommand)]
    Corpus(corpus::Corpus),
    /// Merge the findings of several (sharded) hunts into one directory, one per signature.
    Merge(merge::Merge),
    /// Shrink a cargo-fuzz crash input of the `mutations` target and write its report.
    FuzzShrink(fuzz_shrink::FuzzShrink),
    /// Re-run a report's repro and check the trace is bit-identical (0 identical, 1 divergent, 2 error).
    Replay(replay::Replay),
    /// Run every scenario with an [expect] and every report; print a pass/fail table (0 all pass, 1 any fail, 2 error).
    Check(check::Check),
    /// Write a scenario or report as a plain PyTorch script, with its initial weights and data.
    ExportTorch(torch::ExportTorch),
    /// Run a scenario or report in PyTorch too and compare (0 agree, 1 disagree, 2 error).
    Confirm(torch::Confirm),
}

/// Runs the CLI and returns the process exit code.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    // Candle reads its thread count from the environment once, on first use:
    // set it before anything touches a tensor.
    let threads = cli.threads.to_string();
    std::env::set_var("RAYON_NUM_THREADS", &threads);
    std::env::set_var("CANDLE_NUM_THREADS", &threads);
    let ctx = Context { load: LoadOptions { max_bytes: cli.max_scenario_mb << 20, allow_outside_paths: cli.allow_outside_paths } };
    let result = match cli.command {
        Command::Run(c) => c.exec(&ctx),
        Command::Hunt(c) => c.exec(&ctx),
        Command::Margins(c) => c.exec(&ctx),
        Command::Corpus(c) => c.exec(),
        Command::Merge(c) => c.exec(),
        Command::FuzzShrink(c) => c.exec(),
        Command::Replay(c) => c.exec(&ctx),
        Command::Check(c) => c.exec(&ctx),
        Command::ExportTorch(c) => c.exec(&ctx),
        Command::Confirm(c) => c.exec(&ctx),
    };
    ExitCode::from(result.unwrap_or_else(|e| {
        eprintln!("error: {}", chain(&e));
        2
    }))
}

/// An error and its causes on one line, each cause once: the library's errors
/// already print their source, so a cause whose text the line holds is skipped.
pub(crate) fn chain(e: &anyhow::Error) -> String {
    let mut line = String::new();
    for cause in e.chain() {
        let text = cause.to_string();
        if !line.contains(&text) {
            if !line.is_empty() {
                line += ": ";
            }
            line += &text;
        }
    }
    line
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chain_prints_each_cause_once() {
        let io = std::io::Error::new(std::io::ErrorKind::NotFound, "No such file or directory (os error 2)");
        let e = anyhow::Error::new(nanhunt::Error::io("x.toml", io)).context("reading the scenario");
        assert_eq!(chain(&e), "reading the scenario: x.toml: No such file or directory (os error 2)");
    }

    #[test]
    fn the_command_line_is_well_formed() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
    }
}
