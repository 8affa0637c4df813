//! The reductions whose PyTorch backward is not the chain rule of their forward, each a value
//! computed without a graph (and off Candle's own kernels where those differ from ATen's) and its
//! input's gradient set by hand (`derivatives.yaml`,
//! `FunctionsManual.cpp`):
//! - `norm` (`norm_backward`, every `p`): in `norm.rs`;
//! - `std` (`std_backward`): `var_backward(grad / (2·std))` with 0 where the std is 0;
//! - `amax`/`amin` (`scale_grad_by_count`): the gradient shared evenly among the elements
//!   equal to the extreme (Candle's `max` gives each tie all of it), NaN where a NaN wins;
//! - `logsumexp` (`logsumexp_backward`): `grad · exp(x − result)`;
//! - `cumsum` (`cumsum_backward`): the running sum from the end, each accumulated as ATen's;
//! - `cosine_similarity` (`aten/src/ATen/native/Distance.cpp`): in `norm.rs`, beside the norm it divides by.
//!
//! - `var` (`var_backward`): `((2 / (n − correction)) · grad) · (x − mean)`, with no term through
//!   the mean (its chain rule would add one that is 0 only in exact arithmetic).
//!
//! A half input's value is computed in f32 and rounded once, as PyTorch's CPU reductions
//! accumulate in f32; the backward's steps run in the input's dtype from the rounded values,
//! except where ATen's own backward accumulates wider: `cumsum`'s running sum (f32 for a half
//! type, f64 for f32) and `scale_grad_by_count`'s count (an integer, converted once).

use std::sync::Arc;

use candle_core::{CpuStorage, CustomOp2, DType, Layout, Shape, Tensor};

use crate::error::Result;
use crate::run::opmath::in_f32;

/// A function from the output's gradient (`keepdim`'s shape) to the input's.
pub(crate) type Backward = Arc<dyn Fn(&Tensor) -> candle_core::Result<Tensor> + Send + Sync>;

/// `value` (computed from `x` off the graph) as a function of `x` whose backward is `back`.
pub(crate) fn with_grad(x: &Tensor, value: &Tensor, back: Backward) -> Result<Tensor> {
    Ok(x.apply_op2(&value.contiguous()?, Override(back))?)
}

struct Override(Backward);

impl CustomOp2 for Override {
    fn name(&self) -> &'static str {
        "expr_reduction"
    }

    fn cpu_fwd(&self, _: &CpuStorage, _: &Layout, s: &CpuStorage, layout: &Layout) -> candle_core::Result<(CpuStorage, Shape)> {
        let Some((a, b)) = layout.contiguous_offsets() else { candle_core::bail!("expr_reduction: value must be contiguous") };
        let out = match s {
            CpuStorage::F32(v) => CpuStorage::F32(v[a..b].to_vec()),
            CpuStorage::F64(v) => CpuStorage::F64(v[a..b].to_vec()),
            CpuStorage::F16(v) => CpuStorage::F16(v[a..b].to_vec()),
            CpuStorage::BF16(v) => CpuStorage::BF16(v[a..b].to_vec()),
            _ => candle_core::bail!("expr_reduction: unsupported dtype"),
        };
        Ok((out, layout.shape().clone()))
    }

    fn bwd(&self, _: &Tensor, _: &Tensor, _: &Tensor, grad: &Tensor) -> candle_core::Result<(Option<Tensor>, Option<Tensor>)> {
        Ok((Some((self.0)(grad)?), None))
    }
}

/// How many values each output of a reduction over `dims` of `x` reads.
fn count(x: &Tensor, dims: &[usize]) -> usize {
    dims.iter().map(|&d| x.dims()[d]).product()
}

/// `amax` (`max` true) or `amin` over `dims`, kept: a NaN in the reduced set gives NaN, and
/// the gradient is ATen's `scale_grad_by_count`, `(grad / count) · mask` with `mask` where `x`
/// equals the result: ties share it evenly, and a NaN result's row is NaN (`x == NaN` holds
/// nowhere, so `grad / 0`, times 0).
pub fn extreme(x: &Tensor, dims: &[usize], max: bool) -> Result<Tensor> {
    let v = x.detach();
    let m = extreme_value(&v, dims, max)?;
    with_grad(x, &m, scale_grad_by_count(&v.broadcast_eq(&m)?, dims, x.dtype())?)
}

/// ATen's `scale_grad_by_count(grad, mask, dims)`: `(grad / mask.sum(dims, keepdim)) · mask`,
/// for a 0/1 `mask` (u8) over `x` of `dtype`. ATen counts in int64 and converts the count to
/// `dtype` once (a sum of ones in bf16 would stall at 256, in f16 at 2048); here the count is
/// an f32 sum, exact to 2^24 elements. Shared by `amax`/`amin` and `norm`'s `p = ±∞`.
pub(crate) fn scale_grad_by_count(mask: &Tensor, dims: &[usize], dtype: DType) -> Result<Backward> {
    let count = mask.to_dtype(DType::F32)?.sum_keepdim(dims)?.to_dtype(dtype)?;
    let mask = mask.to_dtype(dtype)?;
    Ok(Arc::new(move |g| g.broadcast_div(&count)?.broadcast_mul(&mask)))
}

/// The maximum (`max` true) or minimum of `x` over `dims`, kept, without a gradient of its
/// own: NaN where the reduced set holds a NaN, as ATen's `amax`/`amin` (Candle's `max` keeps a
/// NaN only in the first position: `NaN < v` and `v < NaN` are both false). The NaN test is
/// `run::opmath::max`'s, `x != x` reduced by `max`, in u8.
pub fn extreme_value(x: &Tensor, dims: &[usize], max: bool) -> Result<Tensor> {
    let (mut m, mut nan) = (x.detach(), x.ne(x)?);
    for &d in dims {
        m = if max { m.max_keepdim(d)? } else { m.min_keepdim(d)? };
        nan = nan.max_keepdim(d)?;
    }
    Ok(nan.where_cond(&Tensor::new(f64::NAN, x.device())?.to_dtype(x.dtype())?.broadcast_as(m.shape())?, &m)?)
}

/// `logsumexp` over `dims`, kept, as ATen's: the maximum (0 where it is infinite) taken out,
/// the exponentials summed (in f32 for a half type, rounded once), the log, the maximum added
/// back, each step in `x`'s dtype; its gradient `logsumexp_backward`, `grad · exp(x − result)`
/// (NaN where `x` and the result are the same infinity). Candle's plain `max` serves: a NaN in
/// the set makes its `exp(x − m)` NaN whatever maximum `m` is, so the sum and result are NaN.
pub fn logsumexp(x: &Tensor, dims: &[usize]) -> Result<Tensor> {
    let v = x.detach();
    let mut m = v.clone();
    for &d in dims {
        m = m.max_keepdim(d)?;
    }
    let m = m.abs()?.eq(f64::INFINITY)?.where_cond(&m.zeros_like()?, &m)?;
    let e = v.broadcast_sub(&m)?.exp()?;
    let out = in_f32(&e, |e| Ok(e.sum_keepdim(dims)?))?.log()?.broadcast_add(&m)?;
    let share = v.broadcast_sub(&out)?.exp()?;
    with_grad(x, &out, Arc::new(move |g| g.broadcast_mul(&share)))
}

/// `cumsum` along `dim` as ATen's CPU kernel: one running sum in `acc_type` (f64 for f32 and
/// f64, f32 for the half types), each output rounded once from it, so a NaN or ±∞ reaches only
/// the outputs after it (Candle's `cumsum` is a product with a triangle of ones, where
/// `∞ · 0` and `NaN · 0` reach every output). Its gradient is `cumsum_backward`, the same sum
/// taken from the end (`grad.flip(dim).cumsum(dim).flip(dim)`).
pub fn cumsum(x: &Tensor, dim: usize) -> Result<Tensor> {
    let value = running_sum(&x.detach(), dim, false)?;
    with_grad(x, &value, Arc::new(move |g| running_sum(g, dim, true).map_err(candle_core::Error::wrap)))
}

/// The running sum of `t` along `dim` (from the end with `reverse`), accumulated as ATen's;
/// a 0-d `t` (whose `dim` is 0 or −1, as PyTorch allows) is its own running sum.
fn running_sum(t: &Tensor, dim: usize, reverse: bool) -> Result<Tensor> {
    if t.rank() == 0 {
        return Ok(t.clone());
    }
    let last = t.rank() - 1;
    let moved = t.transpose(dim, last)?.contiguous()?;
    let n = moved.dim(last)?;
    let half = matches!(t.dtype(), DType::F16 | DType::BF16);
    // f32 sums of f32 values are the f64 sums rounded to f32 (53 ≥ 2·24 + 2 bits).
    let acc = |a: f64| if half { a as f32 as f64 } else { a };
    let mut vals = moved.flatten_all()?.to_dtype(DType::F64)?.to_vec1::<f64>()?;
    for row in vals.chunks_mut(n.max(1)) {
        let mut s = 0.0;
        let mut add = |v: &mut f64| {
            s = acc(s + *v);
            *v = s;
        };
        match reverse {
            false => row.iter_mut().for_each(&mut add),
            true => row.iter_mut().rev().for_each(&mut add),
        }
    }
    let out = Tensor::from_vec(vals, moved.shape(), t.device())?.to_dtype(t.dtype())?;
    Ok(out.transpose(dim, last)?.contiguous()?)
}

/// `var` over `dims` with `correction`, kept: `sum((x − mean)²) / (n − correction)`, computed in
/// f32 for a half type and rounded once (PyTorch's CPU reduction accumulates in f32); its
/// gradient PyTorch's `var_backward`, `((2 / (n − correction)) · grad) · (x − mean)`, each step
/// in the input's dtype, with no term through the mean.
pub fn variance(x: &Tensor, dims: &[usize], correction: f64) -> Result<Tensor> {
    let v = x.detach();
    let var = in_f32(&v, |v| variance_value(v, dims, correction))?;
    with_grad(x, &var, var_backward(&v, dims, correction)?)
}

/// The variance's value, in `x`'s own dtype.
fn variance_value(x: &Tensor, dims: &[usize], correction: f64) -> Result<Tensor> {
    let d = x.broadcast_sub(&x.mean_keepdim(dims)?)?;
    Ok((d.sqr()?.sum_keepdim(dims)? / (count(x, dims) as f64 - correction))?)
}

/// PyTorch's `var_backward` of `v` (detached): `((2 / (n − correction)) · grad) · (v − mean)`.
fn var_backward(v: &Tensor, dims: &[usize], correction: f64) -> Result<Backward> {
    let dev = v.broadcast_sub(&in_f32(v, |v| Ok(v.mean_keepdim(dims)?))?)?;
    let scale = 2.0 / (count(v, dims) as f64 - correction);
    // A half tensor times a Python float multiplies in f32 (PyTorch's opmath), where Candle's
    // affine would round the scale to the half type first.
    Ok(Arc::new(move |g| dev.broadcast_mul(&in_f32(g, |g| Ok((g * scale)?)).map_err(candle_core::Error::wrap)?)))
}

/// `std` over `dims` with `correction`, kept, in f32 for a half type and rounded once; its
/// gradient PyTorch's `std_backward`: `var_backward(grad / (2·std))`, with 0 where the std is 0.
pub fn std(x: &Tensor, dims: &[usize], correction: f64) -> Result<Tensor> {
    let v = x.detach();
    let s = in_f32(&v, |v| Ok(variance_value(v, dims, correction)?.sqrt()?))?;
    let var_grad = var_backward(&v, dims, correction)?;
    let (s2, zero) = ((&s * 2.0)?, s.eq(0.0)?);
    with_grad(
        x,
        &s,
        Arc::new(move |g| {
            let q = g.broadcast_div(&s2)?;
            var_grad(&zero.where_cond(&q.zeros_like()?, &q)?)
        }),
    )
}
