//! Batch norm (`ops::batch_norm`) as one op forward and one backward, f32 and f64 on the CPU,
//! over `(b, c)` (BatchNorm1d: each feature over the batch) and `(b, c, h, w)` (BatchNorm2d:
//! each channel over the batch and its pixels), read in place as `(b, c, s)`. The composed path
//! (`run::model::norm::batch_norm`, which half dtypes and other devices keep) permuted an image
//! to rows of channels and copied it, made about fifteen Candle ops, and its backward made and
//! added a zero gradient for each.
//!
//! - [`stats`]: each channel's mean and `Σ(x − mean)²` in the composed path's arithmetic: sums
//!   in the order (sample, position), the mean as `sum · (1/n)`, so the running statistics the
//!   caller updates from them are the composed path's bits.
//! - [`normalise`]: `y = x·α + β` with `α = w / sqrt(var + eps)` and `β = b − mean·α`, each
//!   rounding where the composed path rounds (its forward bits, and so the traces' forwards).
//! - Its backward is PyTorch's (`batch_norm_cpu_backward` in aten's
//!   `native/cpu/batch_norm_kernel.cpp`), from the upstream gradient `dy` and `invstd =
//!   1/sqrt(var + eps)`: `Σdy` and `dotp = Σ(x − mean)·dy` per channel, then in training
//!   `dx = (dy − Σdy/n − (x − mean)·dotp·invstd²/n)·invstd·w` (the mean and variance are the
//!   batch's, so their gradients flow into `dx`), in evaluation `dx = dy·invstd·w`; and
//!   `dw = dotp·invstd`, `db = Σdy`. The composed path's was Candle's autograd through the
//!   same formula's pieces, which sums in another order: the gradients agree to rounding, not to
//!   the bit (PyTorch's own CPU kernel accumulates the two sums in double for f32, so neither
//!   is PyTorch's bits; the tests hold both to PyTorch 2.15's values).
//!
//! Sums are sequential per channel (the channels advance side by side), so results do not
//! depend on thread count.

use candle_core::{CpuStorage, CustomOp1, CustomOp3, Layout, Shape, Tensor};

use super::{dispatch, Kernel, Real};
use crate::error::Result;

/// `(b, c, s)` of a batch norm's input: samples, channels, values per channel and sample.
fn sizes(shape: &Shape) -> candle_core::Result<[usize; 3]> {
    match *shape.dims() {
        [b, c] => Ok([b, c, 1]),
        [b, c, h, w] => Ok([b, c, h * w]),
        _ => candle_core::bail!("batch norm: an input of {shape:?}, not (batch, features) or images"),
    }
}

/// For each channel `ci`, `Σ f(ci, i)` over the flat indices `i` of its values in `(b, c, s)`,
/// added in the order (sample, position), the channels side by side.
#[inline(always)]
fn channel_sums<T: Real>([b, c, s]: [usize; 3], f: impl Fn(usize, usize) -> T) -> Vec<T> {
    let mut acc = vec![T::zero(); c];
    for bi in 0..b {
        for p in 0..s {
            for (ci, a) in acc.iter_mut().enumerate() {
                *a += f(ci, (bi * c + ci) * s + p);
            }
        }
    }
    acc
}

/// Each channel's mean and `Σ(x − mean)²` of `x` (`(b, c)` or `(b, c, h, w)`), as two `(c,)`
/// tensors without gradient.
pub(crate) fn stats(x: &Tensor) -> Result<(Tensor, Tensor)> {
    let both = x.contiguous()?.apply_op1_no_bwd(&Stats)?;
    Ok((both.get(0)?, both.get(1)?))
}

/// See [`stats`].
struct Stats;

impl CustomOp1 for Stats {
    fn name(&self) -> &'static str {
        "batch-norm-stats"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> candle_core::Result<(CpuStorage, Shape)> {
        let n = sizes(l.shape())?;
        Ok((dispatch(&StatsOf(n), [(s, l)])?, (2, n[1]).into()))
    }
}

/// [`Stats`] on an input of these sizes.
struct StatsOf([usize; 3]);

impl Kernel<1> for StatsOf {
    type Out = CpuStorage;

    fn name(&self) -> &str {
        "batch norm statistics"
    }

    fn run<T: Real>(&self, [x]: [&[T]; 1]) -> candle_core::Result<CpuStorage> {
        let [b, _, s] = self.0;
        // Candle's mean: the sum times 1/n, then + 0 (`affine(1/n, 0)`).
        let (scale, zero) = (T::from_f64(1.0 / (b * s) as f64), T::from_f64(0.0));
        let mut out: Vec<T> = channel_sums(self.0, |_, i| x[i]).into_iter().map(|v| v * scale + zero).collect();
        let var_sum = channel_sums(self.0, |ci, i| {
            let d = x[i] - out[ci];
            d * d
        });
        out.extend(var_sum);
        Ok(T::to_cpu_storage_owned(out))
    }
}

/// `x` normalised by `mean` and `var` (each `(c,)`, the batch's biased variance or the running
/// one) and scaled by `weight`, shifted by `bias`; `training` says whether the statistics are the
/// batch's (their gradients reach `x`) or constants.
pub(crate) fn normalise(x: &Tensor, weight: &Tensor, bias: &Tensor, mean: &Tensor, var: &Tensor, eps: f64, training: bool) -> Result<Tensor> {
    let op = Norm { mean: mean.detach().contiguous()?, var: var.detach().contiguous()?, eps, training };
    Ok(x.contiguous()?.apply_op3(&weight.contiguous()?, &bias.contiguous()?, op)?)
}

/// See [`normalise`].
struct Norm {
    mean: Tensor,
    var: Tensor,
    eps: f64,
    training: bool,
}

impl Norm {
    /// The mean and `invstd = 1/sqrt(var + eps)` per channel, rounded as the composed path
    /// rounds (`affine(1, eps)`, `sqrt`, `recip`).
    fn terms<T: Real>(&self) -> candle_core::Result<(Vec<T>, Vec<T>)> {
        let (one, eps) = (T::from_f64(1.0), T::from_f64(self.eps));
        let inv = self.var.to_vec1::<T>()?.into_iter().map(|v| one / (v * one + eps).sqrt()).collect();
        Ok((self.mean.to_vec1::<T>()?, inv))
    }
}

/// The forward of [`Norm`] on an input of these sizes.
struct Forward<'a>(&'a Norm, [usize; 3]);

impl Kernel<3> for Forward<'_> {
    type Out = CpuStorage;

    fn name(&self) -> &str {
        "batch norm"
    }

    fn run<T: Real>(&self, [x, w, b]: [&[T]; 3]) -> candle_core::Result<CpuStorage> {
        let [_, c, s] = self.1;
        let (mean, inv) = self.0.terms::<T>()?;
        if [w.len(), b.len(), mean.len(), inv.len()].iter().any(|n| *n != c) {
            candle_core::bail!("batch norm: parameters or statistics of another width than the input's {c} channels");
        }
        let alpha: Vec<T> = inv.iter().zip(w).map(|(i, w)| *i * *w).collect();
        let beta: Vec<T> = b.iter().zip(&mean).zip(&alpha).map(|((b, m), a)| *b - *m * *a).collect();
        let mut y = Vec::with_capacity(x.len());
        for (k, plane) in x.chunks_exact(s.max(1)).enumerate() {
            let (a, bt) = (alpha[k % c], beta[k % c]);
            y.extend(plane.iter().map(|v| *v * a + bt));
        }
        Ok(T::to_cpu_storage_owned(y))
    }
}

impl CustomOp3 for Norm {
    fn name(&self) -> &'static str {
        "batch-norm"
    }

    fn cpu_fwd(&self, x: &CpuStorage, xl: &Layout, w: &CpuStorage, wl: &Layout, b: &CpuStorage, bl: &Layout) -> candle_core::Result<(CpuStorage, Shape)> {
        let n = sizes(xl.shape())?;
        Ok((dispatch(&Forward(self, n), [(x, xl), (w, wl), (b, bl)])?, xl.shape().clone()))
    }

    fn bwd(&self, x: &Tensor, w: &Tensor, _b: &Tensor, _res: &Tensor, grad: &Tensor) -> candle_core::Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let all = x.apply_op3_no_bwd(w, &grad.contiguous()?, &Backward(self))?;
        let (nx, c) = (x.elem_count(), w.elem_count());
        let dx = all.narrow(0, 0, nx)?.reshape(x.shape())?;
        Ok((Some(dx), Some(all.narrow(0, nx, c)?), Some(all.narrow(0, nx + c, c)?)))
    }
}

/// The backward of [`Norm`] from `(x, w, dy)`: one flat tensor of `dx`, `dw` and `db`.
struct Backward<'a>(&'a Norm);

impl CustomOp3 for Backward<'_> {
    fn name(&self) -> &'static str {
        "batch-norm-backward"
    }

    fn cpu_fwd(&self, x: &CpuStorage, xl: &Layout, w: &CpuStorage, wl: &Layout, g: &CpuStorage, gl: &Layout) -> candle_core::Result<(CpuStorage, Shape)> {
        let n = sizes(xl.shape())?;
        if gl.shape() != xl.shape() {
            candle_core::bail!("batch norm backward: a gradient of {:?} for an input of {:?}", gl.shape(), xl.shape());
        }
        let out = dispatch(&BackwardOf(self.0, n), [(x, xl), (w, wl), (g, gl)])?;
        let len = xl.shape().elem_count() + 2 * n[1];
        Ok((out, len.into()))
    }
}

/// [`Backward`] on an input of these sizes.
struct BackwardOf<'a>(&'a Norm, [usize; 3]);

impl Kernel<3> for BackwardOf<'_> {
    type Out = CpuStorage;

    fn name(&self) -> &str {
        "batch norm backward"
    }

    fn run<T: Real>(&self, [x, w, dy]: [&[T]; 3]) -> candle_core::Result<CpuStorage> {
        let [b, c, s] = self.1;
        let (mean, inv) = self.0.terms::<T>()?;
        if [w.len(), mean.len(), inv.len()].iter().any(|n| *n != c) {
            candle_core::bail!("batch norm backward: parameters or statistics of another width than the input's {c} channels");
        }
        let sum = channel_sums(self.1, |_, i| dy[i]);
        let dotp = channel_sums(self.1, |ci, i| (x[i] - mean[ci]) * dy[i]);
        let n = T::from_f64((b * s) as f64);
        let mut out = Vec::with_capacity(x.len() + 2 * c);
        for (k, (xs, gs)) in x.chunks_exact(s.max(1)).zip(dy.chunks_exact(s.max(1))).enumerate() {
            let ci = k % c;
            let (m, i, wc) = (mean[ci], inv[ci], w[ci]);
            if self.0.training {
                let (k, grad_mean) = (dotp[ci] * i * i / n, sum[ci] / n);
                out.extend(xs.iter().zip(gs).map(|(x, g)| (*g - grad_mean - (*x - m) * k) * i * wc));
            } else {
                let scale = i * wc;
                out.extend(gs.iter().map(|g| *g * scale));
            }
        }
        out.extend(dotp.iter().zip(&inv).map(|(d, i)| *d * *i));
        out.extend(sum);
        Ok(T::to_cpu_storage_owned(out))
    }
}
