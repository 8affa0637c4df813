//! The one owner of a campaign's mutable state: counters, the ranked corpus,
//! failure sites with their triggers (and how many root causes they group into), and flips still being minimized, behind a
//! single mutex. Every method takes the lock for a few field updates and
//! returns; nothing here runs a candidate, minimizes or touches a file, so no
//! worker ever waits on another's slow work. The writer thread
//! (`writer`) takes snapshots and does the I/O. What a kill would lose, candidates running
//! and flips being minimized, is kept beside the state (`in_flight`) and saved with it.

use std::collections::{BTreeSet, HashMap};
use std::sync::{Mutex, MutexGuard};

use rand::Rng;
use rand_chacha::ChaCha8Rng;

use super::in_flight::InFlight;
use crate::run::{Location, Outcome};
use crate::scenario::{Named, Phase};
use crate::search::corpus::{covers, fold, same_knobs, Flip, Mutant, State};
use crate::search::corpus_cap::{prune, Cap};
use crate::search::cost::Deferred;
use crate::search::finding::{knob_names, site_signature, Finding, Pending, Trigger};
use crate::search::minimize::{Built, Minimal};
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

    /// Records a raw flip `p` of candidate `k`; true if it is new and should be minimized, false if
    /// it was counted as a repeat.
    pub(super) fn hit(&self, p: &Pending, k: Option<u64>) -> bool {
        let key = p.key.as_str();
        let mut g = self.lock();
        g.in_flight.settle(k);
        match g.seen.get(key).cloned() {
            None => {
                g.in_flight.shrink(p.clone());
                g.seen.insert(key.to_string(), Seen::Shrinking(0));
                true
            }
            Some(Seen::Shrinking(n)) => {
                g.seen.insert(key.to_string(), Seen::Shrinking(n + 1));
                false
            }
            Some(Seen::Done(f, knobs)) => {
                g.recount.insert(f);
                let finding = &mut g.state.findings[f];
                finding.count += 1;
                if let Some(t) = finding.triggers.iter_mut().find(|t| same_knobs(&t.mutations, &knobs)) {
                    t.count += 1;
                }
                false
            }
            Some(Seen::Pending) => {
                if let Some(p) = g.state.pending.iter_mut().find(|p| p.key == key) {
                    p.count += 1;
                }
                false
            }
        }
    }

    /// Repeats of a raw flip counted while it was being minimized.
    fn repeats(g: &mut Inner, key: &str) -> usize {
        match g.seen.get(key) {
            Some(Seen::Shrinking(n)) => *n,
            _ => 0,
        }
    }

    /// Adds a complete minimization as a trigger of its site (a new one if the site is new).
    /// The site is the minimal trigger's: the flip's own, unless the minimizer dropped a knob
    /// that only moved where the same mechanism first showed (then the flip's hits count there).
    pub(super) fn register(&self, p: &Pending, base_name: &str, m: &Minimal, distance: f64, seconds_to_shrink: f64) {
        let (key, found, found_at) = (p.key.as_str(), p.found.clone(), (p.seconds_to_find, p.runs_to_find));
        let mut g = self.lock();
        g.in_flight.shrunk(key);
        let count = 1 + Self::repeats(&mut g, key) + g.state.pending.iter().find(|q| q.key == key).map_or(0, |q| q.count.saturating_sub(1));
        g.state.pending.retain(|q| q.key != key);
        // The site is the minimal trigger's: the flip's own, unless a knob that only moved where
        // the same mechanism showed was dropped (`Minimizer::by_mechanism`).
        let at = m.outcome.failure_site().unwrap_or_else(|| p.location.clone());
        let dtype = m.outcome.failure_site().map_or(p.dtype.as_str(), |_| m.outcome.dtype_name()).to_string();
        let sig = site_signature(&at, &dtype);
        let fi = match g.state.findings.iter().position(|f| f.signature == sig && f.scenario == base_name) {
            Some(i) => i,
            None => {
                g.state.findings.push(Finding {
                    scenario: base_name.to_string(),
                    signature: sig,
                    location: at.clone(),
                    dtype: dtype.clone(),
                    note: note(&at, &dtype),
                    triggers: vec![],
                    count: 0,
                    runs_to_find: found_at.1,
                    seconds_to_find: found_at.0,
                    seconds_to_shrink: 0.0,
                    shrink_runs: 0,
                    report: None,
                    cause: m.outcome.cause.clone(),
                });
                g.state.findings.len() - 1
            }
        };
        let f = &mut g.state.findings[fi];
        f.count += count;
        f.seconds_to_shrink += seconds_to_shrink;
        f.shrink_runs += m.runs;
        // A trigger that sets every knob of another (and more) adds nothing: the smaller
        // one reaches the site already. Its hits count for the smaller one.
        let built = Built { knob_repro: m.knob_repro.clone(), repro: m.repro.clone(), outcome: m.outcome.clone() };
        let t = Trigger {
            mutations: m.mutations.clone(),
            found,
            thresholds: m.thresholds.clone(),
            distance,
            count,
            rows: m.rows.clone(),
            full_step: m.full_step,
            cause: Some(m.outcome.cause.clone()),
            verdict: m.outcome.verdict.clone(),
            built: Some(std::sync::Arc::new(built)),
        };
        let kept = fold(&mut f.triggers, t);
        if f.triggers[0].mutations == kept && kept == m.mutations {
            f.location = at;
            f.cause = m.outcome.cause.clone();
        }
        // Raw flips that went to a dropped trigger now count for the one that covers it.
        for s in g.seen.values_mut() {
            if let Seen::Done(x, knobs) = s {
                if *x == fi && covers(knobs, &kept) {
                    *knobs = kept.clone();
                }
            }
        }
        g.seen.insert(key.to_string(), Seen::Done(fi, kept));
        g.dirty.insert(fi);
        g.groups = group(&g.state.findings).len();
    }

    /// Parks a flip whose minimization did not finish.
    pub(super) fn park(&self, key: &str, mut p: Pending) {
        let mut g = self.lock();
        g.in_flight.shrunk(key);
        // A flip parked before has been counting its repeats in the state meanwhile.
        if let Some(live) = g.state.pending.iter().find(|q| q.key == key) {
            p.count = live.count;
        }
        p.count += Self::repeats(&mut g, key);
        g.state.pending.retain(|q| q.key != key);
        g.state.pending.push(p);
        g.seen.insert(key.to_string(), Seen::Pending);
    }

    /// Takes a parked flip to finish (the shrink phase); it stays in the state until registered or parked again.
    pub(super) fn take_pending(&self, taken: &mut BTreeSet<String>) -> Option<Pending> {
        let g = self.lock();
        let p = g.state.pending.iter().find(|p| !taken.contains(&p.key))?.clone();
        taken.insert(p.key.clone());
        Some(p)
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

/// What a failure site means, where nanhunt can say: a non-finite value in the
/// data itself is the data's problem (an outlier past the dtype's range, a NaN
/// cell), not the model's.
fn note(at: &Location, dtype: &str) -> Option<String> {
    (at.phase == Phase::Data).then(|| match at.kind {
        crate::run::Kind::Nan => format!("the data itself holds NaN in `{}`: not a model failure", at.tensor),
        _ => format!("the data itself is not representable in {dtype}: a value in `{}` is beyond its range, not a model failure", at.tensor),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::run::{Kind, Status};
    use crate::scenario::{DTypeName, Knob};

    fn minimal(muts: Vec<Mutation>) -> (Minimal, Pending) {
        let s = crate::scenario::seed("s000_ex1_bce_mlp");
        let mut o = Outcome::error("t", String::new());
        let at = Location { step: 1, epoch: 1, fold: 0, phase: Phase::Loss, tensor: crate::scenario::TensorId::Loss, kind: Kind::Nan, index: 0, ..Default::default() };
        (o.outcome, o.error, o.first_nonfinite, o.dtype) = (Status::Nonfinite, None, Some(at.clone()), Some(crate::scenario::RunDType::F32));
        let key = raw_key(&o, &muts);
        let p = Pending { key, found: muts.clone(), location: at, dtype: "f32".into(), count: 1, seconds_to_find: 0.0, runs_to_find: 1 };
        let m = Minimal { mutations: muts, knob_repro: s.clone(), repro: s, outcome: o, thresholds: vec![], rows: None, full_step: None, complete: true, runs: 1 };
        (m, p)
    }

    #[test]
    fn a_deferred_candidate_gives_back_its_run_and_comes_back_when_due() {
        let c = Campaign::new(State::default(), Cap::default());
        let costly = vec![Mutation::new(Knob::BatchSize, 1u32)];
        assert_eq!(c.reserve(Some(2), false), Some(Ticket::Fresh(0)));
        c.defer(11.3, costly.clone(), Some(0));
        // Not run: not counted, so `max_runs` still allows two runs.
        assert_eq!((c.counts().runs, c.counts().deferred), (0, 1));
        assert_eq!(c.reserve(Some(2), false), Some(Ticket::Fresh(1)));
        // Deferring counted one base run; 10.3 more of cheap candidates make the 11.3 it waits for.
        c.spend(10.3);
        assert_eq!(c.reserve(Some(2), false), Some(Ticket::Due(costly)));
        assert_eq!(c.reserve(Some(2), false), None, "two runs made");
        assert_eq!((c.counts().runs, c.counts().deferred_run), (2, 1));
    }

    #[test]
    fn a_state_saved_mid_run_redoes_the_running_candidates_and_keeps_the_flips_being_minimized() {
        let c = Campaign::new(State::default(), Cap::default());
        for k in 0..3 {
            assert_eq!(c.reserve(Some(3), false), Some(Ticket::Fresh(k)));
        }
        c.remember(Mutant { mutations: vec![Mutation::new(Knob::Lr, 0.5)], score: 0.1 }, Some(0));
        let (_, p) = minimal(vec![Mutation::new(Knob::Lr, 9.0)]);
        assert!(c.hit(&p, Some(2)), "a new flip, being minimized");
        // Killed now: candidate 1 is still running, so it is not a run yet but one to redo.
        let saved = c.snapshot();
        assert_eq!((saved.runs, saved.next, saved.redo.clone()), (2, 3, vec![1]));
        assert_eq!(saved.pending, [p]);
        let resumed = Campaign::new(saved, Cap::default());
        assert_eq!(resumed.reserve(Some(3), false), Some(Ticket::Fresh(1)), "the running one first");
        assert_eq!(resumed.reserve(Some(3), false), None, "then the budget is spent");
    }

    #[test]
    fn a_resumed_campaign_counts_a_flip_whose_trigger_moved_site_where_it_did() {
        // Found failing in the forward pass, minimized to a trigger that fails in the loss.
        let c = Campaign::new(State::default(), Cap::default());
        let (m, mut p) = minimal(vec![Mutation::new(Knob::Lr, 9.0)]);
        p.location.phase = Phase::Forward;
        p.key = key_of(&p.location, "f32", &p.found);
        assert!(c.hit(&p, None));
        c.register(&p, "s000_ex1_bce_mlp", &m, 1.0, 0.0);
        let resumed = Campaign::new(c.snapshot(), Cap::default());
        assert!(!resumed.hit(&p, None), "a repeat, not a new flip to minimize again");
        assert_eq!(resumed.snapshot().findings[0].count, 2);
    }

    #[test]
    fn triggers_that_add_knobs_to_another_count_for_it() {
        let c = Campaign::new(State::default(), Cap::default());
        let lr = Mutation::new(Knob::Lr, 1.0);
        let f16 = Mutation::new(Knob::Dtype, DTypeName::F16);
        for muts in [vec![lr.clone(), f16.clone()], vec![lr.clone()], vec![f16.clone()]] {
            let (m, p) = minimal(muts);
            assert!(c.hit(&p, None));
            c.register(&p, "s000_ex1_bce_mlp", &m, 1.0, 0.0);
        }
        let f = &c.snapshot().findings[0];
        let sets: Vec<(usize, usize)> = f.triggers.iter().map(|t| (t.mutations.len(), t.count)).collect();
        assert_eq!(sets, [(1, 2), (1, 1)], "{{lr, f16}} folded into {{lr}}; {{f16}} stands alone");
        assert_eq!(f.count, 3);
        // The empty trigger (the base itself) covers every other.
        let (m, p) = minimal(vec![]);
        assert!(c.hit(&p, None));
        c.register(&p, "s000_ex1_bce_mlp", &m, 0.0, 0.0);
        let f = &c.snapshot().findings[0];
        assert_eq!(f.triggers.len(), 1);
        assert_eq!((f.triggers[0].mutations.len(), f.triggers[0].count, f.count), (0, 4, 4));
        // A repeat of a folded raw flip now counts for the trigger that absorbed it.
        let (_, p) = minimal(vec![lr, f16]);
        assert!(!c.hit(&p, None));
        assert_eq!(c.snapshot().findings[0].triggers[0].count, 5);
    }
}
