//! The plan: names, shapes, misplaced layers and residual blocks, against hand-worked plans.

use super::*;
use crate::ops::attention::Attention;
use crate::ops::linear::Linear;
use crate::ops::residual::Residual;
use crate::ops::seq_pool::MeanPool;
use crate::scenario::MAX_NESTING;

fn spec(layers: Vec<Layer>) -> ModelSpec {
    ModelSpec { init: Init::Torch, layers, init_scale: 1.0, code: None, onnx: None }
}

#[test]
fn plan_names_and_shapes() {
    let s = spec(vec![Layer::Linear(Linear { out: 4, init: None }), Layer::Relu(Default::default()), Layer::Linear(Linear { out: 1, init: None })]);
    let p = plan(&s, InShape { features: 3, seq_len: None, vocab: None, image: None }).unwrap();
    let names: Vec<_> = p.params.iter().map(|p| p.name.as_str()).collect();
    assert_eq!(names, ["layers.0.linear.weight", "layers.0.linear.bias", "layers.2.linear.weight", "layers.2.linear.bias"]);
    assert_eq!(p.params[0].shape, vec![3, 4]);
    assert_eq!(p.widths, vec![4, 4, 1]);
}

#[test]
fn plan_rejects_misplaced_layers() {
    let seq = InShape { features: 1, seq_len: Some(5), vocab: None, image: None };
    let flat = InShape { features: 4, seq_len: None, vocab: None, image: None };
    let tokens = InShape { features: 1, seq_len: Some(5), vocab: Some(10), image: None };
    let err = |layers, input| plan(&spec(layers), input).unwrap_err();
    assert!(err(vec![Layer::Rnn(crate::ops::rnn::Rnn { hidden: 2, init: None })], flat).1.contains("needs sequence input"));
    assert!(err(vec![Layer::Linear(Linear { out: 1, init: None })], tokens).1.contains("embedding layer first"));
    assert!(err(vec![Layer::Attention(Attention { heads: 3, causal: false, mask_fill: Default::default(), softmax: Default::default() })], InShape { features: 4, ..seq })
        .1
        .contains("must divide the width 4"));
    assert!(err(vec![Layer::MeanPool(MeanPool {})], flat).1.contains("needs sequence input"));
    let (key, m) = err(vec![Layer::Residual(Residual { layers: vec![Layer::Identity(Default::default()), Layer::Linear(Linear { out: 2, init: None })] })], flat);
    assert_eq!(key, "layers.0");
    assert!(m.contains("keep its input's shape"), "{m}");
    let mut deep = Layer::Identity(Default::default());
    for _ in 0..=MAX_NESTING {
        deep = Layer::Residual(Residual { layers: vec![deep] });
    }
    assert!(err(vec![deep], flat).1.contains("nest deeper"));
    // Linear applies per position, as torch.nn.Linear does; pooling brings the sequence down.
    let p = plan(&spec(vec![Layer::Linear(Linear { out: 3, init: None }), Layer::MeanPool(MeanPool {})]), seq).unwrap();
    assert_eq!(p.nodes[0].shape, Shape::Seq { len: 5, width: 3 });
    assert_eq!(p.out, Shape::Flat(3));
}

#[test]
fn residual_blocks_nest_names_and_read_their_input() {
    let block = Layer::Residual(Residual { layers: vec![Layer::LayerNorm(crate::ops::layer_norm::LayerNorm { eps: 1e-5 }), Layer::Linear(Linear { out: 4, init: None })] });
    let input = InShape { features: 1, seq_len: Some(3), vocab: Some(7), image: None };
    let p = plan(&spec(vec![Layer::Embedding(crate::ops::embedding::Embedding { dim: 4 }), block]), input).unwrap();
    let names: Vec<_> = p.nodes.iter().map(|n| n.name.as_str()).collect();
    assert_eq!(names, ["layers.0.embedding", "layers.1.residual.layers.0.layer_norm", "layers.1.residual.layers.1.linear", "layers.1.residual"]);
    assert_eq!(p.params[0].shape, vec![7, 4]);
    assert_eq!(p.params.last().unwrap().name, "layers.1.residual.layers.1.linear.bias");
    // The sum reads the block's last layer and adds the block's input (the embedding).
    assert_eq!(p.nodes[3].inputs, [Input::Node(2), Input::Node(0)]);
    assert_eq!((p.nodes[1].inputs.as_slice(), p.nodes[0].input()), ([Input::Node(0)].as_slice(), Input::Model));
    assert_eq!(p.out, Shape::Seq { len: 3, width: 4 });
    assert_eq!(p.out_width, 12);
}
