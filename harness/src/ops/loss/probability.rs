//! The losses of probabilities and logits: `bce` (the formula as written), `bce_torch`
//! (PyTorch's clamped `binary_cross_entropy`, kernel `run::kernel::bce_torch`), `bce_logits`, and
//! the cross-entropies of one-hot targets (stable through log-softmax, and naive: softmax
//! then log), each formula beside its PyTorch expression.

use candle_core::{Tensor, D};

use super::{clamp, clamped, Terms};
use crate::error::Result;
use crate::ops::py;
use crate::run::opmath::in_f32;
use crate::scenario::LossSpec;

/// `−(y log(p + eps) + (1−y) log(1 − p + eps))` exactly, after the clamp if any.
pub(super) fn bce(s: &LossSpec, p: &Tensor, y: &Tensor) -> Result<Terms> {
    let eps = s.epsilon.unwrap_or(0.0);
    let p = clamp(s, p)?;
    let log_p = p.affine(1.0, eps)?.log()?;
    let log_q = p.affine(-1.0, 1.0 + eps)?.log()?;
    Ok(Terms::Elements((y.mul(&log_p)? + y.affine(-1.0, 1.0)?.mul(&log_q)?)?.neg()?))
}

/// [`bce`] in PyTorch.
pub(super) fn bce_torch_expr(s: &LossSpec) -> String {
    let (q, eps) = (clamped(s, "p"), s.epsilon.unwrap_or(0.0));
    format!("-(y * torch.log({q} + {}) + (1.0 - y) * torch.log(-{q} + {}))", py(eps), py(1.0 + eps))
}

/// PyTorch's `binary_cross_entropy`, after the clamp if any.
pub(super) fn bce_torch(s: &LossSpec, p: &Tensor, y: &Tensor) -> Result<Terms> {
    Ok(Terms::Elements(crate::run::kernel::bce_torch::bce_torch(&clamp(s, p)?, y)?))
}

/// `max(x, 0) − x·y + log(1 + exp(−|x|))`, PyTorch's stable form.
pub(super) fn bce_logits(p: &Tensor, y: &Tensor) -> Result<Terms> {
    Ok(Terms::Elements(bce_logits_elements(p, y)?))
}

/// [`bce_logits`]'s terms, one per element (the focal loss multiplies them).
pub(super) fn bce_logits_elements(p: &Tensor, y: &Tensor) -> Result<Tensor> {
    let soft = p.abs()?.neg()?.exp()?.affine(1.0, 1.0)?.log()?;
    Ok(((p.relu()? - p.mul(y)?)? + soft)?)
}

/// Cross-entropy through log-softmax (stable), one-hot (probability) targets: the fused CPU
/// kernel (`kernel::cross_entropy`) in f32 and f64, one loss per row; in f16 and bf16 PyTorch's
/// `cross_entropy_loss_prob_target` (`LossNLL.cpp`) stage by stage: `log_softmax` computed in f32
/// as PyTorch's CPU kernel rounds it (its backward from the rounded output, as `log_softmax_along`'s), each product
/// `log_softmax(p)·y` rounded to the dtype, and the reduction over
/// every product at once ([`Terms::Whole`]: PyTorch 2.15 gives the mean of 20 f16 rows of loss
/// 3420 as +Inf, their half sum 68400 being past 65504).
pub(super) fn cross_entropy(p: &Tensor, y: &Tensor) -> Result<Terms> {
    if crate::run::kernel::handles(p) {
        // One value per row, summed over classes: reduced over the rows.
        return Ok(Terms::Elements(crate::run::kernel::cross_entropy::rows(p, y)?));
    }
    let logp = crate::run::kernel::activation::log_softmax_along(p, D::Minus1)?;
    Ok(Terms::Whole(logp.mul(y)?.neg()?))
}

/// Softmax, then log (clamped if the loss clamps, `+ eps` inside the log): unstable.
pub(super) fn naive_cross_entropy(s: &LossSpec, p: &Tensor, y: &Tensor) -> Result<Terms> {
    let eps = s.epsilon.unwrap_or(0.0);
    let e = p.exp()?;
    let probs = clamp(s, &e.broadcast_div(&in_f32(&e, |e| Ok(e.sum_keepdim(D::Minus1)?))?)?)?;
    Ok(Terms::Classes(probs.affine(1.0, eps)?.log()?.mul(y)?.neg()?))
}

/// [`naive_cross_entropy`] in PyTorch, per class.
pub(super) fn naive_cross_entropy_torch(s: &LossSpec) -> String {
    let probs = clamped(s, "(ex := torch.exp(p)) / ex.sum(dim=-1, keepdim=True)");
    format!("-(torch.log({probs} + {}) * y)", py(s.epsilon.unwrap_or(0.0)))
}
