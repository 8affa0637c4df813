//! The normalisation kernels of the registry's `layer_norm`, `rms_norm` and
//! `batch_norm` (`ops::layer_norm`, `ops::rms_norm`, `ops::batch_norm`): layer norm
//! over the last dimension with a learnable gain and shift (PyTorch's `nn.LayerNorm`,
//! biased variance), RMS norm with a learnable scale (`nn.RMSNorm`), and batch norm
//! with its running statistics (`nn.BatchNorm1d`/`2d`).

use candle_core::{Tensor, D};

use crate::error::Result;

/// `(h − mean) / sqrt(var + eps) · gain + shift` over the last dimension.
pub(crate) fn layer_norm(h: &Tensor, gain: &Tensor, shift: &Tensor, eps: f64) -> Result<Tensor> {
    if crate::run::kernel::layer_norm::fits(h) {
        return crate::run::kernel::layer_norm::layer_norm(h, gain, shift, eps);
    }
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
/// bf16 input is computed in f32 and rounded once, and `eps = None` is the machine epsilon of
/// the type it is computed in (f64's for f64, else f32's), as PyTorch's default.
pub(crate) fn rms_norm(h: &Tensor, weight: &Tensor, eps: Option<f64>) -> Result<Tensor> {
    // PyTorch takes the default from the type it computes in (`toOpMathType`): f32's epsilon
    // for f16 and bf16 too, not theirs (pytorch/pytorch#173039).
    let eps = eps.unwrap_or(match h.dtype() {
        candle_core::DType::F64 => f64::EPSILON,
        _ => f64::from(f32::EPSILON),
    });
    let w = crate::run::opmath::widen;
    let (x, g) = (w(h)?, w(weight)?);
    let rms = x.sqr()?.mean_keepdim(D::Minus1)?.affine(1.0, eps)?.sqrt()?.recip()?;
    Ok(x.broadcast_mul(&rms)?.broadcast_mul(&g)?.to_dtype(h.dtype())?)
}

/// A batch-norm layer's running mean and variance (PyTorch's buffers), in the model's dtype.
#[derive(Debug)]
pub(crate) struct Running {
    mean: Tensor,
    var: Tensor,
}

impl Running {
    /// PyTorch's start: mean 0, variance 1.
    pub(crate) fn new(width: usize, dtype: candle_core::DType, dev: &candle_core::Device) -> Result<Self> {
        Ok(Running { mean: Tensor::zeros(width, dtype, dev)?, var: Tensor::ones(width, dtype, dev)? })
    }

    /// A copy in f64, for the verdict's op check: the statistics as they are now.
    pub(crate) fn widened(&self) -> Result<Self> {
        Ok(Running { mean: self.mean.to_dtype(candle_core::DType::F64)?, var: self.var.to_dtype(candle_core::DType::F64)? })
    }

    /// The running mean and variance, as an evaluation forward reads them.
    pub(crate) fn tensors(&self) -> [Tensor; 2] {
        [self.mean.clone(), self.var.clone()]
    }
}

/// Batch normalisation as PyTorch's CPU kernel computes it. Training: the batch's mean and
/// biased variance normalise, and the running statistics move by `momentum` towards the mean
/// and the *unbiased* variance `Σ(x − mean)² / (n − 1)`, which for a batch of one row is
/// 0 / 0 = NaN (pytorch/pytorch#1381). Evaluation: the running statistics normalise. Either way
/// `y = x·α + β` with `α = w / sqrt(var + eps)` and `β = b − mean·α`, in f32 for half dtypes.
pub(crate) fn batch_norm(h: &Tensor, weight: &Tensor, bias: &Tensor, running: &mut Running, eps: f64, momentum: f64, training: bool) -> Result<Tensor> {
    // Images (BatchNorm2d): each channel over the batch and every pixel, as rows of channels.
    if let [b, c, rows, cols] = *h.dims() {
        let flat = h.permute((0, 2, 3, 1))?.reshape((b * rows * cols, c))?;
        let y = batch_norm(&flat, weight, bias, running, eps, momentum, training)?;
        return Ok(y.reshape((b, rows, cols, c))?.permute((0, 3, 1, 2))?.contiguous()?);
    }
    let w = crate::run::opmath::widen;
    let (x, g, b) = (w(h)?, w(weight)?, w(bias)?);
    let (mean, var) = if training {
        let n = x.dims()[0];
        let mean = x.mean_keepdim(0)?;
        let var_sum = x.broadcast_sub(&mean)?.sqr()?.sum_keepdim(0)?;
        let unbiased = (var_sum.detach() / (n as f64 - 1.0))?.squeeze(0)?;
        let keep = 1.0 - momentum;
        let step = |old: &Tensor, new: &Tensor| -> Result<Tensor> { Ok((new.affine(momentum, 0.0)? + w(old)?.affine(keep, 0.0)?)?.to_dtype(old.dtype())?) };
        running.mean = step(&running.mean, &mean.detach().squeeze(0)?)?;
        running.var = step(&running.var, &unbiased)?;
        (mean, (var_sum / n as f64)?)
    } else {
        (w(&running.mean)?.unsqueeze(0)?, w(&running.var)?.unsqueeze(0)?)
    };
    let alpha = var.affine(1.0, eps)?.sqrt()?.recip()?.broadcast_mul(&g)?;
    let beta = b.broadcast_sub(&mean.mul(&alpha)?)?;
    Ok(x.broadcast_mul(&alpha)?.broadcast_add(&beta)?.to_dtype(h.dtype())?)
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
    fn batch_norm_on_images_normalises_each_channel_over_batch_and_pixels() {
        // (2, 2, 1, 2) images; channel 0 holds 1, 3, 5, 7: mean 4, biased variance 5, unbiased 20/3;
        // channel 1 holds 0, 0, 2, 2: mean 1, variance 1, unbiased 4/3 (as nn.BatchNorm2d).
        let d = Device::Cpu;
        let x = Tensor::new(&[[[[1.0f64, 3.0]], [[0.0, 0.0]]], [[[5.0, 7.0]], [[2.0, 2.0]]]], &d).unwrap();
        let (w, b) = (Tensor::new(&[1.0f64, 2.0], &d).unwrap(), Tensor::new(&[0.0f64, 1.0], &d).unwrap());
        let mut r = Running::new(2, candle_core::DType::F64, &d).unwrap();
        let y = batch_norm(&x, &w, &b, &mut r, 0.0, 0.1, true).unwrap();
        let got = y.flatten_all().unwrap().to_vec1::<f64>().unwrap();
        let s5 = 5f64.sqrt();
        let want = [-3.0 / s5, -1.0 / s5, -1.0, -1.0, 1.0 / s5, 3.0 / s5, 3.0, 3.0];
        assert!(got.iter().zip(want).all(|(a, b)| (a - b).abs() < 1e-14), "{got:?}");
        let var = r.var.to_vec1::<f64>().unwrap();
        assert!((var[0] - (0.9 + 0.1 * 20.0 / 3.0)).abs() < 1e-14 && (var[1] - (0.9 + 0.1 * 4.0 / 3.0)).abs() < 1e-14, "{var:?}");
    }

    #[test]
    fn batch_norm_as_pytorch_computes_it() {
        // PyTorch 2.15, f64: x = [[1, -2], [3, 0.5], [-1, 4]], w = [1.5, 0.5], b = [0.1, -0.2],
        // running 0 and 1; y = torch.batch_norm(x, w, b, rm, rv, True, 0.1, 1e-5, False);
        // (y * [[1, 0], [2, -1], [0.5, 3]]).sum().backward()
        let d = Device::Cpu;
        let x = candle_core::Var::new(&[[1.0f64, -2.0], [3.0, 0.5], [-1.0, 4.0]], &d).unwrap();
        let w = candle_core::Var::new(&[1.5f64, 0.5], &d).unwrap();
        let b = candle_core::Var::new(&[0.1f64, -0.2], &d).unwrap();
        let mut r = Running::new(2, candle_core::DType::F64, &d).unwrap();
        let y = batch_norm(x.as_tensor(), w.as_tensor(), b.as_tensor(), &mut r, 1e-5, 0.1, true).unwrap();
        let up = Tensor::new(&[[1.0f64, 0.0], [2.0, -1.0], [0.5, 3.0]], &d).unwrap();
        let g = (&y * &up).unwrap().sum_all().unwrap().backward().unwrap();
        let close = |a: Vec<f64>, b: &[f64]| assert!(a.iter().zip(b).all(|(a, b)| (a - b).abs() < 1e-13), "{a:?} vs {b:?}");
        let flat = |t: &Tensor| t.flatten_all().unwrap().to_vec1::<f64>().unwrap();
        close(flat(&y), &[0.09999999999999998, -0.7756921669148471, 1.937113862502121, -0.2677284902252761, -1.7371138625021207, 0.4434206571401232]);
        close(flat(g.get(x.as_tensor()).unwrap()), &[-0.1530928218751768, 0.17615569622554123, 0.07654899436926942, -0.30198213622331077, 0.07654382750590717, 0.12582643999776966]);
        close(flat(g.get(w.as_tensor()).unwrap()), &[1.8371138625021208, 3.9959809232912917]);
        close(flat(g.get(b.as_tensor()).unwrap()), &[3.5, 2.0]);
        // Running statistics: mean 0.1·[1, 0.8333], unbiased variance 0.9 + 0.1·[4, 9.0833].
        close(flat(&r.mean), &[0.1, 0.08333333333333334]);
        close(flat(&r.var), &[1.3, 1.8083333333333331]);
        // Evaluation with them: [[1.2840237721356618, -0.9746193157231444], ...].
        let e = batch_norm(x.as_tensor(), w.as_tensor(), b.as_tensor(), &mut r, 1e-5, 0.1, false).unwrap();
        close(flat(&e), &[1.2840237721356618, -0.9746193157231444, 3.9151877102149104, -0.045076136855371124, -1.3471401659435867, 1.2562843135595114]);
        // One row: the output is finite, the running variance 0 / 0 = NaN (pytorch/pytorch#1381).
        let one = Tensor::new(&[[1.0f64, -2.0]], &d).unwrap();
        let mut r = Running::new(2, candle_core::DType::F64, &d).unwrap();
        let y = batch_norm(&one, w.as_tensor(), b.as_tensor(), &mut r, 1e-5, 0.1, true).unwrap();
        assert!(flat(&y).iter().all(|v| v.is_finite()) && flat(&r.var).iter().all(|v| v.is_nan()));
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
        close(
            g.get(h.as_tensor()).unwrap().flatten_all().unwrap().to_vec1().unwrap(),
            &[0.47944249675641404, -0.03306499293527139, -0.18185751074148207, 1.3333413332773327, 1.3333413332773327, -2.666650666746668],
        );
        close(g.get(w.as_tensor()).unwrap().to_vec1().unwrap(), &[2.4629060003007788, 0.9999980000060001, -1.388730000866335]);
    }

    #[test]
    fn rms_norm_default_eps_in_half_types_is_f32_epsilon_as_pytorch() {
        // PyTorch 2.15: nn.RMSNorm(4).to(dtype)(torch.full((1, 4), 1e-2, dtype=dtype)) gives
        // 0.99951171875 (1 − 2⁻¹¹) in f16 and 1.0 in bf16: x / sqrt(x² + 1.19e-7) with x = 0.0100021 (1e-2
        // in f16) is 0.999405, which f16 rounds to 0.99951171875. With f16's own epsilon 2⁻¹⁰
        // it would be 0.0100021 / sqrt(1.0004e-4 + 9.77e-4) = 0.3047.
        let d = Device::Cpu;
        for (dtype, want) in [(candle_core::DType::F16, 1.0 - 2f32.powi(-11)), (candle_core::DType::BF16, 1.0)] {
            let h = Tensor::full(1e-2f32, (1, 4), &d).unwrap().to_dtype(dtype).unwrap();
            let w = Tensor::ones(4, dtype, &d).unwrap();
            let y = rms_norm(&h, &w, None).unwrap().to_dtype(candle_core::DType::F32).unwrap();
            assert_eq!(y.flatten_all().unwrap().to_vec1::<f32>().unwrap(), vec![want; 4], "{dtype:?}");
        }
    }
}
