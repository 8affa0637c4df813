//! `log`: the elementwise natural log, Candle's: −Inf at 0, NaN below, and a derivative `1/x` infinite at 0. On autocast's f32 list.

use candle_core::Tensor;

use super::Rule;
use super::{infinite_at_zero, zeros_read, Autocast, Elementwise, Explained, Facts};
use crate::error::Result;
use crate::scenario::Shape;

/// Its derivative, in words, infinite at 0.
const DERIVATIVE: &str = "d log x/dx = 1/x";

/// Elementwise natural log (−inf at 0).
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize, serde::Deserialize, arbitrary::Arbitrary)]
#[serde(deny_unknown_fields)]
pub struct Log {}

impl Elementwise for Log {
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
        Ok(x.log()?)
    }

    fn autocast(&self) -> Autocast {
        Autocast::F32
    }

    fn explain_forward(&self, f: &Facts) -> Explained {
        if f.x < 0.0 {
            Some((Rule::OutsideDomain, format!("log of a negative number ({}) is NaN", crate::human(f.x))))
        } else {
            (f.x == 0.0).then(|| (Rule::LogOfZero, "log of exactly 0 is −Inf".to_string()))
        }
    }

    fn explain_backward(&self, f: &Facts) -> Explained {
        infinite_at_zero(DERIVATIVE, f)
    }

    fn explain_zeros(&self, zeros: usize, n: usize) -> Explained {
        zeros_read(DERIVATIVE, zeros, n)
    }

    fn torch(&self) -> String {
        "torch.log(x)".into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scenario::DTypeName;

    #[test]
    fn negative_zero_and_positive_inputs() {
        let at = |x: f64| Log {}.explain_forward(&Facts::at(x, f64::NAN, DTypeName::F16));
        assert_eq!(at(-1.5), Some((Rule::OutsideDomain, "log of a negative number (-1.5) is NaN".to_string())));
        assert_eq!(at(0.0), Some((Rule::LogOfZero, "log of exactly 0 is −Inf".to_string())));
        assert_eq!(at(1e-7), None);
    }
}
