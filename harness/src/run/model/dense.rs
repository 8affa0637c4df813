//! The dense layer: `x W + b`, with `W` stored `(in, out)` like a Keras kernel
//! so the forward pass needs no transpose and its gradient arrives contiguous.

use candle_core::Tensor;

use crate::error::Result;

/// `x W + b` per position: `x` is `(rows, in)` or `(batch, seq, in)`, as `torch.nn.Linear`.
/// One fused op on the CPU in f32 and f64 (`kernel::linear`), and for f16 and bf16 the same
/// op in f32 with the result rounded once, as PyTorch's CPU `addmm` accumulates half types in
/// f32 (its backward too: the gradients arrive and leave rounded to the half type); Candle's
/// product and broadcast add on other devices.
pub(super) fn linear(x: &Tensor, w: &Tensor, b: &Tensor) -> Result<Tensor> {
    if crate::run::kernel::handles(x) {
        return crate::run::kernel::linear::linear(x, w, b);
    }
    if x.device().is_cpu() && matches!(x.dtype(), candle_core::DType::F16 | candle_core::DType::BF16) {
        return crate::run::opmath::all_in_f32(&[x, w, b], |t| crate::run::kernel::linear::linear(&t[0], &t[1], &t[2]));
    }
    match *x.dims() {
        [batch, seq, width] => Ok(crate::run::kernel::bias::bias_add(&x.reshape((batch * seq, width))?.matmul(w)?, b)?.reshape((batch, seq, w.dims()[1]))?),
        _ => crate::run::kernel::bias::bias_add(&x.matmul(w)?, b),
    }
}

/// Autocast's [`linear`] in f32 storage: the f32 master weight and bias rounded to `low`, and
/// the result too (`kernel::linear::linear_rounded`; one op on the CPU).
pub(super) fn linear_rounded(x: &Tensor, w: &Tensor, b: &Tensor, low: candle_core::DType) -> Result<Tensor> {
    crate::run::kernel::linear::linear_rounded(x, w, b, low)
}
