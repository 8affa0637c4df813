//! GELU (erf form) in one pass each way: `y = x·Φ(x)` with `Φ(x) = ½(1 + erf(x/√2))`,
//! and `dy/dx = Φ(x) + x·φ(x)` with `φ(x) = exp(−x²/2)/√(2π)`, as PyTorch's
//! `GeluKernelImpl` and `GeluBackwardKernelImpl` compute them.
//!
//! In f32 the forward keeps the `Φ(x)` it computed for the backward, which reads it instead
//! of computing the erf again (the same function of the same value: the same bits; the erf
//! was half the backward's time in the tiny GPT, perf). The node then holds twice its
//! output until the backward, as `ops::gelu` tells the memory estimate.

use std::sync::OnceLock;

use candle_core::{CpuStorage, CustomOp1, CustomOp2, Layout, Shape, Tensor};

use super::{avx2, dispatch, erf_f32, exp_f32, Dtypes, Kernel, Real};
use crate::error::Result;

const SQRT1_2: f64 = std::f64::consts::FRAC_1_SQRT_2;
/// `1/√(2π)`, PyTorch's `kBeta = M_2_SQRTPI · M_SQRT1_2 · 0.5`.
const BETA: f64 = std::f64::consts::FRAC_2_SQRT_PI * SQRT1_2 * 0.5;

/// GELU of `h`: fused on the CPU (f16 and bf16 in f32), Candle's `gelu_erf` elsewhere.
pub(crate) fn gelu(h: &Tensor) -> Result<Tensor> {
    if !super::takes(h, Dtypes::Floats) {
        return Ok(h.gelu_erf()?);
    }
    crate::run::opmath::in_f32(h, |h| Ok(h.contiguous()?.apply_op1(Gelu::default())?))
}

#[inline(always)]
fn cdf32(x: f32) -> f32 {
    0.5 * (1.0 + erf_f32(x * SQRT1_2 as f32))
}

/// `Φ(x)` in `T` (f64: with the exact erf).
#[inline(always)]
fn cdf<T: Real>(x: T) -> T {
    T::from_f64(0.5) * (T::one() + (x * T::from_f64(SQRT1_2)).erf())
}

avx2! {
    /// `x·Φ(x)` for every value, and `Φ(x)`.
    fn forward32(x: &[f32]) -> (Vec<f32>, Vec<f32>) {
        // Written into the spare capacity, not zeroed first: one pass over each output.
        let (mut y, mut cdf) = (Vec::with_capacity(x.len()), Vec::with_capacity(x.len()));
        let (ys, cs) = (&mut y.spare_capacity_mut()[..x.len()], &mut cdf.spare_capacity_mut()[..x.len()]);
        for ((o, c), &v) in ys.iter_mut().zip(cs.iter_mut()).zip(x) {
            let p = cdf32(v);
            c.write(p);
            o.write(v * p);
        }
        // SAFETY: the loop wrote every one of the x.len() values of both.
        unsafe {
            y.set_len(x.len());
            cdf.set_len(x.len());
        }
        (y, cdf)
    }
}

avx2! {
    /// `g·(Φ(x) + x·φ(x))` for every value, with `Φ(x)` from `cdf` where the forward kept it.
    fn backward32(x: &[f32], cdf: Option<&[f32]>, g: &[f32]) -> Vec<f32> {
        let beta = BETA as f32;
        // An indexed loop into the spare capacity, not zeros first (a closure would not inherit
        // the target features: collected through one, this loop ran scalar, 7× the instructions).
        let n = x.len().min(g.len());
        let mut out = Vec::with_capacity(x.len());
        let spare = &mut out.spare_capacity_mut()[..x.len()];
        match cdf {
            Some(c) => {
                let n = n.min(c.len());
                for i in 0..n {
                    let v = x[i];
                    spare[i].write(g[i] * v.mul_add(beta * exp_f32(v * v * -0.5), c[i]));
                }
            }
            None => {
                for i in 0..n {
                    let v = x[i];
                    spare[i].write(g[i] * v.mul_add(beta * exp_f32(v * v * -0.5), cdf32(v)));
                }
            }
        }
        // A value without a gradient (never: the shapes agree) has none.
        for o in &mut spare[n..] {
            o.write(0.0);
        }
        // SAFETY: every one of the x.len() values was written just above.
        unsafe { out.set_len(x.len()) };
        out
    }
}

/// The forward, keeping `Φ(x)` of an f32 input for the backward.
#[derive(Default)]
struct Gelu {
    cdf: OnceLock<Vec<f32>>,
}

impl CustomOp1 for Gelu {
    fn name(&self) -> &'static str {
        "gelu"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> candle_core::Result<(CpuStorage, Shape)> {
        Ok((dispatch(self, [(s, l)])?, l.shape().clone()))
    }

    fn bwd(&self, arg: &Tensor, _res: &Tensor, grad: &Tensor) -> candle_core::Result<Option<Tensor>> {
        let cdf = self.cdf.get().map(Vec::as_slice).filter(|c| c.len() == arg.elem_count());
        Ok(Some(arg.apply_op2_no_bwd(&grad.contiguous()?, &GeluBackward { cdf })?))
    }
}

/// `g · (Φ(x) + x·φ(x))` from the forward's input and the upstream gradient (and, in f32, the
/// `Φ(x)` the forward kept).
struct GeluBackward<'a> {
    cdf: Option<&'a [f32]>,
}

impl CustomOp2 for GeluBackward<'_> {
    fn name(&self) -> &'static str {
        "gelu-backward"
    }

    fn cpu_fwd(&self, x: &CpuStorage, xl: &Layout, g: &CpuStorage, gl: &Layout) -> candle_core::Result<(CpuStorage, Shape)> {
        Ok((dispatch(self, [(x, xl), (g, gl)])?, xl.shape().clone()))
    }
}

impl Kernel<1> for Gelu {
    type Out = CpuStorage;

    fn name(&self) -> &str {
        "gelu"
    }

    /// `x·Φ(x)` (f64; f32 has its vectorised copy).
    fn run<T: Real>(&self, [x]: [&[T]; 1]) -> candle_core::Result<CpuStorage> {
        Ok(T::to_cpu_storage_owned(x.iter().map(|&x| x * cdf(x)).collect()))
    }

    fn run_f32(&self, [x]: [&[f32]; 1]) -> candle_core::Result<CpuStorage> {
        let (y, cdf) = forward32(x);
        // Candle builds a new `Gelu` for each call: this is its one forward.
        if self.cdf.set(cdf).is_err() {
            candle_core::bail!("gelu: one op ran two forwards");
        }
        Ok(CpuStorage::F32(y))
    }
}

impl Kernel<2> for GeluBackward<'_> {
    type Out = CpuStorage;

    fn name(&self) -> &str {
        "gelu backward"
    }

    /// `g·(Φ(x) + x·β·exp(−x²/2))` (f64; f32 has its vectorised copy, with a fused multiply-add).
    fn run<T: Real>(&self, [x, g]: [&[T]; 2]) -> candle_core::Result<CpuStorage> {
        let (beta, half) = (T::from_f64(BETA), T::from_f64(-0.5));
        Ok(T::to_cpu_storage_owned(x.iter().zip(g).map(|(&x, &g)| g * (cdf(x) + x * beta * (x * x * half).exp())).collect()))
    }

    fn run_f32(&self, [x, g]: [&[f32]; 2]) -> candle_core::Result<CpuStorage> {
        Ok(CpuStorage::F32(backward32(x, self.cdf, g)))
    }
}

#[cfg(test)]
mod tests {
    use candle_core::{Device, Tensor, Var};

    /// PyTorch 2.15: `F.gelu(x)` and its gradient for x = [-3, -0.5, 0, 0.7, 2.5] (f64 and f32).
    #[test]
    fn gelu_and_its_gradient_match_pytorch() {
        let want_y = [-0.00404969409489031, -0.15426876936299344, 0.0, 0.5306254434438489, 2.4844758366855597];
        let want_g = [-0.01194564720418392, 0.13250487534383712, 0.5, 0.9766141011336599, 1.037611085908145];
        for f64_ in [true, false] {
            let x = Tensor::new(&[-3.0f64, -0.5, 0.0, 0.7, 2.5], &Device::Cpu).unwrap();
            let x = Var::from_tensor(&if f64_ { x } else { x.to_dtype(candle_core::DType::F32).unwrap() }).unwrap();
            let y = super::gelu(x.as_tensor()).unwrap();
            let g = y.sum_all().unwrap().backward().unwrap();
            let to = |t: &Tensor| t.to_dtype(candle_core::DType::F64).unwrap().to_vec1::<f64>().unwrap();
            let tol = if f64_ { 1e-15 } else { 3e-7 };
            for (a, b) in to(&y).iter().zip(want_y).chain(to(g.get(x.as_tensor()).unwrap()).iter().zip(want_g)) {
                assert!((a - b).abs() <= tol * b.abs().max(1.0), "{a} vs PyTorch {b} (f64: {f64_})");
            }
        }
    }

    /// The `Φ(x)` the f32 forward keeps is `½(1 + erf(x/√2))` as the backward would compute it,
    /// so the gradient from it has the bits of the gradient that computes it again, over the
    /// range GELU sees (its tails included) and a length that leaves a remainder at every width.
    #[test]
    fn the_kept_cdf_gives_the_gradient_bits_of_computing_it_again() {
        let x: Vec<f32> = (0..4099).map(|i| (i as f32 - 2049.0) * 7.3e-3 * (1.0 + (i % 5) as f32)).collect();
        let g: Vec<f32> = (0..x.len()).map(|i| (i as f32 * 0.61).cos()).collect();
        let (y, cdf) = super::forward32(&x);
        let bits = |v: &[f32]| v.iter().map(|f| f.to_bits()).collect::<Vec<_>>();
        let want: Vec<f32> = x.iter().map(|&v| super::cdf32(v)).collect();
        assert_eq!(bits(&cdf), bits(&want));
        assert_eq!(bits(&y), bits(&x.iter().zip(&want).map(|(v, p)| v * p).collect::<Vec<_>>()));
        assert!(cdf[0] == 0.0 && cdf[x.len() - 1] == 1.0 && (cdf[2049] - 0.5).abs() < 1e-7, "Φ's tails and middle");
        assert_eq!(bits(&super::backward32(&x, Some(&cdf), &g)), bits(&super::backward32(&x, None, &g)));
    }

    /// The op's f32 forward keeps `Φ(x)` for its backward (the path the step takes): set by the
    /// forward, one value per input value (the length the backward checks), each `Φ` of its
    /// input (as `cdf32` computes it); a second forward on the same op is refused rather than
    /// replacing it.
    #[test]
    fn the_forward_keeps_cdf_for_the_backward() {
        use super::super::Kernel;
        let op = super::Gelu::default();
        let x: Vec<f32> = (0..37).map(|i| i as f32 * 0.3 - 5.0).collect();
        op.run_f32([&x]).unwrap();
        let kept = op.cdf.get().expect("the forward kept Φ");
        assert_eq!(kept.len(), x.len());
        for (c, v) in kept.iter().zip(&x) {
            assert_eq!(c.to_bits(), super::cdf32(*v).to_bits(), "Φ({v})");
        }
        assert!(op.run_f32([&x]).is_err(), "a second forward on one op");
    }
}
