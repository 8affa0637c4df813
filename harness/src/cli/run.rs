//! `nanhunt run`: train one scenario and print where it first went non-finite.

use std::path::PathBuf;

use anyhow::Context as _;
use nanhunt::report::{ReportInput, RunSettings};
use nanhunt::scenario::Named as _;
use nanhunt::{human, Outcome, RunOptions, Status};

use super::{progress, Context};

/// Train one scenario and report where it first went non-finite.
#[derive(clap::Args)]
pub(crate) struct Run {
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
    /// Run once per seed of `A..B` instead, and print the failure rate with its 95% interval (exit 1 if any seed fails).
    #[arg(long, value_parser = parse_seeds, conflicts_with_all = ["trace", "report", "continue_steps"])]
    seeds: Option<std::ops::Range<u64>>,
}

fn parse_seeds(s: &str) -> Result<std::ops::Range<u64>, String> {
    let (a, b) = s.split_once("..").ok_or("expected A..B, e.g. 0..200")?;
    let (a, b): (u64, u64) = (a.parse().map_err(|_| "A is not a number")?, b.parse().map_err(|_| "B is not a number")?);
    if a >= b || b - a > 1_000_000 {
        return Err(format!("need A < B and at most 1000000 seeds, got {a}..{b}"));
    }
    Ok(a..b)
}

impl Run {
    /// Runs it; with `--json`, an error is also printed as an error outcome on stdout.
    pub(crate) fn exec(self, ctx: &Context) -> anyhow::Result<u8> {
        let (json, scenario) = (self.json, self.scenario.clone());
        self.train(ctx).inspect_err(|e| {
            if json {
                let o = Outcome::error(&scenario.display().to_string(), super::chain(e));
                println!("{}", serde_json::to_string(&o).unwrap_or_default());
            }
        })
    }

    fn train(self, ctx: &Context) -> anyhow::Result<u8> {
        let scenario = nanhunt::scenario::load_with(&self.scenario, &ctx.load)?;
        if let Some(seeds) = self.seeds.clone() {
            let w = nanhunt::search::sweep(&scenario, seeds, nanhunt::search::Target::Nonfinite);
            if self.json {
                println!("{}", serde_json::to_string(&w)?);
            } else {
                let (lo, hi) = w.interval;
                println!("{}: {} of {} seeds go non-finite: rate {}, 95% interval [{}, {}] (Wilson)", w.scenario, w.failures.len(), w.runs, human(w.rate), human(lo), human(hi));
                for (seed, at) in w.failures.iter().take(10) {
                    println!("  seed {seed}: {}", at.as_ref().map_or("non-finite".into(), |a| a.to_string()));
                }
            }
            return Ok(u8::from(!w.failures.is_empty()));
        }
        let watch = !self.no_watch;
        let bar = progress::steps(&scenario.name);
        let progress = |done: usize, total: usize| {
            bar.set_length(total as u64);
            bar.set_position(done as u64);
        };
        // Ctrl-C or SIGTERM cuts the run off at the next step, and the outcome says so.
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let flag = stop.clone();
        ctrlc::set_handler(move || flag.store(true, std::sync::atomic::Ordering::Relaxed)).context("installing the Ctrl-C handler")?;
        let opts = RunOptions { watch, continue_steps: self.continue_steps, progress: Some(&progress), stop: Some(&stop), verdict: true, ..RunOptions::default() };
        let outcome = nanhunt::run_with(&scenario, &opts);
        bar.finish_and_clear();
        if let Some(e) = outcome.error.as_ref().filter(|_| outcome.outcome == Status::Error) {
            // A run that could not be carried out: the message goes to stderr; stdout has only the JSON outcome.
            if self.json {
                println!("{}", serde_json::to_string(&outcome)?);
            }
            eprintln!("error: {e}");
            return Ok(outcome.outcome.exit_code());
        }
        if let Some(t) = &self.trace {
            outcome.trace.write_csv(t).with_context(|| format!("writing trace to {}", t.display()))?;
        }
        if self.json {
            println!("{}", serde_json::to_string(&outcome)?);
        } else {
            print!("{}", summary(&outcome));
        }
        if let Some(parent) = &self.report {
            let settings = RunSettings { watch, continue_steps: self.continue_steps };
            let input = ReportInput::of_run(&scenario, &outcome, settings);
            let dir = nanhunt::write_report(parent, &input).context("writing the report")?;
            eprintln!("report: {}", dir.display());
        }
        Ok(outcome.outcome.exit_code())
    }
}

/// The one-screen summary of an outcome.
fn summary(o: &Outcome) -> String {
    let g = |v: Option<f64>| v.map_or("-".to_string(), |v| format!("{v:.6e}"));
    let verdict = match o.outcome {
        Status::Finite => "finite",
        Status::Nonfinite if o.first_nonfinite.as_ref().is_some_and(|f| f.kind == nanhunt::run::Kind::NoGradient) => "NO GRADIENT",
        Status::Nonfinite => "NON-FINITE",
        Status::Error => "ERROR",
        Status::Timeout => "CUT OFF",
    };
    let mut s = format!("scenario    {}\noutcome     {verdict}\n", o.scenario);
    if let Some(f) = &o.first_nonfinite {
        // A scalar (the loss) is named alone; a tensor with its element, shape and how much of it is bad.
        let element = if f.shape.is_empty() {
            String::new()
        } else {
            let count = if f.count > 1 { format!("; {} of its {} elements are not finite", f.count, f.shape.iter().product::<usize>()) } else { String::new() };
            let rows = if f.rows.is_empty() { String::new() } else { format!("; rows {:?}", f.rows) };
            format!("{} (shape {:?}{count}{rows})", f.element(), f.shape)
        };
        s += &format!("first       {} in `{}`{element}\n", f.kind, f.tensor);
        s += &format!("where       step {}, epoch {}, fold {}, phase {}\n", f.step, f.epoch, f.fold, f.phase);
        if let Some(c) = &o.cause {
            s += &format!("why         {c} [{}]\n", c.rule.name());
        }
        if let Some(v) = &o.verdict {
            s += &format!("verdict     {v} [{}]\n", v.key());
        }
    }
    if let Some(e) = &o.error {
        let what = if o.outcome == Status::Timeout { "cut off" } else { "error" };
        s += &format!("{what:<11} {e}\n");
    }
    s += &format!("steps       {}\n", o.steps);
    s += &format!("loss        final {}, last finite {}\n", g(o.final_loss), g(o.last_finite_loss));
    if let Some(st) = &o.stagnation {
        s += &format!("stagnation  {} at step {}: {}\n", st.reason, st.step, st.detail);
    }
    if let Some(k) = &o.skipped_steps {
        s += &format!("skipped     {k}\n");
    }
    for w in &o.warnings {
        s += &format!("warning     {w}\n");
    }
    if let Some(d) = &o.divergence {
        s += &format!("divergence  {} at step {}: {}\n", d.reason, d.step, d.detail);
    }
    s += &format!("run         {} on {}, {} thread(s), {:.3} s\n", o.dtype_name(), o.device, o.threads, o.seconds);
    s
}
