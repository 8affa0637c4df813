//! What a campaign is asked to do ([`HuntOptions`], the [`Engine`] among them)
//! and the clock it keeps ([`Clock`]).

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::search::corpus_cap::Cap;
use crate::search::finding::{Finding, Target};

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
    /// Search time.
    pub budget: Duration,
    /// Time after the search for finishing minimizations; the hunt ends by `budget + shrink_budget`.
    pub shrink_budget: Duration,
    /// Wall-time limit of one candidate run (a run over it counts as a timeout);
    /// `None`: 20 × the base run's time, at least 1 s.
    pub run_timeout: Option<Duration>,
    /// Stop after this many candidate runs (exact at any `jobs`).
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
    /// The most its corpus of mutants keeps (a resumed corpus over it is pruned at once).
    pub corpus_cap: Cap,
    /// Where `findings.jsonl` goes (reports go where the `Reporter` puts them).
    pub out: Option<PathBuf>,
    /// Stop at the first root cause.
    pub first: bool,
    /// Keep every data row when minimizing (no delta debugging of rows).
    pub keep_data: bool,
    /// Set from outside (Ctrl-C, SIGTERM) to stop: running candidates are cut off at their next step.
    pub stop: Arc<AtomicBool>,
    /// Findings of earlier hunts (`--known`): root causes they hold are marked known, not new.
    pub known: Vec<Finding>,
}

impl Default for HuntOptions {
    fn default() -> Self {
        HuntOptions {
            budget: Duration::from_secs(60),
            shrink_budget: Duration::from_secs(15),
            run_timeout: None,
            max_runs: None,
            jobs: 1,
            seed: 0,
            target: Target::Nonfinite,
            engine: Engine::Guided,
            shard: (0, 1),
            corpus: None,
            corpus_cap: Cap::default(),
            out: None,
            first: false,
            keep_data: false,
            stop: Arc::new(AtomicBool::new(false)),
            known: Vec::new(),
        }
    }
}

impl HuntOptions {
    /// Whether a stop was asked for.
    pub fn stopped(&self) -> bool {
        self.stop.load(Ordering::Relaxed)
    }

    /// The default shrink allowance for a search budget: a quarter of it, between 5 s and 5 min.
    pub fn default_shrink_budget(budget: Duration) -> Duration {
        (budget / 4).clamp(Duration::from_secs(5), Duration::from_secs(300))
    }
}

/// The campaign's clock: when it started, when the search ends, when everything ends.
pub(super) struct Clock {
    pub(super) start: Instant,
    pub(super) search_end: Instant,
    pub(super) hard_end: Instant,
    pub(super) run_timeout: Duration,
}

impl Clock {
    /// When a run started now must be cut off.
    pub(super) fn run_deadline(&self) -> Instant {
        (Instant::now() + self.run_timeout).min(self.hard_end)
    }
}
