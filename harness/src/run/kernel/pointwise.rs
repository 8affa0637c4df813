//! The elementwise activations that are a function `f(x)` with the gradient
//! `g·df(x)`, as PyTorch computes them, each one [`Pointwise`] CPU op each way
//! (other devices use Candle's formulas): SiLU, ELU, leaky ReLU and `abs`.
//!
//! Written as `where`s and products of Candle ops, their backward would pass
//! through branches PyTorch never evaluates (ELU's `exp` of a large positive
//! input is +Inf in the unselected branch, and ∞·0 is NaN) and would take the
//! derivative at 0 from the wrong side. Here the backward is PyTorch's own:
//! `silu_backward` (`g·σ(x)·(1 + x·(1 − σ(x)))`), `elu_backward` (`g·α·eˣ`
//! at and below 0), `leaky_relu_backward` (`g·slope` at and below 0), and
//! `abs`'s `g·sgn(x)`, 0 at 0 (so ∞·0 = NaN there, which is faithful:
//! pytorch/pytorch#2421; Candle's `abs` takes the derivative at 0 to be 1).

use candle_core::{CpuStorage, CustomOp1, CustomOp2, Layout, Shape, Tensor};

use super::elementwise::{map, zip};
use super::Dtypes;
use crate::error::Result;

/// `x · sigmoid(x)`.
pub(crate) fn silu(h: &Tensor) -> Result<Tensor> {
    let op = Pointwise { name: "silu", a: 0.0, f: |x, _| x * sigmoid(x), df: |x, _| sigmoid(x) * (1.0 + x * (1.0 - sigmoid(x))) };
    op.apply(h, candle_nn::ops::silu)
}

/// `x` above 0, `alpha · (exp(x) − 1)` at and below.
pub(crate) fn elu(h: &Tensor, alpha: f64) -> Result<Tensor> {
    let op = Pointwise { name: "elu", a: alpha, f: |x, a| if x > 0.0 { x } else { a * x.exp_m1() }, df: |x, a| if x > 0.0 { 1.0 } else { a * x.exp() } };
    op.apply(h, |h| h.elu(alpha))
}

/// `x` above 0, `slope · x` at and below.
pub(crate) fn leaky_relu(h: &Tensor, slope: f64) -> Result<Tensor> {
    let op = Pointwise { name: "leaky_relu", a: slope, f: |x, a| if x > 0.0 { x } else { a * x }, df: |x, a| if x > 0.0 { 1.0 } else { a } };
    op.apply(h, |h| candle_nn::ops::leaky_relu(h, slope))
}

/// `|x|` as `torch.abs`: its gradient is `grad · sgn(x)`, with `sgn(0) = sgn(NaN) = 0`.
pub(crate) fn abs(h: &Tensor) -> Result<Tensor> {
    // sgn(x) = (0 < x) − (x < 0): 0 at ±0 and at NaN.
    let op = Pointwise { name: "abs", a: 0.0, f: |x, _| x.abs(), df: |x, _| f64::from(u8::from(0.0 < x)) - f64::from(u8::from(x < 0.0)) };
    op.apply(h, Tensor::abs)
}

fn sigmoid(x: f64) -> f64 {
    1.0 / (1.0 + (-x).exp())
}

/// An elementwise function `f(x, a)` with derivative `df(x, a)`, each computed in f64 and
/// rounded to the tensor's dtype; NaN passes through both.
#[derive(Clone, Copy)]
pub(crate) struct Pointwise {
    /// The op's name, in errors and Candle's graph.
    pub(crate) name: &'static str,
    /// Its attribute (a slope, an alpha), as `f` and `df` read it.
    pub(crate) a: f64,
    /// The output at `x`.
    pub(crate) f: fn(f64, f64) -> f64,
    /// The derivative at `x`: the input's gradient is `g · df(x)`.
    pub(crate) df: fn(f64, f64) -> f64,
}

impl Pointwise {
    /// The op on `h`: one CPU op each way where `h` takes the CPU kernels, else `other` (Candle's
    /// formula, on other devices).
    pub(crate) fn apply(self, h: &Tensor, other: impl FnOnce(&Tensor) -> candle_core::Result<Tensor>) -> Result<Tensor> {
        if !super::takes(h, Dtypes::Floats) {
            return Ok(other(h)?);
        }
        Ok(h.contiguous()?.apply_op1(self)?)
    }
}

impl CustomOp1 for Pointwise {
    fn name(&self) -> &'static str {
        self.name
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> candle_core::Result<(CpuStorage, Shape)> {
        map(s, l, self.name, &|x| (self.f)(x, self.a))
    }

    fn bwd(&self, arg: &Tensor, _res: &Tensor, grad: &Tensor) -> candle_core::Result<Option<Tensor>> {
        Ok(Some(grad.contiguous()?.apply_op2_no_bwd(&arg.contiguous()?, &Backward(*self))?))
    }
}

/// `grad · df(x)`, from the incoming gradient and the forward's input.
struct Backward(Pointwise);

impl CustomOp2 for Backward {
    fn name(&self) -> &'static str {
        "pointwise-backward"
    }

    fn cpu_fwd(&self, g: &CpuStorage, gl: &Layout, x: &CpuStorage, xl: &Layout) -> candle_core::Result<(CpuStorage, Shape)> {
        let p = self.0;
        zip(g, gl, x, xl, p.name, &|g, x| g * (p.df)(x, p.a))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{Device, Var};

    /// The input gradient of `abs` at `x` (f32) against upstream `up`.
    fn abs_grad(x: &[f32], up: &[f32]) -> ((), Vec<f32>) {
        let x = Var::new(x, &Device::Cpu).unwrap();
        let up = Tensor::new(up, &Device::Cpu).unwrap();
        let g = (abs(x.as_tensor()).unwrap() * &up).unwrap().sum_all().unwrap().backward().unwrap();
        ((), g.get(x.as_tensor()).unwrap().to_vec1().unwrap())
    }

    /// The output and input gradient of `f` at x = [-2, -0.5, 0, 0.5, 3] against upstream [1, 2, 3, -1, 0.5], in f64.
    fn at_points(f: impl Fn(&Tensor) -> Tensor) -> (Vec<f64>, Vec<f64>) {
        let x = Var::new(&[-2.0f64, -0.5, 0.0, 0.5, 3.0], &Device::Cpu).unwrap();
        let y = f(x.as_tensor());
        let up = Tensor::new(&[1.0f64, 2.0, 3.0, -1.0, 0.5], &Device::Cpu).unwrap();
        let g = (&y * &up).unwrap().sum_all().unwrap().backward().unwrap();
        (y.to_vec1().unwrap(), g.get(x.as_tensor()).unwrap().to_vec1().unwrap())
    }

    fn close(a: &[f64], b: &[f64]) {
        assert!(a.iter().zip(b).all(|(a, b)| (a - b).abs() <= 1e-15 * b.abs().max(1.0)), "{a:?} vs {b:?}");
    }

    #[test]
    fn as_pytorch_computes_them() {
        // PyTorch 2.15, f64: x = torch.tensor([-2, -0.5, 0, 0.5, 3.]), up = [1, 2, 3, -1, 0.5],
        // y = f(x); (y * up).sum().backward(); print(y, x.grad)
        let (y, g) = at_points(|x| silu(x).unwrap());
        close(&y, &[-0.2384058440442351, -0.1887703343990727, 0.0, 0.3112296656009273, 2.8577223804672998]);
        close(&g, &[-0.09078424878489547, 0.5200776253946964, 1.5, -0.7399611873026519, 0.5440520530075846]);
        // nn.ELU(alpha=1.5): at 0 the gradient is 3 · 1.5 · e⁰ = 4.5.
        let (y, g) = at_points(|x| elu(x, 1.5).unwrap());
        close(&y, &[-1.296997075145081, -0.5902040104310499, 0.0, 0.5, 3.0]);
        close(&g, &[0.20300292485491905, 1.8195919791379003, 4.5, -1.0, 0.5]);
        // nn.LeakyReLU(0.1): at 0 the gradient is 3 · 0.1.
        let (y, g) = at_points(|x| leaky_relu(x, 0.1).unwrap());
        close(&y, &[-0.2, -0.05, 0.0, 0.5, 3.0]);
        close(&g, &[0.1, 0.2, 0.30000000000000004, -1.0, 0.5]);
    }

    #[test]
    fn abs_as_pytorch_computes_it() {
        // PyTorch 2.15: x = [0, -2, 3, nan, -0], upstream [inf, 1, 1, 1, 5]: x.abs() backward =
        // [nan, -1, 1, 0, 0]: the product with sgn(0) = 0, so ∞·0 = NaN at 0.
        let (_, g) = abs_grad(&[0.0, -2.0, 3.0, f32::NAN, -0.0], &[f32::INFINITY, 1.0, 1.0, 1.0, 5.0]);
        assert!(g[0].is_nan());
        assert_eq!(g[1..], [-1.0, 1.0, 0.0, 0.0]);
    }

    #[test]
    fn elu_of_a_large_input_has_a_finite_gradient() {
        // exp(1000) is +Inf in f64, but ELU never evaluates it above 0: gradient 1 · upstream.
        let x = Var::new(&[1000.0f64], &Device::Cpu).unwrap();
        let g = elu(x.as_tensor(), 1.0).unwrap().sum_all().unwrap().backward().unwrap();
        assert_eq!(g.get(x.as_tensor()).unwrap().to_vec1::<f64>().unwrap(), [1.0]);
    }
}
