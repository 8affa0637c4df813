//! Checks of the `[search]` and `[expect]` tables. An expectation that no run
//! can meet (a data-phase failure in an update tensor, a tensor the model does
//! not have) is rejected when the file is read, not reported as a failed check.

#![allow(clippy::neg_cmp_op_on_partial_ord)]

use super::{problem, Problem};
use crate::scenario::*;

pub(super) fn search(s: &SearchSpec, out: &mut Vec<Problem>) {
    if s.knobs.as_ref().is_some_and(Vec::is_empty) {
        out.push(problem("search.knobs", "is empty, so nothing could move: name at least one knob, or leave `knobs` out to move every knob"));
    }
    if let Some(d) = s.decades {
        if !(d.is_finite() && d > 0.0 && d <= 30.0) {
            out.push(problem("search.decades", format!("must be in (0, 30], got {d}")));
        }
    }
    let ranges =
        [("search.lr", s.lr), ("search.init_scale", s.init_scale), ("search.input_scale", s.input_scale), ("search.target_scale", s.target_scale), ("search.inject_fraction", s.inject_fraction)];
    for (key, r) in ranges {
        if let Some([a, b]) = r {
            if !(a.is_finite() && b.is_finite() && a > 0.0 && a < b) {
                out.push(problem(key, format!("needs finite 0 < low < high, got [{a}, {b}]")));
            }
        }
    }
    if s.inject_fraction.is_some_and(|[_, b]| b > 1.0) {
        out.push(problem("search.inject_fraction", "a fraction cannot exceed 1"));
    }
    for (key, r) in [("search.batch_size", s.batch_size), ("search.epochs", s.epochs)] {
        if let Some([a, b]) = r {
            if !(1 <= a && a <= b) {
                out.push(problem(key, format!("needs 1 ≤ low ≤ high, got [{a}, {b}]")));
            }
        }
    }
    if s.max_mutations.is_some_and(|m| !(1..=16).contains(&m)) {
        out.push(problem("search.max_mutations", "must be between 1 and 16"));
    }
}

pub(super) fn expect(e: &Expect, plan: Option<&Plan>, s: &Scenario, out: &mut Vec<Problem>) {
    for (k, v) in &e.min_margin {
        if !(v.is_finite() && *v > 0.0) {
            out.push(problem("expect.min_margin", format!("the margin of `{k}` must be a positive finite number, got {v}")));
        }
        if !k.has_margin() {
            out.push(problem("expect.min_margin", format!("`{k}` is not a continuous knob, so it has no margin: name a numeric knob such as `optimizer.lr`")));
        }
    }
    if let Some(f) = &e.max_failure_rate {
        if !(1..=100_000).contains(&f.seeds) {
            out.push(problem("expect.max_failure_rate", format!("`seeds` must be between 1 and 100000, got {}", f.seeds)));
        }
        if !(0.0..=1.0).contains(&f.rate) {
            out.push(problem("expect.max_failure_rate", format!("`rate` must be in [0, 1], got {}", f.rate)));
        }
        if e.outcome != ExpectedOutcome::Finite {
            out.push(problem("expect.max_failure_rate", "a failure rate bounds a finite run: it applies to `outcome = \"finite\"`"));
        }
    }
    if e.outcome == ExpectedOutcome::Finite {
        if e.phase.is_some() || e.tensor.is_some() || e.within_steps.is_some() {
            out.push(problem("expect.outcome", "`phase`, `tensor` and `within_steps` only apply to `outcome = \"nonfinite\"`"));
        }
        return;
    }
    if !e.min_margin.is_empty() {
        out.push(problem("expect.min_margin", "margins are distances from a finite run: `min_margin` applies to `outcome = \"finite\"`"));
    }
    if e.outcome == ExpectedOutcome::Diverges {
        let site = |p: Phase, t: &TensorId| matches!((p, t), (Phase::Loss, TensorId::Loss) | (Phase::Update, TensorId::Parameters));
        if e.phase.is_some_and(|p| !matches!(p, Phase::Loss | Phase::Update)) || e.tensor.as_ref().is_some_and(|t| !matches!(t, TensorId::Loss | TensorId::Parameters)) {
            out.push(problem("expect.tensor", "a divergence is in the `loss` (phase `loss`) or the `parameters` (phase `update`)"));
        } else if let (Some(p), Some(t)) = (e.phase, e.tensor.as_ref()) {
            if !site(p, t) {
                out.push(problem("expect.tensor", format!("a divergence of the `{t}` is not in phase `{p}`")));
            }
        }
        return;
    }
    if e.within_steps == Some(0) && e.phase.is_some_and(|p| p != Phase::Data) {
        out.push(problem("expect.within_steps", format!("0 steps means the data itself (phase `data`), but `phase` is `{}`", e.phase.map_or("", |p| p.name()))));
    }
    let Some(tensor) = &e.tensor else { return };
    // A code model names its own tensors (`Watch::check`, its parameters): any name may fit.
    if let Some(p) = e.phase.filter(|p| s.model.code.is_none() && !fits(*p, tensor)) {
        out.push(problem("expect.tensor", format!("`{tensor}` is not a tensor of the `{p}` phase ({})", phase_names(p))));
        return;
    }
    if let Some(plan) = plan {
        let mut names = TensorId::all_of(plan, s.data.validation.is_some());
        if s.train.loss_scale.as_ref().is_some_and(|l| l.enabled) {
            names.push(TensorId::LossScale);
        }
        if !names.contains(tensor) {
            let shown: Vec<String> = names.iter().map(TensorId::to_string).take(12).collect();
            let more = if names.len() > 12 { ", ..." } else { "" };
            out.push(problem("expect.tensor", format!("`{tensor}` is not a tensor of this model; it has {}{more}", shown.join(", "))));
        }
    }
}

/// Whether a tensor can belong to a phase, for a layer stack (whose nodes and parameters are all
/// under `layers.`).
fn fits(p: Phase, t: &TensorId) -> bool {
    let stack = |name: &str| name.starts_with("layers.");
    match p {
        Phase::Data => matches!(t, TensorId::Data(..)),
        Phase::Forward => matches!(t, TensorId::Output(n) if stack(n)),
        Phase::Loss => *t == TensorId::Loss,
        Phase::Backward => matches!(t, TensorId::ParamGrad(n) | TensorId::OutputGrad(n) if stack(n)),
        Phase::Update => matches!(t, TensorId::LossScale) || matches!(t, TensorId::Param(n) | TensorId::State { param: n, .. } if stack(n)),
        Phase::Validation => matches!(t, TensorId::Validation(_)),
    }
}

fn phase_names(p: Phase) -> &'static str {
    match p {
        Phase::Data => "`data.train.inputs`, `data.validation.targets`, ...",
        Phase::Forward => "layer outputs such as `layers.0.linear.output`",
        Phase::Loss => "only `loss`",
        Phase::Backward => "gradients such as `layers.0.linear.weight.grad`",
        Phase::Update => "parameters such as `layers.0.linear.weight`, optimizer state such as `optim.layers.0.linear.weight.exp_avg_sq`, and `loss_scale` (a scale collapse)",
        Phase::Validation => "`validation.loss` and `validation.layers.N.TYPE.output`",
    }
}
