//! Normalisation layers: layer norm over the last dimension with a learnable
//! gain and shift (PyTorch's `nn.LayerNorm`, biased variance), and RMS norm
//! with a learnable scale (`nn.RMSNorm`).

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

/// `x / sqrt(mean(x²) + eps) · weight` over the last dimension (`torch.nn.RMSNorm`); an f16 or
/// bf16 input is computed in f32 and rounded once, and `eps = None` is the dtype's machine
/// epsilon, as PyTorch's default.
pub(super) fn rms_norm(h: &Tensor, weight: &Tensor, eps: Option<f64>) -> Result<Tensor> {
    let eps = eps.unwrap_or(match h.dtype() {
        candle_core::DType::F16 => 2f64.powi(-10),
        candle_core::DType::BF16 => 2f64.powi(-7),
        candle_core::DType::F64 => f64::EPSILON,
        _ => f64::from(f32::EPSILON),
    });
    let w = crate::run::opmath::widen;
    let (x, g) = (w(h)?, w(weight)?);
    let rms = x.sqr()?.mean_keepdim(D::Minus1)?.affine(1.0, eps)?.sqrt()?.recip()?;
    Ok(x.broadcast_mul(&rms)?.broadcast_mul(&g)?.to_dtype(h.dtype())?)
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

    #[test]
    fn rms_norm_as_pytorch_computes_it() {
        // PyTorch 2.15, f64: m = nn.RMSNorm(3, eps=1e-6) with weight [1, 2, 0.5];
        // h = [[1, -2, 3], [0.5, 0.5, 0.5]]; (m(h) * [[1, 0, -1], [2, 1, 0]]).sum().backward()
        let d = Device::Cpu;
        let h = candle_core::Var::new(&[[1.0f64, -2.0, 3.0], [0.5, 0.5, 0.5]], &d).unwrap();
        let w = candle_core::Var::new(&[1.0f64, 2.0, 0.5], &d).unwrap();
        let y = rms_norm(h.as_tensor(), w.as_tensor(), Some(1e-6)).unwrap();
        let up = Tensor::new(&[[1.0f64, 0.0, -1.0], [2.0, 1.0, 0.0]], &d).unwrap();
        let g = (&y * &up).unwrap().sum_all().unwrap().backward().unwrap();
        let close = |a: Vec<f64>, b: &[f64]| assert!(a.iter().zip(b).all(|(a, b)| (a - b).abs() < 1e-13), "{a:?} vs {b:?}");
        close(y.flatten_all().unwrap().to_vec1().unwrap(), &[0.4629100002887783, -1.8516400011551133, 0.6943650004331675, 0.9999980000060001, 1.9999960000120003, 0.49999900000300007]);
        close(g.get(h.as_tensor()).unwrap().flatten_all().unwrap().to_vec1().unwrap(), &[0.47944249675641404, -0.03306499293527139, -0.18185751074148207, 1.3333413332773327, 1.3333413332773327, -2.666650666746668]);
        close(g.get(w.as_tensor()).unwrap().to_vec1().unwrap(), &[2.4629060003007788, 0.9999980000060001, -1.388730000866335]);
    }
}
