//! Shrinking the data: the training rows written out as explicit values and
//! delta-debugged (Zeller's ddmin) to a 1-minimal set, and the schedule cut to
//! the first non-finite step. Features are never dropped: that would change
//! the model's input width, and so the model.
//!
//! [`rebuild`] makes a trigger's repro again from what a campaign stores (its
//! mutations and the kept row indices), so reports need no saved scenarios.

use serde::{Deserialize, Serialize};

use super::super::mutation::{mutate, Mutation};
use crate::run::{data, run_with, Outcome, RunOptions};
use crate::scenario::{DataSpec, InputSpec, Scenario, TargetRow, TargetSpec};

/// Which training rows a repro keeps, of how many.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RowCut {
    /// Rows of the full data.
    pub total: usize,
    /// Indices of the rows kept, in order.
    pub kept: Vec<usize>,
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

/// Delta debugging over `n` items with a test that says whether a subset still
/// flips; returns the kept indices and whether it ran to the end (1-minimal).
pub(super) fn ddmin(n: usize, flips: &mut dyn FnMut(&[usize]) -> bool, out_of_time: &dyn Fn() -> bool) -> (Vec<usize>, bool) {
    let mut keep: Vec<usize> = (0..n).collect();
    let mut granularity = 2;
    while keep.len() >= 2 {
        if out_of_time() {
            return (keep, false);
        }
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
                if flips(&cand) {
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
        Some(cut) => select_rows(&materialize(&knob_repro)?.0, &cut.kept),
        None => knob_repro.clone(),
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
