//! Why a gradient went non-finite: the backward pass of the layer (or loss)
//! that made it, from the gradient that arrived and the values the layer read.
//! `born` explains a layer output's gradient found by the tapped re-run;
//! `backward` is the fallback for a parameter's gradient. The registry's ops
//! explain their own backward (`Op::explain_backward`, `Op::explain_zeros`).

use candle_core::Tensor;

use super::{cause, operand, Cause, Limits, Operand, Rule};
use crate::error::Result;
use crate::ops::Facts;
use crate::scenario::{DTypeName, Layer, LossKind, LossSpec};

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
/// the nodes' outputs, `upstream` the finite gradient of the reader's output, `y` the targets.
#[allow(clippy::too_many_arguments)]
pub(crate) fn born(
    layers: &[Layer],
    nodes: &[String],
    (l, reader): (usize, Option<usize>),
    i: usize,
    outs: &[Tensor],
    upstream: Option<&Tensor>,
    spec: &LossSpec,
    y: &Tensor,
    d: DTypeName,
) -> Result<Option<Cause>> {
    let Some(h) = outs.get(l) else { return Ok(None) };
    let lim = Limits::of(d);
    let Some(r) = reader else { return loss_backward(spec, h, y, i, d) };
    let Some(g) = upstream else { return Ok(None) };
    // The op's backward explains itself (`Op::explain_backward`).
    let (Some(layer), Some(node)) = (layers.get(r), nodes.get(r)) else { return Ok(None) };
    let op = layer.op();
    let op_name = format!("{node} (backward)");
    let input = operand("input", h, Some(i), d)?;
    let grad = operand("upstream gradient", g, Some(i), d)?;
    let (x, gi) = (input.at.unwrap_or(f64::NAN), grad.at.unwrap_or(f64::NAN));
    let found = op.explain_backward(&Facts { x, grad: gi, dtype: d, lim, read: grad.read(), index: i, dims: h.dims() });
    Ok(found.map(|(rule, reason)| cause(rule, op_name, reason, vec![input, grad])))
}

/// The loss's backward made the predictions' gradient non-finite at flat index `i`.
fn loss_backward(spec: &LossSpec, p: &Tensor, y: &Tensor, i: usize, d: DTypeName) -> Result<Option<Cause>> {
    let (pv, yv) = (values(p)?, values(y)?);
    let (Some(&pi), Some(&yi)) = (pv.get(i), yv.get(i)) else { return Ok(None) };
    let (dt, lim) = (<&str>::from(d), Limits::of(d));
    let op = format!("loss ({}) (backward)", <&str>::from(spec.kind));
    let inputs = || -> Result<Vec<Operand>> { Ok(vec![operand("p", p, Some(i), d)?, operand("y", y, Some(i), d)?]) };
    let eps = super::round(spec.epsilon.unwrap_or(0.0), d);
    let found = match spec.kind {
        LossKind::Bce | LossKind::NaiveCrossEntropy => {
            let (qp, qq) = (super::round(pi + eps, d).abs(), super::round(1.0 - pi + eps, d).abs());
            let (side, q) = if qp <= qq { ("p", qp) } else { ("1 − p", qq) };
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
        _ => None,
    };
    found.map(|(rule, reason)| Ok(cause(rule, op, reason, inputs()?))).transpose()
}
