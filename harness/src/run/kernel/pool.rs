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

use super::{dispatch, Dtypes, Kernel, Real};
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

/// The position (within its plane) of the value PyTorch's max picks in window `(r, q)`.
#[inline(always)]
fn argmax<T: Real>(plane: &[T], w: usize, k: usize, r: usize, q: usize) -> usize {
    let (mut best, mut at) = (T::from_f64(f64::NEG_INFINITY), r * k * w + q * k);
    for y in r * k..(r + 1) * k {
        for x in q * k..(q + 1) * k {
            let v = plane[y * w + x];
            #[allow(clippy::eq_op)]
            if v > best || v != v {
                (best, at) = (v, y * w + x);
            }
        }
    }
    at
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
        let mut y = Vec::with_capacity(planes * rows * cols);
        for plane in x.chunks_exact(h * w).take(planes) {
            for r in 0..rows {
                for q in 0..cols {
                    y.push(if self.pool.max { plane[argmax(plane, w, k, r, q)] } else { mean(plane, w, k, r, q) });
                }
            }
        }
        Ok(T::to_cpu_storage_owned(y))
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
        let mut dx = vec![T::zero(); x.len()];
        let wide = T::DTYPE == DType::F64;
        for ((plane, d), gp) in x.chunks_exact(h * w).zip(dx.chunks_exact_mut(h * w)).zip(g.chunks_exact((rows * cols).max(1))).take(planes) {
            for r in 0..rows {
                for q in 0..cols {
                    let gv = gp[r * cols + q];
                    if self.pool.max {
                        d[argmax(plane, w, k, r, q)] = gv;
                        continue;
                    }
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
}
