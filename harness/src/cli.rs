//! Command-line parsing and the human-facing output of `nanhunt`.
//!
//! Exit codes are for CI: 0 finite, 1 non-finite, 2 error (bad input, refused
//! run, or a failure of the run itself).

use std::path::{Path, PathBuf};

use anyhow::Context;
use clap::{Parser, Subcommand};
use indicatif::{ProgressBar, ProgressStyle};
use nanhunt::report::{ReportInput, RunSettings};
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
        /// Write a report (repro, trace, summary, plots) under this directory.
        #[arg(long, num_args = 0..=1, default_missing_value = "reports")]
        report: Option<PathBuf>,
    },
    /// Re-run a report's repro and check the trace is bit-identical (0 identical, 1 divergent, 2 error).
    Replay {
        /// The report directory.
        report: PathBuf,
    },
    /// Run every scenario with an [expect] and every report; print a pass/fail table (0 all pass, 1 any fail, 2 error).
    Check {
        /// Scenario files, directories of them, and report directories.
        #[arg(required = true)]
        paths: Vec<PathBuf>,
        /// Write JUnit XML here.
        #[arg(long)]
        junit: Option<PathBuf>,
        /// Scenarios checked in parallel.
        #[arg(long, default_value_t = 1)]
        jobs: usize,
        /// Also run N seeded mutants around each finite expectation; all must stay finite.
        #[arg(long, default_value_t = 0)]
        neighbourhood: usize,
        /// Seed of the neighbourhood's mutants.
        #[arg(long, default_value_t = 0)]
        seed: u64,
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
    let result = match cli.command {
        Command::Replay { report } => replay(&report),
        Command::Check { paths, junit, jobs, neighbourhood, seed } => check(&paths, junit.as_deref(), jobs, neighbourhood, seed),
        Command::Run { scenario, trace, json, continue_steps, no_watch, report } => {
            return match run(&scenario, trace, json, continue_steps, !no_watch, report.as_deref()) {
                Ok(code) => code,
                Err(e) => {
                    if json {
                        let o = Outcome::error(&scenario.display().to_string(), format!("{e:#}"));
                        println!("{}", serde_json::to_string(&o).unwrap_or_default());
                    }
                    eprintln!("error: {e:#}");
                    2
                }
            };
        }
    };
    result.unwrap_or_else(|e| {
        eprintln!("error: {e:#}");
        2
    })
}

fn run(path: &Path, trace: Option<PathBuf>, json: bool, continue_steps: usize, watch: bool, report: Option<&Path>) -> anyhow::Result<i32> {
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
    if let Some(parent) = report {
        let input = ReportInput { repro: &scenario, base: &scenario, outcome: &outcome, thresholds: vec![], settings: RunSettings { watch, continue_steps } };
        let dir = nanhunt::report::write(parent, &input).context("writing the report")?;
        eprintln!("report: {}", dir.display());
    }
    Ok(outcome.outcome.exit_code())
}

fn replay(dir: &Path) -> anyhow::Result<i32> {
    let (outcome, divergence) = nanhunt::replay::replay(dir)?;
    Ok(match divergence {
        None => {
            println!("identical: {} trace rows replay bit for bit ({})", outcome.trace.rows.len(), outcome.first_nonfinite.map_or("finite".into(), |f| f.to_string()));
            0
        }
        Some(d) => {
            println!("divergent: {d}");
            1
        }
    })
}

fn check(paths: &[PathBuf], junit: Option<&Path>, jobs: usize, neighbourhood: usize, seed: u64) -> anyhow::Result<i32> {
    use nanhunt::check::{check_all, collect, tally, Verdict};
    let entries = collect(paths)?;
    let bar = ProgressBar::new(entries.len() as u64)
        .with_style(ProgressStyle::with_template("{spinner} checking [{bar:30}] {pos}/{len} {msg}").expect("valid template").progress_chars("=> "));
    let results = check_all(&entries, jobs, neighbourhood, seed, &|r| {
        bar.set_message(r.name.clone());
        bar.inc(1);
    });
    bar.finish_and_clear();
    let width = results.iter().map(|r| r.name.len()).max().unwrap_or(8).min(56);
    for r in &results {
        let (tag, why) = match &r.verdict {
            Verdict::Pass => ("PASS", r.detail.clone()),
            Verdict::Skip => ("SKIP", r.detail.clone()),
            Verdict::Fail(m) => ("FAIL", m.clone()),
            Verdict::Error(m) => ("ERROR", m.clone()),
        };
        println!("{tag:<5} {:<width$} {:>7.2}s  {why}", r.name, r.time.as_secs_f64());
    }
    if let Some(path) = junit {
        nanhunt::atomic::write(path, nanhunt::check::junit(&results)?.as_bytes())?;
    }
    let (pass, fail, skip) = tally(&results);
    println!("check: {pass} passed, {fail} failed, {skip} skipped");
    let errors = results.iter().any(|r| matches!(r.verdict, Verdict::Error(_)));
    Ok(if errors { 2 } else { i32::from(fail > 0) })
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
