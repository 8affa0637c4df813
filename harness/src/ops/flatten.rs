//! `flatten`: everything but the batch as one vector (`torch.flatten(x, 1)`), images and
//! sequences to `(batch, n)`; the kernel is `run::model::conv::flatten`.

use candle_core::Tensor;

use super::{Autocast, Cx, Op, Rounding, Torch};
use crate::error::Result;
use crate::scenario::{Part, Planner, Shape};

/// Everything but the batch into one vector (`torch.flatten(x, 1)`): images and sequences to `(batch, n)`.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize, serde::Deserialize, arbitrary::Arbitrary)]
#[serde(deny_unknown_fields)]
pub struct Flatten {}

impl Op for Flatten {
    fn check(&self) -> Vec<(&'static str, String)> {
        Vec::new()
    }

    fn plan(&self, _: &mut Planner<'_>, input: Shape) -> std::result::Result<Shape, String> {
        Ok(match input {
            Shape::Flat(_) => input,
            _ => Shape::Flat(input.cols()),
        })
    }

    fn held(&self, _: Shape, _: Shape, values: u128) -> u128 {
        values
    }

    fn levels(&self) -> (u64, u64) {
        (4, 0)
    }

    fn dropout(&self) -> f64 {
        0.0
    }

    fn forward(&self, x: &Tensor, _: &Cx<'_>) -> Result<Tensor> {
        crate::run::model::conv::flatten(x)
    }

    fn autocast(&self, _: Part) -> Autocast {
        Autocast::Same
    }

    fn rounding(&self, _: Part) -> Rounding {
        Rounding::Outside
    }

    super::undiagnosed!();

    fn torch(&self) -> Torch {
        Torch::Module("(Fn(lambda x: torch.flatten(x, 1)), None)".into())
    }
}

#[cfg(test)]
mod tests {
    use candle_core::{Device, Tensor};

    use super::*;
    use crate::scenario::{plan, InShape, Init, Layer, ModelSpec};

    #[test]
    fn images_and_sequences_become_one_vector_per_example() {
        let out = |input: InShape| plan(&ModelSpec { init: Init::Torch, layers: vec![Layer::Flatten(Flatten {})], init_scale: 1.0, code: None, onnx: None }, input).unwrap().out;
        assert_eq!(out(InShape { features: 24, seq_len: None, vocab: None, image: Some((2, 3, 4)) }), Shape::Flat(24));
        assert_eq!(out(InShape { features: 3, seq_len: Some(5), vocab: None, image: None }), Shape::Flat(15));
        assert_eq!(out(InShape { features: 3, seq_len: None, vocab: None, image: None }), Shape::Flat(3));
        // torch.flatten(x, 1) of a (2, 2, 1, 2) tensor keeps row-major order: rows [0, 1, 2, 3] and [4, 5, 6, 7].
        let x = Tensor::arange(0f32, 8.0, &Device::Cpu).unwrap().reshape((2, 2, 1, 2)).unwrap();
        let y = crate::ops::op::with_cx(|cx| Flatten {}.forward(&x, cx)).unwrap();
        assert_eq!(y.to_vec2::<f32>().unwrap(), [[0.0, 1.0, 2.0, 3.0], [4.0, 5.0, 6.0, 7.0]]);
    }
}
