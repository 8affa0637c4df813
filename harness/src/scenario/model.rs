//! The `[model]` table: a stack of layers and their initialisation. The
//! runner builds it in `run::model`; its static shapes are worked out in
//! `shape`.

use serde::{Deserialize, Serialize};
use strum::IntoStaticStr;

use super::{is_one, one, one_usize};

/// The model: a stack of layers applied in order.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, arbitrary::Arbitrary)]
#[serde(deny_unknown_fields)]
pub struct ModelSpec {
    /// Default initialisation for every parameterised layer.
    #[serde(default)]
    pub init: Init,
    /// The layers; an empty stack passes the inputs through as predictions.
    #[serde(default)]
    pub layers: Vec<Layer>,
    /// Multiplies every initial weight and bias (not layer-norm gains and shifts).
    #[serde(default = "one", skip_serializing_if = "is_one")]
    pub init_scale: f64,
    /// A model written in Rust (`nanhunt::CodeModel`) in place of `layers`, by name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub code: Option<super::Code>,
}

impl Layer {
    /// The probability this layer drops values with while training (0: it draws no masks).
    pub fn dropout_p(&self) -> f64 {
        match self {
            Layer::Dropout { p } => *p,
            Layer::Lstm { recurrent_dropout, .. } | Layer::Gru { recurrent_dropout, .. } => *recurrent_dropout,
            _ => 0.0,
        }
    }
}

impl ModelSpec {
    /// Every layer in file order, residual blocks' layers included.
    pub fn all_layers(&self) -> Vec<&Layer> {
        fn walk<'a>(ls: &'a [Layer], out: &mut Vec<&'a Layer>) {
            for l in ls {
                out.push(l);
                if let Layer::Residual(r) = l {
                    walk(&r.layers, out);
                }
            }
        }
        let mut out = Vec::new();
        walk(&self.layers, &mut out);
        out
    }

    /// Applies `f` to every layer, residual blocks' layers included.
    pub fn for_each_layer_mut(&mut self, f: &mut dyn FnMut(&mut Layer)) {
        fn walk(ls: &mut [Layer], f: &mut dyn FnMut(&mut Layer)) {
            for l in ls {
                f(l);
                if let Layer::Residual(r) = l {
                    walk(&mut r.layers, f);
                }
            }
        }
        walk(&mut self.layers, f);
    }
}

/// Weight initialisation.
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize, Deserialize, arbitrary::Arbitrary)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum Init {
    /// PyTorch's default: kaiming-uniform weights and `U(±1/sqrt(fan_in))` biases.
    #[default]
    Torch,
    /// Keras's default: glorot-uniform kernels, orthogonal recurrent kernels, zero biases.
    Keras,
    /// Normal weights with this std, zero biases.
    Normal {
        /// Standard deviation.
        std: f64,
    },
    /// Uniform weights in `±bound`, zero biases.
    Uniform {
        /// Bound.
        bound: f64,
    },
    /// A constant weight, zero biases (closed-form tests).
    Constant {
        /// The weight value.
        value: f64,
    },
}

/// Writes the `Layer` enum, the registry's ops (`ops::registry`) among its variants, and `Layer::op`.
macro_rules! layer_enum {
    (elementwise { $($variant:ident => $module:ident :: $ty:ident,)* } layers { $($lv:ident => $lm:ident :: $lt:ident,)* }) => {
        /// One layer of the stack.
        #[derive(Debug, Clone, PartialEq, Serialize, Deserialize, IntoStaticStr, arbitrary::Arbitrary)]
        #[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
        #[strum(serialize_all = "snake_case")]
        pub enum Layer {
            $(
                #[doc = concat!("The registry layer [`", stringify!($lt), "`](crate::ops::", stringify!($lm), "::", stringify!($lt), ").")]
                $lv($crate::ops::$lm::$lt),
            )*
            /// Elman RNN with tanh; returns the last hidden state (Keras SimpleRNN, torch nn.RNN).
            Rnn {
                /// Hidden size.
                hidden: usize,
                /// Override of the model's init.
                #[serde(default, skip_serializing_if = "Option::is_none")]
                init: Option<Init>,
            },
            $(
                #[doc = concat!("The registry op [`", stringify!($ty), "`](crate::ops::", stringify!($module), "::", stringify!($ty), ").")]
                $variant($crate::ops::$module::$ty),
            )*
            /// Layer normalisation over the last dimension with learnable scale and shift.
            LayerNorm {
                /// Variance epsilon.
                #[serde(default = "ln_eps")]
                eps: f64,
            },
            /// RMS normalisation over the last dimension with a learnable scale (`torch.nn.RMSNorm`):
            /// `x / sqrt(mean(x²) + eps) · weight`.
            RmsNorm {
                /// Epsilon; by default the machine epsilon of the type it computes in (f32's for f16 and bf16), as PyTorch's `eps=None`.
                #[serde(default, skip_serializing_if = "Option::is_none")]
                eps: Option<f64>,
            },
            /// Batch normalisation over the batch (`torch.nn.BatchNorm1d`): batch statistics while
            /// training, running statistics in validation; the running variance is unbiased.
            BatchNorm {
                /// Variance epsilon.
                #[serde(default = "ln_eps")]
                eps: f64,
                /// Weight of each batch in the running statistics.
                #[serde(default = "bn_momentum")]
                momentum: f64,
            },
            /// Token ids `(batch, seq)` to vectors `(batch, seq, dim)` (`torch.nn.Embedding`, init N(0, 1)).
            Embedding {
                /// Vector width.
                dim: usize,
            },
            /// A learned vector per position added to `(batch, seq, width)` (GPT-2's `wpe`, init N(0, 1)).
            PositionalEmbedding,
            /// Mean over the sequence's unpadded positions: `(batch, seq, w)` to `(batch, w)`.
            MeanPool,
            /// Maximum over the sequence's unpadded positions: `(batch, seq, w)` to `(batch, w)`.
            MaxPool,
            /// The last position of the sequence: `(batch, seq, w)` to `(batch, w)`.
            Last,
            /// LSTM with PyTorch's gates (`i, f, g, o`) and init; the last hidden state, or every one.
            Lstm {
                /// Hidden size.
                hidden: usize,
                /// Return `(batch, seq, hidden)` instead of the last state.
                #[serde(default)]
                return_sequences: bool,
                /// The cell's activation (Keras's `activation`; PyTorch's LSTM is tanh).
                #[serde(default)]
                activation: RnnActivation,
                /// Keras's `recurrent_dropout`: one mask per sequence on the state fed back, scaled by `1/(1 − p)`.
                #[serde(default, skip_serializing_if = "is_zero")]
                recurrent_dropout: f64,
                /// Override of the model's init.
                #[serde(default, skip_serializing_if = "Option::is_none")]
                init: Option<Init>,
            },
            /// GRU with PyTorch's gates (`r, z, n`, the reset applied after the recurrent product) and init.
            Gru {
                /// Hidden size.
                hidden: usize,
                /// Return `(batch, seq, hidden)` instead of the last state.
                #[serde(default)]
                return_sequences: bool,
                /// The candidate's activation (Keras's `activation`; PyTorch's GRU is tanh).
                #[serde(default)]
                activation: RnnActivation,
                /// Keras's `recurrent_dropout`, as for `lstm`.
                #[serde(default, skip_serializing_if = "is_zero")]
                recurrent_dropout: f64,
                /// Override of the model's init.
                #[serde(default, skip_serializing_if = "Option::is_none")]
                init: Option<Init>,
            },
            /// Zeroes each value with probability `p` while training and scales the rest by `1/(1 − p)`
            /// (`torch.nn.Dropout`); masks come from the scenario's seeded stream, one per step.
            Dropout {
                /// Probability of zeroing a value.
                p: f64,
            },
            /// Convolution over a sequence `(batch, seq, width)`, the width as channels (`torch.nn.Conv1d`
            /// on the transposed sequence): `(batch, seq', channels)`.
            Conv1d {
                /// Output channels.
                channels: usize,
                /// Kernel length.
                kernel: usize,
                /// Step between windows.
                #[serde(default = "one_usize")]
                stride: usize,
                /// Zeros added at both ends.
                #[serde(default)]
                padding: usize,
                /// Override of the model's init.
                #[serde(default, skip_serializing_if = "Option::is_none")]
                init: Option<Init>,
            },
            /// Convolution over images `(batch, channels, height, width)` (`torch.nn.Conv2d`, square kernel).
            Conv2d {
                /// Output channels.
                channels: usize,
                /// Kernel height and width.
                kernel: usize,
                /// Step between windows.
                #[serde(default = "one_usize")]
                stride: usize,
                /// Zeros added on every side.
                #[serde(default)]
                padding: usize,
                /// Override of the model's init.
                #[serde(default, skip_serializing_if = "Option::is_none")]
                init: Option<Init>,
            },
            /// Everything but the batch into one vector (`torch.flatten(x, 1)`): images and sequences to `(batch, n)`.
            Flatten,
            /// The maximum of each `kernel × kernel` window, windows side by side (`torch.nn.MaxPool2d(kernel)`;
            /// rows and columns past the last whole window are dropped, as PyTorch's floor mode does).
            MaxPool2d {
                /// Window size (and stride).
                kernel: usize,
            },
            /// The mean of each `kernel × kernel` window (`torch.nn.AvgPool2d(kernel)`), as `max_pool2d`.
            AvgPool2d {
                /// Window size (and stride).
                kernel: usize,
            },
        }

        impl Layer {
            /// The op of a registry layer (every elementwise layer: `ops::registry` lists them); `None`
            /// for the layers with parameters or a structure of their own, matched where they are used.
            pub fn op(&self) -> Option<&dyn $crate::ops::Op> {
                match self {
                    $(Layer::$variant(op) => Some(op),)*
                    $(Layer::$lv(op) => Some(op),)*
                    Layer::Rnn { .. }
                    | Layer::LayerNorm { .. }
                    | Layer::RmsNorm { .. }
                    | Layer::BatchNorm { .. }
                    | Layer::Embedding { .. }
                    | Layer::PositionalEmbedding
                    | Layer::MeanPool
                    | Layer::MaxPool
                    | Layer::Last
                    | Layer::Lstm { .. }
                    | Layer::Gru { .. }
                    | Layer::Dropout { .. }
                    | Layer::Conv1d { .. }
                    | Layer::Conv2d { .. }
                    | Layer::Flatten
                    | Layer::MaxPool2d { .. }
                    | Layer::AvgPool2d { .. } => None,
                }
            }
        }
    };
}

crate::for_each_op!(layer_enum);

/// The activation of a gated RNN's candidate (and, for LSTM, of its cell output).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, IntoStaticStr, arbitrary::Arbitrary)]
#[serde(rename_all = "snake_case")]
#[strum(serialize_all = "snake_case")]
pub enum RnnActivation {
    /// `tanh`, as PyTorch and Keras's default.
    #[default]
    Tanh,
    /// `max(x, 0)`: unbounded, as keras-team/keras#13221 used it.
    Relu,
}

fn is_zero(v: &f64) -> bool {
    *v == 0.0
}

/// What attention writes into masked scores.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, IntoStaticStr, arbitrary::Arbitrary)]
#[serde(rename_all = "snake_case")]
#[strum(serialize_all = "snake_case")]
pub enum MaskFill {
    /// `-inf`, as `masked_fill(mask, float("-inf"))`: a fully masked row's softmax is 0/0.
    #[default]
    NegInf,
    /// The dtype's most negative finite value (`torch.finfo(dtype).min`), as Hugging Face does.
    FiniteMin,
}

/// The softmax over attention scores.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, IntoStaticStr, arbitrary::Arbitrary)]
#[serde(rename_all = "snake_case")]
#[strum(serialize_all = "snake_case")]
pub enum SoftmaxKind {
    /// `exp(x − max) / sum`: NaN on a row whose scores are all `-inf`.
    #[default]
    Plain,
    /// `torch._safe_softmax`: as plain, but a row whose scores are all `-inf` gives zeros.
    Safe,
}

/// Deepest nesting of residual blocks accepted.
pub const MAX_NESTING: usize = 8;

fn bn_momentum() -> f64 {
    0.1
}

fn ln_eps() -> f64 {
    1e-5
}
