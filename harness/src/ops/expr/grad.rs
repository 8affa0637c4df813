//! The reductions whose PyTorch backward is not the chain rule of their forward, each a value
//! computed without a graph and its input's gradient set by hand (`derivatives.yaml`,
//! `FunctionsManual.cpp`):
//! - `norm` (`norm_backward`, every `p`): in `norm.rs`;
//! - `std` (`std_backward`): `var_backward(grad / (2·std))` with 0 where the std is 0;
//! - `amax`/`amin` (`evenly_distribute_backward`): the gradient shared evenly among the
//!   elements equal to the extreme (Candle's `max` gives each tie all of it);
//! - `cosine_similarity` (`aten/src/ATen/native/Distance.cpp`): in `norm.rs`, beside the norm it divides by.
//!
//! - `var` (`var_backward`): `((2 / (n − correction)) · grad) · (x − mean)`, with no term through
//!   the mean (its chain rule would add one that is 0 only in exact arithmetic).
//!
//! A half input's value is computed in f32 and rounded once, as PyTorch's CPU reductions
//! accumulate in f32; the backward's steps run in the input's dtype from the rounded values.

use std::sync::Arc;

use candle_core::{CpuStorage, CustomOp2, Layout, Shape, Tensor};

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

/// `amax` (`max` true) or `amin` over `dims`, kept: ties share the gradient evenly.
pub fn extreme(x: &Tensor, dims: &[usize], max: bool) -> Result<Tensor> {
    let v = x.detach();
    let m = extreme_value(&v, dims, max)?;
    let hit = v.broadcast_eq(&m)?.to_dtype(x.dtype())?;
    let ties = hit.sum_keepdim(dims)?;
    let share = hit.broadcast_div(&ties)?;
    with_grad(x, &m, Arc::new(move |g| share.broadcast_mul(g)))
}

/// The maximum (`max` true) or minimum of `x` over `dims`, kept, without a gradient of its own.
pub fn extreme_value(x: &Tensor, dims: &[usize], max: bool) -> Result<Tensor> {
    let mut m = x.detach();
    for &d in dims {
        m = if max { m.max_keepdim(d)? } else { m.min_keepdim(d)? };
    }
    Ok(m)
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
