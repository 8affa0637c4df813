//! `mean_pool`, `max_pool` and `last`: a sequence `(batch, seq, w)` brought down to
//! `(batch, w)`. The two pools leave padded positions out (they read the padding mask,
//! `Cx::mask`), as people write it in PyTorch; the kernels are `run::model::sequence`.

use candle_core::Tensor;

use super::{Autocast, Cx, Explained, Facts, Op, Rounding, Rule, Torch};
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

/// Writes the `Op` of a reduction over positions: its type name, graph levels, forward diagnosis
/// (a function of the [`Facts`]) and forward (`|x, cx| ...`).
macro_rules! seq_pool_op {
    ($ty:ident, $kind:literal, $levels:literal, $explain:path, |$x:ident, $cx:ident| $forward:expr) => {
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

            fn explain_forward(&self, _: Part, f: &Facts<'_>) -> Explained {
                $explain(f)
            }

            fn explain_backward(&self, _: &Facts<'_>) -> Explained {
                None
            }

            fn explain_zeros(&self, _: usize, _: usize) -> Explained {
                None
            }

            fn torch(&self) -> Torch {
                Torch::Module(concat!("(Pool(\"", $kind, "\"), width)").into())
            }
        }
    };
}

seq_pool_op!(MeanPool, "mean_pool", 32, sum_overflow, |x, cx| crate::run::model::sequence::mean_pool(x, cx.mask));
seq_pool_op!(MaxPool, "max_pool", 32, fully_padded, |x, cx| crate::run::model::sequence::max_pool(x, cx.mask));
seq_pool_op!(Last, "last", 4, no_rule, |x, _cx| crate::run::model::sequence::last(x));

/// The max over a row's unpadded positions is not finite from a finite input `f` only where the
/// row has none: the max over no positions is `−inf` (`masked_fill(−inf).max`).
fn fully_padded(f: &Facts<'_>) -> Explained {
    (f.read.infinite + f.read.nan == 0).then(|| {
        let w = f.dims.last().copied().unwrap_or(1).max(1);
        (
            Rule::FullyMaskedRow,
            format!(
                "row {} has no unpadded position (its length is 0), so the max over its positions, all masked to −inf, is −inf; its input is finite (values in [{}, {}])",
                f.index / w,
                crate::human(f.read.min),
                crate::human(f.read.max)
            ),
        )
    })
}

/// The mean over a row's unpadded positions sums them first (rounded to the dtype, as
/// `(h * m).sum(1) / m.sum(1)` does) and overflows from a finite input `f` when the sum does.
fn sum_overflow(f: &Facts<'_>) -> Explained {
    let (seq, m) = (f.dims.get(1).copied().unwrap_or(1), f.read.max.abs().max(f.read.min.abs()));
    (f.read.infinite + f.read.nan == 0 && m * seq as f64 > f.lim.max).then(|| {
        let dt: &str = f.dtype.into();
        (
            Rule::Overflow,
            format!(
                "the mean sums the row's unpadded positions before dividing by their count, and the sum of up to {seq} values up to {} overflows {dt}'s largest value {}",
                crate::human(m),
                crate::human(f.lim.max)
            ),
        )
    })
}

/// No rule explains the op.
fn no_rule(_: &Facts<'_>) -> Explained {
    None
}

#[cfg(test)]
mod tests {
    use candle_core::{DType, Device, Tensor};

    use super::*;
    use crate::ops::op::with_cx;
    use crate::scenario::{plan, InShape, Init, Layer, ModelSpec};

    #[test]
    fn pools_bring_a_sequence_down_to_its_width_and_refuse_the_rest() {
        let planned = |l: Layer, input| plan(&ModelSpec { init: Init::Torch, layers: vec![l], init_scale: 1.0, code: None, onnx: None }, input);
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

    #[test]
    fn a_fully_padded_row_is_minus_inf_in_a_max_pool_and_a_long_sum_overflows_a_mean_pool() {
        // Lengths (2, 0): row 1 is all padding, its max is −inf, flagged at its first column.
        let text = "name = \"pad\"\nseed = 0\n[data]\nn = 2\nfeatures = 2\nseq_len = 2\ninputs = { kind = \"normal\" }\ntargets = { kind = \"normal\" }\n\
                    padding = { lengths = [2, 0] }\n[model]\nlayers = [{ type = \"max_pool\" }, { type = \"linear\", out = 1 }]\n\
                    [loss]\nkind = \"mse\"\n[optimizer]\nkind = \"sgd\"\nlr = 0.01\n[train]\nepochs = 1\n";
        let o = crate::run::run(&crate::scenario::from_str(text, "pad.toml").unwrap());
        let f = o.first_nonfinite.as_ref().expect("non-finite");
        assert_eq!((f.tensor.to_string().as_str(), f.kind, f.index), ("layers.0.max_pool.output", crate::run::Kind::NegInf, 2), "{f}");
        let c = o.cause.expect("explained");
        assert_eq!(c.rule, Rule::FullyMaskedRow, "{c}");
        assert!(c.reason.starts_with("row 1 has no unpadded position (its length is 0)"), "{c}");
        // Three positions of 30000 in f16: the sum 90000 is past 65504 (the mean, 30000, is not).
        let dims = [1, 3, 1];
        let facts = Facts { dims: &dims, read: super::super::Read { infinite: 0, nan: 0, min: 30000.0, max: 30000.0 }, ..Facts::at(30000.0, f64::NAN, crate::scenario::DTypeName::F16) };
        let (rule, reason) = MeanPool {}.explain_forward(Part::Whole, &facts).unwrap();
        assert_eq!(rule, Rule::Overflow);
        assert!(reason.contains("the sum of up to 3 values up to 30000 overflows f16's largest value 65504"), "{reason}");
        // With a padding mask the kernel sums in f32 and rounds the sum to f16 (inf) before the
        // division; without one it is a mean in f32, 30000: finite, so the rule never meets it.
        let h = Tensor::from_vec(vec![30000f32; 3], (1, 3, 1), &Device::Cpu).unwrap().to_dtype(DType::F16).unwrap();
        let mask = Tensor::ones((1, 3), DType::F16, &Device::Cpu).unwrap();
        let pooled = |m: Option<&Tensor>| crate::run::model::sequence::mean_pool(&h, m).unwrap().to_dtype(DType::F64).unwrap().flatten_all().unwrap().to_vec1::<f64>().unwrap()[0];
        assert_eq!((pooled(Some(&mask)), pooled(None)), (f64::INFINITY, 30000.0));
    }
}
