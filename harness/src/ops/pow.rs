//! `pow`: the elementwise `x^exponent`, Candle's `powf`: it overflows where `|x|^exponent` passes the dtype's largest value, and below an exponent of 1 its derivative `a·xᵃ⁻¹` is infinite at 0. On autocast's f32 list.

use candle_core::Tensor;

use super::Rule;
use super::{finite, infinite_at_zero, py, zeros_read, Autocast, Explained, Facts, Op};
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

impl Op for Pow {
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
