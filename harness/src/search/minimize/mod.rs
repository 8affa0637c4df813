//! The domain minimizer: from a flipping candidate to the smallest change from
//! the base scenario that still flips.
//!
//! A stock shrinker moves values towards zero or the edge of the space; here
//! "minimal" means closest to the user's own scenario. In order: drop every
//! mutation the flip does not need (fewest knobs); bisect each numeric knob
//! back towards its base value to the flip threshold (3 significant digits);
//! delta-debug the data rows, then the features, to a 1-minimal set; and cut
//! the schedule to the first non-finite step.

use std::time::Instant;

use super::finding::{Target, Threshold};
use super::mutation::{mutate, Mutation, Scale};
use crate::run::{data, run, Outcome};
use crate::scenario::{DataSpec, InputSpec, Scenario, TargetRow, TargetSpec};

/// What the minimizer found.
#[derive(Debug, Clone)]
pub struct Minimal {
    /// The fewest mutations, each at its threshold.
    pub mutations: Vec<Mutation>,
    /// The base with those mutations: what the report's diff is taken against.
    pub knob_repro: Scenario,
    /// The final repro: fewer rows and features, schedule cut.
    pub repro: Scenario,
    /// The repro's outcome.
    pub outcome: Outcome,
    /// Flip thresholds of the numeric knobs.
    pub thresholds: Vec<Threshold>,
    /// Rows before and after delta debugging, if it applied.
    pub rows: Option<(usize, usize)>,
    /// Features before and after delta debugging, if it applied.
    pub features: Option<(usize, usize)>,
    /// Whether delta debugging ran to the end (the row set is 1-minimal).
    pub one_minimal: bool,
    /// Runs spent minimizing.
    pub runs: usize,
}

impl Minimal {
    /// The reductions beyond knob changes, in words for the report.
    pub fn reductions(&self) -> Vec<String> {
        let mut out = Vec::new();
        if let Some((a, b)) = self.rows {
            let how = if self.one_minimal { " (1-minimal: removing any one un-flips it)" } else { " (time ran out before 1-minimality)" };
            out.push(format!("data rows: {a} → {b}{how}"));
        }
        if let Some((a, b)) = self.features {
            out.push(format!("input features: {a} → {b}"));
        }
        if let Some(m) = self.repro.train.max_steps.filter(|_| self.repro.train.max_steps != self.knob_repro.train.max_steps) {
            out.push(format!("schedule cut to {} epoch(s), {m} step(s): the first non-finite step", self.repro.train.epochs));
        }
        out
    }
}

/// Runs candidates against a target, counting runs and respecting a deadline.
pub struct Minimizer<'a> {
    base: &'a Scenario,
    target: Target,
    deadline: Option<Instant>,
    /// Runs made so far.
    pub runs: usize,
}

impl<'a> Minimizer<'a> {
    /// A minimizer for findings on `base`; with a deadline, it stops refining when time is up.
    pub fn new(base: &'a Scenario, target: Target, deadline: Option<Instant>) -> Self {
        Minimizer { base, target, deadline, runs: 0 }
    }

    fn out_of_time(&self) -> bool {
        self.deadline.is_some_and(|d| Instant::now() >= d)
    }

    /// Runs a scenario; `Some(outcome)` if it hits the target.
    pub fn flips(&mut self, s: &Scenario) -> Option<Outcome> {
        self.runs += 1;
        let o = run(s);
        self.target.hits(&o).then_some(o)
    }

    fn flips_with(&mut self, muts: &[Mutation]) -> Option<Outcome> {
        let s = mutate(self.base, muts)?;
        self.flips(&s)
    }

    /// Minimizes a flipping candidate; `None` if it does not flip to begin with.
    pub fn minimize(&mut self, candidate: &[Mutation]) -> Option<Minimal> {
        self.flips_with(candidate)?;
        // 1. Fewest knobs: drop each mutation the flip does not need (later ones override earlier).
        let mut muts = candidate.to_vec();
        let mut i = muts.len();
        while i > 0 {
            i -= 1;
            let mut without = muts.clone();
            without.remove(i);
            if self.flips_with(&without).is_some() {
                muts = without;
            }
        }
        // 2. Each numeric knob back towards its base, to its threshold. Thresholds are kept
        // with the index of their mutation, which no later step moves.
        let mut thresholds: Vec<(usize, Threshold)> = Vec::new();
        let mut i = 0;
        while i < muts.len() && !self.out_of_time() {
            // A knob whose base value still flips (given the others) is not needed after all.
            if let Some(b) = muts[i].base_value(self.base) {
                let mut at_base = muts.clone();
                at_base[i] = muts[i].with_value(b);
                if self.flips_with(&at_base).is_some() && muts.len() > 1 {
                    muts.remove(i);
                    continue;
                }
            }
            if let Some((m, t)) = self.threshold(&muts, i) {
                muts[i] = m;
                thresholds.extend(t.map(|t| (i, t)));
            }
            i += 1;
        }
        // Re-check each threshold with the other knobs at their final values; re-bisect any
        // knob whose "stays finite" value now flips (the knobs interact).
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
        let knob_repro = mutate(self.base, &muts)?;
        let mut outcome = self.flips(&knob_repro)?;
        let mut repro = knob_repro.clone();
        // 3. Fewest rows, then fewest features.
        let mut rows = None;
        let mut features = None;
        let mut one_minimal = false;
        if let Some((s, n, f)) = materialize(&repro) {
            if let Some(o) = self.flips(&s) {
                let (s, kept) = self.ddmin(&s, n, select_rows);
                let (s, kept_f) = self.ddmin(&s, f, select_features);
                (repro, outcome, rows, features) = (s, o, Some((n, kept)), Some((f, kept_f)));
                one_minimal = !self.out_of_time();
                outcome = self.flips(&repro).unwrap_or(outcome);
            }
        }
        // 4. Cut the schedule to the first non-finite step.
        if let Some(f) = outcome.first_nonfinite.clone() {
            let mut cut = repro.clone();
            cut.train.epochs = f.epoch.max(1);
            cut.train.max_steps = Some(f.step.max(1));
            if let Some(o) = self.flips(&cut) {
                (repro, outcome) = (cut, o);
            }
        }
        let thresholds = thresholds.into_iter().map(|(_, t)| t).collect();
        Some(Minimal { mutations: muts, knob_repro, repro, outcome, thresholds, rows, features, one_minimal, runs: self.runs })
    }

    /// Bisects mutation `i` between its base value and its value, keeping the flip.
    fn threshold(&mut self, muts: &[Mutation], i: usize) -> Option<(Mutation, Option<Threshold>)> {
        let m = &muts[i];
        let (v, scale) = m.numeric()?;
        // An injection has no base: its fraction shrinks towards a millionth. Switching clipping
        // or an epsilon on has no value to shrink towards: those are kept as they are.
        let b = match (m.base_value(self.base), m) {
            (Some(b), _) => b,
            (None, Mutation::Inject { .. }) => v * 1e-6,
            (None, _) => return None,
        };
        if b == v {
            return None;
        }
        let log = scale == Scale::Log && b > 0.0 && v > 0.0;
        let to = |x: f64| if log { x.ln() } else { x };
        let back = |x: f64| if log { x.exp() } else { x };
        let with = |x: f64| {
            let mut c = muts.to_vec();
            c[i] = m.with_value(back(x));
            c
        };
        let (mut lo, mut hi) = (to(b), to(v));
        if self.flips_with(&with(lo)).is_some() {
            return None; // the base value flips with the other knobs: nothing to bisect
        }
        let done = |lo: f64, hi: f64| match scale {
            Scale::Integer => (back(hi) - back(lo)).abs() <= 1.0,
            _ if log => (hi - lo).abs() < 4e-4,
            _ => (hi - lo).abs() <= 4e-4 * back(hi).abs().max(1e-12),
        };
        while !done(lo, hi) && !self.out_of_time() {
            let mid = if scale == Scale::Integer { to((back(lo) + back(hi)) / 2.0).round() } else { (lo + hi) / 2.0 };
            if self.flips_with(&with(mid)).is_some() {
                hi = mid;
            } else {
                lo = mid;
            }
        }
        // Report 3 significant digits, rounded away from the base so the rounded value still flips.
        let exact = back(hi);
        let rounded = round3_away(exact, back(lo));
        let flips_at = if scale != Scale::Integer && rounded != exact && self.flips_with(&with(to(rounded))).is_some() { rounded } else { exact };
        let threshold = m.base_value(self.base).map(|base| Threshold { knob: m.knob(), base, flips_at, stays_finite_at: back(lo) });
        Some((m.with_value(flips_at), threshold))
    }

    /// Delta debugging (Zeller's ddmin) over `n` items; returns the reduced scenario and the count kept.
    fn ddmin(&mut self, s: &Scenario, n: usize, select: impl Fn(&Scenario, &[usize]) -> Scenario) -> (Scenario, usize) {
        let mut keep: Vec<usize> = (0..n).collect();
        let mut granularity = 2;
        while keep.len() >= 2 && !self.out_of_time() {
            let chunk = keep.len().div_ceil(granularity);
            let parts: Vec<Vec<usize>> = keep.chunks(chunk).map(<[usize]>::to_vec).collect();
            let mut reduced = false;
            for (j, part) in parts.iter().enumerate() {
                // A subset alone, then its complement.
                let complement: Vec<usize> = parts.iter().enumerate().filter(|(k, _)| *k != j).flat_map(|(_, p)| p.clone()).collect();
                for (cand, coarser) in [(part.clone(), true), (complement, false)] {
                    if cand.is_empty() || cand.len() == keep.len() {
                        continue;
                    }
                    if self.flips(&select(s, &cand)).is_some() {
                        keep = cand;
                        granularity = if coarser { 2 } else { (granularity - 1).max(2) };
                        reduced = true;
                        break;
                    }
                }
                if reduced {
                    break;
                }
            }
            if !reduced {
                if granularity >= keep.len() {
                    break;
                }
                granularity = (granularity * 2).min(keep.len());
            }
        }
        (select(s, &keep), keep.len())
    }
}

/// Rounds `x` to 3 significant digits, away from `toward_base`'s side.
pub fn round3_away(x: f64, toward_base: f64) -> f64 {
    if x == 0.0 || !x.is_finite() {
        return x;
    }
    let exp = x.abs().log10().floor() as i32 - 2;
    let q = x / 10f64.powi(exp);
    let r = if x > toward_base { q.ceil() } else { q.floor() };
    // Through decimal text, so 372e-4 becomes the double nearest 0.0372.
    format!("{r}e{exp}").parse().unwrap_or(x)
}

/// The scenario with its training rows written out as explicit values, with
/// the row and feature counts; `None` where rows cannot be cut without changing
/// what the scenario means (validation splits, injections, CSV).
pub fn materialize(s: &Scenario) -> Option<(Scenario, usize, usize)> {
    let d = &s.data;
    if d.validation.is_some() || !d.inject.is_empty() || matches!(d.inputs, InputSpec::Csv { .. }) {
        return None;
    }
    let built = data::build(&Scenario { data: DataSpec { preprocess: vec![], ..d.clone() }, ..s.clone() }).ok()?;
    let split = &built.folds.first()?.train;
    let mut m = s.clone();
    m.data.n = None;
    m.data.features = Some(built.shape.features);
    m.data.scale = vec![];
    m.data.scale_groups = vec![];
    m.data.target_scale = 1.0;
    m.data.inputs = InputSpec::Values { rows: (0..split.x.rows).map(|r| split.x.row(r).to_vec()).collect() };
    m.data.targets = Some(TargetSpec::Values { values: (0..split.y.rows).map(|r| TargetRow::Many(split.y.row(r).to_vec())).collect() });
    m.train.batch_size = m.train.batch_size.or(Some(split.x.rows));
    Some((m, split.x.rows, built.shape.features))
}

fn select_rows(s: &Scenario, keep: &[usize]) -> Scenario {
    let mut m = s.clone();
    if let InputSpec::Values { rows } = &mut m.data.inputs {
        *rows = keep.iter().map(|&r| rows[r].clone()).collect();
    }
    if let Some(TargetSpec::Values { values }) = &mut m.data.targets {
        *values = keep.iter().map(|&r| values[r].clone()).collect();
    }
    m.train.batch_size = m.train.batch_size.map(|b| b.min(keep.len()));
    m
}

fn select_features(s: &Scenario, keep: &[usize]) -> Scenario {
    let mut m = s.clone();
    let f = m.data.features.unwrap_or(1);
    if let InputSpec::Values { rows } = &mut m.data.inputs {
        for row in rows.iter_mut() {
            *row = row.iter().enumerate().filter(|(i, _)| keep.contains(&(i % f))).map(|(_, v)| *v).collect();
        }
    }
    m.data.features = Some(keep.len());
    m
}

#[cfg(test)]
mod tests;
