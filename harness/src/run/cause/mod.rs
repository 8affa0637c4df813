//! Why the first non-finite value appeared: the operation that produced it,
//! the facts about its inputs at that element and over the tensor, and a
//! diagnosis in plain words from rules over those facts.
//!
//! The runner calls these functions once, when it flags the first bad value,
//! with the tensors of that step at hand; nothing here runs on a healthy step.
//! Each rule is checked by a scenario that triggers it (`run/tests.rs`). When
//! the run has ended, a value that came after the run diverged (the trace shows
//! the weights or the loss growing decades first) is explained as that
//! divergence's end, with what drove it (`chain.rs`, which also holds a linear
//! model's stability bound). The losses of probabilities (`bce`, the naive
//! cross-entropy) are diagnosed as the compute dtype evaluates them
//! (`probability.rs`); a linear layer's parameter gradient that overflows from
//! finite factors, with the value before rounding (`backward.rs`).

use candle_core::Tensor;
use serde::{Deserialize, Serialize};

use crate::error::Result;
pub use crate::ops::diagnosis::Rule;
pub(crate) use crate::ops::diagnosis::{round, Limits};
use crate::ops::Facts;
use crate::scenario::{DTypeName, Layer, LossKind, LossSpec, OptimState, OptimizerKind, OptimizerSpec, Part, Reduction, TensorId};

mod backward;
pub(crate) mod chain;
mod probability;
mod product;

pub(crate) use backward::{backward, born, param_grad};

/// The diagnosis: which rule explains the value, the operation, and why, in words.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Cause {
    /// The rule that matched.
    pub rule: Rule,
    /// The operation that produced the value (`layers.1.exp`, `loss (bce)`, `adam update`, ...).
    pub op: String,
    /// The explanation, in plain words with the numbers behind it.
    pub reason: String,
    /// Facts about the operation's inputs.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub inputs: Vec<Operand>,
    /// When the value ends a divergence: how the run grew first, and what drove it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub chain: Option<Chain>,
    /// For a loss-scale collapse: the non-finite value its last skipped step hit, whose
    /// recurring overflow the scaler could not absorb (root causes key the collapse by it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub skipped: Option<Box<Skipped>>,
}

/// The first non-finite value of the last step a loss scaler skipped, and its diagnosis.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Skipped {
    /// Where it was.
    pub location: crate::run::Location,
    /// Its diagnosis, where a rule explains it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cause: Option<Cause>,
}

/// How the run diverged before its first non-finite value.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Chain {
    /// What drove the growth, in words (`lr 0.9`, `init scale 10 with lr 0.01`, ...).
    pub trigger: String,
    /// What grew: `weights` (the parameter norm) or `loss`.
    pub grew: String,
    /// Its growth per step over the (up to 3) steps before the failure.
    pub per_step: f64,
    /// The step by which it had grown two decades (the divergence).
    pub diverged_at: usize,
    /// The bad value's own diagnosis, where a rule explains it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub then: Option<Box<Cause>>,
}

impl Chain {
    /// The knob whose setting drove the divergence, as [`chain::chain`] words its trigger: the
    /// init scale, else the step size, which the learning rate sets (above its stability bound,
    /// simply large, or on a loss summed over the batch: plain SGD's step on a sum of n rows is
    /// lr·n on their mean, and the stability bound of a summed loss is the mean's over n, so a
    /// summed loss is the learning rate's mechanism, as the bound's own chain keys it). Root
    /// causes group a chain by it.
    pub fn driver(&self) -> &'static str {
        if self.trigger.starts_with("init scale") {
            "model.init_scale"
        } else {
            "optimizer.lr"
        }
    }
}

/// Facts about one input of the operation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Operand {
    /// What it is (`input`, `p`, `y`, `grad`, `exp_avg_sq`, ...).
    pub name: String,
    /// Its value at the bad element, where one corresponds.
    pub at: Option<f64>,
    /// Smallest value.
    pub min: f64,
    /// Largest value.
    pub max: f64,
    /// Smallest magnitude.
    pub min_abs: f64,
    /// Exact zeros.
    pub zeros: usize,
    /// Subnormal values in the compute dtype.
    pub subnormals: usize,
    /// ±Inf values.
    pub infinite: usize,
    /// NaN values.
    pub nan: usize,
}

impl Operand {
    /// The summary the registry's diagnosis rules read (`ops::Facts::read`).
    pub(crate) fn read(&self) -> crate::ops::Read {
        crate::ops::Read { infinite: self.infinite, nan: self.nan, min: self.min, max: self.max }
    }
}

/// Facts about a tensor, with its value at flat index `at`.
pub(crate) fn operand(name: &str, t: &Tensor, at: Option<usize>, d: DTypeName) -> Result<Operand> {
    let v = t.flatten_all()?.to_dtype(candle_core::DType::F64)?.to_vec1::<f64>()?;
    let finite = || v.iter().copied().filter(|x| x.is_finite());
    let min_normal = Limits::of(d).min_normal;
    Ok(Operand {
        name: name.to_string(),
        at: at.and_then(|i| v.get(i).copied()),
        min: finite().fold(f64::INFINITY, f64::min),
        max: finite().fold(f64::NEG_INFINITY, f64::max),
        min_abs: finite().map(f64::abs).fold(f64::INFINITY, f64::min),
        zeros: v.iter().filter(|x| **x == 0.0).count(),
        subnormals: v.iter().filter(|x| x.is_finite() && **x != 0.0 && x.abs() < min_normal).count(),
        infinite: v.iter().filter(|x| x.is_infinite()).count(),
        nan: v.iter().filter(|x| x.is_nan()).count(),
    })
}

pub(super) fn cause(rule: Rule, op: impl Into<String>, reason: String, inputs: Vec<Operand>) -> Cause {
    Cause { rule, op: op.into(), reason, inputs, chain: None, skipped: None }
}

/// The scenario's settings that the compute dtype cannot represent as meant: an optimizer or
/// loss epsilon that rounds to 0, and a clamp `c` whose `1 − c` rounds to 1.
pub fn precursors(s: &crate::Scenario) -> Vec<String> {
    let d = s.train.dtype;
    let dt: &str = d.into();
    let tiny = Limits::of(d).min_subnormal;
    let mut out = Vec::new();
    let mut zero = |key: &str, v: f64| {
        if v > 0.0 && round(v, d) == 0.0 {
            out.push(format!("{key} = {} rounds to 0 in {dt} (its smallest subnormal is {}): it no longer guards a division", crate::human(v), crate::human(tiny)));
        }
    };
    if s.optimizer.kind.takes_eps() {
        zero("optimizer.eps", s.optimizer.eps);
    }
    if let Some(e) = s.loss.epsilon {
        zero("loss.epsilon", e);
    }
    // A layer norm's eps is not here: PyTorch's kernel (and nanhunt's) applies it in f32.
    if let Some(c) = s.loss.clamp.filter(|c| *c > 0.0 && round(1.0 - c, d) == 1.0) {
        out.push(format!("loss.clamp = {}: 1 − {} rounds to 1 in {dt}, so probabilities of 1 are not clamped", crate::human(c), crate::human(c)));
    }
    out
}

/// The output of node `node` (the `part` of `layer` it computes) went non-finite in the forward
/// pass (in evaluation unless `training`); `input` is what it read, `others` what else it read
/// (an expression's named outputs), `params` the node's parameters (a linear layer's output is
/// computed exactly from them, `product.rs`); `amp`, under autocast, the low dtype and the
/// dtypes its inputs hold (an expression is explained node by node in their dtypes).
pub(crate) fn forward(
    node: &str,
    (layer, part): (&Layer, Part),
    (input, others, params): (&Tensor, &[&Tensor], &[Tensor]),
    index: usize,
    (d, amp): (DTypeName, Amp<'_>),
    training: bool,
) -> Result<Option<Cause>> {
    if let (Layer::Linear(_), [w, b]) = (layer, params) {
        if let Some(c) = product::linear_output(node, input, (w, b), index, d)? {
            return Ok(Some(c));
        }
    }
    let lim = Limits::of(d);
    let x = operand("input", input, Some(index), d)?;
    // An expression is explained node by node, naming the sub-expression (and a named output it reads).
    if let Layer::Expr(e) = layer {
        let found = explain_expr(e, &expr_inputs(e, input, others), None, (d, amp))?;
        return Ok(found.map(|(rule, reason)| cause(rule, node, reason, vec![x])));
    }
    let at = x.at.unwrap_or(f64::NAN);
    let found = layer.op().explain_forward(part, &Facts { x: at, grad: f64::NAN, dtype: d, lim, read: x.read(), index, dims: input.dims(), training });
    let found = found.or_else(|| (layer.op().autocast(part) == crate::ops::Autocast::Low).then(|| cast_down(input, &x, d)).flatten());
    Ok(found.map(|(rule, reason)| cause(rule, node, reason, vec![x])))
}

/// An expression layer's inputs by name: `x`, then the named outputs it reads (`others`, in
/// [`crate::ops::expr::Expr::reads`]'s order); none of them if `others` does not match its names.
pub(crate) fn expr_inputs<'t>(e: &crate::ops::expr::Expr, input: &'t Tensor, others: &[&'t Tensor]) -> Vec<(String, &'t Tensor)> {
    let reads = e.reads();
    let named = (reads.len() == others.len()).then(|| reads.into_iter().zip(others.iter().copied())).into_iter().flatten();
    std::iter::once(("x".to_string(), input)).chain(named).collect()
}

/// Under autocast, the low dtype and the dtypes a node's inputs hold (main input first).
pub(crate) type Amp<'a> = Option<(candle_core::DType, &'a [candle_core::DType])>;

/// Why expression layer `e` over `inputs` made a non-finite value (`upstream` None) or input
/// gradient, node by node: in `d`, or under autocast (`amp`) each node in its own dtype.
pub(crate) fn explain_expr(e: &crate::ops::expr::Expr, inputs: &[(String, &Tensor)], upstream: Option<&Tensor>, (d, amp): (DTypeName, Amp<'_>)) -> Result<crate::ops::Explained> {
    match amp {
        Some(a) => crate::ops::expr::diagnosis::explain_amp(&e.expr, &e.consts, inputs, upstream, a),
        None => crate::ops::expr::diagnosis::explain(&e.expr, &e.consts, inputs, upstream, d),
    }
}

/// Why loss expression `spec` over `inputs` made a non-finite value (`upstream` None) or input
/// gradient, node by node: in `d`, or under autocast (`amp`, unless its own precision is f32)
/// each node in its own dtype.
pub(crate) fn explain_loss_expr(spec: &LossSpec, inputs: &[(String, &Tensor)], upstream: Option<&Tensor>, (d, amp): (DTypeName, Amp<'_>)) -> Result<crate::ops::Explained> {
    let text = spec.expr.as_deref().unwrap_or("");
    match amp.filter(|_| spec.precision.is_none()) {
        Some(a) => crate::ops::expr::diagnosis::explain_amp(text, &spec.consts, inputs, upstream, a),
        None => crate::ops::expr::diagnosis::explain(text, &spec.consts, inputs, upstream, d),
    }
}

/// A loss expression's inputs by name: `p`, `y`, and the padding `mask` if the data is padded.
pub(crate) fn loss_inputs<'t>(p: &'t Tensor, y: &'t Tensor, mask: Option<&'t Tensor>) -> Vec<(String, &'t Tensor)> {
    [("p", Some(p)), ("y", Some(y)), ("mask", mask)].into_iter().filter_map(|(n, t)| Some((n.to_string(), t?))).collect()
}

/// An op autocast runs in the low dtype `d` read a finite input beyond `d`'s range (kept in f32
/// until the cast): the cast made it infinite, and the op carried it to its output (PyTorch
/// 2.15's CPU autocast does the same: a conv2d's input of 1e6 is inf in f16). `x` summarises it.
fn cast_down(input: &Tensor, x: &Operand, d: DTypeName) -> Option<(Rule, String)> {
    let max = Limits::of(d).max;
    let big = if x.max.abs() >= x.min.abs() { x.max } else { x.min };
    if x.infinite + x.nan > 0 || big.abs() <= max {
        return None;
    }
    let dt: &str = d.into();
    let v = input.flatten_all().ok()?.to_dtype(candle_core::DType::F64).ok()?.to_vec1::<f64>().ok()?;
    let (i, _) = v.iter().enumerate().find(|(_, e)| e.abs() > max)?;
    let at = crate::run::location::coords(i, input.dims());
    let over = v.iter().filter(|e| e.abs() > max).count();
    Some((
        Rule::Overflow,
        format!(
            "its input at {at:?} is {}, beyond {dt}'s largest value {} ({over} such input(s)): autocast casts the input to {dt} for this op, where it is infinite",
            crate::human(v[i]),
            crate::human(max)
        ),
    ))
}

/// The loss went non-finite. `p` and `y` are predictions and targets, `mask` the padding mask
/// (an expression loss reads it); `logits` is what the layer before the predictions read (the
/// sigmoid's input), if there is one.
/// Under autocast (`amp`: the low dtype and the dtypes `p`, `y` and `mask` hold) an expression
/// computed each node in its op's dtype (`Loss::apply_autocast`), and is explained so.
pub(crate) fn loss(spec: &LossSpec, (p, y, mask): (&Tensor, &Tensor, Option<&Tensor>), logits: Option<&Tensor>, (d, amp): (DTypeName, Amp<'_>)) -> Result<Option<Cause>> {
    let pv = p.flatten_all()?.to_dtype(candle_core::DType::F64)?.to_vec1::<f64>()?;
    let yv = y.flatten_all()?.to_dtype(candle_core::DType::F64)?.to_vec1::<f64>()?;
    let dt: &str = d.into();
    let op = format!("loss ({})", <&str>::from(spec.kind));
    let lim = Limits::of(d);
    let inputs = |i: usize| -> Result<Vec<Operand>> { Ok(vec![operand("p", p, Some(i), d)?, operand("y", y, Some(i), d)?]) };
    match spec.kind {
        LossKind::Bce => probability::bce(spec, (p, y), (&pv, &yv), logits, d),
        LossKind::NaiveCrossEntropy => probability::naive_cross_entropy(spec, (p, y), d),
        LossKind::MeanAbsRatio => {
            let eps = round(spec.epsilon.unwrap_or(0.0), d);
            let Some(i) = yv.iter().position(|&y| round(y.abs() + eps, d) == 0.0) else { return Ok(None) };
            let rule = if spec.epsilon.is_some_and(|e| e > 0.0) { Rule::EpsRoundsToZero } else { Rule::DivisionByZero };
            let reason = format!("|p − y| / |y| divides by exactly 0: the target in row {i} is 0");
            Ok(Some(cause(rule, op, reason, inputs(i)?)))
        }
        LossKind::Mse | LossKind::Huber => {
            let Some(i) = pv.iter().zip(&yv).position(|(p, y)| p.is_finite() && (p - y).abs() > lim.max.sqrt()) else { return summed(spec, &pv, &yv, op, d, inputs) };
            let reason = format!("(p − y)² overflows {dt} in row {i}: |p − y| = {} is above √max = {}", crate::human((pv[i] - yv[i]).abs()), crate::human(lim.max.sqrt()));
            Ok(Some(cause(Rule::Overflow, op, reason, inputs(i)?)))
        }
        LossKind::Mae => summed(spec, &pv, &yv, op, d, inputs),
        LossKind::Expr => {
            let text = spec.expr.as_deref().unwrap_or("");
            let Some((rule, reason)) = explain_loss_expr(spec, &loss_inputs(p, y, mask), None, (d, amp))? else { return Ok(None) };
            // The padding mask too, where the expression reads it (a masked mean's `sum(mask)`).
            let reads_mask = crate::ops::expr::parse::parse(text).is_ok_and(|a| a.names().iter().any(|(n, _)| n == "mask"));
            let mut operands = vec![operand("p", p, None, d)?, operand("y", y, None, d)?];
            if let Some(m) = mask.filter(|_| reads_mask) {
                operands.push(operand("mask", m, None, d)?);
            }
            Ok(Some(cause(rule, op, reason, operands)))
        }
        // The kind explains its own formula (`ops::loss::explain`); where it names a row (`ctc`'s
        // that cannot align), the operands start there.
        LossKind::CrossEntropy | LossKind::InfoNce | LossKind::Ctc => {
            let Some((rule, reason, row)) = crate::ops::loss::explain(spec, p, y, mask, d, true)? else { return Ok(None) };
            let at = |t: &Tensor| row.map(|r| t.dims().iter().skip(1).product::<usize>() * r);
            Ok(Some(cause(rule, op, reason, vec![operand("p", p, at(p), d)?, operand("y", y, at(y), d)?])))
        }
        LossKind::BceTorch | LossKind::BceLogits | LossKind::KlDiv | LossKind::KlDivLogTarget | LossKind::Focal => Ok(None),
    }
}

/// A regression loss whose every term is finite but whose reduction overflows. f32 and f64 sum
/// in their own dtype before a mean divides (PyTorch's CPU `mean` is `sum().div_(n)`), so
/// `Σ term > max` is `+Inf` for a mean as for a sum; f16 and bf16 sum in f32, so only their sum
/// overflows (rounded to the dtype), never their mean.
fn summed(spec: &LossSpec, pv: &[f64], yv: &[f64], op: String, d: DTypeName, inputs: impl Fn(usize) -> Result<Vec<Operand>>) -> Result<Option<Cause>> {
    if spec.reduction == Reduction::Mean && matches!(d, DTypeName::F16 | DTypeName::Bf16) {
        return Ok(None);
    }
    let delta = spec.delta.unwrap_or(1.0);
    let (huber, mae) = (spec.kind == LossKind::Huber, spec.kind == LossKind::Mae);
    let term = |p: f64, y: f64| {
        let a = (p - y).abs();
        if huber {
            if a >= delta {
                delta * (a - 0.5 * delta)
            } else {
                0.5 * a * a
            }
        } else if mae {
            a
        } else {
            a * a
        }
    };
    let lim = Limits::of(d);
    let terms: Vec<f64> = pv.iter().zip(yv).map(|(p, y)| term(*p, *y)).collect();
    let total: f64 = terms.iter().sum();
    if !terms.iter().all(|t| t.is_finite() && *t <= lim.max) || total <= lim.max {
        return Ok(None);
    }
    let big = (0..terms.len()).max_by(|a, b| terms[*a].total_cmp(&terms[*b])).unwrap_or(0);
    let dt: &str = d.into();
    let then = if spec.reduction == Reduction::Mean { format!(", before the mean divides by {}", terms.len()) } else { String::new() };
    let reason = format!(
        "every term is finite, but their sum over {} values is {} (the largest, at flat index {big}, {}), beyond {dt}'s largest value {}{then}",
        terms.len(),
        crate::human(total),
        crate::human(terms[big]),
        crate::human(lim.max)
    );
    Ok(Some(cause(Rule::Overflow, op, reason, inputs(big)?)))
}

/// A parameter went non-finite in the update. `grad`, `m` and `v` are its gradient and the
/// optimizer's moments (after the step) at the bad element.
pub(crate) fn update(spec: &OptimizerSpec, name: &TensorId, grad: &Tensor, index: usize, m: Option<f64>, v: Option<f64>, d: DTypeName) -> Result<Option<Cause>> {
    let g = operand("grad", grad, Some(index), d)?;
    let dt: &str = d.into();
    let lim = Limits::of(d);
    let op = format!("{} update of `{name}`", <&str>::from(spec.kind));
    if spec.kind != OptimizerKind::Sgd {
        let eps = round(spec.eps, d);
        if let (Some(v), true) = (v, eps == 0.0) {
            if v == 0.0 || round(v.sqrt(), d) == 0.0 {
                let what = if m == Some(0.0) { "0 / 0 = NaN" } else { "m / 0 = ±Inf" };
                let reason = format!(
                    "eps = {} rounds to 0 in {dt} (its smallest subnormal is {}), and this element's second moment is {}, so the update divides by 0: {what}",
                    crate::human(spec.eps),
                    crate::human(lim.min_subnormal),
                    crate::human(v)
                );
                return Ok(Some(cause(Rule::EpsRoundsToZero, op, reason, vec![g])));
            }
        }
        return Ok(None);
    }
    let step = (spec.lr * g.at.unwrap_or(f64::NAN)).abs();
    if step > lim.max || g.infinite > 0 {
        let reason = format!("lr · grad = {} · {} overflows {dt}'s largest value {}", crate::human(spec.lr), crate::human(g.at.unwrap_or(f64::NAN)), crate::human(lim.max));
        return Ok(Some(cause(Rule::Overflow, op, reason, vec![g])));
    }
    let reason = format!("the update p − lr · grad leaves {dt}'s range (lr · grad = {})", crate::human(step));
    Ok(Some(cause(Rule::Overflow, op, reason, vec![g])))
}

/// An optimizer state went non-finite (`exp_avg_sq` and the like), from the gradient it folds in
/// (`grad`, with `v`, the parameter's second moment at the element, where it has one).
pub(crate) fn state(spec: &OptimizerSpec, name: &TensorId, state: OptimState, (grad, v): (&Tensor, Option<f64>), index: usize, d: DTypeName) -> Result<Option<Cause>> {
    let g = operand("grad", grad, Some(index), d)?;
    let dt: &str = d.into();
    let lim = Limits::of(d);
    let at = g.at.unwrap_or(f64::NAN);
    let op = format!("{} state `{name}`", <&str>::from(spec.kind));
    // RMSprop's update divides grad by √v + eps into its momentum buffer: an eps that rounds
    // to 0 leaves a division by 0 where v is 0, the update's (as without momentum).
    if let (OptimizerKind::Rmsprop, OptimState::MomentumBuffer, Some(v), TensorId::State { param, .. }) = (spec.kind, state, v, name) {
        if round(spec.eps, d) == 0.0 && round(v.sqrt(), d) == 0.0 && at.is_finite() {
            let what = if at == 0.0 { "0 / 0 = NaN" } else { "grad / 0 = ±Inf" };
            let reason = format!(
                "its momentum buffer adds grad / (√v + eps); eps = {} rounds to 0 in {dt} (its smallest subnormal is {}), and this element's second moment v is {}, so it divides by 0: {what}",
                crate::human(spec.eps),
                crate::human(lim.min_subnormal),
                crate::human(v)
            );
            return Ok(Some(cause(Rule::EpsRoundsToZero, format!("rmsprop update of `{param}`"), reason, vec![g])));
        }
    }
    let squared = state.squared();
    // The second moment adds (1 − β)·grad²; f16 and bf16 compute that in f32 (PyTorch's
    // `addcmul_`), so it overflows once it is past max, not once grad² is. Wider dtypes square
    // first.
    let keep = if spec.kind == OptimizerKind::Rmsprop { 1.0 - spec.alpha } else { 1.0 - spec.beta2 };
    let half = matches!(d, DTypeName::F16 | DTypeName::Bf16);
    let (added, limit) = if half { (keep * at * at, (lim.max / keep).sqrt()) } else { (at * at, lim.max.sqrt()) };
    if squared && at.is_finite() && added > lim.max {
        let what = if half { format!("(1 − β)·grad² = {} · ({})²", crate::human(keep), crate::human(at)) } else { format!("grad² = ({})²", crate::human(at)) };
        let reason = format!(
            "the second moment adds {what}, past {dt}'s largest value {} (|grad| > {}): it is +Inf, so every later update of this element divides by ∞ and is 0",
            crate::human(lim.max),
            crate::human(limit)
        );
        return Ok(Some(cause(Rule::Overflow, op, reason, vec![g])));
    }
    if g.infinite + g.nan > 0 {
        return Ok(None);
    }
    let reason = format!("`{}` grew past {dt}'s largest value {} from finite gradients (up to {})", <&str>::from(state), crate::human(lim.max), crate::human(g.max.abs().max(g.min.abs())));
    Ok(Some(cause(Rule::Overflow, op, reason, vec![g])))
}

/// Non-finite values in the data, and the step that made them: `first_step` is the index of
/// the first preprocessing step after which they appear (`None`: already in the rows themselves).
pub(crate) fn data(tensor: &TensorId, first_step: Option<(usize, &str)>) -> Cause {
    let (op, reason) = match first_step {
        None => ("data".to_string(), format!("`{tensor}` holds non-finite values before any preprocessing: they are in the rows themselves (file, generator or injection)")),
        Some((k, step)) => (format!("data.preprocess.{k} ({step})"), format!("`{tensor}` is finite until preprocessing step {k} (`{step}`), which makes it non-finite")),
    };
    cause(Rule::DataNotFinite, op, reason, vec![])
}

/// Data that is finite in f64 but beyond the compute dtype's range once converted.
pub(crate) fn conversion(tensor: &TensorId, d: DTypeName) -> Cause {
    let dt: &str = d.into();
    let reason = format!("`{tensor}` holds values beyond {dt}'s largest value {}: they are finite in the data and infinite once converted", crate::human(Limits::of(d).max));
    cause(Rule::Overflow, format!("conversion to {dt}"), reason, vec![])
}

impl std::fmt::Display for Cause {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.op, self.reason)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_input_beyond_f16_that_autocast_casts_down_for_a_convolution_overflows_in_the_cast() {
        // real/tf_deep_mnist_log_zero hunted with an outlier of 1e6 and amp_f16: the f32 input
        // holds 1e6, which autocast casts to f16 (largest 65504) for conv2d: +inf, carried to
        // every output whose 3×3 window (padding 1) covers that pixel: 8 channels × 9 = 72 values
        // for an interior pixel. PyTorch 2.15's CPU autocast gives the same: a 5×5 Conv2d of 8
        // channels over an input holding 1e6 is f16 with 8 × 25 = 200 infs and no NaN.
        let text = "name = \"conv\"\nseed = 0\n[data]\nn = 10\ninputs = { kind = \"normal\" }\ntargets = { kind = \"classes\", k = 10 }\nimage = { channels = 1, height = 12, width = 12 }\n\
                    [[data.inject]]\nvalue = \"outlier\"\nsplit = \"train\"\ninto = \"inputs\"\nfraction = 0.000348\nmagnitude = 1e6\n\
                    [model]\nlayers = [{ type = \"conv2d\", channels = 8, kernel = 3, padding = 1 }, { type = \"flatten\" }, { type = \"linear\", out = 10 }]\n\
                    [loss]\nkind = \"cross_entropy\"\n[optimizer]\nkind = \"sgd\"\nlr = 0.01\n[train]\nepochs = 1\nprecision = \"amp_f16\"\n";
        let o = crate::run::run(&crate::scenario::from_str(text, "conv.toml").unwrap());
        let f = o.first_nonfinite.as_ref().expect("overflows in the cast");
        assert_eq!((f.step, f.phase, f.tensor.to_string().as_str(), f.count), (1, crate::scenario::Phase::Forward, "layers.0.conv2d.output", 72), "{f}");
        let c = o.cause.expect("explained");
        assert_eq!((c.rule, c.op.as_str()), (Rule::Overflow, "layers.0.conv2d"), "{c}");
        assert!(c.reason.contains("beyond f16's largest value 65504 (1 such input(s)): autocast casts the input to f16"), "{}", c.reason);
    }

    #[test]
    fn limits_and_rounding_by_hand() {
        // f16: 65504 and 2⁻²⁴; 1e-8 rounds to 0 there, 1 − 2⁻¹² rounds to 1 (ties to even).
        assert_eq!((Limits::of(DTypeName::F16).max, Limits::of(DTypeName::F16).min_subnormal), (65504.0, 2f64.powi(-24)));
        assert_eq!(round(1e-8, DTypeName::F16), 0.0);
        assert_eq!(round(1.0 - 2f64.powi(-12), DTypeName::F16), 1.0);
        assert_ne!(round(1.0 - 2f64.powi(-11), DTypeName::F16), 1.0);
        assert_eq!(round(1e-8, DTypeName::F32), 1e-8f32 as f64);
    }

    #[test]
    fn precursors_name_settings_the_dtype_cannot_hold() {
        // Seed 000 ex1 (Adam, eps 1e-8): fine in f32; in f16 eps is below 2⁻²⁴ and rounds to 0.
        let mut s = crate::scenario::seed("s000_ex1_bce_mlp");
        assert!(precursors(&s).is_empty());
        s.train.dtype = DTypeName::F16;
        let w = precursors(&s);
        assert_eq!(w.len(), 1, "{w:?}");
        assert!(w[0].starts_with("optimizer.eps = 1e-8 rounds to 0 in f16"), "{w:?}");
        // A clamp of 1e-4 in f16: 1 − 1e-4 rounds to 1 (2⁻¹² = 2.44e-4 is the largest that does).
        s.loss.kind = LossKind::Bce;
        s.loss.clamp = Some(1e-4);
        assert!(precursors(&s).iter().any(|w| w.starts_with("loss.clamp = 1e-4: 1 − 1e-4 rounds to 1 in f16")));
    }

    #[test]
    fn rmsprops_momentum_buffer_divides_by_an_eps_that_rounds_to_0() {
        // RMSprop in f16, eps 1e-8 (below f16's smallest subnormal 2⁻²⁴ = 5.96e-8: it rounds to
        // 0). A gradient of 0 leaves v = 0: the buffer adds 0 / (√0 + 0) = NaN. A gradient of
        // 1e-3 gives v = (1 − 0.99)·1e-6 = 1e-8, which rounds to 0 too: 1e-3 / 0 = +Inf. In f32
        // eps is 1e-8 and guards the division: this rule does not apply.
        let spec: OptimizerSpec = toml::from_str("kind = \"rmsprop\"\nlr = 0.01\nmomentum = 0.001").unwrap();
        let name = TensorId::from_name("optim.layers.0.linear.weight.momentum_buffer");
        let g = Tensor::new(&[0f32, 1e-3], &candle_core::Device::Cpu).unwrap().to_dtype(candle_core::DType::F16).unwrap();
        let c = state(&spec, &name, OptimState::MomentumBuffer, (&g, Some(0.0)), 0, DTypeName::F16).unwrap().expect("a rule explains it");
        assert_eq!((c.rule, c.op.as_str()), (Rule::EpsRoundsToZero, "rmsprop update of `layers.0.linear.weight`"));
        assert!(c.reason.contains("eps = 1e-8 rounds to 0 in f16") && c.reason.contains("0 / 0 = NaN"), "{}", c.reason);
        assert_eq!(round(0.01 * 1e-6, DTypeName::F16), 0.0);
        let c = state(&spec, &name, OptimState::MomentumBuffer, (&g, Some(round(0.01 * 1e-6, DTypeName::F16))), 1, DTypeName::F16).unwrap().expect("a rule explains it");
        assert!(c.rule == Rule::EpsRoundsToZero && c.reason.contains("grad / 0 = ±Inf"), "{c}");
        let c = state(&spec, &name, OptimState::MomentumBuffer, (&g, Some(0.0)), 0, DTypeName::F32).unwrap();
        assert_ne!(c.map(|c| c.rule), Some(Rule::EpsRoundsToZero));
    }

    #[test]
    fn a_mean_of_squares_whose_sum_overflows_is_an_overflow_of_the_sum() {
        // f32: four errors of 1e19, each square 1e38 ≤ 3.4e38, their sum 4e38 beyond it (hand
        // arithmetic); PyTorch 2.15 `F.mse_loss` gives inf here and 2.5e37 at errors of 5e18.
        let dev = candle_core::Device::Cpu;
        let p = Tensor::new(&[[1e19f32], [1e19], [-1e19], [-1e19]], &dev).unwrap();
        let y = Tensor::zeros((4, 1), candle_core::DType::F32, &dev).unwrap();
        let spec: LossSpec = toml::from_str("kind = \"mse\"").unwrap();
        let c = loss(&spec, (&p, &y, None), None, (DTypeName::F32, None)).unwrap().expect("a rule explains it");
        assert_eq!(c.rule, Rule::Overflow);
        assert!(c.reason.contains("sum over 4 values is 4e38") && c.reason.contains("before the mean divides by 4"), "{}", c.reason);
        assert!(loss(&spec, (&(&p / 2.0).unwrap(), &y, None), None, (DTypeName::F32, None)).unwrap().is_none());
        // f16 sums in f32: errors of 200 give a mean of 40000 in PyTorch 2.15, so no rule; a sum
        // of four absolute errors of 20000 is 80000 > 65504, inf in PyTorch 2.15's f16 l1_loss.
        let h = Tensor::new(&[[200f32], [200.0], [-200.0], [-200.0]], &dev).unwrap();
        assert!(loss(&spec, (&h, &y, None), None, (DTypeName::F16, None)).unwrap().is_none());
        let mae: LossSpec = toml::from_str("kind = \"mae\"\nreduction = \"sum\"").unwrap();
        let c = loss(&mae, (&(h * 100.0).unwrap(), &y, None), None, (DTypeName::F16, None)).unwrap().expect("mae's sum");
        assert!(c.reason.contains("is 80000") && !c.reason.contains("mean divides"), "{}", c.reason);
    }
}
