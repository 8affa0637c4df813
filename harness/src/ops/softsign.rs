//! `softsign`: `x / (1 + |x|)`, as `torch.nn.functional.softsign` computes it.
//!
//! PyTorch has no softsign kernel: `F.softsign` is the Python expression
//! `input / (input.abs() + 1)` (`torch/nn/functional.py`), three ops, each
//! storing its result in the input's dtype, and its backward is autograd through
//! them (`tools/autograd/derivatives.yaml`): `div`'s `grad / other` for `x` and
//! `-grad * ((self / other) / other)` for the denominator
//! (`div_tensor_other_backward`), `add`'s identity, `abs`'s `grad * self.sgn()`,
//! the two gradients of `x` added. So in f16 the denominator `1 + |x|` is itself
//! rounded to f16 (at x = 0.3, 1.2998046875), and at x = ±∞ the forward is
//! ∞/∞ = NaN, not ±1: PyTorch's NaN, reproduced here. Both ways are one CPU op
//! ([`Unary`]) with each of those roundings; other devices compose Candle's ops.

use candle_core::Tensor;

use super::rounding::{Rounding, Unary};
use super::Rule;
use super::{Autocast, Elementwise, Explained, Facts};
use crate::error::Result;
use crate::scenario::Shape;

/// `x / (1 + |x|)` (`torch.nn.Softsign`); no attributes.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize, serde::Deserialize, arbitrary::Arbitrary)]
#[serde(deny_unknown_fields)]
pub struct Softsign {}

/// `F.softsign(x)` with PyTorch's roundings and backward.
pub(crate) fn softsign(x: &Tensor) -> Result<Tensor> {
    if !x.device().is_cpu() {
        return Ok(x.broadcast_div(&x.abs()?.affine(1.0, 1.0)?)?);
    }
    Unary { name: "softsign", a: [0.0; 2], r: Rounding::of(x.dtype()), forward, backward }.apply(x)
}

/// `1 + |x|`, stored.
fn denominator(x: f64, r: Rounding) -> f64 {
    (r.store)(x.abs() + 1.0)
}

fn forward(x: f64, _: [f64; 2], r: Rounding) -> f64 {
    (r.store)(x / denominator(x, r))
}

/// `g / d + (−g · ((x / d) / d)) · sgn(x)`, each operation stored, with `d = 1 + |x|`.
fn backward(g: f64, x: f64, _: [f64; 2], r: Rounding) -> f64 {
    let s = r.store;
    let d = denominator(x, r);
    let direct = s(g / d);
    let through_d = s(-g * s(s(x / d) / d));
    // sgn(x) = (0 < x) − (x < 0): 0 at ±0 and NaN (`abs`'s backward).
    let sgn = f64::from(u8::from(0.0 < x)) - f64::from(u8::from(x < 0.0));
    s(direct + s(through_d * sgn))
}

/// The reason softsign of ±∞ is NaN, forward or backward.
fn infinite(x: f64, what: &str) -> Explained {
    x.is_infinite().then(|| {
        let reason = format!("softsign computes x / (1 + |x|) as PyTorch's F.softsign does, and at x = {} {what} is ∞/∞ = NaN (the limit is ±1, but the formula divides)", crate::human(x));
        (Rule::OutsideDomain, reason)
    })
}

impl Elementwise for Softsign {
    fn check(&self) -> Vec<(&'static str, String)> {
        Vec::new()
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
        softsign(x)
    }

    fn autocast(&self) -> Autocast {
        // `abs`, `add` and `div` are on none of `autocast_mode.h`'s lists.
        Autocast::Same
    }

    fn explain_forward(&self, f: &Facts) -> Explained {
        infinite(f.x, "it")
    }

    fn explain_backward(&self, f: &Facts) -> Explained {
        infinite(f.x, "the derivative's (x / (1 + |x|)) / (1 + |x|)")
    }

    fn explain_zeros(&self, _zeros: usize, _n: usize) -> Explained {
        None
    }

    fn torch(&self) -> String {
        "F.softsign(x)".into()
    }
}

#[cfg(test)]
mod tests {
    use candle_core::DType;

    use super::*;
    use crate::ops::rounding::tests::{facts, same, through};

    const INF: f64 = f64::INFINITY;

    #[test]
    fn as_pytorch_computes_it_in_f32_f16_and_bf16() {
        // PyTorch 2.15: x = torch.tensor(X, dtype=dt, requires_grad=True); y = F.softsign(x);
        // y.backward(torch.tensor(G, dtype=dt)); print(y.tolist(), x.grad.tolist())
        // with X = [0, -0, 0.3, -0.3, 2.5, 1e4, -1e4, big, inf, -inf, nan, 1e-7] (big = 1e30, f16 60000)
        // and G = [1, -2, 0.7, 3, -1.5, 2, 5, 1, 1, 1, 1, 1].
        let g = [1.0, -2.0, 0.7, 3.0, -1.5, 2.0, 5.0, 1.0, 1.0, 1.0, 1.0, 1.0];
        let x = |big: f64| [0.0, -0.0, 0.3, -0.3, 2.5, 1e4, -1e4, big, INF, -INF, f64::NAN, 1e-7];
        let (y, dx) = through(softsign, &x(1e30), &g, DType::F32);
        same(&y, &[0.0, -0.0, 0.23076924681663513, -0.23076924681663513, 0.7142857313156128, 0.9998999834060669, -0.9998999834060669, 1.0, f64::NAN, f64::NAN, f64::NAN, 9.999998695775503e-08]);
        same(&dx, &[1.0, -2.0, 0.41420120000839233, 1.7751479148864746, -0.12244898080825806, 1.9994331523776054e-08, 5.00003807246685e-08, 0.0, f64::NAN, f64::NAN, f64::NAN, 0.9999997615814209]);
        // f16: 1 + |0.3| is stored as 1.2998046875, 10001 as 10000, so 1e4's gradient is exactly 0.
        let (y, dx) = through(softsign, &x(60000.0), &g, DType::F16);
        same(&y, &[0.0, -0.0, 0.2308349609375, -0.2308349609375, 0.71435546875, 1.0, -1.0, 1.0, f64::NAN, f64::NAN, f64::NAN, 1.1920928955078125e-07]);
        same(&dx, &[1.0, -2.0, 0.4140625, 1.775390625, -0.122314453125, 0.0, 0.0, 0.0, f64::NAN, f64::NAN, f64::NAN, 1.0]);
        let (y, dx) = through(softsign, &x(1e30), &g, DType::BF16);
        same(&y, &[0.0, -0.0, 0.2314453125, -0.2314453125, 0.71484375, 1.0, -1.0, 1.0, f64::NAN, f64::NAN, f64::NAN, 1.0011717677116394e-07]);
        same(&dx, &[1.0, -2.0, 0.4140625, 1.78125, -0.12109375, 0.0, 0.0, 0.0, f64::NAN, f64::NAN, f64::NAN, 1.0]);
    }

    #[test]
    fn softsign_of_infinity_is_explained_as_inf_over_inf() {
        let op = Softsign {};
        let (rule, reason) = op.explain_forward(&facts(INF, f64::NAN, DType::F16)).unwrap();
        assert_eq!(rule, Rule::OutsideDomain);
        assert!(reason.contains("∞/∞"), "{reason}");
        assert!(op.explain_backward(&facts(-INF, 1.0, DType::F32)).is_some());
        // A finite input makes neither a NaN nor an infinite gradient.
        assert!(op.explain_forward(&facts(65504.0, f64::NAN, DType::F16)).is_none());
        assert!(op.explain_backward(&facts(3.0, 1.0, DType::F32)).is_none());
        assert_eq!((op.check(), op.torch(), op.autocast()), (vec![], "F.softsign(x)".to_string(), Autocast::Same));
    }
}
