//! `kind = "ctc"`: PyTorch's `F.ctc_loss(log_probs, targets, input_lengths, target_lengths,
//! blank=, reduction=, zero_infinity=)` (`aten/src/ATen/native/LossCTC.cpp`). The prediction is
//! `(batch, steps, classes)` log-probabilities (end the model in `log_softmax(x, dim=-1)`); a
//! row's input length is its count of unpadded positions under `[data.padding]` (the mask's
//! row sum: drawn with `max_fraction`, or stated with `lengths`), every step without padding.
//! Each target row holds its labels first, then the blank as padding, so its target length is
//! its count of labels (PyTorch's padded form). Per sequence the kernel `run::kernel::ctc` gives
//! the negative log-likelihood of the first `input_length` steps and PyTorch's gradient there
//! (0 at the steps beyond); an impossible alignment (too few input steps for the labels and
//! their repeats) is ∞ with a NaN gradient over its input steps, or 0 with a zero gradient under
//! `zero_infinity`; an empty input is ∞ with a zero gradient (0 for an empty target), as PyTorch 2.15's CPU kernel. `mean` divides each by its target length (at least 1) and averages over the
//! batch, as PyTorch; `sum` adds. PyTorch's CPU kernel has no f16 or bf16: neither has nanhunt's
//! (under autocast the loss runs in f32, `ctc_loss` being on autocast's f32 list).

use std::sync::Arc;

use candle_core::{DType, Tensor};

use super::reduction;
use crate::error::{Error, Result};
use crate::run::kernel::ctc::{Float, Sequence};
use crate::scenario::{LossKind, LossSpec, Reduction};

/// The error of a bad target or prediction, at the loss.
fn invalid(key: &str, message: String) -> Error {
    Error::Invalid { location: "loss".into(), key: key.into(), message }
}

/// Each row of `y` as its labels: the values before the first blank (the rest must be blanks).
fn labels(y: &Tensor, classes: usize, blank: usize) -> Result<Vec<Vec<usize>>> {
    let rows: Vec<Vec<f64>> = y.to_dtype(DType::F64)?.to_vec2()?;
    let mut out = Vec::with_capacity(rows.len());
    for (i, row) in rows.iter().enumerate() {
        let len = row.iter().position(|v| *v == blank as f64).unwrap_or(row.len());
        if let Some(v) = row[len..].iter().find(|v| **v != blank as f64) {
            return Err(invalid("data.targets", format!("row {i}: label {v} after the blank padding (a CTC target row is its labels, then the blank {blank})")));
        }
        if let Some(v) = row[..len].iter().find(|v| !(v.fract() == 0.0 && **v >= 0.0 && **v < classes as f64)) {
            return Err(invalid("data.targets", format!("row {i}: label {v} is not a class in 0..{classes}")));
        }
        out.push(row[..len].iter().map(|v| *v as usize).collect());
    }
    Ok(out)
}

/// Each row's input length: its unpadded positions under the padding `mask` `(batch, steps)`
/// (PyTorch's `input_lengths`), or every step without one.
fn input_lengths(mask: Option<&Tensor>, batch: usize, steps: usize) -> Result<Vec<usize>> {
    let Some(m) = mask else { return Ok(vec![steps; batch]) };
    if m.dims() != [batch, steps] {
        return Err(invalid(
            "data.padding",
            format!("`ctc` reads each row's input length from the padding mask {:?}, and the prediction has {batch} rows of {steps} steps: the model must keep the sequence's length", m.dims()),
        ));
    }
    let rows: Vec<Vec<f64>> = m.to_dtype(DType::F64)?.to_vec2()?;
    Ok(rows.iter().map(|r| r.iter().filter(|v| **v != 0.0).count()).collect())
}

/// The sequences' negative log-likelihoods and gradients (for an output gradient of 1), each
/// over its first `lengths[i]` steps (the gradient 0 beyond, as PyTorch zeroes it).
fn run<T: Float + candle_core::WithDType>(p: &Tensor, targets: &[Vec<usize>], lengths: &[usize], blank: usize, zero_infinity: bool) -> Result<(Vec<T>, Vec<T>)> {
    let (_, steps, classes) = p.dims3()?;
    let lp: Vec<T> = p.flatten_all()?.to_vec1()?;
    let (mut nll, mut grad) = (Vec::with_capacity(targets.len()), Vec::with_capacity(lp.len()));
    for ((row, t), &len) in lp.chunks_exact(steps * classes).zip(targets).zip(lengths) {
        let seq = Sequence { lp: &row[..len * classes], classes, targets: t, blank };
        let (n, g) = match len {
            // PyTorch: an empty input is 0 for an empty target, else ∞, its gradient 0 either way.
            0 => (if t.is_empty() { T::ZERO } else { -T::NEG_INF }, Vec::new()),
            _ => {
                let (alpha, n) = seq.forward();
                (n, seq.backward(&alpha, n))
            }
        };
        if zero_infinity && n == -T::NEG_INF {
            // PyTorch zeroes the loss (`where(res == inf, 0, res)`) and the gradient.
            nll.push(T::ZERO);
            grad.extend(std::iter::repeat_n(T::ZERO, row.len()));
        } else {
            nll.push(n);
            grad.extend(g);
            grad.extend(std::iter::repeat_n(T::ZERO, row.len() - len * classes));
        }
    }
    Ok((nll, grad))
}

/// Each sequence's negative log-likelihood `(batch,)` (PyTorch's `reduction='none'`), with its
/// gradient, of log-probabilities `p` `(batch, steps, classes)` against label rows `y`, each row's
/// input length its unpadded positions under the padding `mask` (every step without one); and
/// the target lengths.
fn sequences(s: &LossSpec, p: &Tensor, y: &Tensor, mask: Option<&Tensor>) -> Result<(Tensor, Vec<usize>)> {
    let (batch, steps, classes) = p.dims3().map_err(|_| invalid("loss.kind", format!("`ctc` reads log-probabilities (batch, steps, classes), and the prediction is {:?}", p.dims())))?;
    let blank = s.blank.unwrap_or(0);
    if steps == 0 || blank >= classes {
        return Err(invalid("loss.blank", format!("the blank {blank} must be one of the {classes} classes, over at least one step")));
    }
    let targets = labels(y, classes, blank)?;
    let lengths = input_lengths(mask, batch, steps)?;
    let (value, grad) = match p.dtype() {
        DType::F32 => {
            let (n, g) = run::<f32>(p, &targets, &lengths, blank, s.zero_infinity)?;
            (Tensor::from_vec(n, batch, p.device())?, Tensor::from_vec(g, (batch, steps, classes), p.device())?)
        }
        DType::F64 => {
            let (n, g) = run::<f64>(p, &targets, &lengths, blank, s.zero_infinity)?;
            (Tensor::from_vec(n, batch, p.device())?, Tensor::from_vec(g, (batch, steps, classes), p.device())?)
        }
        d => return Err(invalid("train.dtype", format!("\"ctc_loss_cpu\" not implemented for '{d:?}' (PyTorch's CPU CTC loss computes in f32 or f64: use autocast, `precision = \"amp_f16\"`)"))),
    };
    let nll = crate::ops::expr::grad::with_grad(p, &value, Arc::new(move |g| grad.broadcast_mul(&g.reshape((g.elem_count(), 1, 1))?)))?;
    Ok((nll, targets.iter().map(Vec::len).collect()))
}

/// Why `ctc`'s loss is infinite: the first row whose input steps (its unpadded positions under
/// the padding `mask`, PyTorch's `input_lengths`, or every step) cannot emit its labels in `y`,
/// each label a step and each pair of equal labels back to back a blank between them. No
/// alignment exists, the target's probability is 0, and −log 0 = +∞, as PyTorch's `ctc_loss`
/// gives without `zero_infinity` (which makes it 0, so it is never the cause then). The row and
/// the reason; the `[loss] kind = "ctc"` and a `ctc(p, y)` inside an expression both say it.
/// `None` too where the targets or the mask are not the loss's (its own error says why).
pub fn infeasible(s: &LossSpec, p: &Tensor, y: &Tensor, mask: Option<&Tensor>) -> Option<(usize, String)> {
    if s.zero_infinity {
        return None;
    }
    let (batch, steps, classes) = p.dims3().ok()?;
    let rows = labels(y, classes, s.blank.unwrap_or(0)).ok()?;
    let lengths = input_lengths(mask, batch, steps).ok()?;
    for (r, (labels, &len)) in rows.iter().zip(&lengths).enumerate() {
        let repeats = labels.windows(2).filter(|w| w[0] == w[1]).count();
        let need = labels.len() + repeats;
        if len >= need {
            continue;
        }
        let pairs = if repeats > 0 { format!(" ({repeats} pair(s) of equal labels back to back need a blank between)") } else { String::new() };
        let n = labels.len();
        return Some((r, format!("row {r} has {len} input step(s) and its {n} label(s) need {need}{pairs}: no alignment exists, the target's probability is 0 and its loss −log 0 = +∞ (PyTorch's ctc_loss without zero_infinity)")));
    }
    None
}

/// [`sequences`]' losses alone: `F.ctc_loss(..., reduction='none')`.
pub fn per_sequence(s: &LossSpec, p: &Tensor, y: &Tensor, mask: Option<&Tensor>) -> Result<Tensor> {
    Ok(sequences(s, p, y, mask)?.0)
}

/// The loss of log-probabilities `p` `(batch, steps, classes)` against label rows `y`, each
/// row's input length its unpadded positions under the padding `mask` (every step without one).
pub(super) fn ctc(s: &LossSpec, p: &Tensor, y: &Tensor, mask: Option<&Tensor>) -> Result<Tensor> {
    let (nll, targets) = sequences(s, p, y, mask)?;
    match s.reduction {
        Reduction::Mean => {
            let lengths: Vec<f64> = targets.iter().map(|t| (*t).max(1) as f64).collect();
            let lengths = Tensor::new(lengths, p.device())?.to_dtype(p.dtype())?;
            crate::run::opmath::mean_all(&nll.div(&lengths)?)
        }
        Reduction::Sum => Ok(nll.sum_all()?),
    }
}

/// [`ctc`] in PyTorch: `p` transposed to `(steps, batch, classes)`, the input lengths the
/// padding mask's row sums (every step without padding), the target lengths counted as the
/// labels that are not the blank.
pub(super) fn torch(s: &LossSpec) -> String {
    torch_reducing(s, reduction(s))
}

/// [`torch`] with PyTorch's `reduction` argument `r` (`'none'` for [`per_sequence`]).
pub(super) fn torch_reducing(s: &LossSpec, r: &str) -> String {
    let blank = s.blank.unwrap_or(0);
    format!(
        "F.ctc_loss(p.transpose(0, 1), y.long(), torch.full((p.shape[0],), p.shape[1], dtype=torch.long) if mask is None else (mask != 0).sum(-1), (y != {blank}).sum(-1), blank={blank}, reduction={r}, zero_infinity={})",
        if s.zero_infinity { "True" } else { "False" }
    )
}

/// Only `ctc` takes `blank` and `zero_infinity`.
pub(super) fn problems(s: &LossSpec) -> Vec<(&'static str, String)> {
    let mut out = Vec::new();
    if s.kind != LossKind::Ctc {
        if s.blank.is_some() {
            out.push(("blank", "only `ctc` takes `blank`".into()));
        }
        if s.zero_infinity {
            out.push(("zero_infinity", "only `ctc` takes `zero_infinity`".into()));
        }
    }
    out
}

#[cfg(test)]
#[path = "ctc_tests.rs"]
mod tests;

#[cfg(test)]
#[path = "ctc_lengths_tests.rs"]
mod lengths_tests;
