//! Importing a PyTorch model exported as ONNX (`torch.onnx.export(..., dynamo=True)`), issue 30.
//!
//! `proto.rs` is ONNX's protobuf schema as prost types, generated once and committed
//! (`tools/onnx-proto`; no `protoc` needed to build). `load.rs` reads a `.onnx` file into an
//! [`OnnxModel`]: opset check (17–20), initializers of every float dtype from `raw_data`, the
//! typed fields or an external data file confined to the model's folder, sizes checked against
//! the memory limit before anything is allocated, and the nodes in an order where each reads only
//! what comes before it (a cycle, or a value nothing produces, is an error). `tensor.rs` decodes
//! one tensor. `compile.rs` turns a chain into registry layers with the file's weights, and
//! `graph/` (with its `translate.rs`, `fold.rs` and `recurrent.rs`, which puts an `LSTM` or `GRU`
//! node on the registry's `lstm`/`gru` layer) any other graph into `onnx` layers, one per
//! node, reading earlier nodes' outputs by name; `import.rs` resolves `[model] onnx =
//! "model.onnx"`, `loss_tail.rs` takes a loss exported with the model off the graph for
//! `[loss] from_model` (the import's types, `Import` and `Compiled`, are in
//! `scenario/model.rs` beside the `Layer` they hold); the plan takes the graph's names in
//! `scenario/plan.rs`.

use std::collections::BTreeMap;

pub mod compile;
mod graph;
mod import;
mod load;
pub mod loss_tail;
#[allow(missing_docs, clippy::all, clippy::pedantic)]
pub mod proto;
mod tensor;

pub use crate::scenario::model::{Compiled, Import};
pub use compile::compile;
pub use import::resolve;
pub use load::{fuzz_one, load, parse, OPSETS};

/// A graph loaded from an ONNX file: its inputs, outputs, nodes in dependency order and constants.
#[derive(Debug, Clone, PartialEq)]
pub struct OnnxModel {
    /// The default domain's opset version (17–20).
    pub opset: i64,
    /// The graph's inputs that are not initializers: name and dims (`None` for a symbolic dim).
    pub inputs: Vec<(String, Vec<Option<usize>>)>,
    /// The graph's outputs, by name.
    pub outputs: Vec<String>,
    /// The nodes, each after every node whose output it reads.
    pub nodes: Vec<OnnxNode>,
    /// The initializers and `Constant` nodes' values, by name.
    pub tensors: BTreeMap<String, Const>,
    /// The initializers' names, in file order (the trainable parameters among them are the floats).
    pub initializers: Vec<String>,
    /// The external data files read, by location relative to the model's folder, in the order first read.
    pub external: Vec<String>,
}

/// One node of the graph.
#[derive(Debug, Clone, PartialEq)]
pub struct OnnxNode {
    /// Its name (`node_linear`), or `#N` for an unnamed node.
    pub name: String,
    /// Its op type (`Gemm`).
    pub op_type: String,
    /// Its domain (empty for ONNX's own ops).
    pub domain: String,
    /// The values it reads (an empty name is an omitted optional input).
    pub inputs: Vec<String>,
    /// The values it writes.
    pub outputs: Vec<String>,
    /// Its attributes.
    pub attrs: BTreeMap<String, Attr>,
    /// The PyTorch module path it came from (`block.attn`), from the exporter's metadata.
    pub module: Option<String>,
}

/// A node attribute.
#[derive(Debug, Clone, PartialEq)]
pub enum Attr {
    /// An integer.
    Int(i64),
    /// A float.
    Float(f32),
    /// A list of integers.
    Ints(Vec<i64>),
    /// A list of floats.
    Floats(Vec<f32>),
    /// A string.
    Str(String),
    /// A list of strings (an RNN's `activations`).
    Strs(Vec<String>),
    /// A tensor (a `Constant` node's value).
    Tensor(Const),
    /// Another kind (a graph, a sparse tensor, a type): kept by name only.
    Other,
}

/// A constant tensor: an initializer or a `Constant` node's value.
#[derive(Debug, Clone, PartialEq)]
pub struct Const {
    /// Its dims.
    pub dims: Vec<usize>,
    /// Its values, row-major.
    pub values: Values,
}

/// A constant's values: floats (widened to f64, with the file's dtype) or integers.
#[derive(Debug, Clone, PartialEq)]
pub enum Values {
    /// Float values and the dtype the file stores them in.
    Float(Vec<f64>, FloatType),
    /// Integer values (int64, int32, int8, uint8, bool...), widened to i64.
    Int(Vec<i64>),
}

/// The float dtypes an initializer may have.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FloatType {
    /// float32.
    F32,
    /// float16.
    F16,
    /// bfloat16.
    Bf16,
    /// float64.
    F64,
}

impl OnnxNode {
    /// Integer attribute `name`, or `default`.
    pub fn int(&self, name: &str, default: i64) -> i64 {
        match self.attrs.get(name) {
            Some(Attr::Int(i)) => *i,
            _ => default,
        }
    }

    /// Float attribute `name`, or `default`.
    pub fn float(&self, name: &str, default: f32) -> f32 {
        match self.attrs.get(name) {
            Some(Attr::Float(f)) => *f,
            _ => default,
        }
    }

    /// String attribute `name`, or `default`.
    pub fn string(&self, name: &str, default: &str) -> String {
        match self.attrs.get(name) {
            Some(Attr::Str(s)) => s.clone(),
            _ => default.to_string(),
        }
    }

    /// How the node is named in errors: op type, node name and module path.
    pub fn describe(&self) -> String {
        let module = self.module.as_deref().map_or(String::new(), |m| format!(" (module `{m}`)"));
        format!("{} node `{}`{module}", self.op_type, self.name)
    }
}

#[cfg(test)]
pub(crate) mod tests;
