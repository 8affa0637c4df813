//! `max_pool2d` and `avg_pool2d` over windows that tile the image (stride = kernel; rows and
//! columns past the last whole window are dropped, PyTorch's floor mode), one pass each way,
//! as PyTorch's CPU kernels compute them (`aten/src/ATen/native/cpu/MaxPoolKernel.cpp`,
//! `AvgPoolKernel.cpp`):
//!
//! - max: each window read row by row, `if (val > maxval || isnan(val))` takes it, so the
//!   first maximum wins a tie and the last NaN wins over everything; the gradient goes to that
//!   one position (recomputed in the backward from the input). Exact, so it runs in every
//!   float dtype.
//! - mean: the window summed row by row in the opmath type (f32 for f16 and bf16, f64 for
//!   f64), divided by `k²` (a true division), rounded once; each position's gradient is the
//!   window's gradient over `k²`, rounded once.
//!
//! Composed in Candle, each was a narrow, a copy, a permute and a reduction, and the max's
//! backward a gather's scatter into zeros.

use candle_core::{CpuStorage, CustomOp1, CustomOp2, DType, Layout, Shape, Tensor};

use super::{avx2, dispatch, Dtypes, Kernel, Real};
use crate::error::Result;

/// The max (or mean) of each `kernel × kernel` window of `x` `(b, c, h, w)`: `(b, c, h/k, w/k)`.
pub(crate) fn pool2d(x: &Tensor, kernel: usize, max: bool) -> Result<Tensor> {
    Ok(x.contiguous()?.apply_op1(Pool { kernel, max })?)
}

#[derive(Clone, Copy)]
struct Pool {
    kernel: usize,
    max: bool,
}

/// `(planes, h, w, rows, cols)` of an image pooled by `kernel`: `planes = b·c`.
fn sizes(l: &Layout, kernel: usize) -> candle_core::Result<[usize; 5]> {
    let (b, c, h, w) = l.shape().dims4()?;
    if kernel == 0 || kernel > h || kernel > w {
        candle_core::bail!("pool2d: a {kernel}×{kernel} window does not fit a {h}×{w} image");
    }
    Ok([b * c, h, w, h / kernel, w / kernel])
}

/// The max of each window along output row `r` of `plane` (`best`, one per window) and, if
/// `at` is not empty, where PyTorch's max picks it (the position within the plane). PyTorch
/// reads each window row by row and takes a value if `val > max || isnan(val)`, so the first
/// maximum wins a tie and the last NaN wins over everything.
///
/// Without a NaN in the row that is the plain maximum (`v > max ? v : max`, a `max` instruction)
/// and, for the pick, the first position holding it (the least, a `min`): no branch on the
/// values, where a branch on `val > max` mispredicts on half the values of noisy activations (a
/// third of a small CNN's step, perf, issue 31). A row with a NaN takes PyTorch's loop itself.
#[inline(always)]
fn row_max<T: Real, const K: usize>(plane: &[T], w: usize, k: usize, r: usize, best: &mut [T], at: &mut [usize]) {
    // K = 2 (the common window) lets the compiler see the stride; 0 reads `k`.
    let k = if K == 0 { k } else { K };
    let cols = best.len();
    let lines = || (r * k..(r + 1) * k).map(|y| (y, &plane[y * w..][..cols * k]));
    best.fill(T::from_f64(f64::NEG_INFINITY));
    let mut nan = false;
    for (_, line) in lines() {
        for j in 0..k {
            for (b, win) in best.iter_mut().zip(line.chunks_exact(k)) {
                let v = win[j];
                *b = if v > *b { v } else { *b };
                #[allow(clippy::eq_op)]
                let is_nan = v != v;
                nan |= is_nan;
            }
        }
    }
    if nan {
        return pytorch_row_max(plane, w, k, r, best, at);
    }
    at.fill(usize::MAX);
    for (y, line) in lines() {
        for j in 0..k {
            for (q, ((a, b), win)) in at.iter_mut().zip(best.iter()).zip(line.chunks_exact(k)).enumerate() {
                let p = if win[j] == *b { y * w + q * k + j } else { usize::MAX };
                *a = (*a).min(p);
            }
        }
    }
}

/// [`row_max`] by PyTorch's loop, window by window (for a row with a NaN).
fn pytorch_row_max<T: Real>(plane: &[T], w: usize, k: usize, r: usize, best: &mut [T], at: &mut [usize]) {
    for (q, b) in best.iter_mut().enumerate() {
        let (mut m, mut pick) = (T::from_f64(f64::NEG_INFINITY), r * k * w + q * k);
        for y in r * k..(r + 1) * k {
            for x in q * k..(q + 1) * k {
                let v = plane[y * w + x];
                #[allow(clippy::eq_op)]
                if v > m || v != v {
                    (m, pick) = (v, y * w + x);
                }
            }
        }
        *b = m;
        if let Some(a) = at.get_mut(q) {
            *a = pick;
        }
    }
}

/// Calls `each(plane, r, best, at)` for every output row `r` of every plane of `x`, with its
/// windows' maxima and, if `picks`, their picks ([`row_max`]).
#[inline(always)]
fn max_rows<T: Real>(x: &[T], [planes, h, w, rows, cols]: [usize; 5], k: usize, picks: bool, mut each: impl FnMut(usize, usize, &[T], &[usize])) {
    let (mut best, mut at) = (vec![T::zero(); cols], vec![0; if picks { cols } else { 0 }]);
    for (p, plane) in x.chunks_exact(h * w).take(planes).enumerate() {
        for r in 0..rows {
            if k == 2 {
                row_max::<T, 2>(plane, w, k, r, &mut best, &mut at);
            } else {
                row_max::<T, 0>(plane, w, k, r, &mut best, &mut at);
            }
            each(p, r, &best, &at);
        }
    }
}

/// The max pool's output.
#[inline(always)]
fn max_forward<T: Real>(x: &[T], n: [usize; 5], k: usize) -> Vec<T> {
    let mut y = Vec::with_capacity(n[0] * n[3] * n[4]);
    max_rows(x, n, k, false, |_, _, best, _| y.extend_from_slice(best));
    y
}

/// The max pool's input gradient: each window's gradient at its pick, 0 elsewhere.
#[inline(always)]
fn max_backward<T: Real>(x: &[T], g: &[T], n: [usize; 5], k: usize) -> Vec<T> {
    let (hw, cols) = (n[1] * n[2], n[4]);
    let mut dx = vec![T::zero(); x.len()];
    max_rows(x, n, k, true, |p, r, _, at| {
        let (d, gp) = (&mut dx[p * hw..][..hw], &g[(p * n[3] + r) * cols..][..cols]);
        for (a, gv) in at.iter().zip(gp) {
            d[*a] = *gv;
        }
    });
    dx
}

avx2! {
    fn max_forward32(x: &[f32], n: [usize; 5], k: usize) -> Vec<f32> {
        max_forward(x, n, k)
    }
}

avx2! {
    fn max_backward32(x: &[f32], g: &[f32], n: [usize; 5], k: usize) -> Vec<f32> {
        max_backward(x, g, n, k)
    }
}

/// The mean of window `(r, q)`: summed in order in the opmath type, divided by `k²`, rounded once.
#[inline(always)]
fn mean<T: Real>(plane: &[T], w: usize, k: usize, r: usize, q: usize) -> T {
    let wide = T::DTYPE == DType::F64;
    let round = |v: f64| if wide { v } else { v as f32 as f64 };
    let mut s = 0.0f64;
    for y in r * k..(r + 1) * k {
        for x in q * k..(q + 1) * k {
            s = round(s + plane[y * w + x].to_f64());
        }
    }
    T::from_f64(round(s / (k * k) as f64))
}

/// The forward of a [`Pool`] on an image of these sizes.
struct Forward {
    pool: Pool,
    n: [usize; 5],
}

impl Kernel<1> for Forward {
    type Out = CpuStorage;
    const DTYPES: Dtypes = Dtypes::Floats;

    fn name(&self) -> &str {
        "pool2d"
    }

    fn run<T: Real>(&self, [x]: [&[T]; 1]) -> candle_core::Result<CpuStorage> {
        let (k, [planes, h, w, rows, cols]) = (self.pool.kernel, self.n);
        if self.pool.max {
            return Ok(T::to_cpu_storage_owned(max_forward(x, self.n, k)));
        }
        let mut y = Vec::with_capacity(planes * rows * cols);
        for plane in x.chunks_exact(h * w).take(planes) {
            for r in 0..rows {
                y.extend((0..cols).map(|q| mean(plane, w, k, r, q)));
            }
        }
        Ok(T::to_cpu_storage_owned(y))
    }

    fn run_f32(&self, [x]: [&[f32]; 1]) -> candle_core::Result<CpuStorage> {
        if self.pool.max {
            return Ok(CpuStorage::F32(max_forward32(x, self.n, self.pool.kernel)));
        }
        self.run([x])
    }
}

impl CustomOp1 for Pool {
    fn name(&self) -> &'static str {
        "pool2d"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> candle_core::Result<(CpuStorage, Shape)> {
        let n = sizes(l, self.kernel)?;
        let (b, c, _, _) = l.shape().dims4()?;
        Ok((dispatch(&Forward { pool: *self, n }, [(s, l)])?, (b, c, n[3], n[4]).into()))
    }

    fn bwd(&self, x: &Tensor, _res: &Tensor, grad: &Tensor) -> candle_core::Result<Option<Tensor>> {
        Ok(Some(x.apply_op2_no_bwd(&grad.contiguous()?, self)?))
    }
}

/// The backward, from `(x, grad)`: the max's gradient at each window's pick (0 elsewhere), or
/// the mean's spread over its window; rows and columns no window covers get 0.
impl CustomOp2 for Pool {
    fn name(&self) -> &'static str {
        "pool2d-backward"
    }

    fn cpu_fwd(&self, x: &CpuStorage, xl: &Layout, g: &CpuStorage, gl: &Layout) -> candle_core::Result<(CpuStorage, Shape)> {
        let n = sizes(xl, self.kernel)?;
        if gl.shape().elem_count() != n[0] * n[3] * n[4] {
            candle_core::bail!("pool2d backward: a gradient of {:?} for {n:?}", gl.shape());
        }
        Ok((dispatch(&Backward { pool: *self, n }, [(x, xl), (g, gl)])?, xl.shape().clone()))
    }
}

/// The backward of a [`Pool`] on an image of these sizes.
struct Backward {
    pool: Pool,
    n: [usize; 5],
}

impl Kernel<2> for Backward {
    type Out = CpuStorage;
    const DTYPES: Dtypes = Dtypes::Floats;

    fn name(&self) -> &str {
        "pool2d backward"
    }

    fn run<T: Real>(&self, [x, g]: [&[T]; 2]) -> candle_core::Result<CpuStorage> {
        let (k, [planes, h, w, rows, cols]) = (self.pool.kernel, self.n);
        if self.pool.max {
            return Ok(T::to_cpu_storage_owned(max_backward(x, g, self.n, k)));
        }
        let mut dx = vec![T::zero(); x.len()];
        let wide = T::DTYPE == DType::F64;
        for (d, gp) in dx.chunks_exact_mut(h * w).zip(g.chunks_exact((rows * cols).max(1))).take(planes) {
            for r in 0..rows {
                for q in 0..cols {
                    let gv = gp[r * cols + q];
                    let share = gv.to_f64() / (k * k) as f64;
                    let share = T::from_f64(if wide { share } else { share as f32 as f64 });
                    for y in r * k..(r + 1) * k {
                        d[y * w + q * k..][..k].fill(share);
                    }
                }
            }
        }
        Ok(T::to_cpu_storage_owned(dx))
    }

    fn run_f32(&self, [x, g]: [&[f32]; 2]) -> candle_core::Result<CpuStorage> {
        if self.pool.max {
            return Ok(CpuStorage::F32(max_backward32(x, g, self.n, self.pool.kernel)));
        }
        self.run([x, g])
    }
}
