//! `mean_pool`, `max_pool` and `last`: a sequence `(batch, seq, w)` brought down to
//! `(batch, w)`. The two pools leave padded positions out (they read the padding mask,
//! `Cx::mask`), as people write it in PyTorch; the kernels are `run::model::sequence`.

use candle_core::Tensor;

use super::{Autocast, Cx, Op, Rounding, Torch};
use crate::error::Result;
use crate::scenario::{Part, Planner, Shape};

/// Mean over the sequence's unpadded positions: `(batch, seq, w)` to `(batch, w)`.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize, serde::Deserialize, arbitrary::Arbitrary)]
#[serde(deny_unknown_fields)]
pub struct MeanPool {}

/// Maximum over the sequence's unpadded positions: `(batch, seq, w)` to `(batch, w)`.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize, serde::Deserialize, arbitrary::Arbitrary)]
#[serde(deny_unknown_fields)]
pub struct MaxPool {}

/// The last position of the sequence: `(batch, seq, w)` to `(batch, w)`.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize, serde::Deserialize, arbitrary::Arbitrary)]
#[serde(deny_unknown_fields)]
pub struct Last {}

/// Writes the `Op` of a reduction over positions: its type name, graph levels and forward
/// (`|x, cx| ...`).
macro_rules! seq_pool_op {
    ($ty:ident, $kind:literal, $levels:literal, |$x:ident, $cx:ident| $forward:expr) => {
        impl Op for $ty {
            fn check(&self) -> Vec<(&'static str, String)> {
                Vec::new()
            }

            fn plan(&self, _: &mut Planner<'_>, input: Shape) -> std::result::Result<Shape, String> {
                Ok(Shape::Flat(super::sequence($kind, input)?.1))
            }

            fn held(&self, _: Shape, _: Shape, values: u128) -> u128 {
                values
            }

            fn levels(&self) -> (u64, u64) {
                ($levels, 0)
            }

            fn dropout(&self) -> f64 {
                0.0
            }

            fn forward(&self, $x: &Tensor, $cx: &Cx<'_>) -> Result<Tensor> {
                $forward
            }

            fn autocast(&self, _: Part) -> Autocast {
                Autocast::Same
            }

            fn rounding(&self, _: Part) -> Rounding {
                Rounding::Outside
            }

            super::undiagnosed!();

            fn torch(&self) -> Torch {
                Torch::Module(concat!("(Pool(\"", $kind, "\"), width)").into())
            }
        }
    };
}

seq_pool_op!(MeanPool, "mean_pool", 32, |x, cx| crate::run::model::sequence::mean_pool(x, cx.mask));
seq_pool_op!(MaxPool, "max_pool", 32, |x, cx| crate::run::model::sequence::max_pool(x, cx.mask));
seq_pool_op!(Last, "last", 4, |x, _cx| crate::run::model::sequence::last(x));

#[cfg(test)]
mod tests {
    use candle_core::{DType, Device, Tensor};

    use super::*;
    use crate::ops::op::with_cx;
    use crate::scenario::{plan, InShape, Init, Layer, ModelSpec};

    #[test]
    fn pools_bring_a_sequence_down_to_its_width_and_refuse_the_rest() {
        let planned = |l: Layer, input| plan(&ModelSpec { init: Init::Torch, layers: vec![l], init_scale: 1.0, code: None }, input);
        let seq = InShape { features: 3, seq_len: Some(5), vocab: None, image: None };
        let flat = InShape { features: 3, seq_len: None, vocab: None, image: None };
        let image = InShape { features: 4, seq_len: None, vocab: None, image: Some((1, 2, 2)) };
        for (l, kind) in [(Layer::MeanPool(MeanPool {}), "mean_pool"), (Layer::MaxPool(MaxPool {}), "max_pool"), (Layer::Last(Last {}), "last")] {
            let p = planned(l.clone(), seq).unwrap();
            assert_eq!((p.out, p.params.len()), (Shape::Flat(3), 0), "{kind}");
            assert_eq!(planned(l.clone(), flat).unwrap_err().1, format!("a {kind} layer needs sequence input (batch, seq, width), and gets (batch, 3)"));
            assert_eq!(planned(l.clone(), image).unwrap_err().1, format!("a {kind} layer cannot take (batch, 1, 2, 2) images: put a flatten layer first"));
            assert_eq!(l.op().torch(), Torch::Module(format!("(Pool(\"{kind}\"), width)")));
        }
    }

    /// PyTorch 2.15: h = [[1, 5], [3, 4], [nan, nan]] with mask [1, 1, 0]: `masked_fill` then
    /// `sum(1) / mask.sum(1).clamp(min=1)` is [2, 4.5] and `masked_fill(-inf).max(1)` is [3, 5]:
    /// the padded NaN is left out; `h[:, -1]` is the padded position itself.
    #[test]
    fn the_pools_read_the_padding_mask_from_the_context() {
        let dev = Device::Cpu;
        let h = Tensor::new(&[[[1.0f64, 5.0], [3.0, 4.0], [f64::NAN, f64::NAN]]], &dev).unwrap();
        let mask = Tensor::new(&[[1.0f64, 1.0, 0.0]], &dev).unwrap();
        let run = |op: &dyn Op| {
            with_cx(|cx| {
                let cx = Cx { mask: Some(&mask), params: crate::ops::Params::Prepared(&[]), ..*cx };
                op.forward(&h, &cx).unwrap().to_dtype(DType::F64).unwrap().flatten_all().unwrap().to_vec1::<f64>().unwrap()
            })
        };
        assert_eq!(run(&MeanPool {}), [2.0, 4.5]);
        assert_eq!(run(&MaxPool {}), [3.0, 5.0]);
        assert!(run(&Last {}).iter().all(|v| v.is_nan()));
    }
}
