//! The dense layer: `x W + b`, with `W` stored `(in, out)` like a Keras kernel
//! so the forward pass needs no transpose and its gradient arrives contiguous.

use candle_core::Tensor;

use crate::error::Result;

/// `x W + b` for `x` of shape `(rows, in)`.
pub(super) fn linear(x: &Tensor, w: &Tensor, b: &Tensor) -> Result<Tensor> {
    Ok((x.matmul(w)? + add_bias(x, b)?)?)
}

/// `x W + b` per position: `x` is `(rows, in)` or `(batch, seq, in)`, as `torch.nn.Linear`.
pub(super) fn linear_any(x: &Tensor, w: &Tensor, b: &Tensor) -> Result<Tensor> {
    match *x.dims() {
        [batch, seq, width] => Ok(linear(&x.reshape((batch * seq, width))?, w, b)?.reshape((batch, seq, w.dims()[1]))?),
        _ => linear(x, w, b),
    }
}

/// The bias broadcast over the rows of `h`, as the product `ones(rows, 1) · bias(1, out)`.
///
/// Equal to a broadcast add, but its backward pass is a small matrix product
/// instead of Candle's strided sum over the batch dimension, which dominated
/// the step time of small models.
pub(super) fn add_bias(h: &Tensor, bias: &Tensor) -> Result<Tensor> {
    let rows = h.dims()[0];
    let ones = Tensor::ones((rows, 1), bias.dtype(), bias.device())?;
    Ok(ones.matmul(&bias.unsqueeze(0)?)?)
}

