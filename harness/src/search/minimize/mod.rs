//! The domain minimizer: from a flipping candidate to the smallest change from
//! the base scenario that still flips.
//!
//! A stock shrinker moves values towards zero or the edge of the space; here
//! "minimal" means closest to the user's own scenario. In order: drop every
//! mutation the flip does not need, until removing any one un-flips it
//! (1-minimal in knobs; a hunt's flip keeps its mechanism rather than the tensor it
//! first showed in, [`Minimizer::by_mechanism`]); bisect each numeric knob back towards its base value
//! to the flip threshold (3 significant digits); then, unless the data is to
//! be kept, cut the training rows by halving and delta debugging, within a
//! run budget, towards a 1-minimal set (`rows`); and cut the schedule to the
//! first failing step. A minimization that runs out of time before its knobs
//! are minimal says so ([`Minimal::complete`]): its result is never presented
//! as minimal. Rows that run out of their budget or of time are kept as cut so
//! far and said to be not minimized ([`RowCut::minimized`]), rather than overrun.

use std::sync::atomic::AtomicBool;
use std::time::{Duration, Instant};

use super::finding::{Site, Target, Threshold};
use super::mutation::{mutate, normalize, Mutation};
use crate::run::{run_with, Kind, Outcome, RunOptions};
use crate::scenario::{Knob, Scenario};

mod bisect;
mod rows;

pub(crate) use bisect::bisect;
pub use bisect::round3_away;
use rows::{cut_schedule, select_rows, shrink_rows};
pub use rows::{materialize, rebuild, Built, RowCut, ROW_RUNS};

/// What the minimizer found.
#[derive(Debug, Clone)]
pub struct Minimal {
    /// The fewest mutations, each at its threshold.
    pub mutations: Vec<Mutation>,
    /// The base with those mutations: what the report's diff is taken against.
    pub knob_repro: Scenario,
    /// The final repro: fewer rows, schedule cut.
    pub repro: Scenario,
    /// The repro's outcome.
    pub outcome: Outcome,
    /// Flip thresholds of the numeric knobs.
    pub thresholds: Vec<Threshold>,
    /// The training rows kept, if rows were cut.
    pub rows: Option<RowCut>,
    /// The first failing step with all the rows, when rows were cut (the repro's step counts its own rows).
    pub full_step: Option<usize>,
    /// The knob steps ran to the end: 1-minimal in knobs, thresholds bisected. Rows may still be
    /// unminimized (their budget or the time ran out): [`RowCut::minimized`] says.
    pub complete: bool,
    /// Runs spent minimizing.
    pub runs: usize,
}

impl Minimal {
    /// The reductions beyond knob changes, in words for the report.
    pub fn reductions(&self) -> Vec<String> {
        reductions(&self.knob_repro, &self.repro, &self.outcome, self.rows.as_ref(), self.full_step)
    }
}

/// How a run that `kind` names fails, in words: a divergence is no non-finite value.
pub fn fails(kind: Kind) -> &'static str {
    match kind {
        Kind::Nan | Kind::PosInf | Kind::NegInf => "goes non-finite",
        Kind::Diverge => "diverges",
        Kind::ScaleCollapse => "collapses its loss scale",
        Kind::NoGradient => "leaves a parameter without a gradient",
    }
}

/// How a repro was cut down from its knob-level scenario (rows, schedule), in words for a report;
/// `outcome` is the repro's, so the words say how it fails.
pub fn reductions(knob_repro: &Scenario, repro: &Scenario, outcome: &Outcome, rows: Option<&RowCut>, full_step: Option<usize>) -> Vec<String> {
    let how = fails(outcome.failure_site().map_or(Kind::Nan, |at| at.kind));
    let mut out = Vec::new();
    if let Some(cut) = rows {
        let step = full_step.map_or(String::new(), |s| format!("; with all {} rows it {how} at step {s}", cut.total));
        let how_far = if cut.minimized { "1-minimal: removing any one un-flips it".to_string() } else { format!("rows not minimized: the row budget ({ROW_RUNS} runs) or the time ran out") };
        out.push(format!("data rows: {} → {} ({how_far}){step}", cut.total, cut.kept.len()));
    }
    if let Some(m) = repro.train.max_steps.filter(|_| repro.train.max_steps != knob_repro.train.max_steps) {
        out.push(format!("schedule cut to {} epoch(s), {m} step(s): it {how} at step {m}", repro.train.epochs));
    }
    out
}

/// Whether a deadline has passed or a stop was asked for.
fn expired(deadline: Option<Instant>, stop: Option<&AtomicBool>) -> bool {
    deadline.is_some_and(|d| Instant::now() >= d) || stop.is_some_and(|s| s.load(std::sync::atomic::Ordering::Relaxed))
}

/// Runs candidates against a target, counting runs and respecting a deadline.
pub struct Minimizer<'a> {
    base: &'a Scenario,
    target: Target,
    deadline: Option<Instant>,
    keep_data: bool,
    run_timeout: Option<Duration>,
    stop: Option<&'a AtomicBool>,
    site: Option<Site>,
    /// The mechanism a reduction of knobs may keep instead of the site (`by_mechanism`).
    mechanism: Option<fn(&Outcome) -> Option<String>>,
    /// The mechanism of the flip being minimized, which every reduction keeps (with `by_mechanism`).
    like: Option<String>,
    /// Runs made so far.
    pub runs: usize,
}

impl<'a> Minimizer<'a> {
    /// A minimizer for findings on `base`; with a deadline, it stops refining when time is up.
    pub fn new(base: &'a Scenario, target: Target, deadline: Option<Instant>) -> Self {
        Minimizer { base, target, deadline, keep_data: false, run_timeout: None, stop: None, site: None, mechanism: None, like: None, runs: 0 }
    }

    /// Accepts only reductions that still fail at `site`, so a trigger stays with its root cause.
    pub fn same_site(mut self, site: Option<Site>) -> Self {
        self.site = site;
        self
    }

    /// Lets dropping a knob keep the flip's mechanism (`of` names it: rule, op, precision, without
    /// the knobs) rather than its site: a knob that only moves where the same mechanism first
    /// shows (another tensor, or NaN for +Inf) is not needed. The site then becomes the reduced
    /// trigger's own, which its thresholds keep to.
    pub fn by_mechanism(mut self, of: fn(&Outcome) -> Option<String>) -> Self {
        self.mechanism = Some(of);
        self
    }

    /// Whether a candidate without one knob still flips for the drop: at the site, or, when
    /// `loose`, by the same mechanism anywhere (then the site moves to the reduced candidate's).
    fn still_flips(&mut self, muts: &[Mutation], loose: bool) -> bool {
        if !loose || self.like.is_none() {
            return self.flips_with(muts).is_some();
        }
        let Some(s) = mutate(self.base, muts) else { return false };
        let o = self.run_limited(&s);
        let same = self.target.hits(&o) && self.same_mechanism(&o);
        if same {
            self.site = Site::of(&o);
        }
        same
    }

    /// Whether an outcome shows the mechanism being kept (any, without `by_mechanism`).
    fn same_mechanism(&self, o: &Outcome) -> bool {
        self.like.is_none() || self.mechanism.and_then(|of| of(o)) == self.like
    }

    /// Whether an outcome counts: it hits the target, at the site if one is set, by the mechanism if one is kept.
    fn counts(&self, o: &Outcome) -> bool {
        self.target.hits(o) && self.site.as_ref().is_none_or(|s| Site::of(o).as_ref() == Some(s)) && self.same_mechanism(o)
    }

    /// Keeps every data row (no delta debugging of rows).
    pub fn keep_data(mut self, keep: bool) -> Self {
        self.keep_data = keep;
        self
    }

    /// Cuts each run off after `run_timeout`, and every run once `stop` is set.
    pub fn limits(mut self, run_timeout: Option<Duration>, stop: Option<&'a AtomicBool>) -> Self {
        (self.run_timeout, self.stop) = (run_timeout, stop);
        self
    }

    fn out_of_time(&self) -> bool {
        expired(self.deadline, self.stop)
    }

    /// Runs a scenario; `Some(outcome)` if it hits the target.
    pub fn flips(&mut self, s: &Scenario) -> Option<Outcome> {
        self.runs += 1;
        let o = run_with(s, &RunOptions { deadline: self.run_deadline(), stop: self.stop, ..RunOptions::default() });
        self.counts(&o).then_some(o)
    }

    fn flips_with(&mut self, muts: &[Mutation]) -> Option<Outcome> {
        let s = mutate(self.base, muts)?;
        self.flips(&s)
    }

    /// Drops mutations the flip does not need until removing any one un-flips it.
    fn drop_unneeded(&mut self, muts: &mut Vec<Mutation>, thresholds: &mut Vec<(usize, Threshold)>, loose: bool) {
        loop {
            let mut dropped = false;
            let mut i = muts.len();
            while i > 0 && !self.out_of_time() {
                i -= 1;
                let mut without = muts.clone();
                without.remove(i);
                if self.still_flips(&without, loose) {
                    *muts = without;
                    thresholds.retain(|(j, _)| *j != i);
                    thresholds.iter_mut().filter(|(j, _)| *j > i).for_each(|(j, _)| *j -= 1);
                    dropped = true;
                }
            }
            if !dropped || self.out_of_time() {
                return;
            }
        }
    }

    /// Minimizes a flipping candidate; `None` if it does not flip to begin with.
    pub fn minimize(&mut self, candidate: &[Mutation]) -> Option<Minimal> {
        let candidate = normalize(candidate);
        let first = self.flips_with(&candidate)?;
        self.like = self.mechanism.and_then(|of| of(&first));
        // 1. Fewest knobs (later mutations override earlier ones).
        let mut muts = candidate.clone();
        let mut thresholds: Vec<(usize, Threshold)> = Vec::new();
        self.drop_unneeded(&mut muts, &mut thresholds, true);
        // 2. Each numeric knob back towards its base, to its threshold. Thresholds are kept
        // with the index of their mutation.
        let mut i = 0;
        while i < muts.len() && !self.out_of_time() {
            if let Some((m, t)) = self.threshold(&muts, i) {
                muts[i] = m;
                thresholds.extend(t.map(|t| (i, t)));
            }
            i += 1;
        }
        // Re-check each threshold with the other knobs at their final values; re-bisect any
        // knob whose "stays finite" value now flips (the knobs interact). At their thresholds
        // a knob may have become unneeded: drop it, and re-check the rest without it.
        for _ in 0..3 {
            for _ in 0..2 {
                let mut settled = true;
                for (i, t) in thresholds.clone() {
                    let mut below = muts.clone();
                    below[i] = muts[i].with_value(t.stays_finite_at);
                    if self.flips_with(&below).is_some() && !self.out_of_time() {
                        settled = false;
                        thresholds.retain(|(j, _)| *j != i);
                        if let Some((m, t)) = self.threshold(&muts, i) {
                            muts[i] = m;
                            thresholds.extend(t.map(|t| (i, t)));
                        }
                    }
                }
                if settled {
                    break;
                }
            }
            let before = muts.len();
            // At their thresholds the site is kept: the thresholds were bisected at it.
            self.drop_unneeded(&mut muts, &mut thresholds, false);
            if muts.len() == before || self.out_of_time() {
                break;
            }
        }
        let knob_complete = !self.out_of_time();
        let knob_repro = mutate(self.base, &muts)?;
        let mut outcome = self.flips(&knob_repro)?;
        let mut repro = knob_repro.clone();
        // 3. Fewest rows, within the row budget: a cut it could not finish is kept, marked not minimized.
        let mut rows = None;
        let mut full_step = None;
        if let Some((s, n)) = materialize(&repro).filter(|_| !self.keep_data) {
            if let Some(o) = self.flips(&s) {
                let step = o.failure_site().map(|f| f.step);
                let (deadline, stop) = (self.deadline, self.stop);
                // The outcome of the last subset that flipped: the cut's own, so it is not run again.
                let mut last = o;
                let mut test = |keep: &[usize]| {
                    let o = self.run_limited(&select_rows(&s, keep));
                    let hit = self.counts(&o);
                    if hit {
                        last = o;
                    }
                    hit
                };
                let (kept, minimized) = shrink_rows(n, &mut test, &|| expired(deadline, stop), ROW_RUNS);
                if kept.len() < n {
                    (repro, outcome, full_step) = (select_rows(&s, &kept), last, step);
                }
                // No row cut but not shown 1-minimal either: the repro keeps the scenario's own data.
                if kept.len() < n || !minimized {
                    rows = Some(RowCut { total: n, kept, minimized });
                }
            }
        }
        // 4. Cut the schedule to the first non-finite step.
        if let Some(cut) = cut_schedule(&repro, &outcome) {
            if let Some(o) = self.flips(&cut) {
                (repro, outcome) = (cut, o);
            }
        }
        // Knobs 1-minimal and thresholds bisected make a trigger; rows not minimized are said in `rows`.
        let complete = knob_complete;
        let thresholds = thresholds.into_iter().map(|(_, t)| t).collect();
        Some(Minimal { mutations: muts, knob_repro, repro, outcome, thresholds, rows, full_step, complete, runs: self.runs })
    }

    /// One run under the minimizer's limits, counted.
    fn run_limited(&mut self, s: &Scenario) -> Outcome {
        self.runs += 1;
        run_with(s, &RunOptions { deadline: self.run_deadline(), stop: self.stop, ..RunOptions::default() })
    }

    /// When a run started now must be cut off: its own limit, and never past the minimizer's deadline.
    fn run_deadline(&self) -> Option<Instant> {
        match (self.run_timeout.map(|t| Instant::now() + t), self.deadline) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Bisects mutation `i` between its base value and its value, keeping the flip.
    fn threshold(&mut self, muts: &[Mutation], i: usize) -> Option<(Mutation, Option<Threshold>)> {
        let m = &muts[i];
        let (v, scale) = m.numeric()?;
        // An injection has no base: its fraction shrinks towards a millionth. Switching clipping
        // or an epsilon on has no value to shrink towards: those are kept as they are.
        let b = match (m.base_value(self.base), m) {
            (Some(b), _) => b,
            (None, Mutation { knob: Knob::Inject, .. }) => v * 1e-6,
            (None, _) => return None,
        };
        if b == v {
            return None;
        }
        let with = |x: f64| {
            let mut c = muts.to_vec();
            c[i] = m.with_value(x);
            c
        };
        if self.flips_with(&with(b)).is_some() {
            return None; // the base value flips with the other knobs: nothing to bisect
        }
        let (deadline, stop) = (self.deadline, self.stop);
        let (stays_finite_at, flips_at) = bisect(b, v, scale, &mut |x| self.flips_with(&with(x)).is_some(), &|| expired(deadline, stop));
        let threshold = m.base_value(self.base).map(|base| Threshold { knob: m.knob(), base, flips_at, stays_finite_at });
        Some((m.with_value(flips_at), threshold))
    }
}

#[cfg(test)]
mod tests;
