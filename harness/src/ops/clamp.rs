//! `clamp`: `torch.clamp(x, min=..., max=...)`, forward and backward as PyTorch 2.15's.
//!
//! Forward (`aten/src/ATen/native/cpu/TensorCompareKernel.cpp`, `clamp_scalar_kernel_impl`):
//! `min(max(x, min), max)` with a NaN input kept (`torch.clamp(nan, 0, 1)` is NaN), so with
//! `min > max` every value is `max`. Each bound is converted to the tensor's dtype first, and
//! one outside its range is an error (`torch.clamp(half_tensor, max=70000.)` raises "value
//! cannot be converted to type c10::Half without overflow"); so here.
//!
//! Backward (`clamp_backward` in `torch/csrc/autograd/FunctionsManual.cpp`): the upstream
//! gradient where `min < x < max`, a selected 0 elsewhere, whatever that gradient is (a `where`,
//! so an infinite gradient at a clamped element gives 0, not ∞·0). PyTorch 2.15 compares
//! strictly, so an input exactly at a bound gets 0, as `hardtanh` and `relu` do
//! (pytorch/pytorch#184574, changed by #191142; before, the bounds passed the gradient). A NaN
//! input gets 0. A missing bound does not compare: `clamp(x, min=0)` passes the gradient at
//! x = +∞. One CPU op each way; other devices use Candle's `maximum` and `minimum`.

use candle_core::{DType, Tensor};

use super::rounding::{Rounding, Unary};
use super::{Autocast, Elementwise, Explained, Facts};
use crate::error::{Error, Result};
use crate::scenario::Shape;

/// `torch.clamp(x, min, max)`: at least one bound; `min > max` is allowed (every value is `max`).
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize, arbitrary::Arbitrary)]
#[serde(deny_unknown_fields)]
pub struct Clamp {
    /// The lower bound (`min=`), none by default; ±inf allowed, NaN refused.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min: Option<f64>,
    /// The upper bound (`max=`), none by default; ±inf allowed, NaN refused.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max: Option<f64>,
}

impl Default for Clamp {
    /// A scenario must give a bound, so the default is an example that can run: `[-1, 1]`
    /// (`F.hardtanh`'s range).
    fn default() -> Self {
        Clamp { min: Some(-1.0), max: Some(1.0) }
    }
}

/// `torch.clamp(x, lo, hi)` (a missing bound is `None`) with PyTorch's NaN and gradient rules.
pub(crate) fn clamp(x: &Tensor, lo: Option<f64>, hi: Option<f64>) -> Result<Tensor> {
    if !x.device().is_cpu() {
        let x = lo.map_or(Ok(x.clone()), |lo| x.maximum(lo))?;
        return Ok(hi.map_or(Ok(x.clone()), |hi| x.minimum(hi))?);
    }
    let r = Rounding::of(x.dtype());
    // A missing bound is NaN: it never compares.
    let a = [bound("min", lo, x.dtype(), r)?, bound("max", hi, x.dtype(), r)?];
    Unary { name: "clamp", a, r, forward, backward }.apply(x)
}

/// A bound as the dtype holds it (NaN when missing), or PyTorch's refusal of one out of its range.
fn bound(key: &str, v: Option<f64>, d: DType, r: Rounding) -> Result<f64> {
    let Some(v) = v else { return Ok(f64::NAN) };
    // c10's checked conversion: a finite value above the dtype's largest overflows, even one
    // that would round down to it (65519 in f16).
    let largest = match d {
        DType::F16 => half::f16::MAX.to_f64(),
        DType::BF16 => half::bf16::MAX.to_f64(),
        DType::F32 => f64::from(f32::MAX),
        _ => f64::MAX,
    };
    if v.abs() > largest && v.is_finite() {
        let message = format!("clamp's {key} = {} cannot be converted to {d:?} without overflow (PyTorch raises the same error)", crate::human(v));
        return Err(Error::Invalid { location: "clamp".into(), key: key.into(), message });
    }
    Ok((r.store)(v))
}

fn forward(x: f64, [lo, hi]: [f64; 2], _: Rounding) -> f64 {
    let y = if x < lo { lo } else { x };
    if y > hi {
        hi
    } else {
        y
    }
}

fn backward(g: f64, x: f64, [lo, hi]: [f64; 2], _: Rounding) -> f64 {
    let above = lo.is_nan() || x > lo;
    let below = hi.is_nan() || x < hi;
    if above && below {
        g
    } else {
        0.0
    }
}

impl Elementwise for Clamp {
    fn check(&self) -> Vec<(&'static str, String)> {
        let mut out = Vec::new();
        if self.min.is_none() && self.max.is_none() {
            out.push(("min", "a clamp needs `min`, `max` or both (torch.clamp refuses neither)".to_string()));
        }
        for (key, v) in [("min", self.min), ("max", self.max)] {
            if v.is_some_and(f64::is_nan) {
                out.push((key, "must be a number or ±inf, not NaN (a NaN bound makes every output NaN)".to_string()));
            }
        }
        out
    }

    fn shape(&self, input: Shape) -> std::result::Result<Shape, String> {
        Ok(input)
    }

    fn held(&self, _input: Shape, output: u128) -> u128 {
        output
    }

    fn levels(&self) -> (u64, u64) {
        // One op (and a contiguous copy), as every elementwise layer; see `run::stack`.
        (4, 0)
    }

    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        clamp(x, self.min, self.max)
    }

    fn autocast(&self) -> Autocast {
        // `clamp` is on none of `autocast_mode.h`'s lists.
        Autocast::Same
    }

    /// None: a clamp's output is its input or a bound, so it is non-finite only where the
    /// input is (NaN is kept, as PyTorch keeps it) or a bound is infinite.
    fn explain_forward(&self, _: &Facts) -> Explained {
        None
    }

    /// None: its gradient is the upstream gradient or 0, never made non-finite here.
    fn explain_backward(&self, _: &Facts) -> Explained {
        None
    }

    fn explain_zeros(&self, _zeros: usize, _n: usize) -> Explained {
        None
    }

    fn torch(&self) -> String {
        let arg = |key: &str, v: Option<f64>| v.map(|v| format!(", {key}={}", super::py(v))).unwrap_or_default();
        format!("torch.clamp(x{}{})", arg("min", self.min), arg("max", self.max))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ops::rounding::tests::{facts, same, through};

    const INF: f64 = f64::INFINITY;

    #[test]
    fn as_pytorch_2_15_computes_it() {
        // PyTorch 2.15: x = torch.tensor([1, 0.25, nan, -1, 0, 0.5, inf, -inf], requires_grad=True);
        // y = torch.clamp(x, **kw); y.backward(torch.full((8,), inf)); print(y.tolist(), x.grad.tolist())
        let x = [1.0, 0.25, f64::NAN, -1.0, 0.0, 0.5, INF, -INF];
        let up = [INF; 8];
        let nan = f64::NAN;
        // min=0, max=0.5: 0 at both bounds (strict), a selected 0 (not ∞·0) where clamped.
        let (y, g) = through(|x| clamp(x, Some(0.0), Some(0.5)), &x, &up, DType::F32);
        same(&y, &[0.5, 0.25, nan, 0.0, 0.0, 0.5, 0.5, 0.0]);
        same(&g, &[0.0, INF, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0]);
        // min=0 only: +∞ passes the gradient (no upper bound to compare with).
        let (y, g) = through(|x| clamp(x, Some(0.0), None), &x, &up, DType::F32);
        same(&y, &[1.0, 0.25, nan, 0.0, 0.0, 0.5, INF, 0.0]);
        same(&g, &[INF, INF, 0.0, 0.0, 0.0, INF, INF, 0.0]);
        // max=0.5 only.
        let (y, g) = through(|x| clamp(x, None, Some(0.5)), &x, &up, DType::F32);
        same(&y, &[0.5, 0.25, nan, -1.0, 0.0, 0.5, 0.5, -INF]);
        same(&g, &[0.0, INF, 0.0, INF, INF, 0.0, 0.0, INF]);
        // min > max: torch.clamp([0.3, 0.5, 0.7], 0.6, 0.4) = [0.4, 0.4, 0.4], gradient 0.
        let (y, g) = through(|x| clamp(x, Some(0.6), Some(0.4)), &[0.3, 0.5, 0.7], &[1.0; 3], DType::F32);
        same(&y, &[0.4000000059604645; 3]);
        same(&g, &[0.0; 3]);
    }

    #[test]
    fn half_bounds_are_rounded_to_the_dtype_or_refused() {
        // PyTorch 2.15, f16: x = [0.1, 1e-8, 2]; torch.clamp(x, max=0.1) = [0.0999755859375, 0, 0.0999755859375]
        // with gradient [0, 1, 0] (x equals the f16 bound), and clamp(x, min=1e-8) keeps
        // 1e-8 → 0 at the bound 1e-8 → 0, gradient [1, 0, 1].
        let (y, g) = through(|x| clamp(x, None, Some(0.1)), &[0.1, 1e-8, 2.0], &[1.0; 3], DType::F16);
        same(&y, &[0.0999755859375, 0.0, 0.0999755859375]);
        same(&g, &[0.0, 1.0, 0.0]);
        let (_, g) = through(|x| clamp(x, Some(1e-8), None), &[0.1, 1e-8, 2.0], &[1.0; 3], DType::F16);
        same(&g, &[1.0, 0.0, 1.0]);
        // bf16 rounds 0.1 to 0.10009765625.
        let (y, _) = through(|x| clamp(x, Some(0.1), None), &[0.0], &[1.0], DType::BF16);
        same(&y, &[0.10009765625]);
        // "value cannot be converted to type c10::Half without overflow", for 70000 and 65519
        // (which would round to 65504), not for 65504 or ±inf.
        let x = Tensor::new(&[1f32, 2.0], &candle_core::Device::Cpu).unwrap().to_dtype(DType::F16).unwrap();
        for bad in [70000.0, 65519.0, -65520.0] {
            let e = clamp(&x, None, Some(bad)).unwrap_err().to_string();
            assert!(e.contains("`max`") && e.contains("without overflow"), "{e}");
        }
        for fine in [65504.0, INF, -INF] {
            assert!(clamp(&x, Some(fine), None).is_ok());
        }
        let bf = x.to_dtype(DType::BF16).unwrap();
        assert!(clamp(&bf, None, Some(1e39)).is_err() && clamp(&bf, None, Some(1e38)).is_ok());
    }

    #[test]
    fn check_needs_a_bound_and_refuses_nan_and_torch_names_the_bounds_given() {
        assert_eq!(Clamp { min: None, max: None }.check().len(), 1);
        assert_eq!(Clamp { min: Some(f64::NAN), max: Some(1.0) }.check(), vec![("min", "must be a number or ±inf, not NaN (a NaN bound makes every output NaN)".to_string())]);
        assert!(Clamp { min: Some(0.6), max: Some(0.4) }.check().is_empty(), "min > max is allowed, as in PyTorch");
        assert!(Clamp::default().check().is_empty());
        assert_eq!(Clamp { min: Some(0.0), max: None }.torch(), "torch.clamp(x, min=0.0)");
        assert_eq!(Clamp { min: Some(-INF), max: Some(1e-3) }.torch(), "torch.clamp(x, min=float('-inf'), max=0.001)");
        let op = Clamp::default();
        assert!(op.explain_forward(&facts(f64::NAN, f64::NAN, DType::F16)).is_none());
        assert!(op.explain_backward(&facts(0.5, INF, DType::F32)).is_none());
        assert_eq!(op.autocast(), Autocast::Same);
    }
}
