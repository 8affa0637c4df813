//! `torch.norm(x, p=, dim=, keepdim=)`, which is `torch.linalg.vector_norm` for a number `p`:
//! `p = 0` counts the non-zero elements, `p = 1` sums `|x|`, `p = 2` is `sqrt(sum(x²))`,
//! `p = inf` and `-inf` the largest and smallest `|x|` (a NaN wins), any other `p` (negative
//! too) `sum(|x|^p)^(1/p)`. A half input's value is computed in f32 and rounded once (PyTorch's
//! CPU reductions accumulate in f32).
//!
//! Its gradient is PyTorch's `norm_backward` (`torch/csrc/autograd/FunctionsManual.cpp`),
//! each step in the input's dtype from the rounded norm:
//! - `p = 0`: none (zero);
//! - `p = 1`: `sgn(x) · grad` (`sgn(NaN)` is 0, as ATen's);
//! - `p = 2`: `grad · (x / norm)`, the quotient 0 where the norm is 0;
//! - `p = ±inf`: `sgn(x) · (grad / count) · mask`, the mask where `|x|` equals the norm or is
//!   NaN, `count` its size (the gradient shared among ties, `amax`'s backward);
//! - `p < 1`: `sgn(x) · |x|^(p−1)` (0 where x is 0) `· grad · norm^(1−p)`;
//! - `1 < p < 2`: `sgn(x) · |x|^(p−1) · (grad / norm^(p−1))`, the quotient 0 where the norm is 0;
//! - `p > 2`: `x · |x|^(p−2) · (grad / norm^(p−1))`, the same mask.
//!
//! `cosine_similarity` is here too: each operand over its own 2-norm, clamped to `eps`.
//!
//! So an f16 `p = 3` norm of large values has a finite value and a NaN gradient (`x·|x|` and
//! `norm²` overflow to ∞, `grad / ∞ = 0`, `∞ · 0`), as in PyTorch.

use std::sync::Arc;

use candle_core::{DType, Tensor};

use super::grad::{extreme_value, scale_grad_by_count, with_grad, Backward};
use crate::error::Result;
use crate::run::opmath::in_f32;

/// The `p`-norm of `x` over `dims`, kept, with PyTorch's value and gradient.
pub fn norm(x: &Tensor, dims: &[usize], p: f64) -> Result<Tensor> {
    let v = x.detach();
    let n = in_f32(&v, |v| value(v, dims, p))?;
    let back = backward(&v, &n, dims, p)?;
    with_grad(x, &n, back)
}

/// The norm's value in `x`'s own dtype (f32 for a half input, through `in_f32`).
fn value(x: &Tensor, dims: &[usize], p: f64) -> Result<Tensor> {
    let a = x.abs()?;
    Ok(if p == 0.0 {
        x.ne(0.0)?.to_dtype(x.dtype())?.sum_keepdim(dims)?
    } else if p == 1.0 {
        a.sum_keepdim(dims)?
    } else if p == 2.0 {
        x.sqr()?.sum_keepdim(dims)?.sqrt()?
    } else if p.is_infinite() {
        // A NaN wins, as ATen's `amax`/`amin`.
        extreme_value(&a, dims, p > 0.0)?
    } else {
        a.powf(p)?.sum_keepdim(dims)?.powf(1.0 / p)?
    })
}

/// `sgn(x)`: −1, 0 or 1, and 0 for NaN, as ATen's `sgn` of a real tensor.
fn sgn(x: &Tensor) -> Result<Tensor> {
    Ok(x.sign()?)
}

/// `t^e` as ATen's `pow(Tensor, Scalar)` (`aten/src/ATen/native/cpu/PowKernel.cpp`): the
/// exponents 0.5, 2, 3, −0.5, −1, −2 as `sqrt`, `t·t`, `t·t·t`, `rsqrt`, `1/t`, `1/(t·t)`, each
/// step rounded in bf16 (its vectorised ops) and once from f32 in f16 (as PyTorch 2.15 gives them:
/// 100000 draws agree); any other exponent `std::pow`, the exponent rounded to a half dtype first
/// (which Candle's `powf` does).
fn pow(t: &Tensor, e: f64) -> Result<Tensor> {
    let special = |t: &Tensor| -> candle_core::Result<Tensor> {
        match e {
            0.5 => t.sqrt(),
            2.0 => t.sqr(),
            3.0 => t.sqr()?.mul(t),
            -0.5 => t.sqrt()?.recip(),
            -1.0 => t.recip(),
            -2.0 => t.sqr()?.recip(),
            _ => t.powf(e),
        }
    };
    if !matches!(e, 0.5 | 2.0 | 3.0 | -0.5 | -1.0 | -2.0) {
        return Ok(t.powf(e)?);
    }
    match t.dtype() {
        // bf16's rsqrt is ATen's vectorised one, about f32's rounded once (a few in 1e5 differ).
        DType::BF16 if e != -0.5 => Ok(special(t)?),
        _ => in_f32(t, |t| Ok(special(t)?)),
    }
}

/// `t` with 0 where `cond` (kept dims, broadcast) holds: ATen's `masked_fill_(cond, 0)`.
fn zero_where(cond: &Tensor, t: &Tensor) -> Result<Tensor> {
    Ok(cond.broadcast_as(t.shape())?.where_cond(&t.zeros_like()?, t)?)
}

/// `norm_backward` of `v` (detached) and its rounded norm `n` (kept), as a function of the
/// output's gradient (kept).
fn backward(v: &Tensor, n: &Tensor, dims: &[usize], p: f64) -> Result<Backward> {
    let n = n.clone();
    Ok(if p == 0.0 {
        let zero = v.zeros_like()?;
        Arc::new(move |_| Ok(zero.clone()))
    } else if p == 1.0 {
        let s = sgn(v)?;
        Arc::new(move |g| s.broadcast_mul(g))
    } else if p == 2.0 {
        let q = zero_where(&n.eq(0.0)?, &v.broadcast_div(&n)?)?;
        Arc::new(move |g| q.broadcast_mul(g))
    } else if p.is_infinite() {
        let a = v.abs()?;
        let scale = scale_grad_by_count(&a.broadcast_eq(&n)?.maximum(&a.ne(&a)?)?, dims, v.dtype())?;
        let s = sgn(v)?;
        Arc::new(move |g| s.mul(&scale(g)?))
    } else if p < 1.0 {
        let scaled = sgn(v)?.mul(&zero_where(&v.eq(0.0)?, &pow(&v.abs()?, p - 1.0)?)?)?;
        let np = pow(&n, 1.0 - p)?;
        Arc::new(move |g| scaled.broadcast_mul(g)?.broadcast_mul(&np))
    } else {
        let scaled = if p < 2.0 { sgn(v)?.mul(&pow(&v.abs()?, p - 1.0)?)? } else { v.mul(&pow(&v.abs()?, p - 2.0)?)? };
        let (np, zero) = (pow(&n, p - 1.0)?, n.eq(0.0)?);
        Arc::new(move |g| {
            let q = g.broadcast_div(&np)?;
            let q = zero.where_cond(&q.zeros_like()?, &q)?;
            scaled.broadcast_mul(&q)
        })
    })
}

/// `torch.cosine_similarity(x1, x2, dim, eps)` as PyTorch 2.15's ATen computes it: the operands
/// broadcast, each divided by its 2-norm over `dim` (kept) clamped to at least `eps`, the
/// products summed over `dim`. The clamp has no gradient (ATen's `clamp_min_` under
/// `NoGradGuard`): the norm's gradient is its unclamped one, 0 at a zero norm. So a zero vector's
/// similarity is 0, and its gradient `x2 / (eps · ‖x2‖)`, about 1e8 times. A half type computes
/// in f32 and rounds once, with `eps` rounded to it first (so 1e-8 is 0 in f16, and a zero row
/// 0/0 = NaN, as in PyTorch): Candle's quotient rule squares the divisor, which f16 underflows.
pub fn cosine_similarity(x1: &Tensor, x2: &Tensor, dim: usize, eps: f64) -> Result<Tensor> {
    let shape = x1.shape().broadcast_shape_binary_op(x2.shape(), "cosine_similarity")?;
    let dtype = x1.dtype();
    let eps = Tensor::new(eps, x1.device())?.to_dtype(dtype)?.to_dtype(candle_core::DType::F64)?.to_scalar::<f64>()?;
    let wide = |x: &Tensor| -> Result<Tensor> { crate::run::kernel::cast::cast(&x.broadcast_as(&shape)?.contiguous()?, wider(dtype)) };
    let unit = |x: &Tensor| -> Result<Tensor> {
        let n = norm(x, &[dim], 2.0)?;
        let clamped = n.detach().clamp(eps, f64::INFINITY)?;
        let n = with_grad(&n, &clamped, Arc::new(|g| Ok(g.clone())))?;
        Ok(x.broadcast_div(&n)?)
    };
    let out = unit(&wide(x1)?)?.mul(&unit(&wide(x2)?)?)?.sum(dim)?;
    crate::run::kernel::cast::cast(&out, dtype)
}

/// f32 for the half types, else the dtype itself.
fn wider(d: candle_core::DType) -> candle_core::DType {
    match d {
        candle_core::DType::F16 | candle_core::DType::BF16 => candle_core::DType::F32,
        other => other,
    }
}

#[cfg(test)]
#[path = "norm_tests.rs"]
mod tests;
