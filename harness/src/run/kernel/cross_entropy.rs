//! Cross-entropy per row in one pass each way, the stable form the loss
//! module writes: `Σ_c −((p_c − max) − lse)·y_c` with `lse = log Σ_c exp(p_c −
//! max)` and the max held constant, as `log_softmax` then the weighted sum.
//! Its gradient is `g·(Σy·softmax_c − y_c)`.
//!
//! Composed from Candle's ops this was nine tensors the size of the logits,
//! each with a zero gradient made and added in the backward: a language
//! model's loss over its vocabulary was a step's largest non-product cost. The
//! products by `y` are kept (not skipped where `y` is 0), so `0·∞` is NaN here
//! as it was.

use candle_core::{CpuStorage, CustomOp2, Layout, Shape, Tensor};

use super::{avx2, dispatch, Kernel, Real};
use crate::error::Result;

/// The cross-entropy of each row of logits `p` `(…, classes)` against the weights `y` (same
/// shape): a tensor of `p`'s shape without its last dimension.
pub(crate) fn rows(p: &Tensor, y: &Tensor) -> Result<Tensor> {
    Ok(p.contiguous()?.apply_op2(&y.contiguous()?, CrossEntropy)?)
}

/// A row's max (NaN ignored), and `Σ exp(p − max)`, each exp written to `e`.
#[inline(always)]
fn shifted_exp<T: Real>(row: &[T], e: &mut [T]) -> (T, T) {
    let max = super::max(row);
    for (e, &p) in e.iter_mut().zip(row) {
        *e = (p - max).exp();
    }
    (max, super::sum(e))
}

#[inline(always)]
fn forward<T: Real>(p: &[T], y: &[T], classes: usize) -> Vec<T> {
    let mut e = vec![T::zero(); classes];
    let mut out = Vec::with_capacity(p.len() / classes);
    for (row, yr) in p.chunks_exact(classes).zip(y.chunks_exact(classes)) {
        let (max, sum) = shifted_exp(row, &mut e);
        let lse = sum.ln();
        out.push(super::sum_of([row, yr], |[p, y]| T::zero() - ((p - max) - lse) * y));
    }
    out
}

/// `g·(Σy·e_c/Σe − y_c)` per row.
#[inline(always)]
fn backward<T: Real>(p: &[T], y: &[T], g: &[T], classes: usize) -> Vec<T> {
    let mut out = vec![T::zero(); p.len()];
    for (((row, yr), o), &g) in p.chunks_exact(classes).zip(y.chunks_exact(classes)).zip(out.chunks_exact_mut(classes)).zip(g) {
        let (_, sum) = shifted_exp(row, o);
        let total = super::sum(yr);
        for (o, &y) in o.iter_mut().zip(yr) {
            *o = g * (total * (*o / sum) - y);
        }
    }
    out
}

avx2! {
    fn forward32(p: &[f32], y: &[f32], classes: usize) -> Vec<f32> {
        forward(p, y, classes)
    }
}

avx2! {
    fn backward32(p: &[f32], y: &[f32], g: &[f32], classes: usize) -> Vec<f32> {
        backward(p, y, g, classes)
    }
}

struct CrossEntropy;

/// `p`'s classes and the shape of the per-row result.
fn shapes(pl: &Layout, yl: &Layout) -> candle_core::Result<(usize, Shape)> {
    let dims = pl.shape().dims();
    match dims.split_last() {
        Some((&classes, rest)) if classes > 0 && yl.shape() == pl.shape() => Ok((classes, rest.to_vec().into())),
        _ => candle_core::bail!("cross-entropy: logits {:?} and targets {:?} do not match", dims, yl.shape().dims()),
    }
}

impl CustomOp2 for CrossEntropy {
    fn name(&self) -> &'static str {
        "cross-entropy"
    }

    fn cpu_fwd(&self, p: &CpuStorage, pl: &Layout, y: &CpuStorage, yl: &Layout) -> candle_core::Result<(CpuStorage, Shape)> {
        let (classes, shape) = shapes(pl, yl)?;
        Ok((dispatch(&Rows(classes), [(p, pl), (y, yl)])?, shape))
    }

    fn bwd(&self, p: &Tensor, y: &Tensor, _res: &Tensor, grad: &Tensor) -> candle_core::Result<(Option<Tensor>, Option<Tensor>)> {
        let g = grad.contiguous()?;
        Ok((Some(p.apply_op3_no_bwd(y, &g, &CrossEntropyBackward)?), None))
    }
}

/// The logits' gradient from `(p, y, g)`.
struct CrossEntropyBackward;

impl candle_core::CustomOp3 for CrossEntropyBackward {
    fn name(&self) -> &'static str {
        "cross-entropy-backward"
    }

    fn cpu_fwd(&self, p: &CpuStorage, pl: &Layout, y: &CpuStorage, yl: &Layout, g: &CpuStorage, gl: &Layout) -> candle_core::Result<(CpuStorage, Shape)> {
        let (classes, _) = shapes(pl, yl)?;
        Ok((dispatch(&Rows(classes), [(p, pl), (y, yl), (g, gl)])?, pl.shape().clone()))
    }
}

/// Rows of this many classes: the losses from `(p, y)`, the logits' gradient from `(p, y, g)`.
struct Rows(usize);

impl Kernel<2> for Rows {
    type Out = CpuStorage;

    fn name(&self) -> &str {
        "cross-entropy"
    }

    fn run<T: Real>(&self, [p, y]: [&[T]; 2]) -> candle_core::Result<CpuStorage> {
        Ok(T::to_cpu_storage_owned(forward(p, y, self.0)))
    }

    fn run_f32(&self, [p, y]: [&[f32]; 2]) -> candle_core::Result<CpuStorage> {
        Ok(CpuStorage::F32(forward32(p, y, self.0)))
    }
}

impl Kernel<3> for Rows {
    type Out = CpuStorage;

    fn name(&self) -> &str {
        "cross-entropy backward"
    }

    fn run<T: Real>(&self, [p, y, g]: [&[T]; 3]) -> candle_core::Result<CpuStorage> {
        Ok(T::to_cpu_storage_owned(backward(p, y, g, self.0)))
    }

    fn run_f32(&self, [p, y, g]: [&[f32]; 3]) -> candle_core::Result<CpuStorage> {
        Ok(CpuStorage::F32(backward32(p, y, g, self.0)))
    }
}

#[cfg(test)]
mod tests {
    use candle_core::{Device, Tensor, Var};

    /// By hand: logits [0, ln 3] and one-hot class 1: softmax [1/4, 3/4], loss −ln(3/4); the
    /// gradient (times an upstream 2) is 2·([1/4, 3/4] − [0, 1]) = [1/2, −1/2]. A second row
    /// with soft targets [1/2, 1/2] on logits [0, 0]: loss ln 2, gradient [0, 0].
    #[test]
    fn two_rows_by_hand() {
        let dev = Device::Cpu;
        let p = Var::new(&[[0.0f64, 3f64.ln()], [0.0, 0.0]], &dev).unwrap();
        let y = Tensor::new(&[[0.0f64, 1.0], [0.5, 0.5]], &dev).unwrap();
        let l = super::rows(&p, &y).unwrap();
        let v = l.to_vec1::<f64>().unwrap();
        assert!((v[0] + 0.75f64.ln()).abs() < 1e-15 && (v[1] - 2f64.ln()).abs() < 1e-15, "{v:?}");
        let up = Tensor::new(&[2.0f64, 1.0], &dev).unwrap();
        let g = (l * up).unwrap().sum_all().unwrap().backward().unwrap();
        let g = g.get(&p).unwrap().to_vec2::<f64>().unwrap();
        for (got, want) in g.iter().flatten().zip([0.5, -0.5, 0.0, 0.0]) {
            assert!((got - want).abs() < 1e-15, "{g:?}");
        }
    }

    /// Logits of 1000 and 0 (exp(1000) overflows unshifted) give 1000 for the class at 0, and
    /// a logit of −∞ with zero weight is 0·∞ = NaN, as the composed form gives.
    #[test]
    fn stable_on_large_logits_and_nan_on_zero_times_infinity() {
        let dev = Device::Cpu;
        let p = Tensor::new(&[[0.0f32, 1000.0]], &dev).unwrap();
        let y = Tensor::new(&[[1.0f32, 0.0]], &dev).unwrap();
        assert_eq!(super::rows(&p, &y).unwrap().to_vec1::<f32>().unwrap(), [1000.0]);
        let p = Tensor::new(&[[f32::NEG_INFINITY, 0.0]], &dev).unwrap();
        let y = Tensor::new(&[[0.0f32, 1.0]], &dev).unwrap();
        assert!(super::rows(&p, &y).unwrap().to_vec1::<f32>().unwrap()[0].is_nan());
    }
}
