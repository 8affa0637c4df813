//! The one owner of a campaign's mutable state: counters, the ranked corpus,
//! failure sites with their triggers (and how many root causes they group into), and flips still being minimized, behind a
//! single mutex. Every method takes the lock for a few field updates and
//! returns; nothing here runs a candidate, minimizes or touches a file, so no
//! worker ever waits on another's slow work. The writer thread
//! (`writer`) takes snapshots and does the I/O. What a kill would lose, candidates running
//! and flips being minimized, is kept beside the state (`in_flight`) and saved with it.
//! The methods that take and register raw flips are in `flips`.

use std::collections::{BTreeSet, HashMap};
use std::sync::{Mutex, MutexGuard};

use rand::Rng;
use rand_chacha::ChaCha8Rng;

use super::in_flight::InFlight;
use crate::run::{Location, Outcome};
use crate::scenario::Named;
use crate::search::corpus::{Flip, Mutant, State};
use crate::search::corpus_cap::{prune, Cap};
use crate::search::cost::Deferred;
use crate::search::finding::{knob_names, Finding};
use crate::search::mutation::Mutation;
use crate::search::root_cause::group;

/// Where a raw flip (its site and knob set) went.
#[derive(Debug, Clone)]
enum Seen {
    /// Being minimized; repeats counted meanwhile.
    Shrinking(usize),
    /// Minimized to this site, into the trigger that sets these knobs.
    Done(usize, Vec<Mutation>),
    /// Parked unfinished at this index of `pending`.
    Pending,
}

/// Counters for the progress bar and the summary.
#[derive(Debug, Clone, Copy, Default)]
pub(super) struct Counts {
    pub(super) runs: u64,
    pub(super) errors: u64,
    pub(super) timeouts: u64,
    pub(super) shrink_runs: u64,
    pub(super) deferred: u64,
    pub(super) deferred_run: u64,
    pub(super) root_causes: usize,
    pub(super) sites: usize,
    pub(super) triggers: usize,
    pub(super) pending: usize,
    pub(super) shrinking: usize,
    pub(super) best: f64,
}

struct Inner {
    state: State,
    seen: HashMap<String, Seen>,
    /// Root causes whose report must be (re)written.
    dirty: BTreeSet<usize>,
    /// Root causes whose counts changed since their report: rewritten at the end.
    recount: BTreeSet<usize>,
    shrink_runs: u64,
    best: f64,
    /// Root causes (mechanisms) among the findings, counted when a finding changes.
    groups: usize,
    /// Candidates put aside as costly, and the cheap spending they wait for.
    deferred: Deferred,
    /// How many were put aside, and how many of those have run.
    deferrals: (u64, u64),
    /// The most the ranked corpus keeps.
    cap: Cap,
    /// Candidates running and flips being minimized: what a snapshot must save beside the state.
    in_flight: InFlight,
}

/// What a worker is to run next.
#[derive(Debug, Clone, PartialEq)]
pub(super) enum Ticket {
    /// The candidate of this index, to generate.
    Fresh(u64),
    /// A deferred candidate whose turn has come.
    Due(Vec<Mutation>),
}

/// The shared state of a campaign.
pub(super) struct Campaign {
    inner: Mutex<Inner>,
}

/// The key of a raw flip: its failure site and the knobs it sets.
pub(super) fn raw_key(o: &Outcome, candidate: &[Mutation]) -> String {
    o.failure_site().map_or(String::new(), |at| key_of(&at, o.dtype_name(), candidate))
}

/// The key of a flip at `at` in `dtype` by a candidate setting these knobs.
fn key_of(at: &Location, dtype: &str, candidate: &[Mutation]) -> String {
    let mut knobs = knob_names(candidate);
    knobs.sort_unstable();
    format!("{}|{}|{}|{dtype}|{}", at.phase.name(), at.tensor, at.kind.name(), knobs.join(","))
}

impl Campaign {
    /// A campaign continuing `state`, its corpus kept within `cap`: flips it already minimized or
    /// parked are known again, so a resumed campaign counts their repeats instead of minimizing them anew.
    pub(super) fn new(mut state: State, cap: Cap) -> Self {
        prune(&mut state, cap);
        let best = state.corpus.iter().map(|m| m.score).fold(0.0, f64::max);
        let mut seen = HashMap::new();
        for (i, f) in state.findings.iter().enumerate() {
            for t in &f.triggers {
                seen.insert(key_of(&f.location, &f.dtype, &t.found), Seen::Done(i, t.mutations.clone()));
            }
        }
        // As the last session saved them (states saved before it kept flips have the above).
        for f in std::mem::take(&mut state.flips) {
            if let Some(i) = state.findings.iter().position(|x| x.signature == f.site) {
                seen.insert(f.key, Seen::Done(i, f.trigger));
            }
        }
        for p in &state.pending {
            seen.insert(p.key.clone(), Seen::Pending);
        }
        let groups = group(&state.findings).len();
        let inner = Inner {
            state,
            seen,
            dirty: BTreeSet::new(),
            recount: BTreeSet::new(),
            shrink_runs: 0,
            best,
            groups,
            deferred: Deferred::default(),
            deferrals: (0, 0),
            cap,
            in_flight: InFlight::default(),
        };
        Campaign { inner: Mutex::new(inner) }
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A worker that panicked while holding the lock left the state consistent
        // (every method completes its updates before it can panic): carry on.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Whether the base's own failure (the empty trigger) is a site already.
    pub(super) fn has_base_trigger(&self) -> bool {
        self.lock().state.findings.iter().any(|f| f.triggers.iter().any(|t| t.mutations.is_empty()))
    }

    /// Takes what to run next, counting it as a run: a deferred candidate whose turn has come, else
    /// a candidate a killed session left unfinished, else the next candidate index; `None` once
    /// `max_runs` are taken. A fresh candidate is running until a method that records its result
    /// settles it (`k`: its index, `None` for a deferred one).
    pub(super) fn reserve(&self, max_runs: Option<u64>, first: bool) -> Option<Ticket> {
        let mut g = self.lock();
        if max_runs.is_some_and(|m| g.state.runs >= m) || (first && !g.state.findings.is_empty()) {
            return None;
        }
        g.state.runs += 1;
        if let Some(c) = g.deferred.due() {
            g.deferrals.1 += 1;
            return Some(Ticket::Due(c));
        }
        let k = if g.state.redo.is_empty() {
            g.state.next += 1;
            g.state.next - 1
        } else {
            g.state.redo.remove(0)
        };
        g.in_flight.start(k);
        Some(Ticket::Fresh(k))
    }

    /// Puts a reserved candidate expected to cost `ratio` × the base aside: it is not run now,
    /// and its reservation is not counted as a run.
    pub(super) fn defer(&self, ratio: f64, candidate: Vec<Mutation>, k: Option<u64>) {
        let mut g = self.lock();
        g.in_flight.settle(k);
        g.state.runs -= 1;
        g.deferrals.0 += 1;
        g.deferred.defer(ratio, candidate);
    }

    /// Gives back a reserved candidate that set nothing (every mutation of its draw was made
    /// meaningless by another): it is neither a run nor an error.
    pub(super) fn give_back(&self, k: Option<u64>) {
        let mut g = self.lock();
        g.in_flight.settle(k);
        g.state.runs -= 1;
    }

    /// Counts a cheap candidate's expected cost (× the base) as spent, for the deferred ones.
    pub(super) fn spend(&self, ratio: f64) {
        self.lock().deferred.spend(ratio);
    }

    /// Counts a candidate that was invalid, errored or panicked, and why.
    pub(super) fn errored(&self, message: &str, candidate: &[Mutation], k: Option<u64>) {
        let mut g = self.lock();
        g.in_flight.settle(k);
        g.state.errors += 1;
        crate::search::errors::record(&mut g.state.error_log, message, candidate);
    }

    /// Fresh candidate `k` is done with, nothing to record.
    pub(super) fn settle(&self, k: Option<u64>) {
        self.lock().in_flight.settle(k);
    }

    /// Counts a candidate cut off at its time limit.
    pub(super) fn timed_out(&self, k: Option<u64>) {
        let mut g = self.lock();
        g.in_flight.settle(k);
        g.state.timeouts += 1;
    }

    /// Counts runs spent minimizing.
    pub(super) fn shrunk(&self, runs: usize) {
        self.lock().shrink_runs += runs as u64;
    }

    /// Keeps a finite mutant in the ranked corpus, within its cap (the best-scored and the witnesses stay).
    pub(super) fn remember(&self, m: Mutant, k: Option<u64>) {
        let mut g = self.lock();
        g.in_flight.settle(k);
        g.best = g.best.max(m.score);
        if g.state.corpus.iter().any(|c| c.mutations == m.mutations) {
            return;
        }
        g.state.corpus.push(m);
        let cap = g.cap;
        prune(&mut g.state, cap);
    }

    /// The guided engine's parent: none one time in five (explore), else a tournament of two among the kept mutants.
    pub(super) fn pick_parent(&self, rng: &mut ChaCha8Rng) -> Option<Vec<Mutation>> {
        let g = self.lock();
        let c = &g.state.corpus;
        if c.is_empty() || rng.random_range(0..5) == 0 {
            return None;
        }
        let (a, b) = (&c[rng.random_range(0..c.len())], &c[rng.random_range(0..c.len())]);
        Some(if a.score >= b.score { a.mutations.clone() } else { b.mutations.clone() })
    }

    /// The sites whose reports are stale, taken out of the dirty set; with
    /// `last`, also those whose counts changed, so the final reports hold true counts.
    pub(super) fn take_dirty(&self, last: bool) -> Vec<(usize, Finding)> {
        let mut g = self.lock();
        let mut dirty = std::mem::take(&mut g.dirty);
        if last {
            dirty.extend(std::mem::take(&mut g.recount));
        }
        dirty.into_iter().map(|i| (i, g.state.findings[i].clone())).collect()
    }

    /// Asks for a site's report to be written again.
    pub(super) fn mark_dirty(&self, i: usize) {
        self.lock().dirty.insert(i);
    }

    /// Records where a site's report was written.
    pub(super) fn set_report(&self, i: usize, dir: std::path::PathBuf) {
        if let Some(f) = self.lock().state.findings.get_mut(i) {
            f.report = Some(dir);
        }
    }

    /// A copy of the state to persist, with what a kill now would lose (`in_flight`).
    pub(super) fn snapshot(&self) -> State {
        let g = self.lock();
        let mut s = g.state.clone();
        g.in_flight.save_into(&mut s, |key| match g.seen.get(key) {
            Some(Seen::Shrinking(n)) => *n,
            _ => 0,
        });
        s.flips = g
            .seen
            .iter()
            .filter_map(|(key, v)| match v {
                Seen::Done(i, knobs) => Some(Flip { key: key.clone(), site: g.state.findings[*i].signature.clone(), trigger: knobs.clone() }),
                Seen::Shrinking(_) | Seen::Pending => None,
            })
            .collect();
        s.flips.sort_by(|a, b| a.key.cmp(&b.key));
        s
    }

    /// The numbers of the campaign so far.
    pub(super) fn counts(&self) -> Counts {
        let g = self.lock();
        let s = &g.state;
        Counts {
            runs: s.runs,
            errors: s.errors,
            timeouts: s.timeouts,
            shrink_runs: g.shrink_runs,
            root_causes: g.groups,
            sites: s.findings.len(),
            deferred: g.deferrals.0,
            deferred_run: g.deferrals.1,
            triggers: s.findings.iter().map(|f| f.triggers.len()).sum(),
            pending: s.pending.len(),
            shrinking: g.seen.values().filter(|v| matches!(v, Seen::Shrinking(_))).count(),
            best: g.best,
        }
    }
}

mod flips;
#[cfg(test)]
mod tests;
