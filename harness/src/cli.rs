//! Command-line parsing and the human-facing output of `nanhunt`.
//!
//! Exit codes are for CI: 0 finite, 1 non-finite, 2 error (bad input, refused
//! run, or a failure of the run itself).

use std::path::{Path, PathBuf};

use anyhow::Context;
use clap::{Parser, Subcommand};
use indicatif::{ProgressBar, ProgressStyle};
use nanhunt::hunt::{Engine, HuntOptions, Progress};
use nanhunt::minimize::Target;
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
    /// Search a scenario's neighbourhood for mutants that go non-finite; shrink and report each (exit 1 if any found).
    Hunt {
        /// The base scenario.
        scenario: PathBuf,
        /// Search time, e.g. `60s`, `10m`, `2h`.
        #[arg(long, default_value = "60s", value_parser = humantime::parse_duration)]
        time: std::time::Duration,
        /// Parallel workers (Candle stays single-threaded in each).
        #[arg(long, default_value_t = 1)]
        jobs: usize,
        /// Seed of the search.
        #[arg(long, default_value_t = 0)]
        seed: u64,
        /// What counts as a finding.
        #[arg(long, value_enum, default_value = "nonfinite")]
        target: TargetArg,
        /// Candidate generator: score-guided corpus, or independent proptest draws (uniform random search).
        #[arg(long, value_enum, default_value = "guided")]
        engine: EngineArg,
        /// Reports and findings.jsonl go here.
        #[arg(long, default_value = "reports")]
        out: PathBuf,
        /// Keep the campaign state here (written atomically as it goes).
        #[arg(long)]
        corpus: Option<PathBuf>,
        /// Continue the campaign saved in --corpus.
        #[arg(long, requires = "corpus")]
        resume: bool,
        /// This machine's part of a sharded search, `i/n` (0-based).
        #[arg(long, value_parser = parse_shard, default_value = "0/1")]
        shard: (u64, u64),
        /// Stop after this many candidate runs.
        #[arg(long)]
        max_runs: Option<u64>,
        /// Stop at the first finding.
        #[arg(long)]
        first: bool,
        /// Print the findings as JSON lines on stdout.
        #[arg(long)]
        json: bool,
    },
    /// Merge the findings of several (sharded) hunts into one directory, one per signature.
    Merge {
        /// Hunt output directories (each with findings.jsonl).
        #[arg(required = true)]
        dirs: Vec<PathBuf>,
        /// Where the merged findings and reports go.
        #[arg(long)]
        out: PathBuf,
    },
    /// Shrink a cargo-fuzz crash input of the `mutations` target and write its report.
    FuzzShrink {
        /// The saved input (fuzz/artifacts/mutations/crash-...).
        artifact: PathBuf,
        /// Where the report goes.
        #[arg(long, default_value = "reports")]
        out: PathBuf,
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
        Command::Hunt { scenario, time, jobs, seed, target, engine, out, corpus, resume, shard, max_runs, first, json } => {
            let opts = HuntOptions {
                budget: time,
                max_runs,
                jobs,
                seed,
                target: target.into(),
                engine: engine.into(),
                shard,
                corpus,
                out: Some(out),
                first,
                ..HuntOptions::default()
            };
            hunt(&scenario, opts, resume, json)
        }
        Command::Merge { dirs, out } => merge(&dirs, &out),
        Command::FuzzShrink { artifact, out } => fuzz_shrink(&artifact, &out),
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
        let input = ReportInput { repro: &scenario, base: &scenario, outcome: &outcome, thresholds: vec![], settings: RunSettings { watch, continue_steps }, reductions: vec![], knob_repro: None, signature: None };
        let dir = nanhunt::report::write(parent, &input).context("writing the report")?;
        eprintln!("report: {}", dir.display());
    }
    Ok(outcome.outcome.exit_code())
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum TargetArg {
    Nan,
    Inf,
    Nonfinite,
}

impl From<TargetArg> for Target {
    fn from(t: TargetArg) -> Target {
        match t {
            TargetArg::Nan => Target::Nan,
            TargetArg::Inf => Target::Inf,
            TargetArg::Nonfinite => Target::Nonfinite,
        }
    }
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum EngineArg {
    Guided,
    Property,
}

impl From<EngineArg> for Engine {
    fn from(e: EngineArg) -> Engine {
        match e {
            EngineArg::Guided => Engine::Guided,
            EngineArg::Property => Engine::Property,
        }
    }
}

fn parse_shard(s: &str) -> Result<(u64, u64), String> {
    let (i, n) = s.split_once('/').ok_or("expected i/n, e.g. 0/4")?;
    let (i, n): (u64, u64) = (i.parse().map_err(|_| "i is not a number")?, n.parse().map_err(|_| "n is not a number")?);
    if n == 0 || i >= n {
        return Err(format!("need 0 ≤ i < n, got {i}/{n}"));
    }
    Ok((i, n))
}

fn hunt(path: &Path, mut opts: HuntOptions, resume: bool, json: bool) -> anyhow::Result<i32> {
    let base = nanhunt::load(path)?;
    if let Some(dir) = &opts.corpus {
        if dir.join("state.json").exists() && !resume {
            anyhow::bail!("{} holds a campaign already: pass --resume to continue it, or choose another --corpus", dir.display());
        }
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    let stop = opts.stop.clone();
    ctrlc::set_handler(move || stop.store(true, std::sync::atomic::Ordering::Relaxed)).context("installing the Ctrl-C handler")?;
    let budget = opts.budget.as_secs_f64();
    let bar = ProgressBar::new(opts.budget.as_secs().max(1)).with_style(
        ProgressStyle::with_template("{spinner} {msg} [{bar:25}] {elapsed} / remaining {eta}").expect("valid template").progress_chars("=> "),
    );
    let show = |p: &Progress| {
        bar.set_position(p.elapsed.min(budget) as u64);
        bar.set_message(format!("{} runs ({:.1}/s), {} finding(s), best score {:.3}, {} error(s)", p.runs, p.runs as f64 / p.elapsed.max(1e-9), p.findings, p.best_score, p.errors));
    };
    opts.jobs = opts.jobs.max(1);
    let result = nanhunt::hunt::hunt(&base, &opts, &show)?;
    bar.finish_and_clear();
    let p = &result.progress;
    if json {
        for f in &result.findings {
            println!("{}", serde_json::to_string(f)?);
        }
    } else {
        println!("hunted `{}` for {:.2} s: {} runs ({:.1}/s), {} error(s), {} finding(s)", base.name, p.elapsed, p.runs, p.runs as f64 / p.elapsed.max(1e-9), p.errors, result.findings.len());
        for f in &result.findings {
            let changes = nanhunt::check::describe_mutants(&f.mutations);
            println!("  {} ×{}  {} in {} ({}) at step {}  ← {}", f.signature, f.count, f.location.kind, f.location.tensor, f.location.phase, f.location.step, changes);
            for t in &f.thresholds {
                let dir = if t.flips_at >= t.base { "≥" } else { "≤" };
                println!("      flips at {} {dir} {:.3e} (base {:.3e}, finite at {:.4e})", t.knob, t.flips_at, t.base, t.stays_finite_at);
            }
            if let Some(r) = &f.report {
                println!("      report: {}", r.display());
            }
        }
    }
    Ok(i32::from(!result.findings.is_empty()))
}

fn fuzz_shrink(artifact: &Path, out: &Path) -> anyhow::Result<i32> {
    use nanhunt::fuzzing::{bundled, decode};
    let bytes = std::fs::read(artifact).with_context(|| format!("reading {}", artifact.display()))?;
    let base = bundled();
    let candidate = decode(&bytes);
    println!("decoded: {}", nanhunt::check::describe_mutants(&candidate));
    let Some(m) = nanhunt::minimize::Minimizer::new(&base, Target::Nonfinite, None).minimize(&candidate) else {
        println!("this input does not go non-finite");
        return Ok(0);
    };
    println!("minimal: {}", nanhunt::check::describe_mutants(&m.mutations));
    let input = ReportInput {
        repro: &m.repro,
        base: &base,
        outcome: &m.outcome,
        thresholds: m.thresholds.clone(),
        settings: RunSettings { watch: true, continue_steps: 0 },
        reductions: m.reductions(),
        knob_repro: Some(&m.knob_repro),
        signature: None,
    };
    let dir = nanhunt::report::write(out, &input)?;
    println!("report: {}", dir.display());
    Ok(1)
}

fn merge(dirs: &[PathBuf], out: &Path) -> anyhow::Result<i32> {
    let mut all = Vec::new();
    for d in dirs {
        all.extend(nanhunt::corpus::read_findings(&d.join("findings.jsonl"))?);
    }
    let total = all.len();
    let mut merged = nanhunt::corpus::merge(all);
    std::fs::create_dir_all(out)?;
    for f in &mut merged {
        let Some(recorded) = f.report.take() else { continue };
        // Reports move with their hunt directory: find them by name beside its findings.jsonl.
        let Some(name) = recorded.file_name().filter(|n| !n.is_empty() && *n != "..") else { continue };
        let Some(src) = dirs.iter().map(|d| d.join(name)).find(|p| p.join("repro.toml").is_file()) else { continue };
        let dst = out.join(name);
        if src != dst {
            copy_dir(&src, &dst)?;
        }
        f.report = Some(dst);
    }
    nanhunt::corpus::write_findings(&out.join("findings.jsonl"), &merged)?;
    println!("merged {total} finding(s) from {} director(ies) into {} distinct, in {}", dirs.len(), merged.len(), out.display());
    Ok(0)
}

fn copy_dir(src: &Path, dst: &Path) -> anyhow::Result<()> {
    let tmp = dst.with_extension("tmp-merge");
    let _ = std::fs::remove_dir_all(&tmp);
    std::fs::create_dir_all(&tmp)?;
    for e in std::fs::read_dir(src)? {
        let e = e?;
        std::fs::copy(e.path(), tmp.join(e.file_name()))?;
    }
    let _ = std::fs::remove_dir_all(dst);
    std::fs::rename(&tmp, dst)?;
    Ok(())
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
