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
///
/// f32 and f64 on the CPU take the fused kernel (`run::kernel::batch_norm`): its statistics,
/// running statistics and forward are this path's bits, its backward PyTorch's formula.
pub(crate) fn batch_norm(h: &Tensor, weight: &Tensor, bias: &Tensor, running: &mut Running, eps: f64, momentum: f64, training: bool) -> Result<Tensor> {
    if crate::run::kernel::handles(h) && matches!(h.rank(), 2 | 4) {
        return fused_batch_norm(h, weight, bias, running, eps, momentum, training);
    }
    composed_batch_norm(h, weight, bias, running, eps, momentum, training)
}

/// The running statistics moved by `momentum` towards `new`, in the composed path's arithmetic.
fn step_running(old: &Tensor, new: &Tensor, momentum: f64) -> Result<Tensor> {
    let w = crate::run::opmath::widen;
    Ok((new.affine(momentum, 0.0)? + w(old)?.affine(1.0 - momentum, 0.0)?)?.to_dtype(old.dtype())?)
}

/// [`batch_norm`] by the fused kernel, in place over `(b, c)` or `(b, c, h, w)`.
fn fused_batch_norm(h: &Tensor, weight: &Tensor, bias: &Tensor, running: &mut Running, eps: f64, momentum: f64, training: bool) -> Result<Tensor> {
    use crate::run::kernel::batch_norm::{normalise, stats};
    let (mean, var) = if training {
        let (mean, var_sum) = stats(h)?;
        let n = h.elem_count() / mean.elem_count().max(1);
        let unbiased = (&var_sum / (n as f64 - 1.0))?;
        running.mean = step_running(&running.mean, &mean, momentum)?;
        running.var = step_running(&running.var, &unbiased, momentum)?;
        (mean, (var_sum / n as f64)?)
    } else {
        (running.mean.to_dtype(h.dtype())?, running.var.to_dtype(h.dtype())?)
    };
    normalise(h, &weight.to_dtype(h.dtype())?, &bias.to_dtype(h.dtype())?, &mean, &var, eps, training)
}

/// [`batch_norm`] composed of Candle's ops (half dtypes, other devices).
fn composed_batch_norm(h: &Tensor, weight: &Tensor, bias: &Tensor, running: &mut Running, eps: f64, momentum: f64, training: bool) -> Result<Tensor> {
    // Images (BatchNorm2d): each channel over the batch and every pixel, as rows of channels.
    if let [b, c, rows, cols] = *h.dims() {
        let flat = h.permute((0, 2, 3, 1))?.reshape((b * rows * cols, c))?;
        let y = composed_batch_norm(&flat, weight, bias, running, eps, momentum, training)?;
        return Ok(y.reshape((b, rows, cols, c))?.permute((0, 3, 1, 2))?.contiguous()?);
    }
    let w = crate::run::opmath::widen;
    let (x, g, b) = (w(h)?, w(weight)?, w(bias)?);
    let (mean, var) = if training {
        let n = x.dims()[0];
        let mean = x.mean_keepdim(0)?;
        let var_sum = x.broadcast_sub(&mean)?.sqr()?.sum_keepdim(0)?;
        let unbiased = (var_sum.detach() / (n as f64 - 1.0))?.squeeze(0)?;
        running.mean = step_running(&running.mean, &mean.detach().squeeze(0)?, momentum)?;
        running.var = step_running(&running.var, &unbiased, momentum)?;
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

    /// `n` values of `sin(a·i + p)·(1 + i mod 3)` as a tensor of `dims`.
    fn wavy(dims: &[usize], a: f32, p: f32) -> Tensor {
        let n = dims.iter().product();
        Tensor::from_vec((0..n).map(|i| (a * i as f32 + p).sin() * (1 + i % 3) as f32).collect::<Vec<_>>(), dims, &Device::Cpu).unwrap()
    }

    /// Output, running mean and variance, and the gradients of `(y · u).sum()` for x, w, b.
    fn bn_run(x: &Tensor, training: bool, fused: bool) -> Vec<Vec<f32>> {
        let c = x.dims()[1];
        let (xv, w, b) = (candle_core::Var::from_tensor(x).unwrap(), candle_core::Var::from_tensor(&wavy(&[c], 0.7, 1.0)).unwrap(), candle_core::Var::from_tensor(&wavy(&[c], 1.9, 0.3)).unwrap());
        let mut r = Running::new(c, candle_core::DType::F32, &Device::Cpu).unwrap();
        // Evaluation reads running statistics moved by one training batch.
        if !training {
            composed_batch_norm(&x.affine(0.5, 1.0).unwrap(), w.as_tensor(), b.as_tensor(), &mut r, 1e-5, 0.1, true).unwrap();
        }
        let norm = if fused { batch_norm } else { composed_batch_norm };
        let y = norm(xv.as_tensor(), w.as_tensor(), b.as_tensor(), &mut r, 1e-5, 0.1, training).unwrap();
        let g = (&y * wavy(x.dims(), 0.37, 2.0)).unwrap().sum_all().unwrap().backward().unwrap();
        let flat = |t: &Tensor| t.flatten_all().unwrap().to_vec1::<f32>().unwrap();
        vec![flat(&y), flat(&r.mean), flat(&r.var), flat(g.get(xv.as_tensor()).unwrap()), flat(g.get(w.as_tensor()).unwrap()), flat(g.get(b.as_tensor()).unwrap())]
    }

    /// The fused batch norm's forward and running statistics are the composed path's bits, over
    /// features and over image channels, in training and in evaluation (the traces' forwards rest
    /// on it). Its gradients are PyTorch's formula, which sums in another order than Candle's
    /// autograd through the composed pieces: they agree to f32 rounding.
    #[test]
    fn the_fused_batch_norm_gives_the_composed_forward_bits_and_close_gradients() {
        for dims in [vec![7, 5], vec![3, 4, 5, 6], vec![1, 3], vec![2, 3, 1, 1]] {
            for training in [true, false] {
                let x = wavy(&dims, 1.3, 0.2);
                let (fused, composed) = (bn_run(&x, training, true), bn_run(&x, training, false));
                let bits = |v: &Vec<f32>| v.iter().map(|f| f.to_bits()).collect::<Vec<_>>();
                for (part, name) in ["y", "running mean", "running var"].iter().enumerate() {
                    assert_eq!(bits(&fused[part]), bits(&composed[part]), "{dims:?} training {training}: {name}");
                }
                for (f, c) in fused[3..].iter().zip(&composed[3..]) {
                    for (a, b) in f.iter().zip(c) {
                        assert!((a - b).abs() <= 2e-5 * (1.0 + b.abs()) || (a.is_nan() && b.is_nan()), "{dims:?} training {training}: {a} vs {b}");
                    }
                }
            }
        }
    }

    /// PyTorch 2.15, f32: `x` `(2, 2, 2, 3)` with `x.flatten()[i] = sin(1.3i + 0.2)·(1 + (i // 6) % 2)`,
    /// `w = [1.5, −0.7]`, `b = [0.25, 0.5]`, `u.flatten()[i] = cos(0.9i)`; `y = torch.batch_norm(x, w,
    /// b, rm, rv, True, 0.1, 1e-5, False)` from `rm = 0`, `rv = 1`, then `(y * u).sum().backward()`.
    #[test]
    fn the_fused_batch_norm_over_image_channels_matches_pytorch_in_f32() {
        let d = Device::Cpu;
        let x = candle_core::Var::from_vec((0..24).map(|i| (1.3 * i as f64 + 0.2).sin() as f32 * (1 + (i / 6) % 2) as f32).collect(), (2, 2, 2, 3), &d).unwrap();
        let (w, b) = (candle_core::Var::new(&[1.5f32, -0.7], &d).unwrap(), candle_core::Var::new(&[0.25f32, 0.5], &d).unwrap());
        let u = Tensor::from_vec((0..24).map(|i| (0.9 * i as f64).cos() as f32).collect::<Vec<_>>(), (2, 2, 2, 3), &d).unwrap();
        let mut r = Running::new(2, candle_core::DType::F32, &d).unwrap();
        let y = batch_norm(x.as_tensor(), w.as_tensor(), b.as_tensor(), &mut r, 1e-5, 0.1, true).unwrap();
        let g = (&y * &u).unwrap().sum_all().unwrap().backward().unwrap();
        let flat = |t: &Tensor| t.flatten_all().unwrap().to_vec1::<f32>().unwrap();
        let close = |a: Vec<f32>, b: &[f32]| assert!(a.iter().zip(b).all(|(a, b)| (a - b).abs() <= 2e-6 * (1.0 + b.abs())), "{a:?} vs {b:?}");
        #[rustfmt::skip]
        close(flat(&y), &[0.68439394, 2.522_551_8, 0.998_073_76, -1.655_676_1, -1.550_948_1, 1.158_830_9, -0.411_983_16, 0.383_642_5, 1.346_99, 1.066_753, -0.046_520_63, -0.361_882_42, 0.015_756_33, -2.037_166_4, -0.772_727_2, 1.956_667_8, 2.152_448_2, -0.472_204_48, 1.417_363, 0.710_299_4, -0.307_595_43, -0.145_103_2, 0.959_724_5, 1.388_312_6]);
        #[rustfmt::skip]
        close(flat(g.get(x.as_tensor()).unwrap()), &[2.121_217_7, 0.694_449_66, -0.797_558_2, -1.552_296_6, -1.567_148_7, -0.808_437, -0.174_340_46, -0.407_959_34, -0.307_387_83, 0.107_568_96, 0.506_500_84, 0.522_435_84, -0.424_754_38, 2.133_614, 2.560_712_8, 0.804_221_9, -1.221_820_2, -1.942_200_4, 0.372_003_5, 0.106_751_22, -0.194_740_98, -0.363_803_42, -0.262_995_66, 0.095_967_494]);
        close(flat(g.get(w.as_tensor()).unwrap()), &[2.366_376_6, 1.507_181_5]);
        close(flat(g.get(b.as_tensor()).unwrap()), &[0.252_655_03, 1.104_205_3]);
        close(flat(&r.mean), &[0.000_989_064_5, -0.000_406_955_7]);
        close(flat(&r.var), &[0.946_355_3, 1.152_674_1]);
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
