//! `softmax`: over the last dimension, the row maximum subtracted first (`run::kernel::activation`). On autocast's f32 list.

use candle_core::Tensor;

use super::{Autocast, Elementwise, Explained, Facts, Rule};
use crate::error::Result;
use crate::scenario::Shape;

/// Softmax over the last dimension (max-subtracted).
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize, serde::Deserialize, arbitrary::Arbitrary)]
#[serde(deny_unknown_fields)]
pub struct Softmax {}

impl Elementwise for Softmax {
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
        crate::run::kernel::activation::softmax(x)
    }

    fn autocast(&self) -> Autocast {
        Autocast::F32
    }

    fn explain_forward(&self, _: &Facts) -> Explained {
        None
    }

    /// Its backward is `y ⊙ (g − Σ g·y)` over a row: with finite gradients `g` arriving, the
    /// difference `g − Σ g·y` can overflow when they span more than the dtype's range.
    fn explain_backward(&self, f: &Facts) -> Explained {
        let span = f.read.max - f.read.min;
        (f.grad.is_finite() && f.read.infinite + f.read.nan == 0 && span > f.lim.max).then(|| {
            let dt: &str = f.dtype.into();
            let reason = format!(
                "softmax's backward is y·(g − Σ g·y) over a row, and the gradients arriving span [{}, {}], a range of {}: g − Σ g·y, the difference of a gradient and a weighted mean of its row, overflows {dt}'s largest value {}",
                crate::human(f.read.min),
                crate::human(f.read.max),
                crate::human(span),
                crate::human(f.lim.max)
            );
            (Rule::Overflow, reason)
        })
    }

    fn explain_zeros(&self, _: usize, _: usize) -> Explained {
        None
    }

    fn torch(&self) -> String {
        "torch.softmax(x, dim=-1)".into()
    }
}

#[cfg(test)]
mod tests {
    use super::super::{Facts, Limits, Read};
    use super::*;
    use crate::scenario::DTypeName;

    #[test]
    fn its_backward_overflows_when_the_arriving_gradients_span_more_than_the_dtype() {
        // Gradients in [−40000, 40000] in f16: g − Σ g·y can reach 80000 > 65504.
        let f = Facts { read: Read { infinite: 0, nan: 0, min: -40000.0, max: 40000.0 }, ..Facts::at(0.5, 40000.0, DTypeName::F16) };
        let (rule, reason) = Softmax::default().explain_backward(&f).unwrap();
        assert_eq!(rule, Rule::Overflow);
        assert!(reason.contains("span [-40000, 40000], a range of 80000") && reason.contains("f16's largest value 65504"), "{reason}");
        // The same in f32 is far from its 3.4e38: no diagnosis.
        assert_eq!(Softmax::default().explain_backward(&Facts { dtype: DTypeName::F32, lim: Limits::of(DTypeName::F32), ..f }), None);
    }
}
