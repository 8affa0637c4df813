//! Checks of `train.precision`, `[train.loss_scale]` and `[train.schedule]`.

#![allow(clippy::neg_cmp_op_on_partial_ord)]

use super::{non_negative, positive, problem, unit_interval, Problem};
use crate::scenario::{DTypeName, Decay, LossScaleSpec, Named, ScheduleSpec, TrainSpec};

/// Autocast keeps f32 master weights: `dtype` must be f32.
pub(super) fn precision(t: &TrainSpec, out: &mut Vec<Problem>) {
    if t.precision.low().is_some() && t.dtype != DTypeName::F32 {
        let msg = format!(
            "`{}` keeps the parameters and optimizer state in f32 and autocasts the matmuls; it needs train.dtype = \"f32\", got \"{}\" (for pure low precision, set only dtype)",
            t.precision.name(),
            t.dtype.name()
        );
        out.push(problem("train.precision", msg));
    }
}

/// The scaler's factors, and that it unscales f32 gradients.
///
/// `torch.amp.GradScaler.__init__` raises "The growth factor must be > 1.0." and "The backoff
/// factor must be < 1.0."; nanhunt is stricter where PyTorch would run a scaler that cannot
/// work: an infinite growth factor, a backoff of 0 or below, and a first scale that is not a
/// positive finite f32 (PyTorch stores `init_scale` in a float32 tensor, so 1e40 is inf and
/// every step is skipped; 1e-50 is 0).
pub(super) fn loss_scale(ls: &LossScaleSpec, dtype: DTypeName, out: &mut Vec<Problem>) {
    let key = |k: &str| format!("train.loss_scale.{k}");
    let f32_scale = ls.init as f32;
    if !(f32_scale > 0.0 && f32_scale.is_finite()) {
        let range = format!("at most {:e}, at least {:e}", f32::MAX, f32::from_bits(1));
        out.push(problem(key("init"), format!("must be a positive scale that is finite as an f32 (GradScaler keeps its scale in float32: {range}), got {}", ls.init)));
    }
    if !(ls.growth_factor > 1.0 && ls.growth_factor.is_finite()) {
        out.push(problem(key("growth_factor"), format!("must be a finite factor over 1 (GradScaler: \"The growth factor must be > 1.0.\"), got {}", ls.growth_factor)));
    }
    if !(ls.backoff_factor > 0.0 && ls.backoff_factor < 1.0) {
        out.push(problem(key("backoff_factor"), format!("must be in (0, 1) (GradScaler: \"The backoff factor must be < 1.0.\"; nanhunt also refuses 0 and below), got {}", ls.backoff_factor)));
    }
    if !(1..=1_000_000_000).contains(&ls.growth_interval) {
        out.push(problem(key("growth_interval"), format!("must be between 1 and 1e9 steps, got {}", ls.growth_interval)));
    }
    if let Some(m) = ls.min_scale {
        non_negative(out, &key("min_scale"), m);
        if m > ls.init {
            out.push(problem(key("min_scale"), format!("{m} is above the first scale `init` = {}: the scale would be below its floor before the first step", ls.init)));
        }
    }
    if !(1..=1_000_000).contains(&ls.collapse_window) {
        out.push(problem(key("collapse_window"), format!("must be between 1 and 1000000 steps, got {}", ls.collapse_window)));
    }
    unit_interval(out, &key("max_skip_fraction"), ls.max_skip_fraction);
    if matches!(dtype, DTypeName::F16 | DTypeName::Bf16) && ls.enabled {
        // torch.amp.GradScaler.unscale_ raises "Attempting to unscale FP16 gradients."
        out.push(problem("train.loss_scale", format!("the scaler unscales f32 gradients (PyTorch refuses to unscale {} ones): use precision = \"amp_f16\" with dtype = \"f32\"", dtype.name())));
    }
}

/// Each decay's own settings, and only those.
pub(super) fn schedule(sch: &ScheduleSpec, out: &mut Vec<Problem>) {
    let key = |k: &str| format!("train.schedule.{k}");
    if !(0.0..=1.0).contains(&sch.warmup_start_factor) {
        out.push(problem(key("warmup_start_factor"), format!("must be in [0, 1], got {}", sch.warmup_start_factor)));
    }
    non_negative(out, &key("eta_min"), sch.eta_min);
    if let Some(g) = sch.gamma {
        positive(out, &key("gamma"), g);
    }
    let needs = |out: &mut Vec<Problem>, name: &str, has: bool| {
        if !has {
            out.push(problem(key("decay"), format!("`{}` decay needs `{name}`", sch.decay.name())));
        }
    };
    match sch.decay {
        Decay::Step => {
            needs(out, "step_size", sch.step_size.is_some());
            needs(out, "gamma", sch.gamma.is_some());
        }
        Decay::Exponential => needs(out, "gamma", sch.gamma.is_some()),
        Decay::Cosine => needs(out, "decay_steps", sch.decay_steps.is_some()),
        Decay::Constant => {}
    }
    let only = |out: &mut Vec<Problem>, name: &str, set: bool, ok: bool, which: &str| {
        if set && !ok {
            out.push(problem(key(name), format!("only {which} takes `{name}`")));
        }
    };
    only(out, "step_size", sch.step_size.is_some(), sch.decay == Decay::Step, "decay = \"step\"");
    only(out, "gamma", sch.gamma.is_some(), matches!(sch.decay, Decay::Step | Decay::Exponential), "decay = \"step\" or \"exponential\"");
    only(out, "decay_steps", sch.decay_steps.is_some(), sch.decay == Decay::Cosine, "decay = \"cosine\"");
    only(out, "eta_min", sch.eta_min != 0.0, sch.decay == Decay::Cosine, "decay = \"cosine\"");
    for (name, v) in [("step_size", sch.step_size), ("decay_steps", sch.decay_steps)] {
        if v == Some(0) {
            out.push(problem(key(name), "must be at least 1 step"));
        }
    }
    if sch.warmup_steps > 1_000_000_000 {
        out.push(problem(key("warmup_steps"), format!("must be at most 1e9 steps, got {}", sch.warmup_steps)));
    }
}
