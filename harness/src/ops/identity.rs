//! `identity`: passes its input through.

use candle_core::Tensor;

use super::{Autocast, Elementwise, Explained, Facts};
use crate::error::Result;
use crate::scenario::Shape;

/// No-op.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize, serde::Deserialize, arbitrary::Arbitrary)]
#[serde(deny_unknown_fields)]
pub struct Identity {}

impl Elementwise for Identity {
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
        Ok(x.clone())
    }

    fn autocast(&self) -> Autocast {
        Autocast::Same
    }

    fn explain_forward(&self, _: &Facts) -> Explained {
        None
    }

    fn explain_backward(&self, _: &Facts) -> Explained {
        None
    }

    fn explain_zeros(&self, _: usize, _: usize) -> Explained {
        None
    }

    fn torch(&self) -> String {
        "x".into()
    }
}
