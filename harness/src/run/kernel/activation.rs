//! Activations whose formulas need more than one Candle operation: softplus
//! with PyTorch's threshold, and a max-subtracted softmax and log-softmax along
//! any dimension (the softmax layer, attention, `nanhunt::nn` and expressions
//! share them). (The one-operation
//! activations and elementwise functions are applied directly in `mod.rs`.)

use candle_core::shape::Dim;
use candle_core::{Tensor, D};

use crate::error::Result;

/// `log(1 + exp(x))`, with x above PyTorch's threshold of 20 passed through.
///
/// Clamping before `exp` keeps the unused branch finite, so its gradient does
/// not turn into `0 · inf`.
pub(crate) fn softplus(h: &Tensor) -> Result<Tensor> {
    let soft = h.minimum(20.0)?.exp()?.affine(1.0, 1.0)?.log()?;
    Ok(h.gt(20.0)?.where_cond(h, &soft)?)
}

/// Softmax over the last dimension, with the row maximum subtracted first.
pub(crate) fn softmax(h: &Tensor) -> Result<Tensor> {
    softmax_along(h, D::Minus1)
}

/// Softmax over `dim`, its maximum subtracted (and held constant) first.
pub(crate) fn softmax_along<T: Dim + Copy>(h: &Tensor, dim: T) -> Result<Tensor> {
    // As `torch.softmax`: an f16 or bf16 input is computed in f32 and rounded once.
    crate::run::opmath::in_f32(h, |h| {
        let max = h.max_keepdim(dim)?.detach();
        let e = h.broadcast_sub(&max)?.exp()?;
        Ok(e.broadcast_div(&e.sum_keepdim(dim)?)?)
    })
}

/// Log-softmax over `dim`: `x − max − log Σ exp(x − max)`, in f32 for f16 and bf16 as
/// `torch.log_softmax` computes them.
pub(crate) fn log_softmax_along<T: Dim + Copy>(h: &Tensor, dim: T) -> Result<Tensor> {
    crate::run::opmath::in_f32(h, |h| {
        let shifted = h.broadcast_sub(&h.max_keepdim(dim)?.detach())?;
        Ok(shifted.broadcast_sub(&shifted.exp()?.sum_keepdim(dim)?.log()?)?)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    #[test]
    fn softplus_and_softmax_by_hand() {
        // softplus(0) = ln 2; softplus(30) = 30 (threshold); softmax([0, ln 3]) = [1/4, 3/4].
        let x = Tensor::new(&[0.0f64, 30.0], &Device::Cpu).unwrap();
        assert_eq!(softplus(&x).unwrap().to_vec1::<f64>().unwrap(), vec![2f64.ln(), 30.0]);
        let s = softmax(&Tensor::new(&[[0.0f64, 3f64.ln()]], &Device::Cpu).unwrap()).unwrap().to_vec2::<f64>().unwrap();
        assert!((s[0][0] - 0.25).abs() < 1e-15 && (s[0][1] - 0.75).abs() < 1e-15, "{s:?}");
    }
}
