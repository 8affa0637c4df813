//! `flawed_square`: `x²` whose hand-written backward divides the upstream gradient by exactly 0, as seed 002 ex3's flawed custom layer (the kernel is `run::kernel::flawed_square`; `repro.py` writes the same `torch.autograd.Function`).

use candle_core::Tensor;

use super::Rule;
use super::{Autocast, Elementwise, Explained, Facts};
use crate::error::Result;
use crate::scenario::Shape;

/// `x²` whose hand-written backward divides by zero (seed 002 ex3's flawed custom layer).
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize, serde::Deserialize, arbitrary::Arbitrary)]
#[serde(deny_unknown_fields)]
pub struct FlawedSquare {}

/// Its backward's rule, whatever it read.
fn flawed() -> (Rule, String) {
    (Rule::DivisionByZero, "its hand-written backward divides the upstream gradient by exactly 0".to_string())
}

impl Elementwise for FlawedSquare {
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
        crate::run::kernel::flawed_square::flawed_square(x)
    }

    fn autocast(&self) -> Autocast {
        Autocast::Same
    }

    fn explain_forward(&self, _: &Facts) -> Explained {
        None
    }

    fn explain_backward(&self, _: &Facts) -> Explained {
        Some(flawed())
    }

    fn explain_zeros(&self, _: usize, _: usize) -> Explained {
        Some(flawed())
    }

    fn torch(&self) -> String {
        "FlawedSquare.apply(x)".into()
    }
}
