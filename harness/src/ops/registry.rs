//! The list of ops, written once. `for_each_op!(m)` calls the macro `m` with every
//! registered op as `Variant => module::Type,` (the variant is the op's `Layer` variant,
//! whose snake_case name is the scenario's `type = "..."`), the ops that implement
//! [`Elementwise`](super::Elementwise) in an `elementwise { ... }` section and the layers
//! with parameters or a structure of their own in `layers { ... }`; the `Layer` enum, its
//! `op()` dispatch and the tests that enumerate the registry
//! are generated from it.
//!
//! Adding an op is one line here (and its file, declared in `ops/mod.rs`).

use crate::scenario::Layer;

/// Calls `$m!` (a macro name or path) with the registered ops.
#[macro_export]
#[doc(hidden)]
macro_rules! for_each_op {
    ($($m:tt)+) => {
        $($m)+! {
            elementwise {
            Relu => relu::Relu,
            Sigmoid => sigmoid::Sigmoid,
            Tanh => tanh::Tanh,
            Gelu => gelu::Gelu,
            Softplus => softplus::Softplus,
            Identity => identity::Identity,
            Softmax => softmax::Softmax,
            Sqrt => sqrt::Sqrt,
            Log => log::Log,
            Reciprocal => reciprocal::Reciprocal,
            Abs => abs::Abs,
            Exp => exp::Exp,
            Pow => pow::Pow,
            FlawedSquare => flawed_square::FlawedSquare,
            Silu => silu::Silu,
            Elu => elu::Elu,
            LeakyRelu => leaky_relu::LeakyRelu,
            Softsign => softsign::Softsign,
            Logsigmoid => logsigmoid::Logsigmoid,
            Clamp => clamp::Clamp,
            Normalize => normalize::Normalize,
            }
            layers {
                Linear => linear::Linear,
                Rnn => rnn::Rnn,
                Lstm => gated::Lstm,
                Gru => gated::Gru,
                LayerNorm => layer_norm::LayerNorm,
                RmsNorm => rms_norm::RmsNorm,
                BatchNorm => batch_norm::BatchNorm,
                Dropout => dropout::Dropout,
                Conv1d => conv::Conv1d,
                Conv2d => conv::Conv2d,
                Flatten => flatten::Flatten,
                MaxPool2d => pool2d::MaxPool2d,
                AvgPool2d => pool2d::AvgPool2d,
                Embedding => embedding::Embedding,
                PositionalEmbedding => embedding::PositionalEmbedding,
                MeanPool => seq_pool::MeanPool,
                MaxPool => seq_pool::MaxPool,
                Last => seq_pool::Last,
                Residual => residual::Residual,
                Attention => attention::Attention,
                Expr => expr::Expr,
                Onnx => onnx::OnnxNode,
            }
        }
    };
}

/// Writes `Layer::op`, the one dispatch from a layer to its op.
macro_rules! layer_op {
    (elementwise { $($variant:ident => $module:ident :: $ty:ident,)* } layers { $($lv:ident => $lm:ident :: $lt:ident,)* }) => {
        impl Layer {
            /// The layer's op: every layer is one of the registry's.
            pub fn op(&self) -> &dyn super::Op {
                match self {
                    $(Layer::$variant(op) => op,)*
                    $(Layer::$lv(op) => op,)*
                    Layer::Tagged(t) => t.layer.op(),
                }
            }
        }
    };
}

crate::for_each_op!(layer_op);

/// Each registered elementwise op's default as a layer, in registry order.
macro_rules! defaults {
    (elementwise { $($variant:ident => $module:ident :: $ty:ident,)* } layers { $($lv:ident => $lm:ident :: $lt:ident,)* }) => {
        vec![$(Layer::$variant(<super::$module::$ty>::default()),)*]
    };
}

/// Every registered elementwise op as a layer with its defaults (its `Default`), in registry
/// order: the registry's tests and the PyTorch confirmation run each. (A layer with parameters
/// or a structure of its own has its tests in its file.)
pub fn examples() -> Vec<Layer> {
    crate::for_each_op!(defaults)
}

#[cfg(test)]
mod tests {
    use candle_core::{Device, Tensor};

    use super::*;
    use crate::scenario::{plan, InShape, Init, ModelSpec, Named, Shape};

    /// `{ layers = [...] }`, as the `[model]` table holds layers.
    #[derive(Debug, PartialEq, serde::Serialize, serde::Deserialize)]
    struct Layers {
        layers: Vec<Layer>,
    }

    #[test]
    fn every_op_answers_for_its_defaults() {
        let examples = examples();
        assert!(examples.len() >= 17, "{} ops registered", examples.len());
        for layer in &examples {
            let kind = layer.name();
            let op = layer.op();
            assert_eq!(op.check(), Vec::new(), "{kind}: its defaults are valid");
            for input in [InShape { features: 3, seq_len: None, vocab: None, image: None }, InShape { features: 3, seq_len: Some(2), vocab: None, image: None }] {
                let spec = ModelSpec { init: Init::Torch, layers: vec![layer.clone()], init_scale: 1.0, code: None, onnx: None };
                let p = plan(&spec, input).unwrap_or_else(|e| panic!("{kind}: {e:?}"));
                assert_eq!((p.out, p.params.len()), (input.shape(), 0), "{kind} keeps {input:?} and has no parameters");
            }
            assert!(op.held(Shape::Flat(3), Shape::Flat(3), 6) >= 6, "{kind} holds at least its output");
            assert!(op.levels().0 >= 1, "{kind} adds at least one graph level");
            // Values in [0.5, 2]: inside every op's domain (sqrt, log, reciprocal).
            let x = Tensor::new(&[[0.5f32, 1.0, 1.5], [2.0, 0.75, 1.25]], &Device::Cpu).unwrap();
            let y = crate::ops::op::with_cx(|cx| op.forward(&x, cx)).unwrap_or_else(|e| panic!("{kind}: {e}"));
            assert_eq!((y.dims(), y.dtype()), (x.dims(), x.dtype()), "{kind}");
            let crate::ops::Torch::Expr(py) = op.torch() else { panic!("{kind}: an elementwise op is an expression of x") };
            let open = py.matches('(').count();
            assert!(py.contains('x') && open == py.matches(')').count(), "{kind}: `{py}` is an expression of x");
            assert!(!py.contains('\n') && !py.contains("lambda"), "{kind}: `{py}` is one expression");
        }
    }

    #[test]
    fn every_op_round_trips_through_toml_by_its_type_name() {
        for layer in examples() {
            let kind = layer.name();
            let text = toml::to_string(&Layers { layers: vec![layer.clone()] }).unwrap();
            assert!(text.contains(&format!("type = \"{kind}\"")), "{kind}: {text}");
            let back: Layers = toml::from_str(&text).unwrap_or_else(|e| panic!("{kind}: {e}\n{text}"));
            assert_eq!(back.layers, [layer], "{kind}");
        }
    }

    #[test]
    fn a_stray_key_on_an_op_is_refused_and_a_missing_exponent_is_named() {
        // Unit variants used to take any key silently; an op's struct denies unknown fields.
        let err = toml::from_str::<Layers>("layers = [{ type = \"relu\", alpha = 1.0 }]").unwrap_err().to_string();
        assert!(err.contains("unknown field `alpha`"), "{err}");
        let err = toml::from_str::<Layers>("layers = [{ type = \"pow\" }]").unwrap_err().to_string();
        assert!(err.contains("missing field `exponent`"), "{err}");
        let elu: Layers = toml::from_str("layers = [{ type = \"elu\" }, { type = \"leaky_relu\" }]").unwrap();
        assert_eq!(elu.layers, [Layer::Elu(super::super::elu::Elu { alpha: 1.0 }), Layer::LeakyRelu(super::super::leaky_relu::LeakyRelu { negative_slope: 0.01 })]);
    }
}
