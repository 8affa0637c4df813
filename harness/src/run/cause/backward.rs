//! Why a gradient went non-finite: the backward pass of the layer (or loss)
//! that made it, from the gradient that arrived and the values the layer read.
//! `born` explains a layer output's gradient found by the tapped re-run;
//! `backward` is the fallback for a parameter's gradient. The registry's ops
//! explain their own backward (`Op::explain_backward`, `Op::explain_zeros`).

use candle_core::Tensor;

use super::{cause, operand, Cause, Limits, Operand, Rule};
use crate::error::Result;
use crate::ops::Facts;
use crate::scenario::{DTypeName, Layer, LossKind, LossSpec, Reduction};

/// A gradient went non-finite: a layer whose backward can make one from what it read in this
/// step, such as a derivative infinite at exactly 0 and an exact 0 read (`inputs[l]` is what
/// layer `l` read). Each registry op says which (`Op::explain_zeros`).
pub(crate) fn backward(layers: &[Layer], nodes: &[String], inputs: &[&Tensor], d: DTypeName) -> Result<Option<Cause>> {
    for (l, layer) in layers.iter().enumerate().rev() {
        let (Some(x), op) = (inputs.get(l), layer.op()) else { continue };
        let read = operand("input", x, None, d)?;
        if let Some((rule, reason)) = op.explain_zeros(read.zeros, x.elem_count()) {
            return Ok(Some(cause(rule, format!("{} (backward)", nodes[l]), reason, vec![read])));
        }
    }
    Ok(None)
}

/// The values of a tensor as f64, flattened.
fn values(t: &Tensor) -> Result<Vec<f64>> {
    Ok(t.flatten_all()?.to_dtype(candle_core::DType::F64)?.to_vec1::<f64>()?)
}

/// Where a non-finite gradient was born: the gradient of node `l`'s output went non-finite at
/// flat index `i` while the gradient above it was finite, so the backward pass that made it is
/// that of `reader`, the node that reads `l`'s output, or the loss's if none does. `outs` are
/// the nodes' outputs, `others` what the reader reads besides `l`'s output (an expression's
/// named outputs), `upstream` the finite gradient of the reader's output, `y` the targets and
/// `mask` the padding mask (an expression loss reads it); `amp`, under autocast, the low dtype
/// and the dtypes the reader's inputs hold.
#[allow(clippy::too_many_arguments)]
pub(crate) fn born(
    layers: &[Layer],
    nodes: &[String],
    (l, reader): (usize, Option<usize>),
    i: usize,
    (outs, others): (&[Tensor], &[&Tensor]),
    upstream: Option<&Tensor>,
    (spec, y, mask): (&LossSpec, &Tensor, Option<&Tensor>),
    (d, amp): (DTypeName, super::Amp<'_>),
) -> Result<Option<Cause>> {
    let Some(h) = outs.get(l) else { return Ok(None) };
    let lim = Limits::of(d);
    let Some(r) = reader else { return loss_backward(spec, (h, y, mask), i, (d, amp)) };
    let Some(g) = upstream else { return Ok(None) };
    // The op's backward explains itself (`Op::explain_backward`).
    let (Some(layer), Some(node)) = (layers.get(r), nodes.get(r)) else { return Ok(None) };
    let op = layer.op();
    let op_name = format!("{node} (backward)");
    let input = operand("input", h, Some(i), d)?;
    let grad = operand("upstream gradient", g, Some(i), d)?;
    let (x, gi) = (input.at.unwrap_or(f64::NAN), grad.at.unwrap_or(f64::NAN));
    // An expression is explained node by node, naming the sub-expression (and a named output it reads).
    if let Layer::Expr(e) = layer {
        let found = super::explain_expr(e, &super::expr_inputs(e, h, others), Some(g), (d, amp))?;
        return Ok(found.map(|(rule, reason)| cause(rule, op_name, reason, vec![input, grad])));
    }
    let found = op.explain_backward(&Facts { x, grad: gi, dtype: d, lim, read: grad.read(), index: i, dims: h.dims(), training: true });
    Ok(found.map(|(rule, reason)| cause(rule, op_name, reason, vec![input, grad])))
}

/// The loss's backward made the predictions' gradient non-finite at flat index `i`.
fn loss_backward(spec: &LossSpec, (p, y, mask): (&Tensor, &Tensor, Option<&Tensor>), i: usize, (d, amp): (DTypeName, super::Amp<'_>)) -> Result<Option<Cause>> {
    let (pv, yv) = (values(p)?, values(y)?);
    let (Some(&pi), Some(&yi)) = (pv.get(i), yv.get(i)) else { return Ok(None) };
    let (dt, lim) = (<&str>::from(d), Limits::of(d));
    let op = format!("loss ({}) (backward)", <&str>::from(spec.kind));
    let inputs = || -> Result<Vec<Operand>> { Ok(vec![operand("p", p, Some(i), d)?, operand("y", y, Some(i), d)?]) };
    let eps = super::round(spec.epsilon.unwrap_or(0.0), d);
    let found = match spec.kind {
        LossKind::Bce => {
            let (a, b) = super::probability::BceArgs::new(spec, d).at(pi);
            let (side, q, w) = if a.abs() <= b.abs() { ("p", a.abs(), yi) } else { ("1 − p", b.abs(), 1.0 - yi) };
            let n = if spec.reduction == Reduction::Mean { p.elem_count().max(1) as f64 } else { 1.0 };
            if w.abs() != 1.0 && w != 0.0 && (w / (n * q)).abs() > lim.max {
                let by = if n > 1.0 { format!(" ÷ {} (the mean)", n) } else { String::new() };
                let reason = format!(
                    "the derivative of (weight)·log({side}) is weight/({side}) = {} / {}{by} = {}, beyond {dt}'s largest value {}: the target {} is outside [0, 1] and scales it",
                    crate::human(w),
                    crate::human(q),
                    crate::human(w / (n * q)),
                    crate::human(lim.max),
                    crate::human(yi)
                );
                Some((Rule::Overflow, reason))
            } else {
                (1.0 / q > lim.max).then(|| {
                    let reason = format!(
                        "the derivative of log({side}) is 1/({side}), and {side} = {} is below 1/max = {}: the gradient overflows {dt}'s largest value {}",
                        crate::human(q),
                        crate::human(1.0 / lim.max),
                        crate::human(lim.max)
                    );
                    (Rule::Overflow, reason)
                })
            }
        }
        LossKind::NaiveCrossEntropy => naive_cross_entropy(p, &yv, i, d)?,
        LossKind::BceTorch => {
            let floor = super::round(1e-12, d);
            let denom = super::round(pi * (1.0 - pi), d).max(floor);
            if denom == 0.0 {
                Some((Rule::EpsRoundsToZero, format!("the gradient (p − y) / max(p(1 − p), 1e-12) divides by 0: p = {} and 1e-12 rounds to 0 in {dt}", crate::human(pi))))
            } else {
                ((pi - yi).abs() / denom > lim.max)
                    .then(|| (Rule::Overflow, format!("the gradient (p − y) / max(p(1 − p), 1e-12) = {} / {} overflows {dt}", crate::human(pi - yi), crate::human(denom))))
            }
        }
        LossKind::Mse | LossKind::Huber => (2.0 * (pi - yi).abs() > lim.max).then(|| (Rule::Overflow, format!("the gradient 2(p − y) = {} overflows {dt}", crate::human(2.0 * (pi - yi))))),
        LossKind::MeanAbsRatio => (super::round(yi.abs() + eps, d) == 0.0)
            .then(|| (Rule::DivisionByZero, format!("the gradient of |p − y| / |y| divides by |y| = 0 in row {}", i / p.dims().last().copied().unwrap_or(1).max(1)))),
        // An expression is diagnosed node by node, the gradient 1 arriving at the loss.
        LossKind::Expr => super::explain_loss_expr(spec, &super::loss_inputs(p, y, mask), Some(&Tensor::ones((), p.dtype(), p.device())?), (d, amp))?,
        LossKind::Mae | LossKind::BceLogits | LossKind::CrossEntropy | LossKind::KlDiv | LossKind::KlDivLogTarget | LossKind::Focal | LossKind::InfoNce | LossKind::Ctc => None,
    };
    found.map(|(rule, reason)| Ok(cause(rule, op, reason, inputs()?))).transpose()
}

/// The naive cross-entropy's backward made the logits' gradient non-finite at flat index `i`:
/// `log`'s derivative `1/p` at a softmax probability of the row that underflowed (to 0, or
/// below `|y|/max`).
fn naive_cross_entropy(z: &Tensor, yv: &[f64], i: usize, d: DTypeName) -> Result<Option<(Rule, String)>> {
    let Some(soft) = super::probability::Softmax::of(z, d)? else { return Ok(None) };
    let (dt, lim, r) = (<&str>::from(d), Limits::of(d), i / soft.k);
    let row = r * soft.k..(r + 1) * soft.k;
    let Some(j) = row.clone().find(|&j| soft.probs[j] == 0.0 || (yv.get(j).copied().unwrap_or(0.0) / soft.probs[j]).abs() > lim.max) else { return Ok(None) };
    let (p, y) = (soft.probs[j], yv.get(j).copied().unwrap_or(0.0));
    Ok(Some(if p == 0.0 {
        let what = if y == 0.0 { "0/0 = NaN" } else { "±∞" };
        let reason = format!(
            "the softmax probability of class {} in row {r} underflowed to 0 in {dt} (exp({}) / Σ exp), and log's derivative 1/p there is infinite: target {} / 0 is {what} (softmax then log; log_softmax keeps it finite)",
            j - row.start,
            crate::human(soft.z[j]),
            crate::human(y)
        );
        (Rule::DerivativeAtZero, reason)
    } else {
        let reason = format!(
            "the softmax probability of class {} in row {r} is {} in {dt}, and log's derivative y/p = {} is beyond {dt}'s largest value {} (softmax then log; log_softmax keeps it finite)",
            j - row.start,
            crate::human(p),
            crate::human(y / p),
            crate::human(lim.max)
        );
        (Rule::Overflow, reason)
    }))
}

/// A linear layer's parameter gradient overflowed from finite factors: the weight's gradient
/// `dW[a, b] = Σ_r x[r, a]·g[r, b]` over the batch's rows `r` (the bias's, `Σ_r g[r, b]`), with
/// `x` the layer's `input` and `g` its output's finite `grad`, exceeds the dtype's largest value
/// before it is rounded; or, under autocast, a `g` finite in f32 is beyond the layer's compute
/// dtype `d` and infinite once cast. `name` is the parameter, `index` the bad element's flat index.
pub(crate) fn param_grad(layer: &Layer, name: &str, input: &Tensor, grad: &Tensor, index: usize, d: DTypeName) -> Result<Option<Cause>> {
    let Layer::Linear(_) = layer else { return Ok(None) };
    let (xs, gs) = (values(input)?, values(grad)?);
    let (width, out) = (input.dims().last().copied().unwrap_or(1).max(1), grad.dims().last().copied().unwrap_or(1).max(1));
    if xs.iter().chain(&gs).any(|v| !v.is_finite()) || xs.len() / width != gs.len() / out {
        return Ok(None);
    }
    let rows = xs.len() / width;
    let bias = name.ends_with(".bias");
    let (a, b) = if bias { (0, index % out) } else { (index / out, index % out) };
    let x_at = |r: usize| if bias { 1.0 } else { xs[r * width + a] };
    let exact: f64 = (0..rows).map(|r| x_at(r) * gs[r * out + b]).sum();
    let (dt, lim) = (<&str>::from(d), Limits::of(d));
    let at = if bias { format!("[{b}]") } else { format!("[{a}, {b}]") };
    let op = format!("{} (backward)", name.trim_end_matches(".weight").trim_end_matches(".bias"));
    let operands = || -> Result<Vec<Operand>> { Ok(vec![operand("input", input, None, d)?, operand("output gradient", grad, None, d)?]) };
    // Under autocast the output gradient arrives in f32 and the layer's backward runs in `d`:
    // one beyond `d`'s largest value is ±Inf once cast, and so is every product with it (NaN
    // where the input is 0).
    if let Some(r) = (0..rows).find(|&r| gs[r * out + b].abs() > lim.max) {
        let (g, x) = (gs[r * out + b], super::round(x_at(r), d));
        let product = if x == 0.0 { "0 × ∞ = NaN".to_string() } else { format!("{} × ∞ = ±∞", crate::human(x)) };
        let reason = format!(
            "the output gradient {} (row {r}), finite as it arrives, is beyond {dt}'s largest value {}: cast to {dt} for this layer's backward it is ±∞, and the gradient of `{name}`{at} takes it times the input ({product})",
            crate::human(g),
            crate::human(lim.max)
        );
        return Ok(Some(cause(Rule::Overflow, op, reason, operands()?)));
    }
    if exact.abs() <= lim.max {
        return Ok(None);
    }
    let (big_x, big_g) = ((0..rows).map(|r| x_at(r).abs()).fold(0f64, f64::max), (0..rows).map(|r| gs[r * out + b].abs()).fold(0f64, f64::max));
    let what = if bias { format!("Σ over the batch's {rows} row(s) of the output gradient") } else { format!("Σ over the batch's {rows} row(s) of input × output gradient") };
    let factors =
        if bias { format!("output gradients up to {}", crate::human(big_g)) } else { format!("inputs (feature {a}) up to {} and output gradients up to {}", crate::human(big_x), crate::human(big_g)) };
    let reason = format!("the gradient of `{name}`{at} is {what} = {} before rounding, beyond {dt}'s largest value {}: {factors}", crate::human(exact), crate::human(lim.max));
    Ok(Some(cause(Rule::Overflow, op, reason, operands()?)))
}

#[cfg(test)]
mod tests {
    use candle_core::{DType, Device, Tensor};

    use super::*;
    use crate::ops::linear::Linear;

    fn t(v: &[f64], rows: usize, d: DType) -> Tensor {
        Tensor::from_vec(v.to_vec(), (rows, v.len() / rows), &Device::Cpu).unwrap().to_dtype(d).unwrap()
    }

    #[test]
    fn a_linear_parameter_gradient_overflows_from_finite_factors() {
        // dW[0, 1] = Σ_r x[r, 0]·g[r, 1] = 300·150 + 100·200 = 65000, under f16's 65504: finite;
        // dW[1, 1] = 300·150 + 200·200 = 85000 is past it. The bias: 150 + 200 = 350, finite.
        let layer = Layer::Linear(Linear { out: 2, init: None });
        let x = t(&[300.0, 300.0, 100.0, 200.0], 2, DType::F16);
        let g = t(&[1.0, 150.0, 1.0, 200.0], 2, DType::F16);
        assert_eq!(param_grad(&layer, "layers.0.linear.weight", &x, &g, 1, DTypeName::F16).unwrap(), None);
        let c = param_grad(&layer, "layers.0.linear.weight", &x, &g, 3, DTypeName::F16).unwrap().expect("explained");
        assert_eq!((c.rule, c.op.as_str()), (Rule::Overflow, "layers.0.linear (backward)"));
        assert!(c.reason.contains("`layers.0.linear.weight`[1, 1]") && c.reason.contains("over the batch's 2 row(s) of input × output gradient = 85000 before rounding"), "{c}");
        assert!(c.reason.contains("inputs (feature 1) up to 300 and output gradients up to 200"), "{c}");
        assert_eq!(param_grad(&layer, "layers.0.linear.bias", &x, &g, 1, DTypeName::F16).unwrap(), None);
        // Bias gradients of 40000 + 30000 = 70000 in one column.
        let g = t(&[40000.0, 0.0, 30000.0, 0.0], 2, DType::F16);
        let c = param_grad(&layer, "layers.0.linear.bias", &x, &g, 0, DTypeName::F16).unwrap().expect("explained");
        assert!(c.reason.contains("`layers.0.linear.bias`[0] is Σ over the batch's 2 row(s) of the output gradient = 70000"), "{c}");
    }

    #[test]
    fn under_autocast_an_output_gradient_beyond_f16_overflows_in_the_cast() {
        // diagnosis/loss_backward_overflow with bce_torch under amp_f16: the input 1e-39 is 0 in
        // f16, so p = 0 and bce_torch's gradient (p − y) / max(p(1 − p), 1e-12) = −1e12, in f32.
        // Cast to f16 (largest 65504) for the linear's backward it is −∞: the weight's gradient
        // is 0 · (−∞) = NaN and the bias's −∞, as PyTorch 2.15 gives (CPU autocast, f16).
        let layer = Layer::Linear(Linear { out: 1, init: None });
        let (x, g) = (t(&[1e-39], 1, DType::F32), t(&[-1e12], 1, DType::F32));
        let c = param_grad(&layer, "layers.0.linear.weight", &x, &g, 0, DTypeName::F16).unwrap().expect("explained");
        assert_eq!((c.rule, c.op.as_str()), (Rule::Overflow, "layers.0.linear (backward)"));
        assert!(c.reason.contains("beyond f16's largest value 65504") && c.reason.contains("(0 × ∞ = NaN)"), "{c}");
        let c = param_grad(&layer, "layers.0.linear.bias", &x, &g, 0, DTypeName::F16).unwrap().expect("explained");
        assert!(c.reason.contains("`layers.0.linear.bias`[0]") && c.reason.contains("(1 × ∞ = ±∞)"), "{c}");
        // In f32 the same gradient is finite and so is 1e-39 · (−1e12) = −1e-27: no rule.
        assert_eq!(param_grad(&layer, "layers.0.linear.weight", &x, &g, 0, DTypeName::F32).unwrap(), None);
    }

    #[test]
    fn naive_cross_entropy_backward_divides_by_a_probability_of_0() {
        // Logits (−60, 50) in f32: the first probability e^(−110) = 1.7e-48 rounds to 0, and
        // log's derivative 1/p at it is infinite; its target is 0: 0/0.
        let z = t(&[-60.0, 50.0], 1, DType::F32);
        let (rule, reason) = naive_cross_entropy(&z, &[0.0, 1.0], 0, DTypeName::F32).unwrap().expect("explained");
        assert_eq!(rule, Rule::DerivativeAtZero);
        assert!(reason.contains("class 0 in row 0 underflowed to 0 in f32") && reason.contains("0/0 = NaN"), "{reason}");
        // Logits (0, 0): probabilities 0.5, 1/p = 2: finite, no diagnosis.
        assert_eq!(naive_cross_entropy(&t(&[0.0, 0.0], 1, DType::F32), &[0.0, 1.0], 0, DTypeName::F32).unwrap(), None);
    }
}
