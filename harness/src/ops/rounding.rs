//! Elementwise ops rounded where PyTorch rounds, forward and backward, shared by
//! the ops whose PyTorch form is a short chain of CPU ops (`softsign`) or one
//! kernel with its own opmath (`logsigmoid`, `clamp`).
//!
//! A [`Rounding`] names the two roundings a PyTorch CPU kernel does for a tensor
//! of one dtype: to the dtype itself, which every separate op stores (so the
//! `1 + |x|` inside `F.softsign` of an f16 tensor is an f16), and to its
//! "opmath" type, in which one kernel computes (f32 for f16, bf16 and f32, f64
//! for f64). Formulas here compute in f64 and round at each of PyTorch's
//! steps: one `+`, `−`, `×` or `÷` in f64 rounded to f32, f16 or bf16 is that
//! type's own correctly rounded operation (f64 carries more than twice their
//! precision, plus two bits), so the results are PyTorch's bits; `exp` and
//! `log1p` are correctly rounded here, where PyTorch's vectorised f32 kernels
//! (Sleef) may differ in the last place.
//!
//! [`Unary`] is one CPU op each way: `forward(x)` and the input gradient
//! `backward(g, x)` (from the upstream gradient and the forward's input), each
//! with the op's attributes and rounding. Other devices use the composed
//! Candle forms the ops give.

use candle_core::{CpuStorage, CustomOp1, CustomOp2, DType, Layout, Shape, Tensor};

use crate::error::Result;
use crate::run::kernel::elementwise::{map, zip};

/// The roundings of a PyTorch CPU kernel over a tensor of one dtype.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Rounding {
    /// To the tensor's dtype: what every separate op stores.
    pub(crate) store: fn(f64) -> f64,
    /// To the kernel's opmath type: f32 for f16, bf16 and f32, f64 for f64.
    pub(crate) opmath: fn(f64) -> f64,
}

fn to_f64(v: f64) -> f64 {
    v
}

fn to_f32(v: f64) -> f64 {
    v as f32 as f64
}

fn to_f16(v: f64) -> f64 {
    half::f16::from_f64(v).to_f64()
}

fn to_bf16(v: f64) -> f64 {
    half::bf16::from_f64(v).to_f64()
}

impl Rounding {
    /// How PyTorch rounds a tensor of dtype `d` (f64, and the dtypes no float op computes in: not at all).
    pub(crate) fn of(d: DType) -> Rounding {
        match d {
            DType::F16 => Rounding { store: to_f16, opmath: to_f32 },
            DType::BF16 => Rounding { store: to_bf16, opmath: to_f32 },
            DType::F32 => Rounding { store: to_f32, opmath: to_f32 },
            _ => Rounding { store: to_f64, opmath: to_f64 },
        }
    }

    /// `v` computed in the opmath type and stored: one kernel's result.
    pub(crate) fn kernel(self, v: f64) -> f64 {
        (self.store)((self.opmath)(v))
    }
}

/// An elementwise op as PyTorch's CPU computes it: `forward(x, a, r)` and the input gradient
/// `backward(g, x, a, r)`, each given the attributes `a` and the rounding `r` of the dtype
/// PyTorch computes in, and each returning a value already rounded to it.
#[derive(Clone, Copy)]
pub(crate) struct Unary {
    /// The op's name, in errors and Candle's graph.
    pub(crate) name: &'static str,
    /// Its attributes (bounds, constants), as the formulas read them.
    pub(crate) a: [f64; 2],
    /// The rounding of the dtype it computes in.
    pub(crate) r: Rounding,
    /// The output at `x`.
    pub(crate) forward: fn(f64, [f64; 2], Rounding) -> f64,
    /// The input's gradient from the upstream gradient `g` at `x`.
    pub(crate) backward: fn(f64, f64, [f64; 2], Rounding) -> f64,
}

impl Unary {
    /// The op applied to `x` (on the CPU), recorded so its backward is [`Unary::backward`].
    pub(crate) fn apply(self, x: &Tensor) -> Result<Tensor> {
        Ok(x.contiguous()?.apply_op1(self)?)
    }
}

impl CustomOp1 for Unary {
    fn name(&self) -> &'static str {
        self.name
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> candle_core::Result<(CpuStorage, Shape)> {
        let (f, a, r) = (self.forward, self.a, self.r);
        map(s, l, self.name, &|x| f(x, a, r))
    }

    fn bwd(&self, arg: &Tensor, _res: &Tensor, grad: &Tensor) -> candle_core::Result<Option<Tensor>> {
        let g = grad.contiguous()?.apply_op2_no_bwd(&arg.contiguous()?, &UnaryGrad(*self))?;
        Ok(Some(g))
    }
}

/// The gradient of a [`Unary`], from the upstream gradient and the forward's input.
struct UnaryGrad(Unary);

impl CustomOp2 for UnaryGrad {
    fn name(&self) -> &'static str {
        "unary-backward"
    }

    fn cpu_fwd(&self, g: &CpuStorage, gl: &Layout, x: &CpuStorage, xl: &Layout) -> candle_core::Result<(CpuStorage, Shape)> {
        let Unary { name, a, r, backward, .. } = self.0;
        zip(g, gl, x, xl, name, &|g, x| backward(g, x, a, r))
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use candle_core::{Device, Var};

    use super::*;
    use crate::ops::Facts;
    use crate::scenario::DTypeName;

    /// `f`'s output and input gradient (as f64) at `x` in dtype `dt`, against the upstream
    /// gradient `up`: what `y = f(x); y.backward(up)` gives in PyTorch.
    pub(crate) fn through(f: impl Fn(&Tensor) -> Result<Tensor>, x: &[f64], up: &[f64], dt: DType) -> (Vec<f64>, Vec<f64>) {
        through_shaped(f, x, up, (x.len(),), dt)
    }

    /// [`through`] for an input of `shape`.
    pub(crate) fn through_shaped(f: impl Fn(&Tensor) -> Result<Tensor>, x: &[f64], up: &[f64], shape: impl candle_core::shape::ShapeWithOneHole, dt: DType) -> (Vec<f64>, Vec<f64>) {
        let dev = Device::Cpu;
        let x = Var::from_tensor(&Tensor::new(x, &dev).unwrap().reshape(shape).unwrap().to_dtype(dt).unwrap()).unwrap();
        let y = f(x.as_tensor()).unwrap();
        let up = Tensor::new(up, &dev).unwrap().reshape(y.shape()).unwrap().to_dtype(dt).unwrap();
        let grads = (&y * &up).unwrap().sum_all().unwrap().backward().unwrap();
        let flat = |t: &Tensor| t.flatten_all().unwrap().to_dtype(DType::F64).unwrap().to_vec1::<f64>().unwrap();
        (flat(&y), flat(grads.get(x.as_tensor()).unwrap()))
    }

    /// Whether `a` and `b` are the same values, bit for bit but for NaN's payload (so ±0 differ).
    pub(crate) fn same(a: &[f64], b: &[f64]) {
        let eq = |x: &f64, y: &f64| (x.is_nan() && y.is_nan()) || x.to_bits() == y.to_bits();
        assert!(a.len() == b.len() && a.iter().zip(b).all(|(x, y)| eq(x, y)), "\n got {a:?}\nwant {b:?}");
    }

    /// [`same`] for gradients, where −0 and +0 are equal: some of Candle's own ops' backward
    /// rules still add a gradient to a tensor of zeros (`vendor/README.md`), so a −0 that
    /// PyTorch hands on may arrive as +0.
    pub(crate) fn same_grad(a: &[f64], b: &[f64]) {
        let eq = |x: &f64, y: &f64| (x.is_nan() && y.is_nan()) || x == y;
        assert!(a.len() == b.len() && a.iter().zip(b).all(|(x, y)| eq(x, y)), "\n got {a:?}\nwant {b:?}");
    }

    /// Whether `a` is within `ulps` f32 units in the last place of `b` (NaN and infinities
    /// exactly, −0 equal to +0).
    pub(crate) fn near_f32(a: &[f64], b: &[f64], ulps: u32) {
        let close = |x: f64, y: f64| {
            if x == y || (x.is_nan() && y.is_nan()) {
                return true;
            }
            x.is_finite() && y.is_finite() && x.signum() == y.signum() && (x as f32).to_bits().abs_diff((y as f32).to_bits()) <= ulps
        };
        assert!(a.len() == b.len() && a.iter().zip(b).all(|(x, y)| close(*x, *y)), "\n got {a:?}\nwant {b:?}");
    }

    /// What the cause engine knows at an element: input `x`, upstream gradient `grad`, in `dt`.
    pub(crate) fn facts(x: f64, grad: f64, dt: DType) -> Facts<'static> {
        let dtype = match dt {
            DType::F16 => DTypeName::F16,
            DType::BF16 => DTypeName::Bf16,
            DType::F64 => DTypeName::F64,
            _ => DTypeName::F32,
        };
        Facts::at(x, grad, dtype)
    }

    #[test]
    fn each_dtype_rounds_as_pytorch_stores_and_computes() {
        // 1 + 2⁻¹¹ is not an f16 (ties to even: 1), 1 + 2⁻⁸ not a bf16; both are f32s.
        let v = 1.0 + 2f64.powi(-11);
        assert_eq!(((Rounding::of(DType::F16).store)(v), (Rounding::of(DType::F16).opmath)(v)), (1.0, v));
        assert_eq!((Rounding::of(DType::BF16).store)(1.0 + 2f64.powi(-8)), 1.0);
        assert_eq!((Rounding::of(DType::F32).store)(1.0 + 2f64.powi(-30)), 1.0);
        assert_eq!((Rounding::of(DType::F64).store)(1.0 + 2f64.powi(-30)), 1.0 + 2f64.powi(-30));
        // 1e-12 underflows f16 (smallest subnormal 2⁻²⁴), not bf16; 70000 overflows f16.
        assert_eq!((Rounding::of(DType::F16).store)(1e-12), 0.0);
        assert!((Rounding::of(DType::BF16).store)(1e-12) > 0.0);
        assert_eq!(Rounding::of(DType::F16).kernel(70000.0), f64::INFINITY);
    }
}
