//! `leaky_relu`: `x` above 0, `negative_slope · x` at and below, forward and backward as PyTorch's (`run::kernel::pointwise`).

use candle_core::Tensor;

use super::{finite, py, Autocast, Elementwise, Explained, Facts};
use crate::error::Result;
use crate::scenario::Shape;

/// `x` above 0, `negative_slope · x` at and below (`torch.nn.LeakyReLU`).
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize, arbitrary::Arbitrary)]
#[serde(deny_unknown_fields)]
pub struct LeakyRelu {
    /// The slope below 0.
    #[serde(default = "slope")]
    pub negative_slope: f64,
}

/// PyTorch's default slope, 0.01.
fn slope() -> f64 {
    0.01
}

/// PyTorch's `negative_slope = 0.01`.
impl Default for LeakyRelu {
    fn default() -> Self {
        LeakyRelu { negative_slope: slope() }
    }
}

impl Elementwise for LeakyRelu {
    fn check(&self) -> Vec<(&'static str, String)> {
        finite("negative_slope", self.negative_slope).into_iter().collect()
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
        crate::run::kernel::pointwise::leaky_relu(x, self.negative_slope)
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
        format!("F.leaky_relu(x, negative_slope={})", py(self.negative_slope))
    }
}
