//! `cross_entropy` of class-index targets, as PyTorch's `F.cross_entropy(p, t, ignore_index=,
//! label_smoothing=)` computes it (`aten/src/ATen/native/LossNLL.cpp`): the targets are one
//! index per row (or per position of a sequence), read from a one-column target; a target equal
//! to `ignore_index` leaves its row out. The loss is `nll_loss` of `log_softmax(p)`, a mean over
//! the rows kept, so a batch whose every target is ignored is 0/0 = NaN, with a zero gradient
//! (PyTorch 2.15). With `label_smoothing` ε, PyTorch's `cross_entropy_loss_label_smoothing`:
//! `(1 − ε)·nll + ε/k · Σ_kept(−Σ_c log_softmax(p)_c) / kept`. A target that is neither a class
//! nor `ignore_index` is PyTorch's error, "Target 5 is out of bounds.". An expression's
//! `cross_entropy(p, y, reduction='none')` is one loss per row or position (`cross_entropy_rows`),
//! 0 where the target is ignored, so a masked mean can be written over it.
//!
//! One-hot (probability) targets keep the stable formula of `probability.rs`; their
//! `label_smoothing` is PyTorch's `y·(1 − ε) + ε/k` in place of `y`.

use candle_core::{Tensor, D};

use super::indices::ignore_index;
use super::nll;
use super::reduction;
use crate::error::{Error, Result};
use crate::ops::diagnosis::{round, Limits, Rule};
use crate::ops::{py, Explained};
use crate::run::kernel::activation::log_softmax_along;
use crate::run::opmath::{div_count, in_f32};
use crate::scenario::{DTypeName, LossSpec, Reduction};

/// The rows of `y` (one index each) as class indices of `k` classes: each row's index (0 for
/// an ignored row) and whether it is kept; a bad target is PyTorch's error.
fn targets(s: &LossSpec, y: &Tensor, k: usize) -> Result<(Vec<u32>, Vec<bool>)> {
    let ignore = ignore_index(s);
    let values: Vec<f64> = y.flatten_all()?.to_dtype(candle_core::DType::F64)?.to_vec1()?;
    let mut index = Vec::with_capacity(values.len());
    let mut kept = Vec::with_capacity(values.len());
    for v in values {
        if v == ignore as f64 {
            index.push(0);
            kept.push(false);
        } else if v.fract() == 0.0 && v >= 0.0 && v < k as f64 {
            index.push(v as u32);
            kept.push(true);
        } else {
            let message = format!("Target {v} is out of bounds: class-index targets are integers in 0..{k} or ignore_index {ignore} (PyTorch's IndexError)");
            return Err(Error::Invalid { location: "loss".into(), key: "data.targets".into(), message });
        }
    }
    Ok((index, kept))
}

/// The log-softmax of logits `p` (`(…, k)`) as rows `(rows, k)`, each row's `−log_softmax` at its
/// target (at class 0 where ignored), and which rows are kept.
fn picked(s: &LossSpec, p: &Tensor, y: &Tensor) -> Result<(Tensor, Tensor, Vec<bool>)> {
    let k = p.dims().last().copied().unwrap_or(1);
    let rows = p.elem_count() / k.max(1);
    let (index, kept) = targets(s, y, k)?;
    let logp = log_softmax_along(&p.reshape((rows, k))?, D::Minus1)?;
    let picked = Tensor::from_vec(index, (rows, 1), p.device())?;
    let nll = logp.gather(&picked, 1)?.squeeze(1)?.neg()?;
    Ok((logp, nll, kept))
}

/// `−Σ_c log_softmax(p)_c` per row (PyTorch's `smooth_loss`), summed in f32 for a half `logp`
/// and rounded once, 0 where the row is not `kept`.
fn smooth_rows(logp: &Tensor, kept: &Tensor) -> Result<Tensor> {
    let smooth = in_f32(logp, |l| Ok(l.sum(D::Minus1)?))?.neg()?;
    Ok(kept.where_cond(&smooth, &smooth.zeros_like()?)?)
}

/// 1 at a kept row, 0 at an ignored one.
fn kept_mask(kept: &[bool], device: &candle_core::Device) -> Result<Tensor> {
    Ok(Tensor::from_iter(kept.iter().map(|&b| u8::from(b)), device)?)
}

/// The loss of logits `p` (`(…, k)`) against one class index per row or position `y`.
pub(super) fn cross_entropy(s: &LossSpec, p: &Tensor, y: &Tensor) -> Result<Tensor> {
    let k = p.dims().last().copied().unwrap_or(1);
    let (logp, picked, kept) = picked(s, p, y)?;
    let nll = nll::reduce_kept(s.reduction, &picked, Some(&kept))?;
    let eps = s.label_smoothing.unwrap_or(0.0);
    if eps == 0.0 {
        return Ok(nll);
    }
    // `smooth_loss = −input.sum(class_dim)`, masked to 0 where ignored, its sum over the kept count.
    let smooth = smooth_rows(&logp, &kept_mask(&kept, p.device())?)?;
    let count = kept.iter().filter(|b| **b).count();
    // The sum rounded to the dtype, then divided in it (a half tensor over the count).
    let smooth = in_f32(&smooth, |t| Ok(t.sum_all()?))?;
    let smooth = match s.reduction {
        Reduction::Mean => div_count(&smooth, count)?,
        Reduction::Sum => smooth,
    };
    // Each product by a Python float is computed in f32 and rounded once, as PyTorch's scalar ops.
    Ok((scaled(&nll, 1.0 - eps)? + scaled(&smooth, eps / k as f64)?)?)
}

/// [`cross_entropy`] with `reduction='none'`: each row's (or position's) loss, of `p`'s shape
/// without its classes, `(1 − ε)·nll + ε/k · smooth` per row as PyTorch's
/// `cross_entropy_loss_label_smoothing` (`nll_loss`'s row, and the smoothing term, masked to 0
/// where the target is `ignore_index`): an ignored row is 0 with a zero gradient.
pub(super) fn cross_entropy_rows(s: &LossSpec, p: &Tensor, y: &Tensor) -> Result<Tensor> {
    let k = p.dims().last().copied().unwrap_or(1);
    let (logp, picked, kept) = picked(s, p, y)?;
    let mask = kept_mask(&kept, p.device())?;
    let nll = mask.where_cond(&picked, &picked.zeros_like()?)?;
    let rows = match s.label_smoothing.filter(|e| *e > 0.0) {
        Some(eps) => (scaled(&nll, 1.0 - eps)? + scaled(&smooth_rows(&logp, &mask)?, eps / k as f64)?)?,
        None => nll,
    };
    Ok(rows.reshape(&p.dims()[..p.rank().saturating_sub(1)])?)
}

/// Why the cross-entropy of logits `p` against class indices `y` is NaN from finite logits: every
/// target of the batch is `ignore_index`, so the mean over the targets kept (PyTorch's `nll_loss`,
/// and label smoothing's term alike) divides a sum over no row by a weight of 0: 0 / 0 = NaN, with
/// a zero gradient (PyTorch 2.15). `None` for a sum (0 over no row), one-hot targets, a target out
/// of bounds (the loss's error), or a batch with a real label.
pub fn all_ignored(s: &LossSpec, p: &Tensor, y: &Tensor) -> Result<Explained> {
    let k = p.dims().last().copied().unwrap_or(1);
    if s.reduction != Reduction::Mean || !super::indexes(p.elem_count(), k, y.elem_count()) {
        return Ok(None);
    }
    let Ok((_, kept)) = targets(s, y, k) else { return Ok(None) };
    if kept.is_empty() || kept.contains(&true) {
        return Ok(None);
    }
    let n = kept.len();
    let smoothing = if s.label_smoothing.is_some_and(|e| e > 0.0) { " (label smoothing's term divides by the same 0)" } else { "" };
    let reason = format!(
        "every target of the batch ({n} of {n}) is ignore_index {}, so cross_entropy's mean over the targets not ignored divides a sum over no row by a weight of 0: 0 / 0 = NaN{smoothing}, as PyTorch's gives (with a zero gradient); fix: skip a batch with no real label, reduce by the sum (0 for such a batch; `loss.sum() / max(1, kept)`), or make sure every batch holds a real label",
        ignore_index(s)
    );
    Ok(Some((Rule::DivisionByZero, reason)))
}

/// Why the cross-entropy of logits `p` against targets `y` went non-finite in dtype `d` although
/// every row's loss is finite: their reduction passed `d`'s largest value. With class indices,
/// PyTorch's `nll_loss` adds the kept rows' losses in the input's own dtype (`nll.rs`: in f16 and
/// bf16 a cascade rounded to the dtype), so the sum is +Inf and so is the mean, which divides it
/// afterwards; with one-hot (probability) rows, PyTorch's `cross_entropy_loss_prob_target` sums
/// every term `y · log_softmax(p)` at once (in f32 for f16 and bf16) and rounds the sum to the
/// dtype before a mean divides it, so both overflow alike. `None` where a row's loss is not finite
/// in `d` itself, or the reduction fits.
pub fn overflow(s: &LossSpec, p: &Tensor, y: &Tensor, d: DTypeName) -> Result<Explained> {
    let k = p.dims().last().copied().unwrap_or(1).max(1);
    let z: Vec<f64> = p.flatten_all()?.to_dtype(candle_core::DType::F64)?.to_vec1()?;
    // Each row's log-softmax, logsumexp(z) − z in f64, rounded to `d` as PyTorch's output is.
    let logp: Vec<Vec<f64>> = z
        .chunks(k)
        .map(|row| {
            let m = row.iter().copied().fold(f64::NEG_INFINITY, f64::max);
            let lse = m + row.iter().map(|v| (v - m).exp()).sum::<f64>().ln();
            row.iter().map(|v| round(v - lse, d)).collect()
        })
        .collect();
    let indices = super::indexes(p.elem_count(), k, y.elem_count());
    let (losses, kept, summed) = if indices {
        let Ok((index, kept)) = targets(s, y, k) else { return Ok(None) };
        let losses: Vec<f64> = logp.iter().zip(&index).map(|(row, &t)| -row[t as usize]).collect();
        let summed = match d {
            DTypeName::F64 => round(losses.iter().zip(&kept).filter(|(_, k)| **k).map(|(l, _)| l).sum(), d),
            DTypeName::F32 | DTypeName::F16 | DTypeName::Bf16 => {
                let v: Vec<f32> = losses.iter().map(|l| *l as f32).collect();
                f64::from(nll::cascade(&v, |b| kept[b], |x| round(f64::from(x), d) as f32))
            }
        };
        (losses, kept, summed)
    } else {
        // PyTorch's smoothed target `y·(1 − ε) + ε/k`, each term rounded to `d`.
        let eps = s.label_smoothing.unwrap_or(0.0);
        let t: Vec<f64> = y.flatten_all()?.to_dtype(candle_core::DType::F64)?.to_vec1::<f64>()?.iter().map(|t| round(round(t * (1.0 - eps), d) + eps / k as f64, d)).collect();
        let terms: Vec<Vec<f64>> = logp.iter().zip(t.chunks(k)).map(|(row, t)| row.iter().zip(t).map(|(l, t)| round(l * t, d)).collect()).collect();
        if let Some(found) = term_overflow(&logp, &terms, t.chunks(k), d) {
            return Ok(Some(found));
        }
        let losses: Vec<f64> = terms.iter().map(|row| round(-row.iter().sum::<f64>(), d)).collect();
        let summed = round(-terms.iter().flatten().sum::<f64>(), d);
        (losses, vec![true; logp.len()], summed)
    };
    let lim = Limits::of(d);
    if losses.iter().zip(&kept).any(|(l, k)| *k && !(l.is_finite() && l.abs() <= lim.max)) || (summed.is_finite() && summed.abs() <= lim.max) {
        return Ok(None);
    }
    let exact: f64 = losses.iter().zip(&kept).filter(|(_, k)| **k).map(|(l, _)| l).sum();
    let n = kept.iter().filter(|k| **k).count();
    let (row, big) = losses.iter().enumerate().filter(|(r, _)| kept[*r]).fold((0, f64::NEG_INFINITY), |a, (r, l)| if *l > a.1 { (r, *l) } else { a });
    let dt: &str = d.into();
    let how = match (indices, d) {
        (true, _) => format!("cross_entropy adds the {n} rows' losses in {dt}, as PyTorch's nll_loss does, and"),
        (false, DTypeName::F16 | DTypeName::Bf16) => {
            format!("cross_entropy adds the {n} rows' terms y · log_softmax(p) in f32 and rounds the total to {dt}, as PyTorch's does with probability targets, and")
        }
        (false, DTypeName::F32 | DTypeName::F64) => format!("over the {n} rows"),
    };
    let mean = match s.reduction {
        Reduction::Mean => format!(", and so is the mean, which divides it by {n} afterwards"),
        Reduction::Sum => String::new(),
    };
    let reason = format!(
        "every row's loss is finite (the largest, row {row}, {}), but {how} their sum {} is beyond {dt}'s largest value {}: +Inf{mean}",
        crate::human(big),
        crate::human(exact),
        crate::human(lim.max)
    );
    Ok(Some((Rule::Overflow, reason)))
}

/// A one-hot (probability) row's term `y · log_softmax(p)` past `d`'s largest value: a target
/// far outside [0, 1] (a scaled one) times a log-probability, which makes the row's loss ±Inf.
/// `logp` is each row's log-softmax, `terms` each row's products, both rounded to `d`.
fn term_overflow<'a>(logp: &[Vec<f64>], terms: &[Vec<f64>], targets: impl Iterator<Item = &'a [f64]>, d: DTypeName) -> Explained {
    let lim = Limits::of(d);
    logp.iter().zip(terms).zip(targets).enumerate().find_map(|(r, ((logp, terms), t))| {
        let c = (0..terms.len()).find(|&c| logp[c].is_finite() && terms[c].abs() > lim.max)?;
        let dt: &str = d.into();
        let reason = format!(
            "the term y · log_softmax(p) of row {r}, class {c}, is {} × {} = {}, beyond {dt}'s largest value {}: the row's loss and the loss are ±Inf (targets are probabilities in [0, 1]; this one is scaled)",
            crate::human(t[c]),
            crate::human(logp[c]),
            crate::human(t[c] * logp[c]),
            crate::human(lim.max)
        );
        Some((Rule::Overflow, reason))
    })
}

/// `t · a`, in f32 for a half `t` and rounded once (PyTorch's tensor-by-scalar product).
fn scaled(t: &Tensor, a: f64) -> Result<Tensor> {
    in_f32(t, |t| Ok(t.affine(a, 0.0)?))
}

/// One-hot (probability) targets smoothed as PyTorch's `cross_entropy_loss_prob_target`:
/// `y·(1 − ε) + ε/k` for `k` classes (the prediction's last dimension), each step rounded in
/// the targets' dtype.
pub(super) fn smoothed(s: &LossSpec, y: &Tensor, k: usize) -> Result<Tensor> {
    match s.label_smoothing.filter(|e| *e > 0.0) {
        Some(eps) => Ok(in_f32(&scaled(y, 1.0 - eps)?, |t| Ok(t.affine(1.0, eps / k as f64)?))?),
        None => Ok(y.clone()),
    }
}

/// `cross_entropy` in PyTorch: class indices when the targets have one value per row or
/// position (decided on the tensors, as nanhunt decides), else one-hot (probability) rows; both
/// `F.cross_entropy`, which nanhunt computes stage by stage in f16 and bf16 too.
pub(super) fn torch(s: &LossSpec) -> String {
    lines(s, reduction(s), "")
}

/// [`cross_entropy_rows`] in PyTorch (`reduction='none'`, then the rows in `p`'s shape without its
/// classes, as people `view` them back), for both kinds of targets as [`torch`].
pub(super) fn torch_rows(s: &LossSpec) -> String {
    lines(s, "'none'", ".reshape(p.shape[:-1])")
}

/// [`torch`] with reduction `r` (a Python string), then `back` (the rows reshaped, or nothing).
fn lines(s: &LossSpec, r: &str, back: &str) -> String {
    let smoothing = py(s.label_smoothing.unwrap_or(0.0));
    let indices = format!("F.cross_entropy(p.reshape(-1, p.shape[-1]), y.reshape(-1).long(), ignore_index={}, label_smoothing={smoothing}, reduction={r}){back}", ignore_index(s));
    let one_hot = format!("F.cross_entropy(p.reshape(-1, p.shape[-1]), y.reshape(-1, p.shape[-1]), label_smoothing={smoothing}, reduction={r}){back}");
    format!("({indices} if p.shape[-1] > 1 and y.numel() * p.shape[-1] == p.numel() else {one_hot})")
}

/// The problems of `ignore_index` and `label_smoothing`: only `cross_entropy` takes them, and
/// the smoothing is in `[0, 1]` (PyTorch's check).
pub(super) fn problems(s: &LossSpec) -> Vec<(&'static str, String)> {
    let mut out = Vec::new();
    let ce = s.kind == crate::scenario::LossKind::CrossEntropy;
    if s.ignore_index.is_some() && !ce {
        out.push(("ignore_index", "only `cross_entropy` takes `ignore_index`".into()));
    }
    match s.label_smoothing {
        Some(_) if !ce => out.push(("label_smoothing", "only `cross_entropy` takes `label_smoothing`".into())),
        Some(e) if !(0.0..=1.0).contains(&e) => out.push(("label_smoothing", format!("must be between 0.0 and 1.0, got {e} (as PyTorch checks)"))),
        Some(_) | None => {}
    }
    out
}

#[cfg(test)]
#[path = "classes_tests.rs"]
mod tests;
