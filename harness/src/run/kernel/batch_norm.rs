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
//! Sums are sequential per channel, so results do not depend on thread count; the channels of
//! an image advance side by side, four at a time, as the lanes of a vector ([`channel_sums`]),
//! and the backward's `Σdy` and `dotp` come from one pass over `x` and `dy`.

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

/// How many channels [`channel_sums`] adds side by side (one lane each), and how many positions
/// of each it reads at a time: a `G × G` block of rows, turned so that each step adds one
/// position of every channel (the compiler turns the block in registers and adds the lanes as
/// one vector).
const G: usize = 4;

/// For each channel `ci`, the `K` sums `Σ f(ci, [a[i], b[i]])[k]` over the flat indices `i` of
/// its values in `(b, c, s)` of the two inputs `[a, b]`, each added in the order (sample,
/// position), one value at a time: the order and rounding of a plain loop over one channel (the
/// composed path's, `sum_keepdim` over rows), however the channels are grouped. Images read
/// [`G`] channels' rows at a time in blocks of `G` positions; features (`s = 1`) each sample's
/// row of channels.
#[inline(always)]
fn channel_sums<T: Real, const K: usize>([b, c, s]: [usize; 3], [xa, xb]: [&[T]; 2], f: impl Fn(usize, [T; 2]) -> [T; K]) -> [Vec<T>; K] {
    let mut acc = [(); K].map(|_| vec![T::zero(); c]);
    for bi in 0..b {
        let xs = [xa, xb];
        let mut c0 = 0;
        while s > 1 && c0 + G <= c {
            let mut lanes: [[T; G]; K] = std::array::from_fn(|k| std::array::from_fn(|j| acc[k][c0 + j]));
            let rows: [[&[T]; G]; 2] = std::array::from_fn(|q| std::array::from_fn(|j| &xs[q][(bi * c + c0 + j) * s..][..s]));
            let mut p0 = 0;
            while p0 + G <= s {
                let block: [[[T; G]; G]; 2] = std::array::from_fn(|q| std::array::from_fn(|j| rows[q][j][p0..p0 + G].try_into().expect("G values")));
                // One position of the four channels a step: `vals[p][j]`.
                let vals: [[[T; K]; G]; G] = std::array::from_fn(|p| std::array::from_fn(|j| f(c0 + j, [block[0][j][p], block[1][j][p]])));
                for vp in &vals {
                    for (k, lane) in lanes.iter_mut().enumerate() {
                        for (l, v) in lane.iter_mut().zip(vp) {
                            *l += v[k];
                        }
                    }
                }
                p0 += G;
            }
            for p in p0..s {
                for (j, (ra, rb)) in rows[0].iter().zip(&rows[1]).enumerate() {
                    let v = f(c0 + j, [ra[p], rb[p]]);
                    for (lane, v) in lanes.iter_mut().zip(v) {
                        lane[j] += v;
                    }
                }
            }
            for (a, lane) in acc.iter_mut().zip(lanes) {
                a[c0..c0 + G].copy_from_slice(&lane);
            }
            c0 += G;
        }
        // Features, and the channels left over: each row in order.
        for p in 0..s {
            for ci in c0..c {
                let i = (bi * c + ci) * s + p;
                let v = f(ci, [xa[i], xb[i]]);
                for (a, v) in acc.iter_mut().zip(v) {
                    a[ci] += v;
                }
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
        let [sum] = channel_sums(self.0, [x, x], |_, [v, _]| [v]);
        let mut out: Vec<T> = sum.into_iter().map(|v| v * scale + zero).collect();
        let [var_sum] = channel_sums(self.0, [x, x], |ci, [v, _]| {
            let d = v - out[ci];
            [d * d]
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
        // Σdy and Σ(x − mean)·dy in one pass over both.
        let [sum, dotp] = channel_sums(self.1, [x, dy], |ci, [x, g]| [g, (x - mean[ci]) * g]);
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

#[cfg(test)]
mod tests {
    use super::*;

    /// `n` values of mixed magnitudes, so that adding them in another order rounds differently.
    fn mixed(n: usize) -> Vec<f32> {
        (0..n).map(|i| (0.77 * i as f32 + 0.3).sin() * [1.0, 3e3, 1e-3, 7.0][i % 4]).collect()
    }

    /// The sums of [`channel_sums`], grouped [`G`] channels at a time over images and a row of
    /// channels at a time over features, are the bits of one plain loop per channel in the order
    /// (sample, position), the order the composed path sums in: over whole groups and the
    /// channels left over, with one and two sums per value.
    #[test]
    fn channel_sums_are_each_channels_sequential_sums_to_the_bit() {
        for n in [[3, 11, 7], [2, 8, 5], [4, 3, 9], [5, 19, 1], [1, 1, 1], [2, 17, 4]] {
            let [b, c, s] = n;
            let (x, y) = (mixed(b * c * s), mixed(b * c * s + 5));
            let [one] = channel_sums(n, [&x, &x], |_, [v, _]| [v]);
            let [sum, dot] = channel_sums(n, [&x, &y[..x.len()]], |ci, [v, g]| [g, (v - 0.25 * ci as f32) * g]);
            for ci in 0..c {
                let (mut e1, mut es, mut ed) = (0.0f32, 0.0f32, 0.0f32);
                for bi in 0..b {
                    for p in 0..s {
                        let i = (bi * c + ci) * s + p;
                        e1 += x[i];
                        es += y[i];
                        ed += (x[i] - 0.25 * ci as f32) * y[i];
                    }
                }
                assert_eq!([one[ci], sum[ci], dot[ci]].map(f32::to_bits), [e1, es, ed].map(f32::to_bits), "{n:?} channel {ci}");
            }
        }
    }
}
