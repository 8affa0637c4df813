//! `pow`: the elementwise `x^exponent`, Candle's `powf`: it overflows where `|x|^exponent` passes the dtype's largest value, and below an exponent of 1 its derivative `a·xᵃ⁻¹` is infinite at 0. On autocast's f32 list.

use candle_core::Tensor;

use super::Rule;
use super::{finite, infinite_at_zero, py, zeros_read, Autocast, Elementwise, Explained, Facts};
use crate::error::Result;
use crate::scenario::Shape;

/// Its derivative, in words, infinite at 0.
const DERIVATIVE: &str = "d xᵃ/dx = a·xᵃ⁻¹ with a < 1";

/// Elementwise `x^exponent`.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize, arbitrary::Arbitrary)]
#[serde(deny_unknown_fields)]
pub struct Pow {
    /// The exponent.
    pub exponent: f64,
}

/// An exponent of 2 (the layer has no default: a scenario writes its exponent).
impl Default for Pow {
    fn default() -> Self {
        Pow { exponent: 2.0 }
    }
}

impl Elementwise for Pow {
    fn check(&self) -> Vec<(&'static str, String)> {
        finite("exponent", self.exponent).into_iter().collect()
    }

    fn shape(&self, input: Shape) -> std::result::Result<Shape, String> {
        Ok(input)
    }

    fn held(&self, _input: Shape, output: u128) -> u128 {
        output
    }

    fn levels(&self) -> (u64, u64) {
        (4, 0)
    }

    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        Ok(x.powf(self.exponent)?)
    }

    fn autocast(&self) -> Autocast {
        Autocast::F32
    }

    fn explain_forward(&self, f: &Facts) -> Explained {
        let dt: &str = f.dtype.into();
        (f.x.is_finite() && f.x.abs().powf(self.exponent) > f.lim.max)
            .then(|| (Rule::Overflow, format!("{}^{} exceeds {dt}'s largest value {}", crate::human(f.x), crate::human(self.exponent), crate::human(f.lim.max))))
    }

    fn explain_backward(&self, f: &Facts) -> Explained {
        if self.exponent < 1.0 {
            infinite_at_zero(DERIVATIVE, f)
        } else {
            None
        }
    }

    fn explain_zeros(&self, zeros: usize, n: usize) -> Explained {
        if self.exponent < 1.0 {
            zeros_read(DERIVATIVE, zeros, n)
        } else {
            None
        }
    }

    fn torch(&self) -> String {
        format!("torch.pow(x, {})", py(self.exponent))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scenario::DTypeName;

    fn facts(x: f64, grad: f64) -> Facts<'static> {
        Facts::at(x, grad, DTypeName::F32)
    }

    #[test]
    fn overflow_and_the_derivative_at_zero_below_an_exponent_of_one() {
        // (2e19)² = 4e38 passes f32's max 3.4e38; (1e19)² = 1e38 does not.
        let square = Pow { exponent: 2.0 };
        assert_eq!(square.explain_forward(&facts(2e19, f64::NAN)).map(|e| e.0), Some(Rule::Overflow));
        assert_eq!(square.explain_forward(&facts(1e19, f64::NAN)), None);
        assert_eq!((square.explain_backward(&facts(0.0, 2.0)), square.explain_zeros(3, 8)), (None, None));
        // √x's derivative ½x^(−½) is infinite at 0: an arriving 2 becomes ∞, an arriving 0 is 0 · ∞.
        let root = Pow { exponent: 0.5 };
        let (rule, reason) = root.explain_backward(&facts(0.0, 2.0)).unwrap();
        assert_eq!((rule, reason.as_str()), (Rule::DerivativeAtZero, "d xᵃ/dx = a·xᵃ⁻¹ with a < 1 is infinite at x = 0, so the gradient arriving here (2) becomes ±∞"));
        assert_eq!(root.explain_backward(&facts(0.0, 0.0)).map(|e| e.0), Some(Rule::ZeroTimesInf));
        assert_eq!(root.explain_backward(&facts(0.5, 2.0)), None);
        assert_eq!(root.explain_zeros(3, 8).map(|e| e.1), Some("d xᵃ/dx = a·xᵃ⁻¹ with a < 1 is infinite at 0, and 3 of the 8 values this layer reads are exactly 0".to_string()));
        assert_eq!(root.explain_zeros(0, 8), None);
        assert_eq!((root.torch(), Pow { exponent: -1e-7 }.torch()), ("torch.pow(x, 0.5)".to_string(), "torch.pow(x, -1e-7)".to_string()));
        assert_eq!(Pow { exponent: f64::INFINITY }.check(), [("exponent", "must be a finite number, got inf".to_string())]);
    }
}
