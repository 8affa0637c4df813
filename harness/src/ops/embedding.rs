//! `embedding` and `positional_embedding`: token ids to learned vectors
//! (`torch.nn.Embedding`), and a learned vector per position added to a sequence
//! (GPT-2's `wpe`). Both tables start `N(0, 1)`; the kernels are `run::model::sequence`.
//! Neither is on an autocast list; with an f32 parameter, each computes in f32 under
//! autocast, as PyTorch's type promotion does (`run::model::autocast`'s `prepare`).
//! An `rnn`, `lstm` or `gru` reading the embedding's output unchanged projects the table's rows
//! itself (`ops::Cx::table`, `run::kernel::gather`); the output is still made, for the watch.

use candle_core::Tensor;

use super::{Autocast, Cx, Op, Rounding, Torch};
use crate::error::Result;
use crate::scenario::{Part, Planner, Role, Shape};

/// Token ids `(batch, seq)` to vectors `(batch, seq, dim)` (`torch.nn.Embedding`, init N(0, 1)).
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize, arbitrary::Arbitrary)]
#[serde(deny_unknown_fields)]
pub struct Embedding {
    /// Vector width.
    pub dim: usize,
}

/// A learned vector per position added to `(batch, seq, width)` (GPT-2's `wpe`, init N(0, 1)).
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize, serde::Deserialize, arbitrary::Arbitrary)]
#[serde(deny_unknown_fields)]
pub struct PositionalEmbedding {}

impl Op for Embedding {
    fn check(&self) -> Vec<(&'static str, String)> {
        (self.dim == 0).then(|| ("dim", "must be at least 1".to_string())).into_iter().collect()
    }

    fn plan(&self, p: &mut Planner<'_>, input: Shape) -> std::result::Result<Shape, String> {
        let Shape::Tokens { len, vocab } = input else {
            return Err(format!("an embedding layer reads token ids (inputs = {{ kind = \"tokens\", vocab = ... }}) and gets {}", input.describe()));
        };
        if self.dim == 0 {
            return Err("`dim` must be at least 1".into());
        }
        p.param("weight", vec![vocab, self.dim], Role::Embedding, (vocab, self.dim), input.width(), None);
        Ok(Shape::Seq { len, width: self.dim })
    }

    fn held(&self, _: Shape, _: Shape, values: u128) -> u128 {
        values
    }

    fn levels(&self) -> (u64, u64) {
        (8, 0)
    }

    fn dropout(&self) -> f64 {
        0.0
    }

    fn forward(&self, x: &Tensor, cx: &Cx<'_>) -> Result<Tensor> {
        crate::run::model::sequence::embedding(x, cx.param(0))
    }

    fn autocast(&self, _: Part) -> Autocast {
        Autocast::Same
    }

    fn rounding(&self, _: Part) -> Rounding {
        Rounding::Outside
    }

    super::undiagnosed!();

    fn torch(&self) -> Torch {
        Torch::Module(format!("(nn.Embedding(SCENARIO[\"vocab\"], {d}), {d})", d = self.dim))
    }
}

impl Op for PositionalEmbedding {
    fn check(&self) -> Vec<(&'static str, String)> {
        Vec::new()
    }

    fn plan(&self, p: &mut Planner<'_>, input: Shape) -> std::result::Result<Shape, String> {
        let (len, w) = super::sequence("positional_embedding", input)?;
        p.param("weight", vec![len, w], Role::Embedding, (len, w), w, None);
        Ok(input)
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

    fn forward(&self, x: &Tensor, cx: &Cx<'_>) -> Result<Tensor> {
        crate::run::model::sequence::positional(x, cx.param(0))
    }

    /// On no list: `x + p` follows its operands, and its f32 parameter promotes it to f32.
    fn autocast(&self, _: Part) -> Autocast {
        Autocast::Same
    }

    fn rounding(&self, _: Part) -> Rounding {
        Rounding::Outside
    }

    super::undiagnosed!();

    fn torch(&self) -> Torch {
        Torch::Module("(PositionalEmbedding(seq, width), width)".into())
    }
}

#[cfg(test)]
mod tests {
    use candle_core::{DType, Device};
    use rand::SeedableRng;
    use rand_chacha::ChaCha8Rng;

    use super::*;
    use crate::ops::linear::Linear;
    use crate::run::net::Net;
    use crate::scenario::{plan, InShape, Init, Layer, ModelSpec};

    fn spec(layers: Vec<Layer>, init: Init) -> ModelSpec {
        ModelSpec { init, layers, init_scale: 1.0, code: None, onnx: None }
    }

    #[test]
    fn tables_are_vocab_by_dim_and_position_by_width() {
        let tokens = InShape { features: 1, seq_len: Some(5), vocab: Some(7), image: None };
        let p = plan(&spec(vec![Layer::Embedding(Embedding { dim: 4 }), Layer::PositionalEmbedding(PositionalEmbedding {})], Init::Torch), tokens).unwrap();
        let got: Vec<_> = p.params.iter().map(|q| (q.name.as_str(), q.shape.clone(), q.role)).collect();
        assert_eq!(got, [("layers.0.embedding.weight", vec![7, 4], Role::Embedding), ("layers.1.positional_embedding.weight", vec![5, 4], Role::Embedding)]);
        assert_eq!(p.out, Shape::Seq { len: 5, width: 4 });
        let err = |l: Layer, input: InShape| plan(&spec(vec![l], Init::Torch), input).unwrap_err().1;
        let flat = InShape { features: 3, seq_len: None, vocab: None, image: None };
        assert_eq!(err(Layer::Embedding(Embedding { dim: 4 }), flat), "an embedding layer reads token ids (inputs = { kind = \"tokens\", vocab = ... }) and gets (batch, 3)");
        assert_eq!(err(Layer::Embedding(Embedding { dim: 0 }), tokens), "`dim` must be at least 1");
        assert_eq!(Embedding { dim: 0 }.check(), [("dim", "must be at least 1".to_string())]);
        assert_eq!(err(Layer::PositionalEmbedding(PositionalEmbedding {}), flat), "a positional_embedding layer needs sequence input (batch, seq, width), and gets (batch, 3)");
        let image = InShape { features: 4, seq_len: None, vocab: None, image: Some((1, 2, 2)) };
        assert_eq!(err(Layer::PositionalEmbedding(PositionalEmbedding {}), image), "a positional_embedding layer cannot take (batch, 1, 2, 2) images: put a flatten layer first");
        assert!(err(Layer::PositionalEmbedding(PositionalEmbedding {}), tokens).contains("put an embedding layer first"));
    }

    /// PyTorch 2.15, `torch.autocast("cpu", torch.float16)`: `nn.Linear(1, 1)` (weight 1, bias
    /// 0) of ones is f16, and adding an f32 parameter of 2⁻¹¹ promotes to f32: 1.00048828125
    /// (an f16 sum would round 1 + 2⁻¹¹ to 1).
    #[test]
    fn the_positional_embedding_adds_in_f32_under_autocast_as_pytorch_promotes() {
        let one = Some(Init::Constant { value: 1.0 });
        let s = spec(vec![Layer::Linear(Linear { out: 1, init: one }), Layer::PositionalEmbedding(PositionalEmbedding {})], Init::Constant { value: 2f64.powi(-11) });
        let p = plan(&s, InShape { features: 1, seq_len: Some(2), vocab: None, image: None }).unwrap();
        let dev = Device::Cpu;
        let m = crate::run::model::Model::new(&s, &p, &mut ChaCha8Rng::seed_from_u64(0), DType::F32, &dev).unwrap().with_autocast(Some(DType::F16), &dev);
        let y = m.forward(&Tensor::ones((1, 2, 1), DType::F32, &dev).unwrap(), None).unwrap();
        assert_eq!(y[1].flatten_all().unwrap().to_vec1::<f32>().unwrap(), [1.0 + 2f32.powi(-11); 2]);
        assert_eq!(y[0].flatten_all().unwrap().to_vec1::<f32>().unwrap(), [1.0; 2]);
    }
}
