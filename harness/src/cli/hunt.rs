//! `nanhunt hunt`: search a scenario's neighbourhood for mutants that go
//! non-finite, shrink and report each finding (exit 1 if any).

use std::path::PathBuf;

use anyhow::Context;
use nanhunt::search::{describe, Engine, HuntOptions, Progress, Target};
use nanhunt::Reports;

use super::progress;

/// Search a scenario's neighbourhood for mutants that go non-finite.
#[derive(clap::Args)]
pub(crate) struct Hunt {
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

impl Hunt {
    /// Runs the campaign and prints its findings.
    pub(crate) fn exec(self, ctx: &super::Context) -> anyhow::Result<u8> {
        let base = nanhunt::scenario::load_with(&self.scenario, &ctx.load)?;
        // Check that reports can be written before any search time is spent.
        std::fs::create_dir_all(&self.out).with_context(|| format!("creating the output directory {}", self.out.display()))?;
        let probe = self.out.join(".nanhunt-write-test");
        nanhunt::write_atomic(&probe, b"").with_context(|| format!("the output directory {} is not writable", self.out.display()))?;
        let _ = std::fs::remove_file(&probe);
        if let Some(dir) = &self.corpus {
            if dir.join("state.json").exists() && !self.resume {
                anyhow::bail!("{} holds a campaign already: pass --resume to continue it, or choose another --corpus", dir.display());
            }
            std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        }
        let opts = HuntOptions {
            budget: self.time,
            max_runs: self.max_runs,
            jobs: self.jobs.max(1),
            seed: self.seed,
            target: self.target.into(),
            engine: self.engine.into(),
            shard: self.shard,
            corpus: self.corpus.clone(),
            out: Some(self.out.clone()),
            first: self.first,
            ..HuntOptions::default()
        };
        let stop = opts.stop.clone();
        ctrlc::set_handler(move || stop.store(true, std::sync::atomic::Ordering::Relaxed)).context("installing the Ctrl-C handler")?;
        let budget = opts.budget.as_secs_f64();
        let bar = progress::budget(opts.budget.as_secs());
        let show = |p: &Progress| {
            bar.set_position(p.elapsed.min(budget) as u64);
            bar.set_message(format!("{} runs ({:.1}/s), {} finding(s), best score {:.3}, {} error(s)", p.runs, p.runs as f64 / p.elapsed.max(1e-9), p.findings, p.best_score, p.errors));
        };
        let reports = Reports { dir: self.out.clone() };
        let result = nanhunt::hunt(&base, &opts, Some(&reports), &show)?;
        bar.finish_and_clear();
        let p = &result.progress;
        if self.json {
            for f in &result.findings {
                println!("{}", serde_json::to_string(f)?);
            }
        } else {
            println!("hunted `{}` for {:.2} s: {} runs ({:.1}/s), {} error(s), {} finding(s)", base.name, p.elapsed, p.runs, p.runs as f64 / p.elapsed.max(1e-9), p.errors, result.findings.len());
            for f in &result.findings {
                let l = &f.location;
                println!("  {} ×{}  {} in {} ({}) at step {}  ← {}", f.signature, f.count, l.kind, l.tensor, l.phase, l.step, describe(&f.mutations));
                for t in &f.thresholds {
                    println!("      flips at {} {} {:.3e} (base {:.3e}, finite at {:.4e})", t.knob, t.direction(), t.flips_at, t.base, t.stays_finite_at);
                }
                if let Some(r) = &f.report {
                    println!("      report: {}", r.display());
                }
            }
        }
        Ok(u8::from(!result.findings.is_empty()))
    }
}
