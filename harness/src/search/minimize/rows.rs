//! Shrinking the data: the training rows written out as explicit values and
//! cut by halving, then delta-debugged (Zeller's ddmin) towards a 1-minimal
//! set within a run budget ([`ROW_RUNS`]), and the schedule cut to the first
//! non-finite step. A cut that runs out of runs or time is kept as it is (it
//! still flips) and marked not minimized ([`RowCut::minimized`]). Features are
//! never dropped: that would change the model's input width, and so the model.
//!
//! [`rebuild`] makes a trigger's repro again from what a campaign stores (its
//! mutations and the kept row indices), so reports need no saved scenarios.

use serde::{Deserialize, Serialize};

use super::super::mutation::{mutate, Mutation};
use crate::run::{data, run_with, Outcome, RunOptions};
use crate::scenario::{DataSpec, InputSpec, Scenario, TargetRow, TargetSpec};

/// Most runs the row shrink of one trigger may make: halving 4096 rows down to one takes 24 at
/// most; what is left goes to finer cuts towards a 1-minimal set.
pub const ROW_RUNS: usize = 64;

/// Which training rows a repro keeps, of how many.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RowCut {
    /// Rows of the full data.
    pub total: usize,
    /// Indices of the rows kept, in order.
    pub kept: Vec<usize>,
    /// The cut is 1-minimal (removing any one kept row un-flips it); false when the row budget or
    /// the time ran out first (then `kept` may be every row, and the repro keeps the scenario's
    /// own data). Absent in records written before the budget (all 1-minimal then).
    #[serde(default = "yes", skip_serializing_if = "is_true")]
    pub minimized: bool,
}

fn yes() -> bool {
    true
}

fn is_true(b: &bool) -> bool {
    *b
}

/// The scenario with its training rows written out as explicit values, and
/// their count; `None` where rows cannot be cut without changing what the
/// scenario means (validation splits, injections, CSV).
pub fn materialize(s: &Scenario) -> Option<(Scenario, usize)> {
    let d = &s.data;
    if d.validation.is_some() || !d.inject.is_empty() || d.padding.is_some() || matches!(d.inputs, InputSpec::Csv { .. } | InputSpec::Tokens { .. }) {
        return None;
    }
    let built = data::build(&Scenario { data: DataSpec { preprocess: vec![], ..d.clone() }, ..s.clone() }).ok()?;
    let split = &built.folds.first()?.train;
    let mut m = s.clone();
    m.data.n = None;
    // Images take their width from `data.image`: `features` beside it would not load.
    m.data.features = m.data.image.is_none().then_some(built.shape.features);
    m.data.scale = vec![];
    m.data.scale_groups = vec![];
    m.data.target_scale = 1.0;
    m.data.inputs = InputSpec::Values { rows: (0..split.x.rows).map(|r| split.x.row(r).to_vec()).collect() };
    m.data.targets = Some(TargetSpec::Values { values: (0..split.y.rows).map(|r| TargetRow::Many(split.y.row(r).to_vec())).collect() });
    m.train.batch_size = m.train.batch_size.or(Some(split.x.rows));
    Some((m, split.x.rows))
}

/// The materialized scenario with only the rows `keep`.
pub(super) fn select_rows(s: &Scenario, keep: &[usize]) -> Scenario {
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

/// Shrinks `n` items with a test that says whether a subset still flips: halves first (the
/// first half alone, then the second), then, as delta debugging (Zeller's ddmin) does, tries finer
/// parts and their complements, until the set is 1-minimal, `runs` tests are spent (or fewer are
/// left than items kept, too few to reach 1-minimal) or `out_of_time`. Returns the kept indices
/// (they flip, or are all `n`) and whether they are 1-minimal.
pub(super) fn shrink_rows(n: usize, flips: &mut dyn FnMut(&[usize]) -> bool, out_of_time: &dyn Fn() -> bool, runs: usize) -> (Vec<usize>, bool) {
    let mut keep: Vec<usize> = (0..n).collect();
    let mut granularity = 2;
    let mut left = runs;
    while keep.len() >= 2 {
        // Past halving, a 1-minimal set needs at least one test per kept row: with fewer runs
        // left, finer cuts cannot get there, so they are not begun.
        if granularity > 2 && keep.len() > left {
            return (keep, false);
        }
        let chunk = keep.len().div_ceil(granularity);
        let parts: Vec<Vec<usize>> = keep.chunks(chunk).map(<[usize]>::to_vec).collect();
        // With two parts each one's complement is the other: tried once, as a part.
        let complements = parts.len() > 2;
        let mut reduced = false;
        'parts: for (j, part) in parts.iter().enumerate() {
            // A subset alone, then its complement.
            let complement: Vec<usize> = if complements { parts.iter().enumerate().filter(|(k, _)| *k != j).flat_map(|(_, p)| p.clone()).collect() } else { vec![] };
            for (cand, coarser) in [(part.clone(), true), (complement, false)] {
                if cand.is_empty() || cand.len() == keep.len() {
                    continue;
                }
                if left == 0 || out_of_time() {
                    return (keep, false);
                }
                left -= 1;
                if flips(&cand) {
                    keep = cand;
                    granularity = if coarser { 2 } else { (granularity - 1).max(2) };
                    reduced = true;
                    break 'parts;
                }
            }
        }
        if !reduced {
            if granularity >= keep.len() {
                break;
            }
            granularity = (granularity * 2).min(keep.len());
        }
    }
    (keep, true)
}

/// The scenario with its schedule cut to the step of `first` (an epoch count and a step limit).
pub(super) fn cut_schedule(s: &Scenario, o: &Outcome) -> Option<Scenario> {
    let f = o.failure_site()?;
    let mut cut = s.clone();
    cut.train.epochs = f.epoch.max(1);
    cut.train.max_steps = Some(f.step.max(1));
    Some(cut)
}

/// A trigger's repro as made: what a report shows.
#[derive(Debug, Clone, PartialEq)]
pub struct Built {
    /// The base with the trigger's mutations: what the report's diff is taken against.
    pub knob_repro: Scenario,
    /// The final repro: fewer rows, schedule cut.
    pub repro: Scenario,
    /// The repro's outcome.
    pub outcome: Outcome,
}

/// A trigger's repro made again from its mutations and kept rows (after a
/// resume, when the one made at minimization is gone), with runs limited by
/// `opts`: `None` if the mutations no longer apply.
pub fn rebuild(base: &Scenario, mutations: &[Mutation], rows: Option<&RowCut>, opts: &RunOptions) -> Option<Built> {
    let knob_repro = mutate(base, mutations)?;
    let mut repro = match rows {
        Some(cut) if cut.kept.len() < cut.total => select_rows(&materialize(&knob_repro)?.0, &cut.kept),
        // No cut, or every row kept (not minimized): the scenario's own data, as minimized.
        Some(_) | None => knob_repro.clone(),
    };
    let mut outcome = run_with(&repro, opts);
    if let Some(cut) = cut_schedule(&repro, &outcome) {
        let o = run_with(&cut, opts);
        if o.outcome == outcome.outcome && o.failure_site().is_some() {
            (repro, outcome) = (cut, o);
        }
    }
    Some(Built { knob_repro, repro, outcome })
}
