//! `dropout`: zeroes each value with probability `p` while training and scales the rest
//! by `1/(1 − p)` (`torch.nn.Dropout`). Masks come from the training step's seeded stream
//! (`Cx::dropout_mask`), node by node, so the export can draw them again
//! (`report::torch::dropout`).

use candle_core::Tensor;

use super::{unit_interval, Autocast, Cx, Op, Rounding, Torch};
use crate::error::Result;
use crate::scenario::{Part, Planner, Shape};

/// Zeroes each value with probability `p` while training and scales the rest by `1/(1 − p)`
/// (`torch.nn.Dropout`); masks come from the scenario's seeded stream, one per step.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize, arbitrary::Arbitrary)]
#[serde(deny_unknown_fields)]
pub struct Dropout {
    /// Probability of zeroing a value.
    pub p: f64,
}

impl Op for Dropout {
    fn check(&self) -> Vec<(&'static str, String)> {
        unit_interval("p", self.p).into_iter().collect()
    }

    fn plan(&self, _: &mut Planner<'_>, input: Shape) -> std::result::Result<Shape, String> {
        Ok(input)
    }

    fn held(&self, _: Shape, _: Shape, values: u128) -> u128 {
        values
    }

    fn levels(&self) -> (u64, u64) {
        (4, 0)
    }

    fn dropout(&self) -> f64 {
        self.p
    }

    /// One mask value per value of a row; in f32 storage under autocast, its `1/(1 − p)` is
    /// rounded as a low mask's would be.
    fn forward(&self, x: &Tensor, cx: &Cx<'_>) -> Result<Tensor> {
        let rows = x.dims()[0];
        let Some(mask) = cx.dropout_mask(rows, x.elem_count() / rows.max(1), self.p, x)? else { return Ok(x.clone()) };
        let mask = match cx.round {
            Some(low) => crate::run::kernel::cast::round(&mask, low)?,
            None => mask,
        };
        Ok(x.mul(&mask.reshape(x.shape())?)?)
    }

    fn autocast(&self, _: Part) -> Autocast {
        Autocast::Same
    }

    fn rounding(&self, _: Part) -> Rounding {
        Rounding::Outside
    }

    super::undiagnosed!();

    /// `repro.py`'s `Dropout`, which applies the step's mask of node `name` from the export.
    fn torch(&self) -> Torch {
        Torch::Module(format!("(Dropout({}, name), width)", super::py(self.p)))
    }
}

#[cfg(test)]
mod tests {
    use std::cell::RefCell;

    use candle_core::{DType, Device};
    use rand::SeedableRng;
    use rand_chacha::ChaCha8Rng;

    use super::*;
    use crate::ops::{Inner, Params};

    #[test]
    fn a_dropout_probability_outside_0_to_1_is_refused_and_the_export_reads_its_mask_by_name() {
        assert_eq!(Dropout { p: 1.0 }.check(), vec![("p", "must be in [0, 1), got 1".to_string())]);
        assert_eq!(Dropout { p: -0.5 }.check(), vec![("p", "must be in [0, 1), got -0.5".to_string())]);
        assert_eq!(Dropout { p: 0.0 }.check(), Vec::new());
        assert_eq!(Dropout { p: 0.25 }.torch(), Torch::Module("(Dropout(0.25, name), width)".into()));
    }

    #[test]
    fn kept_values_are_scaled_by_1_over_1_minus_p_rounded_to_the_low_dtype_under_autocast() {
        let x = Tensor::ones((2, 3, 50), DType::F32, &Device::Cpu).unwrap();
        let (state, dropout) = (RefCell::new(None), RefCell::new(Some(ChaCha8Rng::seed_from_u64(7))));
        let run = |training, round| {
            let cx = Cx {
                part: Part::Whole,
                params: Params::Prepared(&[]),
                others: &[],
                mask: None,
                training,
                round,
                inner: Inner::Off,
                storage: DType::F32,
                dropout: &dropout,
                state: &state,
                table: None,
            };
            let y = Dropout { p: 0.3 }.forward(&x, &cx).unwrap();
            assert_eq!(y.dims(), x.dims());
            y.flatten_all().unwrap().to_vec1::<f32>().unwrap()
        };
        // 1/0.7 = 1.428571...; f32's nearest is 1.4285715; f16's, at a spacing of 2⁻¹⁰ there, is 1463·2⁻¹⁰ = 1.4287109375.
        for (round, kept) in [(None, (1.0f64 / 0.7) as f32), (Some(DType::F16), 1463.0 / 1024.0)] {
            let y = run(true, round);
            let dropped = y.iter().filter(|v| **v == 0.0).count();
            assert!(y.iter().all(|v| *v == 0.0 || *v == kept), "{round:?}: {y:?}");
            // About 0.3 of 300 (binomial sd 7.9).
            assert!((60..=120).contains(&dropped), "{dropped}");
        }
        // Evaluation draws nothing and passes the input through.
        assert!(run(false, None).iter().all(|v| *v == 1.0));
    }
}
