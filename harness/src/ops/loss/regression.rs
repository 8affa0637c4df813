//! The regression losses: `mse`, `mae`, `huber` and `mean_abs_ratio` (seed 003's custom
//! `|y − p| / |y|`), each formula beside its PyTorch expression.

use candle_core::Tensor;

use super::{reduction, Terms};
use crate::error::Result;
use crate::ops::py;
use crate::scenario::LossSpec;

/// Mean squared error: `(p − y)²`.
pub(super) fn mse(p: &Tensor, y: &Tensor) -> Result<Terms> {
    Ok(Terms::Elements((p - y)?.sqr()?))
}

/// [`mse`] in PyTorch.
pub(super) const MSE: &str = "(p - y) ** 2";

/// Mean absolute error: `|p − y|`.
pub(super) fn mae(p: &Tensor, y: &Tensor) -> Result<Terms> {
    Ok(Terms::Elements(crate::run::kernel::pointwise::abs(&(p - y)?)?))
}

/// [`mae`] in PyTorch.
pub(super) const MAE: &str = "(p - y).abs()";

/// PyTorch's kernel: z = |x − y|, then 0.5·z·z below delta and delta·(z − 0.5·delta) above,
/// in f32 for f16 and bf16 inputs, rounded once.
pub(super) fn huber(s: &LossSpec, p: &Tensor, y: &Tensor) -> Result<Terms> {
    let delta = s.delta.unwrap_or(1.0);
    let (pw, yw) = (crate::run::opmath::widen(p)?, crate::run::opmath::widen(y)?);
    let d = (pw - yw)?;
    let a = d.abs()?;
    let quad = d.affine(0.5, 0.0)?.mul(&d)?;
    let lin = a.affine(1.0, -0.5 * delta)?.affine(delta, 0.0)?;
    Ok(Terms::Elements(a.lt(delta)?.where_cond(&quad, &lin)?.to_dtype(p.dtype())?))
}

/// [`huber`] in PyTorch: its own function, reduced.
pub(super) fn huber_torch(s: &LossSpec) -> String {
    format!("F.huber_loss(p, y, reduction={}, delta={})", reduction(s), py(s.delta.unwrap_or(1.0)))
}

/// `|p − y| / (|y| + eps)`: infinite where a target is 0 and there is no epsilon.
pub(super) fn mean_abs_ratio(s: &LossSpec, p: &Tensor, y: &Tensor) -> Result<Terms> {
    let eps = s.epsilon.unwrap_or(0.0);
    Ok(Terms::Elements(crate::run::kernel::pointwise::abs(&(p - y)?)?.div(&y.abs()?.affine(1.0, eps)?)?))
}

/// [`mean_abs_ratio`] in PyTorch.
pub(super) fn mean_abs_ratio_torch(s: &LossSpec) -> String {
    format!("(p - y).abs() / (y.abs() + {})", py(s.epsilon.unwrap_or(0.0)))
}
