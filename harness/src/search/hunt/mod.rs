//! The hunt: a campaign that searches a scenario's neighbourhood for mutants
//! that flip the loss to NaN, minimizes each distinct finding, and keeps its
//! state on disk so it can be killed, resumed, sharded and merged.
//!
//! This file holds the campaign loop and its shared state; candidates come
//! from the engines in `engine`, and flips become findings in `found`.
//! Candidate `k` of shard `i/n` is the global candidate `i + n·k`, and its
//! random draws depend only on the seed and that number, so shards never
//! overlap.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::error::{Error, Result};
use crate::run::run;
use crate::scenario::Scenario;
use crate::search::corpus::{Mutant, State};
use crate::search::finding::{Finding, Target};
use crate::search::mutation::mutate;
use crate::search::score::score;
use crate::search::space::Space;

mod engine;
mod found;

pub use engine::Engine;
pub use found::Reporter;

/// How to run a campaign.
#[derive(Debug, Clone)]
pub struct HuntOptions {
    /// Search time (minimization of findings comes on top).
    pub budget: Duration,
    /// Stop after this many candidate runs.
    pub max_runs: Option<u64>,
    /// Parallel workers.
    pub jobs: usize,
    /// Seed of every draw.
    pub seed: u64,
    /// What counts as a finding.
    pub target: Target,
    /// Candidate generator.
    pub engine: Engine,
    /// This shard and the shard count (`i/n`, 0-based).
    pub shard: (u64, u64),
    /// Where the campaign state lives (resumable).
    pub corpus: Option<PathBuf>,
    /// Where `findings.jsonl` goes (reports go where the [`Reporter`] puts them).
    pub out: Option<PathBuf>,
    /// Stop at the first finding.
    pub first: bool,
    /// Minimize findings (off: keep them as found).
    pub minimize: bool,
    /// Set from outside (Ctrl-C) to stop cleanly.
    pub stop: Arc<AtomicBool>,
}

impl Default for HuntOptions {
    fn default() -> Self {
        HuntOptions {
            budget: Duration::from_secs(60),
            max_runs: None,
            jobs: 1,
            seed: 0,
            target: Target::Nonfinite,
            engine: Engine::Guided,
            shard: (0, 1),
            corpus: None,
            out: None,
            first: false,
            minimize: true,
            stop: Arc::new(AtomicBool::new(false)),
        }
    }
}

/// Live numbers of a campaign, for the progress bar.
#[derive(Debug, Clone, Default)]
pub struct Progress {
    /// Seconds searched.
    pub elapsed: f64,
    /// Candidate runs.
    pub runs: u64,
    /// Runs that errored or panicked (not findings).
    pub errors: u64,
    /// Distinct findings.
    pub findings: usize,
    /// Highest instability score among finite runs.
    pub best_score: f64,
}

/// What a campaign ends with.
#[derive(Debug, Clone)]
pub struct HuntResult {
    /// Distinct findings, minimized.
    pub findings: Vec<Finding>,
    /// Final numbers.
    pub progress: Progress,
}


/// What the workers of a campaign share.
struct Shared {
    state: Mutex<State>,
    next: AtomicU64,
    runs: AtomicU64,
    errors: AtomicU64,
    best: Mutex<f64>,
    /// Pre-minimization signatures already seen (found candidate → finding index).
    seen: Mutex<Vec<(String, usize)>>,
}

/// The global number of this shard's `k`-th candidate.
pub(crate) fn global_index(k: u64, shard: (u64, u64)) -> u64 {
    shard.0 + shard.1.max(1) * k
}


/// Saves the campaign state, if it has a corpus directory.
fn save(opts: &HuntOptions, shared: &Shared) -> Result<()> {
    let Some(dir) = &opts.corpus else { return Ok(()) };
    let mut st = shared.state.lock().expect("state lock");
    st.next = shared.next.load(Ordering::Relaxed);
    st.runs = shared.runs.load(Ordering::Relaxed);
    st.save(dir)
}

/// Runs a campaign on `base`; each new finding's report is written through `reporter`.
pub fn hunt(base: &Scenario, opts: &HuntOptions, reporter: Option<&dyn Reporter>, progress: &(dyn Fn(&Progress) + Sync)) -> Result<HuntResult> {
    let state = match (&opts.corpus, opts.corpus.as_ref().map(|d| d.join("state.json").exists())) {
        (Some(dir), Some(true)) => State::load(dir)?,
        _ => State::default(),
    };
    let shared = Shared {
        next: AtomicU64::new(state.next),
        runs: AtomicU64::new(state.runs),
        errors: AtomicU64::new(0),
        best: Mutex::new(state.corpus.iter().map(|m| m.score).fold(0.0, f64::max)),
        seen: Mutex::new(Vec::new()),
        state: Mutex::new(state),
    };
    let space = Space::of(base);
    if space.is_empty() {
        return Err(Error::Invalid { location: base.name.clone(), key: "search".into(), message: "no knob can move: check `[search].knobs`".into() });
    }
    let start = Instant::now();
    let snapshot = |shared: &Shared| Progress {
        elapsed: start.elapsed().as_secs_f64(),
        runs: shared.runs.load(Ordering::Relaxed),
        errors: shared.errors.load(Ordering::Relaxed),
        findings: shared.state.lock().expect("state lock").findings.len(),
        best_score: *shared.best.lock().expect("best lock"),
    };
    let finished = |shared: &Shared| {
        opts.stop.load(Ordering::Relaxed)
            || start.elapsed() >= opts.budget
            || opts.max_runs.is_some_and(|m| shared.runs.load(Ordering::Relaxed) >= m)
            || (opts.first && !shared.state.lock().expect("state lock").findings.is_empty())
    };
    let worker = || -> Result<()> {
        // Strategies are not `Send`: each worker builds its own from the shared space.
        let (strategy, one, corners) = (space.candidate(), space.mutation(), space.corners());
        let mut last_save = Instant::now();
        while !finished(&shared) {
            let k = shared.next.fetch_add(1, Ordering::Relaxed);
            let index = global_index(k, opts.shard);
            let (candidate, mut tree) = engine::generate(opts, index, &space, (&strategy, &one, &corners), &shared);
            let Some(s) = mutate(base, &candidate) else {
                // Invalid candidates count towards the run limit, so a bad space cannot spin forever.
                shared.runs.fetch_add(1, Ordering::Relaxed);
                shared.errors.fetch_add(1, Ordering::Relaxed);
                continue;
            };
            let o = run(&s);
            shared.runs.fetch_add(1, Ordering::Relaxed);
            if o.error.is_some() {
                shared.errors.fetch_add(1, Ordering::Relaxed);
                continue;
            }
            if opts.target.hits(&o) {
                let (candidate, o) = match tree.as_mut() {
                    Some(tree) if opts.minimize => engine::proptest_shrink(base, opts.target, tree, candidate, o, &shared),
                    _ => (candidate, o),
                };
                found::found(base, opts, reporter, &shared, candidate, &o, start)?;
            } else {
                let score = score(&o, s.train.dtype);
                engine::remember(&shared, Mutant { mutations: candidate, score });
            }
            progress(&snapshot(&shared));
            if last_save.elapsed() > Duration::from_secs(2) {
                save(opts, &shared)?;
                last_save = Instant::now();
            }
        }
        Ok(())
    };
    let pool = rayon::ThreadPoolBuilder::new().num_threads(opts.jobs.max(1)).build().expect("thread pool");
    let results = Mutex::new(Vec::new());
    pool.scope(|scope| {
        for _ in 0..opts.jobs.max(1) {
            scope.spawn(|_| {
                let r = worker();
                results.lock().expect("results lock").push(r);
            });
        }
    });
    let results = results.into_inner().expect("results lock");
    results.into_iter().collect::<Result<Vec<()>>>()?;
    save(opts, &shared)?;
    let progress = snapshot(&shared);
    let findings = shared.state.into_inner().expect("state lock").findings;
    Ok(HuntResult { findings, progress })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shards_are_disjoint_and_cover_every_candidate() {
        let n = 3;
        let mut all: Vec<u64> = (0..n).flat_map(|i| (0..100).map(move |k| global_index(k, (i, n)))).collect();
        all.sort();
        assert_eq!(all, (0..300).collect::<Vec<u64>>(), "each global candidate in exactly one shard");
    }
}
