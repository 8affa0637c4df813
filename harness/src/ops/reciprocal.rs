//! `reciprocal`: the elementwise `1/x`, Candle's: ±Inf at 0, and a derivative `−1/x²` infinite there. On autocast's f32 list.

use candle_core::Tensor;

use super::Rule;
use super::{infinite_at_zero, zeros_read, Autocast, Elementwise, Explained, Facts};
use crate::error::Result;
use crate::scenario::Shape;

/// Its derivative, in words, infinite at 0.
const DERIVATIVE: &str = "d(1/x)/dx = −1/x²";

/// Elementwise `1/x`.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize, serde::Deserialize, arbitrary::Arbitrary)]
#[serde(deny_unknown_fields)]
pub struct Reciprocal {}

impl Elementwise for Reciprocal {
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
        Ok(x.recip()?)
    }

    fn autocast(&self) -> Autocast {
        Autocast::F32
    }

    fn explain_forward(&self, f: &Facts) -> Explained {
        (f.x == 0.0).then(|| (Rule::DivisionByZero, "1/x at exactly x = 0".to_string()))
    }

    fn explain_backward(&self, f: &Facts) -> Explained {
        infinite_at_zero(DERIVATIVE, f)
    }

    fn explain_zeros(&self, zeros: usize, n: usize) -> Explained {
        zeros_read(DERIVATIVE, zeros, n)
    }

    fn torch(&self) -> String {
        "torch.reciprocal(x)".into()
    }
}
