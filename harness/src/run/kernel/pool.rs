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

/// The max of each window along output row `r` of `plane` (`best`, one per window). PyTorch
/// reads each window row by row and takes a value if `val > max || isnan(val)`, so the last NaN
/// wins over everything.
///
/// Without a NaN in the row that is the plain maximum (`v > max ? v : max`, a `max` instruction,
/// vectorised along the row): no branch on the values, where a branch on `val > max` mispredicts
/// on half the values of noisy activations (a third of a small CNN's step, perf, issue 31). A row
/// with a NaN takes PyTorch's loop itself ([`pick`]).
#[inline(always)]
fn row_max<T: Real, const K: usize>(plane: &[T], w: usize, k: usize, r: usize, best: &mut [T]) {
    // K = 2 (the common window) lets the compiler see the stride; 0 reads `k`.
    let k = if K == 0 { k } else { K };
    let cols = best.len();
    let line = |y: usize| &plane[y * w..][..cols * k];
    let nan = if K == 2 {
        let (l0, l1) = (line(2 * r), line(2 * r + 1));
        let mut nan = false;
        for (q, b) in best.iter_mut().enumerate() {
            let (m, n) = max4(l0[2 * q], l0[2 * q + 1], l1[2 * q], l1[2 * q + 1]);
            *b = m;
            nan |= n;
        }
        nan
    } else {
        best.fill(T::from_f64(f64::NEG_INFINITY));
        let mut nan = false;
        for l in (r * k..(r + 1) * k).map(line) {
            for j in 0..k {
                for (b, win) in best.iter_mut().zip(l.chunks_exact(k)) {
                    let v = win[j];
                    *b = if v > *b { v } else { *b };
                    #[allow(clippy::eq_op)]
                    let is_nan = v != v;
                    nan |= is_nan;
                }
            }
        }
        nan
    };
    if nan {
        for (q, b) in best.iter_mut().enumerate() {
            *b = pick(plane, w, k, r, q).0;
        }
    }
}

/// The plain maximum of a 2 × 2 window read in PyTorch's order (`v > max ? v : max` from
/// `-inf`), and whether a value is NaN (the maximum is then not PyTorch's: see [`pick`]).
#[inline(always)]
fn max4<T: Real>(a: T, b: T, c: T, d: T) -> (T, bool) {
    let up = |v: T, m: T| if v > m { v } else { m };
    #[allow(clippy::eq_op)]
    let nan = (a != a) | (b != b) | (c != c) | (d != d);
    (up(d, up(c, up(b, up(a, T::from_f64(f64::NEG_INFINITY))))), nan)
}

/// The max of window `(r, q)` of `plane` and where PyTorch's loop takes it (its offset in the
/// window, row-major): the window read row by row, `val > max || isnan(val)` taking a value, so
/// the first maximum wins a tie and the last NaN wins over everything (all `-inf`: the first).
fn pick<T: Real>(plane: &[T], w: usize, k: usize, r: usize, q: usize) -> (T, u32) {
    let (mut m, mut at) = (T::from_f64(f64::NEG_INFINITY), 0u32);
    for i in 0..k {
        let line = &plane[(r * k + i) * w + q * k..][..k];
        for (j, &v) in line.iter().enumerate() {
            #[allow(clippy::eq_op)]
            let take = v > m || v != v;
            m = if take { v } else { m };
            at = if take { (i * k + j) as u32 } else { at };
        }
    }
    (m, at)
}

/// The max pool's output: every output row of every plane of `x`, its windows' maxima
/// ([`row_max`]), written in place (a copy of each row, a dozen values, was a call to
/// `memcpy`: 3% of a small CNN's step, perf, issue 31).
#[inline(always)]
fn max_forward<T: Real>(x: &[T], [planes, h, w, rows, cols]: [usize; 5], k: usize) -> Vec<T> {
    let mut y = vec![T::zero(); planes * rows * cols];
    for (p, plane) in x.chunks_exact(h * w).take(planes).enumerate() {
        for r in 0..rows {
            let best = &mut y[(p * rows + r) * cols..][..cols];
            if k == 2 {
                row_max::<T, 2>(plane, w, k, r, best);
            } else {
                row_max::<T, 0>(plane, w, k, r, best);
            }
        }
    }
    y
}

/// The max pool's input gradient: each window's gradient at its pick ([`pick`]), 0 elsewhere,
/// in one pass over the windows that writes each of their positions once (it was a pass for the
/// maxima, one for the picks and a scatter: a fifth of a small CNN's step, perf, issue 31).
/// 2 × 2 windows without a NaN in their row take the first position holding the maximum, as
/// selects the compiler vectorises along the row; other windows take [`pick`] one by one.
#[inline(always)]
fn max_backward<T: Real>(x: &[T], g: &[T], [planes, h, w, rows, cols]: [usize; 5], k: usize) -> Vec<T> {
    let mut dx = vec![T::zero(); x.len()];
    for ((plane, d), gp) in x.chunks_exact(h * w).zip(dx.chunks_exact_mut(h * w)).zip(g.chunks_exact((rows * cols).max(1))).take(planes) {
        for (r, gr) in gp.chunks_exact(cols.max(1)).take(rows).enumerate() {
            if k == 2 && !first_max2(plane, w, r, gr, d) {
                continue;
            }
            for (q, gv) in gr.iter().enumerate() {
                let at = pick(plane, w, k, r, q).1 as usize;
                for i in 0..k {
                    d[(r * k + i) * w + q * k..][..k].fill(T::zero());
                }
                d[(r * k + at / k) * w + q * k + at % k] = *gv;
            }
        }
    }
    dx
}

/// The gradients `gr` of output row `r`'s 2 × 2 windows written into `d` (zeros) at each
/// window's first maximum, unless the row holds a NaN: then `true`, for [`pick`]. The position
/// is worked out in integers and stored to, without a branch on the values (a row is a dozen
/// windows in a small CNN, too few for the compiler's vectors of 16; branches on which value is
/// the maximum mispredict).
#[inline(always)]
fn first_max2<T: Real>(plane: &[T], w: usize, r: usize, gr: &[T], d: &mut [T]) -> bool {
    let n = 2 * gr.len();
    let (l0, l1) = (&plane[2 * r * w..][..n], &plane[(2 * r + 1) * w..][..n]);
    let d = &mut d[2 * r * w..][..w + n];
    let mut nan = false;
    for (q, gv) in gr.iter().enumerate() {
        let (a, b, c, e) = (l0[2 * q], l0[2 * q + 1], l1[2 * q], l1[2 * q + 1]);
        let (m, n) = max4(a, b, c, e);
        nan |= n;
        // 0, 1, 2 or 3 for a, b, c or e (e when none of the first three is the maximum).
        let (na, nb, nc) = (usize::from(a != m), usize::from(b != m), usize::from(c != m));
        let at = na * (1 + nb * (1 + nc));
        d[(at >> 1) * w + 2 * q + (at & 1)] = *gv;
    }
    nan
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
