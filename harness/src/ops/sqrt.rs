//! `sqrt`: the elementwise square root, Candle's: NaN below 0, and a derivative `1/(2√x)` infinite at 0.

use candle_core::Tensor;

use super::Rule;
use super::{infinite_at_zero, zeros_read, Autocast, Elementwise, Explained, Facts};
use crate::error::Result;
use crate::scenario::Shape;

/// Its derivative, in words, infinite at 0.
const DERIVATIVE: &str = "d√x/dx = 1/(2√x)";

/// Elementwise square root (infinite gradient at 0).
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize, serde::Deserialize, arbitrary::Arbitrary)]
#[serde(deny_unknown_fields)]
pub struct Sqrt {}

impl Elementwise for Sqrt {
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
        (4, 0)
    }

    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        Ok(x.sqrt()?)
    }

    fn autocast(&self) -> Autocast {
        Autocast::Same
    }

    fn explain_forward(&self, f: &Facts) -> Explained {
        (f.x < 0.0).then(|| (Rule::OutsideDomain, format!("sqrt of a negative number ({}) is NaN", crate::human(f.x))))
    }

    fn explain_backward(&self, f: &Facts) -> Explained {
        infinite_at_zero(DERIVATIVE, f)
    }

    fn explain_zeros(&self, zeros: usize, n: usize) -> Explained {
        zeros_read(DERIVATIVE, zeros, n)
    }

    fn torch(&self) -> String {
        "torch.sqrt(x)".into()
    }
}
