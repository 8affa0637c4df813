//! The dense layer: `x W + b`, with `W` stored `(in, out)` like a Keras kernel
//! so the forward pass needs no transpose and its gradient arrives contiguous.

use candle_core::Tensor;

use crate::error::Result;

/// `x W + b` per position: `x` is `(rows, in)` or `(batch, seq, in)`, as `torch.nn.Linear`.
/// One fused op on the CPU in f32 and f64 (`kernel::linear`); Candle's product and
/// broadcast add otherwise.
pub(super) fn linear(x: &Tensor, w: &Tensor, b: &Tensor) -> Result<Tensor> {
    if crate::run::kernel::handles(x) {
        return crate::run::kernel::linear::linear(x, w, b);
    }
    match *x.dims() {
        [batch, seq, width] => Ok(crate::run::kernel::bias::bias_add(&x.reshape((batch * seq, width))?.matmul(w)?, b)?.reshape((batch, seq, w.dims()[1]))?),
        _ => crate::run::kernel::bias::bias_add(&x.matmul(w)?, b),
    }
}


