//! Checks of values that parse but cannot train, run before any tensor is
//! allocated (the memory estimate is in `memory`).
//!
//! Every number in a scenario has a stated domain (see `scenarios/README.md`),
//! checked here: a NaN learning rate or an infinite init bound can only
//! produce a false finding, and non-finite values enter a run only through
//! explicit data or `[[data.inject]]`, never by accident. Each problem names
//! its dotted key (`optimizer.lr`, `data.preprocess.1.min`), so the loader can
//! point at the line that holds it. The `[data]` table is checked in `data`,
//! `[expect]` and `[search]` in `tables`, mixed precision and the schedule in `amp`.

// `!(x > 0.0)` is deliberate throughout: it rejects NaN, which `x <= 0.0` would let through.
#![allow(clippy::neg_cmp_op_on_partial_ord)]

use super::*;
use crate::ops::loss::{reads_indices, reads_own_targets};

mod amp;
mod data;
mod tables;

/// One thing wrong with a scenario.
#[derive(Debug, Clone, PartialEq)]
pub struct Problem {
    /// Dotted key, e.g. `train.batch_size`.
    pub key: String,
    /// What is wrong and what is accepted.
    pub message: String,
}

/// Most characters in a scenario name (it becomes part of a directory name).
pub const MAX_NAME_CHARS: usize = 100;

/// Most micro-batches `train.accumulate` sums.
pub const MAX_ACCUMULATE: usize = 1 << 16;

/// Largest `train.memory_limit_mb` accepted: 1 TiB.
pub const MAX_MEMORY_LIMIT_MB: u64 = 1 << 20;

fn problem(key: impl Into<String>, message: impl Into<String>) -> Problem {
    Problem { key: key.into(), message: message.into() }
}

/// Every problem found, in file order; empty means the scenario can run.
pub fn validate(s: &Scenario) -> Vec<Problem> {
    let mut out = Vec::new();
    name(&s.name, &mut out);
    data::data(&s.data, &mut out);
    // Each field's domain first: a bad `stride` is named by its own key before the plan's shape errors.
    // A layer's own f32 precision cannot hold where every parameter is stored in half.
    let half = s.train.precision == Precision::F32 && matches!(s.train.dtype, DTypeName::F16 | DTypeName::Bf16);
    model(&s.model, half, &mut out);
    // Only for an expression: a named kind's `precision` is refused by `Loss::check` already.
    if let (Some(p), true, LossKind::Expr) = (s.loss.precision, half, s.loss.kind) {
        out.push(problem("loss.precision", format!("`precision = \"{}\"` keeps the loss out of autocast, and here there is none (train.dtype is f16 or bf16): use train.precision = \"amp_f16\" or \"amp_bf16\" with train.dtype = \"f32\", or leave it out", p.name())));
    }
    // A code model's shapes are known only once it is built (`run::code`).
    let plan = input_shape(&s.data).filter(|_| s.model.code.is_none()).map(|input| plan(&s.model, input));
    match &plan {
        Some(Err((k, m))) => out.push(problem(format!("model.{k}"), m.clone())),
        Some(Ok(p)) => {
            if let Some(t) = target_width(&s.data) {
                if let Some(m) = p.target_mismatch(t).filter(|_| !reads_own_targets(&s.loss, p, t)) {
                    out.push(problem("model.layers", m));
                }
                loss_expr(s, p, t, &mut out);
                named_loss(s, p, t, &mut out);
            }
        }
        None => {}
    }
    // Before the loss's own checks: without the model's loss, its kind is left unset.
    if let (Some(o), None) = (&s.loss.from_model, &s.model.onnx) {
        out.push(problem("loss.from_model", format!("reads the loss `{o}` from an imported model: set `[model] onnx`")));
    }
    let indices = plan.as_ref().and_then(|p| p.as_ref().ok()).zip(target_width(&s.data)).map(|(p, t)| reads_indices(&s.loss, p, t));
    loss(&s.loss, target_width(&s.data), indices, &mut out);
    optimizer(&s.optimizer, &mut out);
    train(&s.train, &mut out);
    if let Some(search) = &s.search {
        tables::search(search, &mut out);
    }
    if let Some(e) = &s.expect {
        tables::expect(e, plan.as_ref().and_then(|p| p.as_ref().ok()), s, &mut out);
    }
    out
}

fn name(name: &str, out: &mut Vec<Problem>) {
    if name.trim().is_empty() {
        out.push(problem("name", "must not be empty"));
    } else if name.chars().any(char::is_control) {
        out.push(problem("name", "must be printable: it has a control character"));
    } else if name.chars().count() > MAX_NAME_CHARS {
        out.push(problem("name", format!("is {} characters long; at most {MAX_NAME_CHARS} (it names report directories)", name.chars().count())));
    }
}

/// A finite number.
fn finite(out: &mut Vec<Problem>, key: &str, v: f64) {
    if !v.is_finite() {
        out.push(problem(key, format!("must be a finite number, got {v}")));
    }
}

/// A finite number > 0.
fn positive(out: &mut Vec<Problem>, key: &str, v: f64) {
    if !(v > 0.0 && v.is_finite()) {
        out.push(problem(key, format!("must be a positive finite number, got {v}")));
    }
}

/// A finite number ≥ 0.
fn non_negative(out: &mut Vec<Problem>, key: &str, v: f64) {
    if !(v >= 0.0 && v.is_finite()) {
        out.push(problem(key, format!("must be a finite number ≥ 0, got {v}")));
    }
}

/// A number in [0, 1).
fn unit_interval(out: &mut Vec<Problem>, key: &str, v: f64) {
    if !(0.0..1.0).contains(&v) {
        out.push(problem(key, format!("must be in [0, 1), got {v}")));
    }
}

fn init(key: &str, i: &Init, out: &mut Vec<Problem>) {
    // The keys are `init.std`, ...: `key` ends in `init`.
    let base = key.strip_suffix("init").unwrap_or(key);
    out.extend(crate::ops::init_problems(Some(i)).into_iter().map(|(k, m)| problem(format!("{base}{k}"), m)));
}

fn model(m: &ModelSpec, half: bool, out: &mut Vec<Problem>) {
    finite(out, "model.init_scale", m.init_scale);
    if let Some(code) = &m.code {
        if !m.layers.is_empty() {
            out.push(problem("model.layers", format!("the model is the Rust code `{}`: leave `layers` out (its layers are in the code)", code.name)));
        }
        if code.name.trim().is_empty() || code.name.chars().any(char::is_control) || code.name.chars().count() > MAX_NAME_CHARS {
            out.push(problem("model.code", format!("must be a printable name of 1 to {MAX_NAME_CHARS} characters")));
        }
    }
    if let Some(onnx) = &m.onnx {
        if !m.layers.is_empty() || m.code.is_some() {
            out.push(problem("model.onnx", format!("the model is the ONNX graph `{}`: leave `layers` and `code` out", onnx.path)));
        }
        if onnx.compiled.is_none() {
            out.push(problem("model.onnx", format!("the ONNX model `{}` is read when the scenario is loaded from its file", onnx.path)));
        }
    }
    // An imported model starts at its file's values unless `[model] init` redraws them.
    if !(m.init == Init::File && m.onnx.is_some()) {
        init("model.init", &m.init, out);
    }
    layers("model.layers", m.stack(), (0, half), out);
}

/// Each layer's numbers, residual blocks' layers included (deeper than [`MAX_NESTING`] is the
/// plan's error), and a layer's own precision, which half storage (`half`) cannot keep.
fn layers(key: &str, ls: &[Layer], (depth, half): (usize, bool), out: &mut Vec<Problem>) {
    for (i, layer) in ls.iter().enumerate() {
        let k = |field: &str| format!("{key}.{i}.{field}");
        out.extend(layer.op().check().into_iter().map(|(field, m)| problem(k(field), m)));
        if let (Some(p), true) = (layer.tag().1, half) {
            let message = format!(
                "`precision = \"{}\"` keeps a layer out of autocast, and here every parameter is stored in train.dtype (f16 or bf16, no autocast): use train.dtype = \"f32\" with train.precision = \"amp_f16\" or \"amp_bf16\", or leave it out",
                p.name()
            );
            out.push(problem(k("precision"), message));
        }
        if let Layer::Residual(r) = layer.untagged() {
            if depth < MAX_NESTING {
                layers(&k("layers"), &r.layers, (depth + 1, half), out);
            }
        }
    }
}

/// The loss's own checks, and whether its targets fit it; `indices` says whether a
/// `cross_entropy` reads class indices (when the plan and the targets are known).
fn loss(l: &LossSpec, targets: Option<usize>, indices: Option<bool>, out: &mut Vec<Problem>) {
    use crate::ops::Op;
    out.extend(crate::ops::loss::Loss(l.clone()).check().into_iter().map(|(k, m)| problem(format!("loss.{k}"), m)));
    let one_hot = indices != Some(true);
    if matches!(l.kind, LossKind::CrossEntropy | LossKind::NaiveCrossEntropy) && one_hot && targets.is_some_and(|t| t < 2) {
        out.push(problem("loss.kind", "cross-entropy needs one-hot targets with k ≥ 2 columns (targets = { kind = \"classes\", k = ... }), or for `cross_entropy` one class index per row (targets = { kind = \"labels\", k = ... })"));
    }
    if l.kind == LossKind::CrossEntropy && l.ignore_index.is_some() && indices == Some(false) {
        out.push(problem("loss.ignore_index", "`ignore_index` applies to class-index targets (one column: targets = { kind = \"labels\", k = ... }), and these targets are one-hot rows"));
    }
}

/// A named loss's shapes: `kl_div`, `focal` and `info_nce` read a `(batch, n)` prediction
/// against `n` target columns (`info_nce` multiplies `p @ y.T`).
fn named_loss(s: &Scenario, p: &crate::scenario::Plan, targets: usize, out: &mut Vec<Problem>) {
    if s.loss.kind == LossKind::Ctc {
        return ctc(s, p, out);
    }
    if !matches!(s.loss.kind, LossKind::KlDiv | LossKind::KlDivLogTarget | LossKind::Focal | LossKind::InfoNce) {
        return;
    }
    if p.out != crate::scenario::Shape::Flat(targets) {
        out.push(problem("loss.kind", format!("`{}` reads a prediction of (batch, {targets}), as many columns as the targets, and the model gives {:?}", s.loss.kind.name(), p.out)));
    }
}

/// `ctc` reads `(batch, steps, classes)` log-probabilities, in f32 or f64 (PyTorch's CPU kernel
/// has no half types; under autocast the loss runs in f32), as many steps as the padding mask's
/// positions when `data.padding` gives the input lengths.
fn ctc(s: &Scenario, p: &crate::scenario::Plan, out: &mut Vec<Problem>) {
    if let (Some(_), Some(seq), crate::scenario::Shape::Seq { len, .. }) = (&s.data.padding, s.data.seq_len, p.out) {
        if len != seq {
            out.push(problem(
                "data.padding",
                format!("`ctc` reads each row's input length from the padding mask ({seq} positions), and the model gives {len} steps: it must keep the sequence's length"),
            ));
        }
    }
    if !matches!(p.out, crate::scenario::Shape::Seq { width, .. } if width >= 2) {
        out.push(problem(
            "loss.kind",
            format!("`ctc` reads log-probabilities (batch, steps, classes): end the model in a sequence of class scores and `log_softmax(x, dim=-1)`; the model gives {}", p.out.describe()),
        ));
    }
    if s.train.precision == Precision::F32 && matches!(s.train.dtype, DTypeName::F16 | DTypeName::Bf16) {
        out.push(problem("train.dtype", "`ctc` runs in f32 or f64: PyTorch's CPU ctc_loss is not implemented for half types (autocast, `precision = \"amp_f16\"`, runs it in f32)"));
    }
}

/// A loss expression's shapes: it reads `p` (the model's output), `y` (`targets` columns) and,
/// with padding, `mask`, and must give one number.
fn loss_expr(s: &Scenario, p: &crate::scenario::Plan, targets: usize, out: &mut Vec<Problem>) {
    use crate::ops::expr::check::Dim;
    if s.loss.kind != LossKind::Expr || s.loss.expr.is_none() {
        return;
    }
    let mask = s.data.padding.as_ref().map(|_| vec![Dim::Batch, Dim::N(s.data.seq_len.unwrap_or(1))]);
    if let Err(m) = crate::ops::loss::expr::checked(&s.loss, crate::ops::expr::dims_of(p.out), vec![Dim::Batch, Dim::N(targets)], mask) {
        out.push(problem("loss.expr", m));
    }
}

fn optimizer(o: &OptimizerSpec, out: &mut Vec<Problem>) {
    positive(out, "optimizer.lr", o.lr);
    unit_interval(out, "optimizer.momentum", o.momentum);
    unit_interval(out, "optimizer.beta1", o.beta1);
    unit_interval(out, "optimizer.beta2", o.beta2);
    unit_interval(out, "optimizer.alpha", o.alpha);
    non_negative(out, "optimizer.eps", o.eps);
    non_negative(out, "optimizer.weight_decay", o.weight_decay);
    if o.nesterov && (o.kind != OptimizerKind::Sgd || o.momentum == 0.0) {
        out.push(problem("optimizer.nesterov", "needs kind = \"sgd\" and momentum > 0"));
    }
    if let Some(c) = o.clip_grad_norm {
        positive(out, "optimizer.clip_grad_norm", c);
    }
    if let Some(c) = o.clip_grad_value {
        positive(out, "optimizer.clip_grad_value", c);
    }
}

fn train(t: &TrainSpec, out: &mut Vec<Problem>) {
    if t.epochs == 0 {
        out.push(problem("train.epochs", "must be at least 1"));
    }
    if t.batch_size == Some(0) {
        out.push(problem("train.batch_size", "must be at least 1 (leave it out for full batch)"));
    }
    if t.max_steps == Some(0) {
        out.push(problem("train.max_steps", "must be at least 1"));
    }
    if let Err(m) = DeviceName::parse(&t.device) {
        out.push(problem("train.device", m));
    }
    if !(1..=MAX_MEMORY_LIMIT_MB).contains(&t.memory_limit_mb) {
        out.push(problem("train.memory_limit_mb", format!("must be between 1 and {MAX_MEMORY_LIMIT_MB} (1 TiB), got {}", t.memory_limit_mb)));
    }
    if !(2..=1_000_000).contains(&t.stagnation.window) {
        out.push(problem("train.stagnation.window", format!("must be between 2 and 1000000 points, got {}", t.stagnation.window)));
    }
    finite(out, "train.stagnation.rel_tol", t.stagnation.rel_tol);
    positive(out, "train.divergence.loss_decades", t.divergence.loss_decades);
    if !(t.divergence.param_growth > 1.0 && t.divergence.param_growth.is_finite()) {
        out.push(problem("train.divergence.param_growth", format!("must be a finite factor over 1, got {}", t.divergence.param_growth)));
    }
    non_negative(out, "train.stagnation.grad_norm_floor", t.stagnation.grad_norm_floor);
    if !(1..=MAX_ACCUMULATE).contains(&t.accumulate) {
        out.push(problem("train.accumulate", format!("must be between 1 and {MAX_ACCUMULATE} micro-batches, got {}", t.accumulate)));
    }
    amp::precision(t, out);
    if let Some(ls) = &t.loss_scale {
        amp::loss_scale(ls, t.dtype, out);
    }
    if let Some(sch) = &t.schedule {
        amp::schedule(sch, out);
    }
}

#[cfg(test)]
mod tests;
