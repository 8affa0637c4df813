//! The dense layer: `x W + b`, with `W` stored `(in, out)` like a Keras kernel
//! so the forward pass needs no transpose and its gradient arrives contiguous.

use candle_core::Tensor;

use crate::error::Result;

/// `x W + b` for `x` of shape `(rows, in)`.
pub(super) fn linear(x: &Tensor, w: &Tensor, b: &Tensor) -> Result<Tensor> {
    crate::run::kernel::bias::bias_add(&x.matmul(w)?, b)
}

/// `x W + b` per position: `x` is `(rows, in)` or `(batch, seq, in)`, as `torch.nn.Linear`.
pub(super) fn linear_any(x: &Tensor, w: &Tensor, b: &Tensor) -> Result<Tensor> {
    match *x.dims() {
        [batch, seq, width] => Ok(linear(&x.reshape((batch * seq, width))?, w, b)?.reshape((batch, seq, w.dims()[1]))?),
        _ => linear(x, w, b),
    }
}


