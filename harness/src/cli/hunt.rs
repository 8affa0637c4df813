//! `nanhunt hunt`: search a scenario's neighbourhood for mutants that go
//! non-finite (or diverge, with `--target diverge`), shrink and report each
//! finding, grouped into root causes (exit 1 if any is new: not in `--known`).

use std::path::PathBuf;

use std::time::Duration;

use anyhow::Context;
use clap::builder::TypedValueParser;
use nanhunt::search::{Engine, HuntOptions, Progress, Stage, Target};
use nanhunt::Reports;

use super::progress;

/// Search a scenario's neighbourhood for mutants that go non-finite (or diverge, with `--target diverge`).
#[derive(clap::Args)]
pub(crate) struct Hunt {
    /// The base scenario.
    scenario: PathBuf,
    /// Search time, e.g. `60s`, `10m`, `2h`. The hunt ends by `--time` plus `--shrink-time`.
    #[arg(long, default_value = "60s", value_parser = humantime::parse_duration)]
    time: Duration,
    /// Time after the search for finishing minimizations [default: a quarter of --time, 5 s to 5 min].
    #[arg(long, value_parser = humantime::parse_duration)]
    shrink_time: Option<Duration>,
    /// Wall-time limit of one candidate run; a run over it counts as a timeout [default: 20 × the base run, at least 1 s].
    #[arg(long, value_parser = humantime::parse_duration)]
    run_timeout: Option<Duration>,
    /// Parallel workers (Candle stays single-threaded in each); at most 8 per CPU core.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u16).range(1..))]
    jobs: u16,
    /// Keep every data row when minimizing (repros then have the user's data, and its step numbers).
    #[arg(long)]
    keep_data: bool,
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
    /// Most mutants the corpus keeps (the best-scored; findings' witnesses always stay). A resumed corpus over it is pruned.
    #[arg(long, default_value_t = nanhunt::search::DEFAULT_MAX_ENTRIES, value_parser = clap::value_parser!(u64).range(1..).map(|n| n as usize))]
    corpus_max_entries: usize,
    /// Most bytes of mutants (their JSON in state.json) the corpus keeps [default: 1 MiB].
    #[arg(long, default_value_t = nanhunt::search::DEFAULT_MAX_BYTES, value_parser = clap::value_parser!(u64).range(1..), hide_default_value = true)]
    corpus_max_bytes: u64,
    /// This machine's part of a sharded search, `i/n` (0-based).
    #[arg(long, value_parser = parse_shard, default_value = "0/1")]
    shard: (u64, u64),
    /// Stop after this many candidate runs.
    #[arg(long)]
    max_runs: Option<u64>,
    /// Stop at the first finding.
    #[arg(long)]
    first: bool,
    /// Print the findings (one per failure site, with its triggers) as JSON lines on stdout, as in
    /// findings.jsonl; the root causes they group into are in root_causes.jsonl.
    #[arg(long)]
    json: bool,
    /// Root causes already known: a previous findings.jsonl, or a hunt's or merge's output directory.
    /// They are counted and marked known, not new; the exit code is 1 only when a new one appears.
    #[arg(long, value_name = "FILE")]
    known: Option<PathBuf>,
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum TargetArg {
    /// A NaN anywhere.
    Nan,
    /// A ±Inf anywhere.
    Inf,
    /// A NaN or ±Inf anywhere.
    Nonfinite,
    /// A non-finite value, or a finite run that diverges (`[train.divergence]`).
    Diverge,
}

impl From<TargetArg> for Target {
    fn from(t: TargetArg) -> Target {
        match t {
            TargetArg::Nan => Target::Nan,
            TargetArg::Inf => Target::Inf,
            TargetArg::Nonfinite => Target::Nonfinite,
            TargetArg::Diverge => Target::Diverge,
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
    /// Runs the campaign and prints one line per root cause.
    pub(crate) fn exec(self, ctx: &super::Context) -> anyhow::Result<u8> {
        let base = nanhunt::scenario::load_with(&self.scenario, &ctx.load)?;
        // Check that reports can be written before any search time is spent.
        std::fs::create_dir_all(&self.out).with_context(|| format!("creating the output directory {}", self.out.display()))?;
        let probe = self.out.join(".nanhunt-write-test");
        nanhunt::write_atomic(&probe, b"").with_context(|| format!("the output directory {} is not writable", self.out.display()))?;
        let _ = std::fs::remove_file(&probe);
        if let Some(dir) = &self.corpus {
            // A resume of nothing is a mistyped folder, not a fresh start.
            if self.resume && !dir.is_dir() {
                anyhow::bail!("--resume: the corpus folder {} does not exist, so there is no campaign to continue (drop --resume to start one)", dir.display());
            }
            if self.resume && !dir.join("state.json").is_file() {
                anyhow::bail!("--resume: the corpus folder {} holds no campaign (no state.json) to continue (drop --resume to start one)", dir.display());
            }
            if dir.join("state.json").exists() && !self.resume {
                anyhow::bail!("{} holds a campaign already: pass --resume to continue it, or choose another --corpus", dir.display());
            }
            std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        }
        let known = match &self.known {
            Some(p) => nanhunt::search::read_known(p).with_context(|| format!("reading --known {}", p.display()))?,
            None => Vec::new(),
        };
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        let jobs = usize::from(self.jobs).min(8 * cores);
        if jobs < usize::from(self.jobs) {
            eprintln!("note: --jobs {} capped at {jobs} (8 workers per CPU core on this {cores}-core machine)", self.jobs);
        }
        let opts = HuntOptions {
            budget: self.time,
            shrink_budget: self.shrink_time.unwrap_or_else(|| HuntOptions::default_shrink_budget(self.time)),
            run_timeout: self.run_timeout,
            max_runs: self.max_runs,
            jobs,
            seed: self.seed,
            target: self.target.into(),
            engine: self.engine.into(),
            shard: self.shard,
            corpus: self.corpus.clone(),
            corpus_cap: nanhunt::search::Cap { max_entries: self.corpus_max_entries, max_bytes: self.corpus_max_bytes },
            out: Some(self.out.clone()),
            first: self.first,
            keep_data: self.keep_data,
            known,
            ..HuntOptions::default()
        };
        let stop = opts.stop.clone();
        // Ctrl-C and SIGTERM stop alike: running candidates are cut off, the state is saved, the summary printed.
        ctrlc::set_handler(move || stop.store(true, std::sync::atomic::Ordering::Relaxed)).context("installing the Ctrl-C handler")?;
        let total = (opts.budget + opts.shrink_budget).as_secs_f64();
        let bar = progress::budget(total.ceil() as u64);
        let said = std::sync::atomic::AtomicBool::new(false);
        let show = |p: &Progress| {
            if let Some(at) = p.base_failure.as_ref().filter(|_| !said.swap(true, std::sync::atomic::Ordering::Relaxed)) {
                bar.suspend(|| eprintln!("the base scenario itself {} ({at}): it is the first root cause; searching for others", nanhunt::search::fails(at.kind)));
            }
            bar.set_position(p.elapsed.min(total) as u64);
            bar.set_message(status_line(p));
        };
        let reports = Reports { dir: self.out.clone() };
        let result = nanhunt::hunt(&base, &opts, Some(&reports), &show)?;
        bar.finish_and_clear();
        if self.json {
            for f in &result.findings {
                println!("{}", serde_json::to_string(f)?);
            }
        } else {
            print!("{}", nanhunt::report::hunt_summary(&base.name, &result, opts.budget + opts.shrink_budget));
        }
        Ok(u8::from(result.root_causes.iter().any(|c| !c.known)))
    }
}

/// The progress bar's message: what runs, and what was found, in words.
fn status_line(p: &Progress) -> String {
    let stage = match p.stage {
        Stage::Base => "running the base",
        Stage::Search => "searching",
        Stage::Shrink => "finishing minimizations",
    };
    let rate = p.runs as f64 / p.elapsed.max(1e-9);
    format!(
        "{stage}: {} runs ({rate:.1}/s), {} root cause(s) over {} site(s) with {} trigger(s), {} shrinking, {} shrink runs, {} error(s), {} timeout(s)",
        p.runs, p.root_causes, p.sites, p.triggers, p.pending, p.shrink_runs, p.errors, p.timeouts
    )
}
