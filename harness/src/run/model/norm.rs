//! Normalisation layers: layer norm over the last dimension with a learnable
//! gain and shift (PyTorch's `nn.LayerNorm`, biased variance).

use candle_core::{Tensor, D};

use crate::error::Result;

/// `(h − mean) / sqrt(var + eps) · gain + shift` over the last dimension.
pub(super) fn layer_norm(h: &Tensor, gain: &Tensor, shift: &Tensor, eps: f64) -> Result<Tensor> {
    // PyTorch's kernel computes an f16 or bf16 layer norm in f32 and rounds once.
    let w = crate::run::opmath::widen;
    let (x, g, b) = (w(h)?, w(gain)?, w(shift)?);
    let mean = x.mean_keepdim(D::Minus1)?;
    let centred = x.broadcast_sub(&mean)?;
    let var = centred.sqr()?.mean_keepdim(D::Minus1)?;
    let normed = centred.broadcast_div(&var.affine(1.0, eps)?.sqrt()?)?;
    Ok(normed.broadcast_mul(&g)?.broadcast_add(&b)?.to_dtype(h.dtype())?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    #[test]
    fn layer_norm_by_hand() {
        // Row [1, 3]: mean 2, biased variance 1, so (±1)/sqrt(1 + 0) = ±1; gain 2, shift 0.5 → [-1.5, 2.5].
        let d = Device::Cpu;
        let h = Tensor::new(&[[1.0f64, 3.0]], &d).unwrap();
        let out = layer_norm(&h, &Tensor::new(&[2.0f64, 2.0], &d).unwrap(), &Tensor::new(&[0.5f64, 0.5], &d).unwrap(), 0.0).unwrap();
        assert_eq!(out.to_vec2::<f64>().unwrap(), vec![vec![-1.5, 2.5]]);
    }
}
