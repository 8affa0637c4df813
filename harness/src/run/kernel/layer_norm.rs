//! Layer norm over the last dimension in one pass each way, as PyTorch's CPU
//! kernels compute it: forward `y = (x·rstd − rstd·mean)·γ + β` with the
//! biased variance; backward (`LayerNormBackwardKernelImplInternal`)
//! `dx = rstd·g·γ + b·x + c` with `b = (Σgγ·mean − Σgγx)·rstd³/D` and
//! `c = −b·mean − Σgγ·rstd/D`, and `dγ = Σ g·x̂`, `dβ = Σ g` over the rows.

use candle_core::{CpuStorage, CustomOp3, Layout, Shape, Tensor};

use super::{avx2, dispatch, Dtypes, Kernel, Real};
use crate::error::Result;

/// Layer norm of `h` with gain `w` and shift `b`: fused on the CPU (f16 and bf16 in f32).
pub(crate) fn layer_norm(h: &Tensor, w: &Tensor, b: &Tensor, eps: f64) -> Result<Tensor> {
    let wide = crate::run::opmath::widen;
    let (x, g, s) = (wide(h)?.contiguous()?, wide(w)?.contiguous()?, wide(b)?.contiguous()?);
    Ok(x.apply_op3(&g, &s, LayerNorm { eps })?.to_dtype(h.dtype())?)
}

/// Whether the fused kernel can run: CPU tensors of a float dtype (f16 and bf16 are widened).
pub(crate) fn fits(h: &Tensor) -> bool {
    super::takes(h, Dtypes::Floats)
}

/// Each row's mean and `1/sqrt(var + eps)`, the sums in eight lanes ([`super::sum_of`]).
#[inline(always)]
fn moments<T: Real>(row: &[T], eps: T) -> (T, T) {
    let n = T::from_f64(row.len() as f64);
    let mean = super::sum(row) / n;
    let var = super::sum_of([row], |[x]| (x - mean) * (x - mean));
    (mean, T::one() / (var / n + eps).sqrt())
}

/// Rows the kernels take at a time: every row's moments (chains of dependent additions, a
/// division and a square root) first, then the rows, so the rows' chains overlap rather than
/// each waiting for the last.
const BLOCK: usize = 8;

#[inline(always)]
fn forward<T: Real>(x: &[T], w: &[T], b: &[T], eps: f64) -> Vec<T> {
    let d = w.len();
    // Each row's values appended, not zeroed first and then written (half the instructions).
    let mut out = Vec::with_capacity(x.len());
    for blk in x.chunks(d * BLOCK) {
        let mut m = [(T::zero(), T::zero()); BLOCK];
        for (row, m) in blk.chunks_exact(d).zip(m.iter_mut()) {
            *m = moments(row, T::from_f64(eps));
        }
        for (row, &(mean, rstd)) in blk.chunks_exact(d).zip(&m) {
            let shift = T::zero() - rstd * mean;
            out.extend(row.iter().zip(w).zip(b).map(|((&x, &w), &b)| (x * rstd + shift) * w + b));
        }
    }
    out.resize(x.len(), T::zero());
    out
}

/// A row's sums for the backward: its moments, `Σ gγx` and `Σ gγ`.
#[inline(always)]
fn row_sums<T: Real>(row: &[T], gr: &[T], w: &[T], eps: T) -> [T; 4] {
    let (mean, rstd) = moments(row, eps);
    [mean, rstd, super::sum_of([gr, w, row], |[g, w, x]| g * w * x), super::dot(gr, w)]
}

/// `(dx, dγ, dβ)` from the input, the parameters and the upstream gradient.
#[inline(always)]
fn backward<T: Real>(x: &[T], w: &[T], g: &[T], eps: f64) -> (Vec<T>, Vec<T>, Vec<T>) {
    let d = w.len();
    let n = T::from_f64(d as f64);
    let (mut dx, mut dw, mut db) = (Vec::with_capacity(x.len()), vec![T::zero(); d], vec![T::zero(); d]);
    // dx is written into its spare capacity (not zeroed first), the rows of the input that
    // have a gradient, then zeros for any other (never: the shapes agree).
    let spare = &mut dx.spare_capacity_mut()[..x.len()];
    let rows = (x.len() / d.max(1)).min(g.len() / d.max(1));
    for ((xb, gb), ob) in x.chunks(d * BLOCK).zip(g.chunks(d * BLOCK)).zip(spare.chunks_mut(d * BLOCK)) {
        let mut sums = [[T::zero(); 4]; BLOCK];
        for ((row, gr), s) in xb.chunks_exact(d).zip(gb.chunks_exact(d)).zip(sums.iter_mut()) {
            *s = row_sums(row, gr, w, T::from_f64(eps));
        }
        for (((row, gr), o), &[mean, rstd, ds, dsum]) in xb.chunks_exact(d).zip(gb.chunks_exact(d)).zip(ob.chunks_exact_mut(d)).zip(&sums) {
            let bb = (dsum * mean - ds) * rstd * rstd * rstd / n;
            let c = T::zero() - bb * mean - dsum * rstd / n;
            // Every slice is d long, said so the loop runs without bounds checks and vectorises.
            let (dw, db, o, row, gr, w) = (&mut dw[..d], &mut db[..d], &mut o[..d], &row[..d], &gr[..d], &w[..d]);
            for j in 0..d {
                o[j].write(rstd * gr[j] * w[j] + bb * row[j] + c);
                dw[j] += gr[j] * (row[j] - mean) * rstd;
                db[j] += gr[j];
            }
        }
    }
    for o in &mut spare[rows * d..] {
        o.write(T::zero());
    }
    // SAFETY: the first rows·d values were written in the loop, the rest just above.
    unsafe { dx.set_len(x.len()) };
    (dx, dw, db)
}

avx2! {
    fn forward32(x: &[f32], w: &[f32], b: &[f32], eps: f64) -> Vec<f32> {
        forward(x, w, b, eps)
    }
}

avx2! {
    fn backward32(x: &[f32], w: &[f32], g: &[f32], eps: f64) -> (Vec<f32>, Vec<f32>, Vec<f32>) {
        backward(x, w, g, eps)
    }
}

struct LayerNorm {
    eps: f64,
}

impl CustomOp3 for LayerNorm {
    fn name(&self) -> &'static str {
        "layer-norm"
    }

    fn cpu_fwd(&self, x: &CpuStorage, xl: &Layout, w: &CpuStorage, wl: &Layout, b: &CpuStorage, bl: &Layout) -> candle_core::Result<(CpuStorage, Shape)> {
        Ok((dispatch(&Forward(self.eps), [(x, xl), (w, wl), (b, bl)])?, xl.shape().clone()))
    }

    fn bwd(&self, x: &Tensor, w: &Tensor, _b: &Tensor, _res: &Tensor, grad: &Tensor) -> candle_core::Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let g = grad.contiguous()?;
        let (x_s, x_l) = x.storage_and_layout();
        let (w_s, w_l) = w.storage_and_layout();
        let (g_s, g_l) = g.storage_and_layout();
        let (candle_core::Storage::Cpu(xs), candle_core::Storage::Cpu(ws), candle_core::Storage::Cpu(gs)) = (&*x_s, &*w_s, &*g_s) else { candle_core::bail!("layer norm backward: CPU tensors only") };
        let (dx, dw, db) = dispatch(&Backward { eps: self.eps, shape: x.shape() }, [(xs, x_l), (ws, w_l), (gs, g_l)])?;
        Ok((Some(dx), Some(dw), Some(db)))
    }
}

/// The forward from `(x, γ, β)`, with this eps.
struct Forward(f64);

impl Kernel<3> for Forward {
    type Out = CpuStorage;

    fn name(&self) -> &str {
        "layer norm"
    }

    fn run<T: Real>(&self, [x, w, b]: [&[T]; 3]) -> candle_core::Result<CpuStorage> {
        Ok(T::to_cpu_storage_owned(forward(x, w, b, self.0)))
    }

    fn run_f32(&self, [x, w, b]: [&[f32]; 3]) -> candle_core::Result<CpuStorage> {
        Ok(CpuStorage::F32(forward32(x, w, b, self.0)))
    }
}

/// `(dx, dγ, dβ)` as tensors from `(x, γ, g)`, for an input of `shape`.
struct Backward<'a> {
    eps: f64,
    shape: &'a Shape,
}

impl Backward<'_> {
    fn tensors<T: Real>(&self, (dx, dw, db): (Vec<T>, Vec<T>, Vec<T>)) -> candle_core::Result<(Tensor, Tensor, Tensor)> {
        let (dev, d) = (&candle_core::Device::Cpu, dw.len());
        Ok((Tensor::from_vec(dx, self.shape, dev)?, Tensor::from_vec(dw, d, dev)?, Tensor::from_vec(db, d, dev)?))
    }
}

impl Kernel<3> for Backward<'_> {
    type Out = (Tensor, Tensor, Tensor);

    fn name(&self) -> &str {
        "layer norm backward"
    }

    fn run<T: Real>(&self, [x, w, g]: [&[T]; 3]) -> candle_core::Result<Self::Out> {
        self.tensors(backward(x, w, g, self.eps))
    }

    fn run_f32(&self, [x, w, g]: [&[f32]; 3]) -> candle_core::Result<Self::Out> {
        self.tensors(backward32(x, w, g, self.eps))
    }
}

#[cfg(test)]
mod tests {
    use candle_core::{Device, Tensor, Var};

    /// PyTorch 2.15, f64: `F.layer_norm(x, (3,), w, b, 1e-5)` with x = [[1, 2, 4], [-1, 0.5, 3]],
    /// w = [0.5, -1, 2], b = [0.1, 0.2, 0.3], loss `(y * c).sum()` with c = [[1, 2, 3], [-1, 0.5, 2]].
    #[test]
    fn layer_norm_and_its_gradients_match_pytorch() {
        let dev = Device::Cpu;
        let x = Var::new(&[[1.0f64, 2.0, 4.0], [-1.0, 0.5, 3.0]], &dev).unwrap();
        let w = Var::new(&[0.5f64, -1.0, 2.0], &dev).unwrap();
        let b = Var::new(&[0.1f64, 0.2, 0.3], &dev).unwrap();
        let c = Tensor::new(&[[1.0f64, 2.0, 3.0], [-1.0, 0.5, 2.0]], &dev).unwrap();
        let y = super::layer_norm(x.as_tensor(), w.as_tensor(), b.as_tensor(), 1e-5).unwrap();
        let g = (&y * &c).unwrap().sum_all().unwrap().backward().unwrap();
        let flat = |t: &Tensor| t.flatten_all().unwrap().to_vec1::<f64>().unwrap();
        let got = [flat(&y), flat(g.get(x.as_tensor()).unwrap()), flat(g.get(w.as_tensor()).unwrap()), flat(g.get(b.as_tensor()).unwrap())].concat();
        for (i, (a, b)) in got.iter().zip(WANT).enumerate() {
            assert!((a - b).abs() < 1e-13, "[{i}] {a} vs PyTorch {b}");
        }
    }

    /// The blocked kernels (8 rows' sums first) give the bits of the plain row-by-row loop
    /// written out here with the same formulas, over 19 rows (two whole blocks and a partial
    /// one) of widths 5 and 20, in f64 and in f32 at every tier, `dγ` and `dβ` summed over all
    /// the blocks.
    #[test]
    fn blocks_of_rows_give_the_row_by_row_bits() {
        use super::{backward, backward32, forward, forward32, moments, row_sums, Real};
        fn reference<T: Real>(x: &[T], w: &[T], b: &[T], g: &[T], eps: f64) -> [Vec<T>; 4] {
            let d = w.len();
            let n = T::from_f64(d as f64);
            let (mut y, mut dx, mut dw, mut db) = (vec![], vec![], vec![T::zero(); d], vec![T::zero(); d]);
            for (row, gr) in x.chunks_exact(d).zip(g.chunks_exact(d)) {
                let (mean, rstd) = moments(row, T::from_f64(eps));
                let shift = T::zero() - rstd * mean;
                y.extend((0..d).map(|j| (row[j] * rstd + shift) * w[j] + b[j]));
                let [mean, rstd, ds, dsum] = row_sums(row, gr, w, T::from_f64(eps));
                let bb = (dsum * mean - ds) * rstd * rstd * rstd / n;
                let c = T::zero() - bb * mean - dsum * rstd / n;
                for j in 0..d {
                    dx.push(rstd * gr[j] * w[j] + bb * row[j] + c);
                    dw[j] += gr[j] * (row[j] - mean) * rstd;
                    db[j] += gr[j];
                }
            }
            [y, dx, dw, db]
        }
        let bits = |v: &[f64]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
        for d in [5usize, 20] {
            let v = |k: f64, len: usize| (0..len).map(|i| (k + i as f64 * 0.37).sin() * (1.0 + (i % 7) as f64)).collect::<Vec<f64>>();
            let (x, w, b, g) = (v(1.0, 19 * d), v(2.0, d), v(3.0, d), v(4.0, 19 * d));
            let want = reference(&x, &w, &b, &g, 1e-5);
            let (dx, dw, db) = backward(&x, &w, &g, 1e-5);
            assert_eq!([forward(&x, &w, &b, 1e-5), dx, dw, db].map(|t| bits(&t)), want.map(|t| bits(&t)), "f64, width {d}");
            let f = |t: &[f64]| t.iter().map(|&v| v as f32).collect::<Vec<f32>>();
            let (x, w, b, g) = (f(&x), f(&w), f(&b), f(&g));
            let want = reference(&x, &w, &b, &g, 1e-5).map(|t| t.iter().map(|v| v.to_bits()).collect::<Vec<_>>());
            for tier in [2u8, 1, 0] {
                crate::run::kernel::WIDEST.with(|t| t.set(tier));
                let (dx, dw, db) = backward32(&x, &w, &g, 1e-5);
                let got = [forward32(&x, &w, &b, 1e-5), dx, dw, db].map(|t| t.iter().map(|v| v.to_bits()).collect::<Vec<_>>());
                crate::run::kernel::WIDEST.with(|t| t.set(2));
                assert_eq!(got, want, "f32, width {d}, tier {tier}");
            }
        }
    }

    /// `y`, `x.grad`, `w.grad`, `b.grad`, flattened.
    const WANT: [f64; 18] = [
        -0.43452076572514886,
        0.46726038286257454,
        2.9726038286257435,
        -0.4555828790463038,
        0.4020301378350195,
        2.9263917918552544,
        1.4890074065936316,
        -2.2335368812616925,
        0.7445294746680617,
        0.41745536060039123,
        -0.6679372601015918,
        0.25048189950120037,
        0.04212422664230964,
        -0.635535834642659,
        6.63529753479387,
        0.0,
        2.5,
        5.0,
    ];
}
