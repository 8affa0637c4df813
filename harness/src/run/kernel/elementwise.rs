//! `clamp` and `abs` as PyTorch computes them, forward and backward.
//!
//! Candle's `clamp` is `maximum(min)` then `minimum(max)`: a NaN input comes
//! out as the bound (PyTorch keeps the NaN, so a clamp never hides one), and
//! its backward multiplies the incoming gradient by 0/1 masks, so an infinite
//! gradient at a clamped element becomes ∞·0 = NaN where PyTorch *selects* 0
//! (`clamp_backward` is a `where`). On tensorflow/tensorflow#38457 that one
//! difference sent 140 of 200 seeds to NaN where the report sees about one in
//! 300. Candle's `abs` backward takes the derivative at 0 to be 1; PyTorch's is
//! the product `grad · sgn(x)`, 0 at 0 (and so ∞·0 = NaN there, which is
//! faithful: pytorch/pytorch#2421). Both are one CPU op each way here; other
//! devices use Candle's.

use candle_core::{CpuStorage, CustomOp1, CustomOp2, Layout, Shape, Tensor, WithDType};

use crate::error::Result;

/// `clamp(x, lo, hi)` as `torch.clamp`: `min(max(x, lo), hi)`, NaN kept; its gradient passes
/// where `lo < x < hi` and is 0 elsewhere (at the bounds too), whatever the incoming gradient.
pub(crate) fn clamp(x: &Tensor, lo: f64, hi: f64) -> Result<Tensor> {
    if !x.device().is_cpu() {
        return Ok(x.clamp(lo, hi)?);
    }
    Ok(x.contiguous()?.apply_op1(Clamp { lo, hi })?)
}

/// `|x|` as `torch.abs`: its gradient is `grad · sgn(x)`, with `sgn(0) = sgn(NaN) = 0`.
pub(crate) fn abs(x: &Tensor) -> Result<Tensor> {
    if !x.device().is_cpu() {
        return Ok(x.abs()?);
    }
    Ok(x.contiguous()?.apply_op1(Abs)?)
}

/// Maps a contiguous storage element by element (in f64, rounded to its own dtype).
pub(crate) fn map(s: &CpuStorage, l: &Layout, what: &str, f: &dyn Fn(f64) -> f64) -> candle_core::Result<(CpuStorage, Shape)> {
    fn each<T: WithDType>(v: &[T], (a, b): (usize, usize), f: &dyn Fn(f64) -> f64) -> Vec<T> {
        v[a..b].iter().map(|x| T::from_f64(f(x.to_f64()))).collect()
    }
    let Some(r) = l.contiguous_offsets() else { candle_core::bail!("{what}: input must be contiguous") };
    let out = match s {
        CpuStorage::F32(v) => CpuStorage::F32(each(v, r, f)),
        CpuStorage::F64(v) => CpuStorage::F64(each(v, r, f)),
        CpuStorage::F16(v) => CpuStorage::F16(each(v, r, f)),
        CpuStorage::BF16(v) => CpuStorage::BF16(each(v, r, f)),
        _ => candle_core::bail!("{what}: unsupported dtype"),
    };
    Ok((out, l.shape().clone()))
}

/// Combines two contiguous storages of one dtype element by element.
pub(crate) fn zip(a: &CpuStorage, al: &Layout, b: &CpuStorage, bl: &Layout, what: &str, f: &dyn Fn(f64, f64) -> f64) -> candle_core::Result<(CpuStorage, Shape)> {
    fn each<T: WithDType>(a: &[T], (i, j): (usize, usize), b: &[T], (k, l): (usize, usize), f: &dyn Fn(f64, f64) -> f64) -> Vec<T> {
        a[i..j].iter().zip(&b[k..l]).map(|(x, y)| T::from_f64(f(x.to_f64(), y.to_f64()))).collect()
    }
    let (Some(ar), Some(br)) = (al.contiguous_offsets(), bl.contiguous_offsets()) else { candle_core::bail!("{what}: inputs must be contiguous") };
    let out = match (a, b) {
        (CpuStorage::F32(a), CpuStorage::F32(b)) => CpuStorage::F32(each(a, ar, b, br, f)),
        (CpuStorage::F64(a), CpuStorage::F64(b)) => CpuStorage::F64(each(a, ar, b, br, f)),
        (CpuStorage::F16(a), CpuStorage::F16(b)) => CpuStorage::F16(each(a, ar, b, br, f)),
        (CpuStorage::BF16(a), CpuStorage::BF16(b)) => CpuStorage::BF16(each(a, ar, b, br, f)),
        _ => candle_core::bail!("{what}: unsupported or mixed dtypes"),
    };
    Ok((out, al.shape().clone()))
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
        let (lo, hi) = (bound(s, self.lo), bound(s, self.hi));
        map(s, l, "clamp", &|x| {
            let y = if x < lo { lo } else { x };
            if y > hi {
                hi
            } else {
                y
            }
        })
    }

    fn bwd(&self, arg: &Tensor, _res: &Tensor, grad: &Tensor) -> candle_core::Result<Option<Tensor>> {
        let g = grad.contiguous()?.apply_op2_no_bwd(&arg.contiguous()?, &ClampBackward { lo: self.lo, hi: self.hi })?;
        Ok(Some(g))
    }
}

/// A bound as the storage's dtype holds it.
fn bound(s: &CpuStorage, v: f64) -> f64 {
    match s {
        CpuStorage::F32(_) => v as f32 as f64,
        CpuStorage::F16(_) => half::f16::from_f64(v).to_f64(),
        CpuStorage::BF16(_) => half::bf16::from_f64(v).to_f64(),
        _ => v,
    }
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
        let (lo, hi) = (bound(x, self.lo), bound(x, self.hi));
        zip(g, gl, x, xl, "clamp backward", &|g, x| if lo < x && x < hi { g } else { 0.0 })
    }
}

struct Abs;

impl CustomOp1 for Abs {
    fn name(&self) -> &'static str {
        "torch-abs"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> candle_core::Result<(CpuStorage, Shape)> {
        map(s, l, "abs", &f64::abs)
    }

    fn bwd(&self, arg: &Tensor, _res: &Tensor, grad: &Tensor) -> candle_core::Result<Option<Tensor>> {
        Ok(Some(grad.contiguous()?.apply_op2_no_bwd(&arg.contiguous()?, &AbsBackward)?))
    }
}

struct AbsBackward;

impl CustomOp2 for AbsBackward {
    fn name(&self) -> &'static str {
        "torch-abs-backward"
    }

    fn cpu_fwd(&self, g: &CpuStorage, gl: &Layout, x: &CpuStorage, xl: &Layout) -> candle_core::Result<(CpuStorage, Shape)> {
        // sgn(x) = (0 < x) − (x < 0): 0 at ±0 and at NaN.
        zip(g, gl, x, xl, "abs backward", &|g, x| g * (f64::from(u8::from(0.0 < x)) - f64::from(u8::from(x < 0.0))))
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

    #[test]
    fn abs_as_pytorch_computes_it() {
        // PyTorch 2.15: x = [0, -2, 3, nan, -0], upstream [inf, 1, 1, 1, 5]: x.abs() backward =
        // [nan, -1, 1, 0, 0]: the product with sgn(0) = 0, so ∞·0 = NaN at 0.
        let (_, g) = grad_of(|x| abs(x).unwrap(), &[0.0, -2.0, 3.0, f32::NAN, -0.0], &[f32::INFINITY, 1.0, 1.0, 1.0, 5.0]);
        assert!(g[0].is_nan());
        assert_eq!(g[1..], [-1.0, 1.0, 0.0, 0.0]);
    }
}
