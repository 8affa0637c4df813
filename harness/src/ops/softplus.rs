//! `softplus`: `log(1 + exp(x))`, and `x` itself above PyTorch's threshold of 20 (`run::kernel::activation`). On autocast's f32 list.

use candle_core::Tensor;

use super::{Autocast, Elementwise, Explained, Facts};
use crate::error::Result;
use crate::scenario::Shape;

/// `log(1 + exp(x))`, linear above 20 as in PyTorch.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize, serde::Deserialize, arbitrary::Arbitrary)]
#[serde(deny_unknown_fields)]
pub struct Softplus {}

impl Elementwise for Softplus {
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
        (8, 0)
    }

    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        crate::run::kernel::activation::softplus(x)
    }

    fn autocast(&self) -> Autocast {
        Autocast::F32
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
        "torch.where(x > 20, x, torch.log(torch.exp(torch.clamp(x, max=20.0)) + 1.0))".into()
    }
}
