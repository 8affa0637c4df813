//! ReLU as PyTorch computes it, one pass each way.
//!
//! Candle's `relu` is `max(x, 0)`, which turns NaN into 0, and its backward
//! builds a `x ≥ 0` mask, converts it and multiplies: three passes and three
//! tensors, a tenth of a small model's step (perf, issue 15), and a gradient
//! of 1 at exactly 0. PyTorch's `relu` is `clamp_min(x, 0)`: NaN and −0 pass
//! through; its backward (`threshold_backward`) passes the gradient where the
//! output is above 0 (or NaN) and writes +0 elsewhere, whatever the gradient
//! is. Both are done here in one loop on the CPU; other devices use Candle's.

use candle_core::{CpuStorage, CustomOp1, CustomOp2, Layout, Shape, Tensor};

use super::{avx2, dispatch, Dtypes, Kernel, Real};
use crate::error::Result;

/// `relu(x)` with PyTorch's forward and backward.
pub(crate) fn relu(h: &Tensor) -> Result<Tensor> {
    if !super::takes(h, Dtypes::Floats) {
        return Ok(h.relu()?);
    }
    Ok(h.contiguous()?.apply_op1(Relu)?)
}

/// The forward: `x < 0 ? 0 : x` (NaN and −0 unchanged).
#[inline(always)]
fn forward<T: Real>(x: T) -> T {
    if x < T::zero() {
        T::zero()
    } else {
        x
    }
}

/// The backward: `output ≤ 0 ? +0 : grad` (a NaN output passes the gradient).
#[inline(always)]
fn backward<T: Real>(grad: T, out: T) -> T {
    if out <= T::zero() {
        T::zero()
    } else {
        grad
    }
}

struct Relu;

impl CustomOp1 for Relu {
    fn name(&self) -> &'static str {
        "torch-relu"
    }

    fn cpu_fwd(&self, s: &CpuStorage, layout: &Layout) -> candle_core::Result<(CpuStorage, Shape)> {
        Ok((dispatch(self, [(s, layout)])?, layout.shape().clone()))
    }

    fn bwd(&self, _arg: &Tensor, res: &Tensor, grad_res: &Tensor) -> candle_core::Result<Option<Tensor>> {
        Ok(Some(grad_res.contiguous()?.apply_op2_no_bwd(&res.contiguous()?, &ReluBackward)?))
    }
}

/// The gradient through [`Relu`], from the upstream gradient and the forward's output.
struct ReluBackward;

impl CustomOp2 for ReluBackward {
    fn name(&self) -> &'static str {
        "torch-relu-backward"
    }

    fn cpu_fwd(&self, g: &CpuStorage, gl: &Layout, out: &CpuStorage, ol: &Layout) -> candle_core::Result<(CpuStorage, Shape)> {
        Ok((dispatch(self, [(g, gl), (out, ol)])?, gl.shape().clone()))
    }
}

avx2! {
    fn forward32(x: &[f32]) -> Vec<f32> {
        x.iter().map(|x| forward(*x)).collect()
    }
}

avx2! {
    fn backward32(g: &[f32], out: &[f32]) -> Vec<f32> {
        g.iter().zip(out).map(|(g, o)| backward(*g, *o)).collect()
    }
}

impl Kernel<1> for Relu {
    type Out = CpuStorage;
    const DTYPES: Dtypes = Dtypes::Floats;

    fn name(&self) -> &str {
        "relu"
    }

    fn run<T: Real>(&self, [x]: [&[T]; 1]) -> candle_core::Result<CpuStorage> {
        Ok(T::to_cpu_storage_owned(x.iter().map(|x| forward(*x)).collect()))
    }

    fn run_f32(&self, [x]: [&[f32]; 1]) -> candle_core::Result<CpuStorage> {
        Ok(CpuStorage::F32(forward32(x)))
    }
}

impl Kernel<2> for ReluBackward {
    type Out = CpuStorage;
    const DTYPES: Dtypes = Dtypes::Floats;

    fn name(&self) -> &str {
        "relu backward"
    }

    fn run<T: Real>(&self, [g, out]: [&[T]; 2]) -> candle_core::Result<CpuStorage> {
        Ok(T::to_cpu_storage_owned(g.iter().zip(out).map(|(g, o)| backward(*g, *o)).collect()))
    }

    fn run_f32(&self, [g, out]: [&[f32]; 2]) -> candle_core::Result<CpuStorage> {
        Ok(CpuStorage::F32(backward32(g, out)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{Device, Var};

    #[test]
    fn forward_and_backward_as_pytorch_computes_them() {
        // PyTorch 2.15: torch.relu([nan, -0., 0., -1., 2.]) = [nan, -0., 0., 0., 2.]; backward of
        // the upstream gradient [1, -1, -1, nan, 3] = [1, 0, 0, 0, 3], every zero +0.
        let x = Var::new(&[f32::NAN, -0.0, 0.0, -1.0, 2.0], &Device::Cpu).unwrap();
        let y = relu(x.as_tensor()).unwrap();
        let out = y.to_vec1::<f32>().unwrap();
        assert!(out[0].is_nan() && out[1] == 0.0 && out[1].is_sign_negative() && out[2..] == [0.0, 0.0, 2.0]);
        let up = Tensor::new(&[1.0f32, -1.0, -1.0, f32::NAN, 3.0], &Device::Cpu).unwrap();
        let g = (y * &up).unwrap().sum_all().unwrap().backward().unwrap();
        let gx = g.get(x.as_tensor()).unwrap().to_vec1::<f32>().unwrap();
        assert_eq!(gx.iter().map(|v| v.to_bits()).collect::<Vec<_>>(), [1.0f32, 0.0, 0.0, 0.0, 3.0].map(f32::to_bits));
    }

    /// Each tier (AVX-512, AVX2, plain) gives, bit for bit, the definitions written out here:
    /// `x < 0 ? +0 : x` and `out <= 0 ? +0 : grad`, over NaN, ±inf, ±0, subnormals and lengths
    /// around the vector widths.
    #[test]
    fn every_tier_gives_the_written_out_bits() {
        use crate::run::kernel::WIDEST;
        let special = [f32::NAN, -f32::NAN, f32::INFINITY, f32::NEG_INFINITY, 0.0, -0.0, 1e-45, -1e-45, 2.5, -3.5, f32::MAX, f32::MIN];
        for n in [0usize, 1, 7, 8, 15, 16, 17, 33, 100] {
            let x: Vec<f32> = (0..n).map(|i| special[(i * 7) % special.len()]).collect();
            let g: Vec<f32> = (0..n).map(|i| special[(i * 5 + 3) % special.len()]).collect();
            let want_f: Vec<u32> = x.iter().map(|&v| if v < 0.0 { 0.0f32 } else { v }.to_bits()).collect();
            let want_b: Vec<u32> = g.iter().zip(&x).map(|(&g, &o)| if o <= 0.0 { 0.0f32 } else { g }.to_bits()).collect();
            for tier in [2u8, 1, 0] {
                WIDEST.with(|w| w.set(tier));
                assert_eq!(forward32(&x).iter().map(|v| v.to_bits()).collect::<Vec<_>>(), want_f, "forward, tier {tier}, n {n}");
                assert_eq!(backward32(&g, &x).iter().map(|v| v.to_bits()).collect::<Vec<_>>(), want_b, "backward, tier {tier}, n {n}");
            }
            WIDEST.with(|w| w.set(2));
        }
    }
}
