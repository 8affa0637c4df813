//! `elu`: `x` above 0, `alpha · (exp(x) − 1)` at and below, forward and backward as PyTorch's (`run::kernel::pointwise`).

use candle_core::Tensor;

use super::{finite, py, Autocast, Elementwise, Explained, Facts};
use crate::error::Result;
use crate::scenario::Shape;

/// `x` above 0, `alpha · (exp(x) − 1)` at and below (`torch.nn.ELU`).
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize, arbitrary::Arbitrary)]
#[serde(deny_unknown_fields)]
pub struct Elu {
    /// The negative branch's scale.
    #[serde(default = "one")]
    pub alpha: f64,
}

/// PyTorch's default scale, 1.
fn one() -> f64 {
    1.0
}

/// PyTorch's `alpha = 1`.
impl Default for Elu {
    fn default() -> Self {
        Elu { alpha: one() }
    }
}

impl Elementwise for Elu {
    fn check(&self) -> Vec<(&'static str, String)> {
        finite("alpha", self.alpha).into_iter().collect()
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
        crate::run::kernel::pointwise::elu(x, self.alpha)
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
        format!("F.elu(x, alpha={})", py(self.alpha))
    }
}
