//! `exp`: the elementwise `eˣ`, Candle's: it overflows above `ln(max)`, and so does its backward `g · eˣ`. On autocast's f32 list.

use candle_core::Tensor;

use super::Rule;
use super::{Autocast, Elementwise, Explained, Facts};
use crate::error::Result;
use crate::scenario::Shape;

/// Elementwise `exp(x)`.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize, serde::Deserialize, arbitrary::Arbitrary)]
#[serde(deny_unknown_fields)]
pub struct Exp {}

impl Elementwise for Exp {
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
        Ok(x.exp()?)
    }

    fn autocast(&self) -> Autocast {
        Autocast::F32
    }

    fn explain_forward(&self, f: &Facts) -> Explained {
        let dt: &str = f.dtype.into();
        (f.x > f.lim.max.ln()).then(|| (Rule::Overflow, format!("exp({}) overflows {dt}: the input is above ln(max) = {}", crate::human(f.x), crate::human(f.lim.max.ln()))))
    }

    fn explain_backward(&self, f: &Facts) -> Explained {
        let (dt, (x, g)): (&str, _) = (f.dtype.into(), (f.x, f.grad));
        (g.is_finite() && (g * x.exp()).abs() > f.lim.max).then(|| {
            let reason = format!("g · exp(x) = {} · exp({}) overflows {dt}'s largest value {}", crate::human(g), crate::human(x), crate::human(f.lim.max));
            (if g == 0.0 { Rule::ZeroTimesInf } else { Rule::Overflow }, reason)
        })
    }

    fn explain_zeros(&self, _: usize, _: usize) -> Explained {
        None
    }

    fn torch(&self) -> String {
        "torch.exp(x)".into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scenario::DTypeName;

    fn facts(x: f64, grad: f64) -> Facts<'static> {
        Facts::at(x, grad, DTypeName::F32)
    }

    #[test]
    fn overflow_above_ln_of_f32_max() {
        // ln(f32::MAX) = ln(3.4028235e38) = 88.7228...
        let (rule, reason) = Exp {}.explain_forward(&facts(89.0, f64::NAN)).unwrap();
        assert_eq!((rule, reason.as_str()), (Rule::Overflow, "exp(89) overflows f32: the input is above ln(max) = 88.7"));
        assert_eq!(Exp {}.explain_forward(&facts(88.0, f64::NAN)), None);
        // Backward: g · e⁸⁹ = 4.49e38 passes f32's max; 1e-10 · e⁸⁹ does not, nor does 0 · e⁸⁹.
        assert_eq!(Exp {}.explain_backward(&facts(89.0, 1.0)).map(|e| e.0), Some(Rule::Overflow));
        assert_eq!(Exp {}.explain_backward(&facts(89.0, 1e-10)), None);
        assert_eq!(Exp {}.explain_backward(&facts(89.0, 0.0)), None);
    }
}
