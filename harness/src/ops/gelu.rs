//! `gelu`: GELU in its erf form, PyTorch's default, through the fused kernel `run::kernel::gelu`.

use candle_core::Tensor;

use super::{Autocast, Elementwise, Explained, Facts};
use crate::error::Result;
use crate::scenario::Shape;

/// GELU (erf form, PyTorch's default).
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize, serde::Deserialize, arbitrary::Arbitrary)]
#[serde(deny_unknown_fields)]
pub struct Gelu {}

impl Elementwise for Gelu {
    fn check(&self) -> Vec<(&'static str, String)> {
        Vec::new()
    }

    fn shape(&self, input: Shape) -> std::result::Result<Shape, String> {
        Ok(input)
    }

    /// Its output, and the `Φ(x)` the kernel keeps for the backward (`run::kernel::gelu`): an f32
    /// per output value, half a value more in f16 and bf16 of the four copies the estimate
    /// counts per value (output, gradient, temporaries), a quarter in f32: the half dtypes'
    /// bound, taken for every dtype (f64 keeps none), as `held` does not see the dtype.
    fn held(&self, _input: Shape, output: u128) -> u128 {
        output.saturating_add(output / 2)
    }

    fn levels(&self) -> (u64, u64) {
        (4, 0)
    }

    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        crate::run::kernel::gelu::gelu(x)
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
        "F.gelu(x)".into()
    }
}
