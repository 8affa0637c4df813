//! PyTorch's "opmath" for f16 and bf16: reductions accumulate in f32, and its
//! fused kernels (softmax, layer norm, `avg_pool2d`) compute in f32 and round
//! once to the tensor's dtype. Without it, a mean of two f16 squares of 60000
//! and 9952 overflows in the sum (69952 > 65504) where PyTorch returns 34976;
//! `nanhunt confirm` found that one on a hunt's f16 finding. Other dtypes pass
//! through.
//!
//! Also PyTorch's two reductions that Candle computes otherwise, in every dtype:
//! a mean divides its sum by the count ([`mean`]; Candle multiplies by `1/n`,
//! which can differ in the last place), and a maximum ([`max`]) lets a NaN win and
//! sends the gradient to the first maximum only (Candle skips a NaN after the
//! first position and sends the whole gradient to every tied maximum).

use candle_core::{DType, Tensor};

use crate::error::Result;
use crate::run::kernel::cast::cast;

/// Whether a dtype computes through f32 in PyTorch's CPU kernels.
fn reduced(d: DType) -> bool {
    matches!(d, DType::F16 | DType::BF16)
}

/// `f(t)` computed in f32 when `t` is f16 or bf16, the result rounded back once.
pub(crate) fn in_f32(t: &Tensor, f: impl FnOnce(&Tensor) -> Result<Tensor>) -> Result<Tensor> {
    if !reduced(t.dtype()) {
        return f(t);
    }
    cast(&f(&cast(t, DType::F32)?)?, t.dtype())
}

/// `f` of several inputs computed in f32 when the first is f16 or bf16 on the CPU, the result
/// rounded back once to its dtype: how PyTorch's CPU matmuls treat half types (f32 products
/// and sums, one rounding), and a way to run nanhunt's f32 kernels on them.
pub(crate) fn all_in_f32(ts: &[&Tensor], f: impl FnOnce(&[Tensor]) -> Result<Tensor>) -> Result<Tensor> {
    let Some(first) = ts.first() else { return f(&[]) };
    if !(reduced(first.dtype()) && crate::run::kernel::takes(first, crate::run::kernel::Dtypes::Floats)) {
        return f(&ts.iter().map(|t| (*t).clone()).collect::<Vec<_>>());
    }
    let wide = ts.iter().map(|t| widen(t)).collect::<Result<Vec<_>>>()?;
    cast(&f(&wide)?, first.dtype())
}

/// `t` in f32 if it is f16 or bf16 (for a kernel with several inputs), else itself.
pub(crate) fn widen(t: &Tensor) -> Result<Tensor> {
    Ok(if reduced(t.dtype()) { cast(t, DType::F32)? } else { t.clone() })
}

/// `t / n`, a true division (PyTorch's `sum(…).div_(n)`; Candle's `t / n` multiplies by `1/n`).
pub(crate) fn div_count(t: &Tensor, n: usize) -> Result<Tensor> {
    div_scalar(t, n as f64)
}

/// `t / v`, a true division by `v` rounded to `t`'s dtype (PyTorch's `t / v` by a Python number;
/// Candle's `t / v` multiplies by `1/v`, which can differ in the last place). For f16 and bf16,
/// call it inside [`in_f32`], where PyTorch divides (`div_true_kernel`'s opmath).
pub(crate) fn div_scalar(t: &Tensor, v: f64) -> Result<Tensor> {
    Ok(t.broadcast_div(&Tensor::new(v, t.device())?.to_dtype(t.dtype())?)?)
}

/// The mean over `dims` as PyTorch's CPU `mean` computes it: the sum (in f32 for f16 and
/// bf16) divided by the count, rounded once (`aten/src/ATen/native/ReduceOps.cpp`, `mean_out`).
pub(crate) fn mean(t: &Tensor, dims: &[usize]) -> Result<Tensor> {
    let n = dims.iter().map(|&d| t.dims().get(d).copied().unwrap_or(1)).product();
    in_f32(t, |t| div_count(&t.sum(dims)?, n))
}

/// The mean of every element (`t.mean()`), as [`mean`].
pub(crate) fn mean_all(t: &Tensor) -> Result<Tensor> {
    in_f32(t, |t| div_count(&t.sum_all()?, t.elem_count()))
}

/// The maximum over `dim`, as PyTorch's `max(dim)` and `max_pool2d` (`if (val > max || isnan(val))`):
/// a NaN wins, else the first maximum, whose position alone receives the gradient (the
/// max's indices pick it). Exact in every dtype, so it runs in the tensor's own.
pub(crate) fn max(t: &Tensor, dim: usize) -> Result<Tensor> {
    let t = t.contiguous()?;
    let nan = t.ne(&t)?;
    let pick = nan.max_keepdim(dim)?.where_cond(&nan.argmax_keepdim(dim)?, &t.argmax_keepdim(dim)?)?;
    Ok(t.gather(&pick, dim)?.squeeze(dim)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_half_mean_accumulates_in_f32() {
        // PyTorch 2.15: torch.tensor([60000., 9952.], dtype=torch.float16).mean() = 34976.
        let t = Tensor::new(&[60000f32, 9952.0], &candle_core::Device::Cpu).unwrap().to_dtype(DType::F16).unwrap();
        assert!(t.mean_all().unwrap().to_dtype(DType::F32).unwrap().to_scalar::<f32>().unwrap().is_infinite(), "Candle's f16 sum overflows");
        let m = in_f32(&t, |t| Ok(t.mean_all()?)).unwrap();
        assert_eq!((m.dtype(), m.to_dtype(DType::F32).unwrap().to_scalar::<f32>().unwrap()), (DType::F16, 34976.0));
    }
}
