//! The `[model]` table: a stack of layers and their initialisation. The
//! runner builds it in `run::model`; its static shapes are worked out in
//! `shape`.

use serde::{Deserialize, Serialize};
use strum::IntoStaticStr;

use super::{is_one, one};

/// The model: a stack of layers applied in order.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, arbitrary::Arbitrary)]
#[serde(deny_unknown_fields)]
pub struct ModelSpec {
    /// Default initialisation for every parameterised layer (an imported model's: `File`, its
    /// own values, unless the scenario writes another).
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
    /// A PyTorch model exported as ONNX in place of `layers` (`onnx = "model.onnx"`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub onnx: Option<Import>,
}

// The imported model's types live here, beside the `Layer` they hold, so that the model's
// file format reads nothing of `onnx/` (which compiles into them).

/// An imported ONNX model: its path as the scenario writes it (`onnx = "model.onnx"`), or with
/// the SHA-256 the file must have (`onnx = { path = "model.onnx", sha256 = "…" }`, as a report
/// writes it), and what loading the scenario from its file reads of it. It is written back as
/// it was given: the path alone, or the path and its hash.
#[derive(Debug, Clone, PartialEq)]
pub struct Import {
    /// The path, relative to the scenario's folder.
    pub path: String,
    /// The SHA-256 (hex) the model file and its external data must have, if the scenario pins it.
    pub sha256: Option<String>,
    /// The compiled graph (`None` until the scenario's loading reads the file).
    pub compiled: Option<std::sync::Arc<Compiled>>,
    /// What loading read: the SHA-256 of the model file followed by its external data files,
    /// and those files' locations, relative to the model's folder.
    pub read: Option<ImportRead>,
}

/// What loading an imported model read: its digest and its external data files.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImportRead {
    /// SHA-256 (lower-case hex) of the model file's bytes followed by each external data file's, in `external` order.
    pub sha256: String,
    /// The external data files' locations, relative to the model's folder, in the order first read.
    pub external: Vec<String>,
    /// The model file and its external data files' total size, in bytes.
    pub bytes: u64,
}

/// `onnx = { path = "…", sha256 = "…" }`, the table form of [`Import`].
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Pinned {
    path: String,
    sha256: Option<String>,
}

impl serde::Serialize for Import {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        match &self.sha256 {
            Some(h) => Pinned { path: self.path.clone(), sha256: Some(h.clone()) }.serialize(s),
            None => s.serialize_str(&self.path),
        }
    }
}

impl<'de> serde::Deserialize<'de> for Import {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged, expecting = "a path (`onnx = \"model.onnx\"`) or a table `{ path = \"model.onnx\", sha256 = \"…\" }`")]
        enum Form {
            Path(String),
            Pinned(Pinned),
        }
        let (path, sha256) = match Form::deserialize(d)? {
            Form::Path(p) => (p, None),
            Form::Pinned(p) => (p.path, p.sha256),
        };
        Ok(Import { path, sha256, compiled: None, read: None })
    }
}

impl<'a> arbitrary::Arbitrary<'a> for Import {
    fn arbitrary(u: &mut arbitrary::Unstructured<'a>) -> arbitrary::Result<Self> {
        Ok(Import { path: String::arbitrary(u)?, sha256: Option::arbitrary(u)?, compiled: None, read: None })
    }
}

/// An ONNX graph as registry layers with the file's weights.
#[derive(Debug, Clone, PartialEq)]
pub struct Compiled {
    /// The graph input the scenario's data binds to, and its dims (the first is the batch).
    pub input: (String, Vec<Option<usize>>),
    /// The layers, in order.
    pub layers: Vec<Layer>,
    /// Each layer's name: its PyTorch module path and op (`fc1.linear`), else its node's name.
    pub names: Vec<String>,
    /// Each parameter in plan order: its name (the initializer's, `fc1.weight`), its shape in
    /// nanhunt's layout and its values there.
    pub params: Vec<(String, Vec<usize>, Vec<f64>)>,
}

impl ModelSpec {
    /// The layer stack: the imported ONNX graph's layers if it has one, else `layers`.
    pub fn stack(&self) -> &[Layer] {
        match self.onnx.as_ref().and_then(|o| o.compiled.as_deref()) {
            Some(c) => &c.layers,
            None => &self.layers,
        }
    }

    /// Every layer in file order, residual blocks' layers included, each under its tag.
    pub fn all_layers(&self) -> Vec<&Layer> {
        fn walk<'a>(ls: &'a [Layer], out: &mut Vec<&'a Layer>) {
            for l in ls {
                let l = l.untagged();
                out.push(l);
                if let Layer::Residual(r) = l {
                    walk(&r.layers, out);
                }
            }
        }
        let mut out = Vec::new();
        walk(self.stack(), &mut out);
        out
    }

    /// Applies `f` to every layer, residual blocks' layers included, each under its tag.
    pub fn for_each_layer_mut(&mut self, f: &mut dyn FnMut(&mut Layer)) {
        fn walk(ls: &mut [Layer], f: &mut dyn FnMut(&mut Layer)) {
            for l in ls {
                let l = l.untagged_mut();
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
    /// An imported ONNX model's own values (`[model] onnx`; its default): every other kind
    /// redraws the imported parameters by their layer's kind, from the scenario's seed.
    File,
}

/// Writes the `Layer` enum, the registry's ops (`ops::registry`) among its variants and a
/// [`Tagged`] layer, and `LayerRepr`, the registry's ops as the file writes them
/// (`type = "..."` and the op's keys), which a layer is read from and written as (with its
/// `name` and `precision` beside, `LayerFile`).
macro_rules! layer_enum {
    (elementwise { $($variant:ident => $module:ident :: $ty:ident,)* } layers { $($lv:ident => $lm:ident :: $lt:ident,)* }) => {
        /// One layer of the stack.
        #[derive(Debug, Clone, PartialEq, Serialize, Deserialize, IntoStaticStr, arbitrary::Arbitrary)]
        #[serde(from = "LayerFile", into = "LayerFile")]
        #[strum(serialize_all = "snake_case")]
        pub enum Layer {
            $(
                #[doc = concat!("The registry layer [`", stringify!($lt), "`](crate::ops::", stringify!($lm), "::", stringify!($lt), ").")]
                $lv($crate::ops::$lm::$lt),
            )*
            $(
                #[doc = concat!("The registry op [`", stringify!($ty), "`](crate::ops::", stringify!($module), "::", stringify!($ty), ").")]
                $variant($crate::ops::$module::$ty),
            )*
            /// A layer with a `name` or a `precision` of its own (the plan reads through it).
            Tagged(Box<Tagged>),
        }

        /// A registry layer as the file writes it: `type = "..."` and the op's keys.
        #[derive(Serialize, Deserialize)]
        #[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
        enum LayerRepr {
            $($lv($crate::ops::$lm::$lt),)*
            $($variant($crate::ops::$module::$ty),)*
        }

        impl From<LayerRepr> for Layer {
            fn from(r: LayerRepr) -> Layer {
                match r {
                    $(LayerRepr::$lv(op) => Layer::$lv(op),)*
                    $(LayerRepr::$variant(op) => Layer::$variant(op),)*
                }
            }
        }

        impl From<Layer> for LayerFile {
            fn from(l: Layer) -> LayerFile {
                // A tag's tag (only `arbitrary` makes one) gives way to the outer one.
                fn repr(l: Layer) -> LayerRepr {
                    match l {
                        $(Layer::$lv(op) => LayerRepr::$lv(op),)*
                        $(Layer::$variant(op) => LayerRepr::$variant(op),)*
                        Layer::Tagged(t) => repr(t.layer),
                    }
                }
                match l {
                    Layer::Tagged(t) => LayerFile { name: t.name, precision: t.precision, layer: repr(t.layer) },
                    l => LayerFile { name: None, precision: None, layer: repr(l) },
                }
            }
        }
    };
}

/// A layer as the file writes it: its registry op's table, with the `name` and `precision`
/// any layer may carry beside its op's keys.
#[derive(Serialize, Deserialize)]
struct LayerFile {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    precision: Option<LayerPrecision>,
    #[serde(flatten)]
    layer: LayerRepr,
}

impl From<LayerFile> for Layer {
    fn from(f: LayerFile) -> Layer {
        let layer = Layer::from(f.layer);
        match (f.name, f.precision) {
            (None, None) => layer,
            (name, precision) => Layer::Tagged(Box::new(Tagged { layer, name, precision })),
        }
    }
}

/// A layer with a name for its output (`name = "h"`, which later expressions read as `h`) or
/// a precision of its own (`precision = "f32"`: kept in f32 under autocast).
#[derive(Debug, Clone, PartialEq, arbitrary::Arbitrary)]
pub struct Tagged {
    /// The layer itself.
    pub layer: Layer,
    /// The name of its output.
    pub name: Option<String>,
    /// The precision it computes in under autocast.
    pub precision: Option<LayerPrecision>,
}

/// A layer's own precision under autocast (`train.precision = amp_*`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, IntoStaticStr, arbitrary::Arbitrary)]
#[serde(rename_all = "snake_case")]
#[strum(serialize_all = "snake_case")]
pub enum LayerPrecision {
    /// In f32: its inputs cast up, its parameters as stored, its output f32, as PyTorch code
    /// writes `with torch.autocast(..., enabled=False): layer(x.float())`.
    F32,
}

impl Layer {
    /// The layer under its tag (itself if it has none).
    pub fn untagged(&self) -> &Layer {
        match self {
            Layer::Tagged(t) => t.layer.untagged(),
            l => l,
        }
    }

    /// The layer under its tag, to change (itself if it has none).
    pub fn untagged_mut(&mut self) -> &mut Layer {
        match self {
            Layer::Tagged(t) => t.layer.untagged_mut(),
            l => l,
        }
    }

    /// Its tag's name and precision (none if it has no tag).
    pub fn tag(&self) -> (Option<&str>, Option<LayerPrecision>) {
        match self {
            Layer::Tagged(t) => (t.name.as_deref(), t.precision),
            _ => (None, None),
        }
    }
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ops::linear::Linear;
    use crate::scenario::{plan, InShape, Input};

    /// `{ layers = [...] }`, as the `[model]` table holds layers.
    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    struct Layers {
        layers: Vec<Layer>,
    }

    fn tagged(layer: Layer, name: Option<&str>, precision: Option<LayerPrecision>) -> Layer {
        Layer::Tagged(Box::new(Tagged { layer, name: name.map(Into::into), precision }))
    }

    #[test]
    fn any_layer_takes_a_name_and_a_precision_and_writes_them_back() {
        let text = r#"layers = [{ type = "linear", out = 2, name = "a", precision = "f32" }, { type = "relu", name = "r" }, { type = "expr", expr = "a * r" }]"#;
        let read: Layers = toml::from_str(text).unwrap();
        let linear = Layer::Linear(Linear { out: 2, init: None });
        assert_eq!(read.layers[0], tagged(linear.clone(), Some("a"), Some(LayerPrecision::F32)));
        assert_eq!(read.layers[1], tagged(Layer::Relu(Default::default()), Some("r"), None));
        assert!(matches!(&read.layers[2], Layer::Expr(e) if e.expr == "a * r"), "no tag, no wrapper: {:?}", read.layers[2]);
        assert_eq!((read.layers[0].untagged(), read.layers[0].tag()), (&linear, (Some("a"), Some(LayerPrecision::F32))));
        let back: Layers = toml::from_str(&toml::to_string(&read).unwrap()).unwrap();
        assert_eq!(back, read);
        let json = serde_json::to_value(&read.layers[0]).unwrap();
        assert_eq!(json, serde_json::json!({ "type": "linear", "out": 2, "name": "a", "precision": "f32" }));
        // The op's own keys are still checked, and a precision is f32 or nothing.
        let err = toml::from_str::<Layers>(r#"layers = [{ type = "relu", nmae = "a" }]"#).unwrap_err().to_string();
        assert!(err.contains("unknown field `nmae`"), "{err}");
        let err = toml::from_str::<Layers>(r#"layers = [{ type = "relu", precision = "f16" }]"#).unwrap_err().to_string();
        assert!(err.contains("unknown variant `f16`"), "{err}");
    }

    #[test]
    fn the_plan_names_any_layers_output_and_keeps_a_precision_on_every_node_inside() {
        let spec = |layers| ModelSpec { init: Init::Torch, layers, init_scale: 1.0, code: None, onnx: None };
        let flat = InShape { features: 3, seq_len: None, vocab: None, image: None };
        let expr = |e: &str| Layer::Expr(crate::ops::expr::Expr { expr: e.into(), consts: Default::default() });
        let linear = Layer::Linear(Linear { out: 3, init: None });
        let block = Layer::Residual(crate::ops::residual::Residual { layers: vec![linear.clone()] });
        let layers = vec![
            tagged(linear.clone(), Some("a"), None),
            tagged(Layer::Relu(Default::default()), Some("r"), None),
            tagged(block, None, Some(LayerPrecision::F32)),
            expr("a / r + a @ transpose(r, 0, 1) @ r"),
        ];
        let p = plan(&spec(layers), flat).unwrap();
        let names: Vec<&str> = p.nodes.iter().map(|n| n.name.as_str()).collect();
        assert_eq!(names, ["layers.0.linear", "layers.1.relu", "layers.2.residual.layers.0.linear", "layers.2.residual", "layers.3.expr"]);
        // The expression reads the residual's output, then `a` and `r` in order of first use.
        assert_eq!(p.nodes[4].inputs, [Input::Node(3), Input::Node(0), Input::Node(1)]);
        let precisions: Vec<_> = p.nodes.iter().map(|n| n.precision).collect();
        assert_eq!(precisions, [None, None, Some(LayerPrecision::F32), Some(LayerPrecision::F32), None]);
        // A name the language or repro.py reads as something else, or given twice, is refused at its key.
        for bad in ["x", "mask", "torch", "lambda", "2a"] {
            let (key, m) = plan(&spec(vec![tagged(linear.clone(), Some(bad), None)]), flat).unwrap_err();
            assert_eq!(key, "layers.0.name");
            assert!(m.contains(&format!("`{bad}` cannot name an output")), "{m}");
        }
        let twice = vec![tagged(linear.clone(), Some("a"), None), tagged(linear, Some("a"), None)];
        assert_eq!(plan(&spec(twice), flat).unwrap_err(), ("layers.1.name".into(), "the name `a` is already given to an earlier output".into()));
    }
}
