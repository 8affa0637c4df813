//! The hunt: a campaign that searches a scenario's neighbourhood for mutants
//! that flip the loss to NaN, minimizes each distinct finding, and keeps its
//! state on disk so it can be killed, resumed, sharded and merged.
//!
//! Engines only produce candidates: `property` draws each candidate afresh
//! from the proptest strategy of the space (uniform random search) and shrinks
//! a failure with proptest's own shrinking before the domain minimizer;
//! `guided` first screens every knob alone at the unstable corners of its range,
//! then keeps a corpus ranked by the instability score and mostly mutates its
//! best mutants. Candidate `k` of
//! shard `i/n` is the global candidate `i + n·k`, and its random draws depend
//! only on the seed and that number, so shards never overlap.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use proptest::strategy::{BoxedStrategy, Strategy, ValueTree};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::corpus::{write_findings, Finding, Mutant, State};
use crate::error::Result;
use crate::minimize::{Minimizer, Target};
use crate::mutation::{mutate, Mutation, Scale};
use crate::report::{fnv1a, signature, ReportInput, RunSettings};
use crate::scenario::Scenario;
use crate::space::{draw, seeded_runner, Space};
use crate::train::run;

/// Which engine produces candidates.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Engine {
    /// Score-guided mutation of a ranked corpus.
    #[default]
    Guided,
    /// Independent proptest draws from the space, shrunk by proptest first (the baseline).
    Property,
}

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
    /// Where reports and `findings.jsonl` go.
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

struct Shared {
    state: Mutex<State>,
    next: AtomicU64,
    runs: AtomicU64,
    errors: AtomicU64,
    best: Mutex<f64>,
    /// Pre-minimization signatures already seen (found candidate → finding index).
    seen: Mutex<Vec<(String, usize)>>,
}

const CORPUS_SIZE: usize = 64;

/// The global number of this shard's `k`-th candidate.
pub fn global_index(k: u64, shard: (u64, u64)) -> u64 {
    shard.0 + shard.1.max(1) * k
}

/// Runs a campaign on `base`.
pub fn hunt(base: &Scenario, opts: &HuntOptions, progress: &(dyn Fn(&Progress) + Sync)) -> Result<HuntResult> {
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
        return Err(crate::Error::Invalid { location: base.name.clone(), key: "search".into(), message: "no knob can move: check `[search].knobs`".into() });
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
            let (candidate, mut tree) = generate(opts, index, &space, (&strategy, &one, &corners), &shared);
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
                    Some(tree) if opts.minimize => proptest_shrink(base, opts.target, tree, candidate, o, &shared),
                    _ => (candidate, o),
                };
                found(base, opts, &shared, candidate, &o, start)?;
            } else {
                let score = crate::score::score(&o, s.train.dtype);
                remember(&shared, Mutant { mutations: candidate, score });
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

type Tree = Box<dyn ValueTree<Value = Vec<Mutation>>>;

/// Proptest's own shrinking of a failing draw: simplify while it keeps failing, bounded.
fn proptest_shrink(base: &Scenario, target: Target, tree: &mut Tree, mut best: Vec<Mutation>, mut outcome: crate::Outcome, shared: &Shared) -> (Vec<Mutation>, crate::Outcome) {
    let mut budget = 32;
    let fails = |c: &[Mutation]| {
        shared.runs.fetch_add(1, Ordering::Relaxed);
        mutate(base, c).map(|s| run(&s)).filter(|o| target.hits(o))
    };
    while budget > 0 && tree.simplify() {
        budget -= 1;
        match fails(&tree.current()) {
            Some(o) => (best, outcome) = (tree.current(), o),
            None => {
                // Too simple: step back until it fails again.
                while budget > 0 && tree.complicate() {
                    budget -= 1;
                    if let Some(o) = fails(&tree.current()) {
                        (best, outcome) = (tree.current(), o);
                        break;
                    }
                }
            }
        }
    }
    (best, outcome)
}

/// Candidate `index`: a fresh draw (with its value tree, for shrinking), or (guided) a mutation of a good mutant.
fn generate(opts: &HuntOptions, index: u64, space: &Space, (strategy, one, corners): (&BoxedStrategy<Vec<Mutation>>, &BoxedStrategy<Mutation>, &[Vec<Mutation>]), shared: &Shared) -> (Vec<Mutation>, Option<Tree>) {
    let seed = fnv1a(format!("{}:{index}", opts.seed).as_bytes());
    let mut runner = seeded_runner(seed);
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let parent = match opts.engine {
        Engine::Property => {
            let tree = strategy.new_tree(&mut runner).expect("strategies here never reject");
            return (tree.current(), Some(tree));
        }
        Engine::Guided => {
            if let Some(c) = usize::try_from(index).ok().and_then(|i| corners.get(i)) {
                return (c.clone(), None);
            }
            let st = shared.state.lock().expect("state lock");
            // Explore one time in five, else a tournament of two among the best mutants.
            (!st.corpus.is_empty() && rng.random_range(0..5) != 0).then(|| {
                let a = &st.corpus[rng.random_range(0..st.corpus.len())];
                let b = &st.corpus[rng.random_range(0..st.corpus.len())];
                if a.score >= b.score { a.mutations.clone() } else { b.mutations.clone() }
            })
        }
    };
    let Some(mut muts) = parent.filter(|m| !m.is_empty()) else { return (draw(strategy, &mut runner), None) };
    match rng.random_range(0..4) {
        // Push a numeric knob further: ×10^U(0, 1) on a log scale, or a step on a linear one.
        0 | 1 => {
            let i = rng.random_range(0..muts.len());
            if let Some((v, scale)) = muts[i].numeric() {
                let f = 10f64.powf(rng.random_range(0.0..1.0));
                let up = rng.random_range(0..4) != 0;
                let nv = match scale {
                    Scale::Log | Scale::Integer => if up { v * f } else { v / f },
                    Scale::Linear => v + if up { f } else { -f } * v.abs().max(1.0),
                };
                muts[i] = space.clamp(muts[i].with_value(nv));
            } else {
                muts.push(draw(one, &mut runner));
            }
        }
        2 => muts.push(draw(one, &mut runner)),
        _ if muts.len() > 1 => {
            muts.remove(rng.random_range(0..muts.len()));
        }
        _ => muts = draw(strategy, &mut runner),
    }
    (muts, None)
}

fn remember(shared: &Shared, m: Mutant) {
    {
        let mut best = shared.best.lock().expect("best lock");
        *best = best.max(m.score);
    }
    let mut st = shared.state.lock().expect("state lock");
    if st.corpus.iter().any(|c| c.mutations == m.mutations) {
        return;
    }
    st.corpus.push(m);
    st.corpus.sort_by(|a, b| b.score.total_cmp(&a.score));
    st.corpus.truncate(CORPUS_SIZE);
}

fn knobs(muts: &[Mutation]) -> Vec<String> {
    let mut k: Vec<String> = muts.iter().map(Mutation::knob).collect();
    k.sort();
    k.dedup();
    k
}

/// Handles a flipping candidate: count a repeat, or minimize, report and persist a new finding.
fn found(base: &Scenario, opts: &HuntOptions, shared: &Shared, candidate: Vec<Mutation>, o: &crate::Outcome, start: Instant) -> Result<()> {
    let raw = signature(o.first_nonfinite.as_ref(), &o.dtype, &knobs(&candidate));
    if let Some((_, i)) = shared.seen.lock().expect("seen lock").iter().find(|(s, _)| *s == raw) {
        shared.state.lock().expect("state lock").findings[*i].count += 1;
        return Ok(());
    }
    let runs_to_find = shared.runs.load(Ordering::Relaxed) as usize;
    let seconds_to_find = start.elapsed().as_secs_f64();
    let shrink_start = Instant::now();
    // Shrinking may take twice the time to find (at least 10 s), but not past the campaign's budget.
    let budget_end = start + opts.budget;
    let deadline = (shrink_start + Duration::from_secs_f64((2.0 * seconds_to_find).max(10.0))).min(budget_end.max(shrink_start + Duration::from_secs(10)));
    let minimal = if opts.minimize { Minimizer::new(base, opts.target, Some(deadline)).minimize(&candidate) } else { None };
    let (mutations, repro, knob_repro, outcome, thresholds, rows, shrink_runs, reductions) = match &minimal {
        Some(m) => (m.mutations.clone(), m.repro.clone(), m.knob_repro.clone(), m.outcome.clone(), m.thresholds.clone(), m.rows, m.runs, m.reductions()),
        None => {
            let s = mutate(base, &candidate).expect("it just ran");
            (candidate.clone(), s.clone(), s, o.clone(), vec![], None, 0, vec![])
        }
    };
    let location = outcome.first_nonfinite.clone().expect("a finding is non-finite");
    let sig = signature(Some(&location), &outcome.dtype, &knobs(&mutations));
    let mut st = shared.state.lock().expect("state lock");
    if let Some(i) = st.findings.iter().position(|f| f.signature == sig) {
        st.findings[i].count += 1;
        shared.seen.lock().expect("seen lock").push((raw, i));
        return Ok(());
    }
    let mut repro = repro;
    repro.expect = Some(crate::scenario::Expect { outcome: crate::scenario::ExpectedOutcome::Nonfinite, phase: Some(location.phase), tensor: Some(location.tensor.clone()), within_steps: None });
    let report = match &opts.out {
        Some(dir) => {
            let input = ReportInput {
                repro: &repro,
                base,
                outcome: &outcome,
                thresholds: thresholds.clone(),
                settings: RunSettings { watch: true, continue_steps: 0 },
                reductions,
                knob_repro: Some(&knob_repro),
                signature: Some(sig.clone()),
            };
            Some(crate::report::write(dir, &input)?)
        }
        None => None,
    };
    let finding = Finding {
        scenario: base.name.clone(),
        signature: sig,
        location,
        mutations,
        found: candidate,
        thresholds,
        count: 1,
        runs_to_find,
        seconds_to_find,
        seconds_to_shrink: shrink_start.elapsed().as_secs_f64(),
        shrink_runs,
        rows,
        report,
    };
    st.findings.push(finding);
    shared.seen.lock().expect("seen lock").push((raw, st.findings.len() - 1));
    if let Some(dir) = &opts.out {
        write_findings(&dir.join("findings.jsonl"), &st.findings)?;
    }
    drop(st);
    save(opts, shared)
}

fn save(opts: &HuntOptions, shared: &Shared) -> Result<()> {
    let Some(dir) = &opts.corpus else { return Ok(()) };
    let mut st = shared.state.lock().expect("state lock");
    st.next = shared.next.load(Ordering::Relaxed);
    st.runs = shared.runs.load(Ordering::Relaxed);
    st.save(dir)
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

    #[test]
    fn candidates_depend_only_on_seed_and_index() {
        let base = crate::load(std::path::Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../scenarios/seeds/s000_ex1_bce_mlp.toml"))).unwrap();
        let space = Space::of(&base);
        let (strategy, one, corners) = (space.candidate(), space.mutation(), space.corners());
        let shared = Shared { state: Mutex::new(State::default()), next: AtomicU64::new(0), runs: AtomicU64::new(0), errors: AtomicU64::new(0), best: Mutex::new(0.0), seen: Mutex::new(vec![]) };
        let opts = HuntOptions { engine: Engine::Property, seed: 9, ..HuntOptions::default() };
        let a: Vec<_> = (0..20).map(|i| generate(&opts, i, &space, (&strategy, &one, &[]), &shared).0).collect();
        let b: Vec<_> = (0..20).map(|i| generate(&opts, i, &space, (&strategy, &one, &[]), &shared).0).collect();
        assert_eq!(a, b);
        assert!(a.windows(2).any(|w| w[0] != w[1]), "different indices draw different candidates");
        // The guided engine starts with the corner sweep, one knob at a time.
        let guided = HuntOptions { engine: Engine::Guided, ..opts };
        for (i, c) in corners.iter().enumerate() {
            assert_eq!(&generate(&guided, i as u64, &space, (&strategy, &one, &corners), &shared).0, c);
            assert_eq!(c.len(), 1);
        }
    }
}
