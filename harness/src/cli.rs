//! Command-line parsing and the human-facing output of `nanhunt`.
//!
//! Exit codes are for CI: 0 finite, 1 non-finite, 2 error (bad input, refused
//! run, or a failure of the run itself).

use std::path::{Path, PathBuf};

use anyhow::Context;
use clap::{Parser, Subcommand};
use indicatif::{ProgressBar, ProgressStyle};
use nanhunt::{Outcome, RunOptions, Status};

/// Find, shrink and replay the training runs whose loss turns NaN.
#[derive(Parser)]
#[command(name = "nanhunt", version, about)]
struct Cli {
    /// CPU threads for Candle's kernels (recorded in the outcome).
    #[arg(long, global = true, default_value_t = 1)]
    threads: usize,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Train one scenario and report where it first went non-finite.
    Run {
        /// The scenario file (TOML).
        scenario: PathBuf,
        /// Write the per-step trace as CSV here.
        #[arg(long)]
        trace: Option<PathBuf>,
        /// Print the outcome as one JSON object on stdout.
        #[arg(long)]
        json: bool,
        /// Keep training this many steps after the first non-finite value.
        #[arg(long, default_value_t = 0)]
        continue_steps: usize,
        /// Check only the loss, not every layer output, gradient and parameter.
        #[arg(long)]
        no_watch: bool,
    },
}

/// Runs the CLI and returns the process exit code.
pub fn main() -> i32 {
    let cli = Cli::parse();
    // Candle reads its thread count from the environment once, on first use:
    // set it before anything touches a tensor.
    let threads = cli.threads.max(1).to_string();
    std::env::set_var("RAYON_NUM_THREADS", &threads);
    std::env::set_var("CANDLE_NUM_THREADS", &threads);
    match cli.command {
        Command::Run { scenario, trace, json, continue_steps, no_watch } => {
            match run(&scenario, trace, json, continue_steps, !no_watch) {
                Ok(code) => code,
                Err(e) => {
                    if json {
                        let o = Outcome::error(&scenario.display().to_string(), format!("{e:#}"));
                        println!("{}", serde_json::to_string(&o).unwrap_or_default());
                    }
                    eprintln!("error: {e:#}");
                    2
                }
            }
        }
    }
}

fn run(path: &Path, trace: Option<PathBuf>, json: bool, continue_steps: usize, watch: bool) -> anyhow::Result<i32> {
    let scenario = nanhunt::load(path)?;
    let bar = ProgressBar::new(0).with_style(
        ProgressStyle::with_template("{spinner} {msg} [{bar:30}] step {pos}/{len} {per_sec} eta {eta}")
            .expect("valid template")
            .progress_chars("=> "),
    );
    bar.set_message(scenario.name.clone());
    let progress = |done: usize, total: usize| {
        bar.set_length(total as u64);
        bar.set_position(done as u64);
    };
    let opts = RunOptions { watch, continue_steps, progress: Some(&progress) };
    let outcome = nanhunt::run_with(&scenario, &opts);
    bar.finish_and_clear();
    if let Some(t) = trace {
        outcome.trace.write_csv(&t).with_context(|| format!("writing trace to {}", t.display()))?;
    }
    if json {
        println!("{}", serde_json::to_string(&outcome)?);
    } else {
        print!("{}", summary(&outcome));
    }
    Ok(outcome.outcome.exit_code())
}

/// The one-screen summary of an outcome.
fn summary(o: &Outcome) -> String {
    let g = |v: Option<f64>| v.map_or("-".to_string(), |v| format!("{v:.6e}"));
    let verdict = match o.outcome {
        Status::Finite => "finite",
        Status::Nonfinite => "NON-FINITE",
        Status::Error => "ERROR",
    };
    let mut s = format!("scenario    {}\noutcome     {verdict}\n", o.scenario);
    if let Some(f) = &o.first_nonfinite {
        s += &format!("first       {} in `{}` (element {})\n", f.kind, f.tensor, f.index);
        s += &format!("where       step {}, epoch {}, fold {}, phase {}\n", f.step, f.epoch, f.fold, f.phase);
    }
    if let Some(e) = &o.error {
        s += &format!("error       {e}\n");
    }
    s += &format!("steps       {}\n", o.steps);
    s += &format!("loss        final {}, last finite {}\n", g(o.final_loss), g(o.last_finite_loss));
    if let Some(st) = &o.stagnation {
        s += &format!("stagnation  {} at step {}: {}\n", st.reason, st.step, st.detail);
    }
    s += &format!("run         {} on {}, {} thread(s), {:.3} s\n", o.dtype, o.device, o.threads, o.seconds);
    s
}
