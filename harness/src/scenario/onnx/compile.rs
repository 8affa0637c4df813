//! Compiling a loaded ONNX graph into registry layers, the file's float initializers their
//! parameters at the file's values. A chain (each node reads the previous one's output, as an
//! MLP's export does) compiles as the first slice did: `Gemm` and `MatMul` + `Add` of constant
//! weights become `linear` layers (the weight transposed to nanhunt's `(in, out)` where the
//! file holds PyTorch's `(out, in)`), and `Relu`, `Tanh`, `Sigmoid`, `Gelu`, `Softmax` (last axis)
//! and `Identity` their registry ops; a CNN's `Conv`, `BatchNormalization`, `MaxPool`,
//! `AveragePool` and flatten become `conv2d`, `batch_norm`, `max_pool2d`, `avg_pool2d` and
//! `flatten` (`cnn.rs`, which also folds the nodes that compute a reshape's target from the
//! input's shape). Any other graph (residual adds, `q·kᵀ`, a value read by
//! several nodes, a transformer's ops) compiles node by node into `onnx` layers (`graph/`),
//! its weights in PyTorch's layout. Every node of an op type neither imports is refused at
//! once, each with its op type, node name and module path.

use std::collections::BTreeMap;

use super::{Attr, Const, OnnxModel, OnnxNode, Values};
use crate::ops::linear::Linear;
use crate::scenario::model::Compiled;
use crate::scenario::Layer;

/// The op types a chain compiles (and `Constant`, whose value later nodes read).
pub const SUPPORTED: [&str; 10] = ["Constant", "Gemm", "MatMul", "Add", "Relu", "Tanh", "Sigmoid", "Gelu", "Softmax", "Identity"];

/// Compiles `m`: as a chain of registry layers if it is one, else as a graph of `onnx` layers;
/// or says every node of an op type nanhunt does not import.
pub fn compile(m: &OnnxModel) -> Result<Compiled, String> {
    let imported = |op: &str| super::graph::SUPPORTED.contains(&op) || cnn::SUPPORTED.contains(&op);
    let unsupported: Vec<String> = m.nodes.iter().filter(|n| !matches!(n.domain.as_str(), "" | "ai.onnx") || !imported(&n.op_type)).map(OnnxNode::describe).collect();
    if !unsupported.is_empty() {
        let all: Vec<&str> = super::graph::SUPPORTED.iter().chain(cnn::CNN.iter()).copied().collect();
        return Err(format!("nanhunt does not import these nodes yet: {} (it imports {})", unsupported.join(", "), all.join(", ")));
    }
    if m.nodes.iter().all(|n| SUPPORTED.contains(&n.op_type.as_str()) || cnn::SUPPORTED.contains(&n.op_type.as_str())) {
        match chain(m) {
            Ok(c) => return Ok(c),
            // The graph compiler has no CNN ops: a CNN compiles as a chain or not at all.
            Err(e) if m.nodes.iter().any(|n| cnn::CNN.contains(&n.op_type.as_str())) => return Err(e),
            Err(_) => {}
        }
    }
    super::graph::compile(m)
}

/// Compiles `m` as a chain, or says why it is not one.
fn chain(m: &OnnxModel) -> Result<Compiled, String> {
    let [input] = m.inputs.as_slice() else {
        let names: Vec<&str> = m.inputs.iter().map(|(n, _)| n.as_str()).collect();
        return Err(format!("the graph reads {} inputs ({}): nanhunt binds one, the scenario's data", names.len(), names.join(", ")));
    };
    let [output] = m.outputs.as_slice() else { return Err(format!("the graph has {} outputs: nanhunt trains one prediction", m.outputs.len())) };
    let dims = input.1.iter().skip(1).copied().collect::<Option<Vec<usize>>>().filter(|_| !input.1.is_empty());
    let out = Compiled { input: input.clone(), layers: Vec::new(), names: Vec::new(), params: Vec::new() };
    let mut c = Chain { m, consts: BTreeMap::new(), cur: input.0.clone(), out, dims, side: cnn::Side::new(m) };
    let mut i = 0;
    while i < m.nodes.len() {
        i += c.node(i)?;
    }
    if &c.cur != output {
        return Err(format!("the graph's output `{output}` is not the last node's output `{}`", c.cur));
    }
    Ok(c.out)
}

/// The chain compiled so far: the value it ends in and the constants of `Constant` nodes.
struct Chain<'a> {
    m: &'a OnnxModel,
    consts: BTreeMap<String, Const>,
    /// The value the chain ends in.
    cur: String,
    out: Compiled,
    /// The dims of the value the chain ends in past the batch, if known.
    dims: Option<Vec<usize>>,
    /// The nodes that compute a shape, not data (`cnn.rs`).
    side: cnn::Side,
}

impl Chain<'_> {
    /// Compiles node `i` (with the `Add` after a `MatMul`); returns how many nodes it took.
    fn node(&mut self, i: usize) -> Result<usize, String> {
        let n = &self.m.nodes[i];
        if n.op_type == "Constant" {
            let [out] = n.outputs.as_slice() else { return Err(format!("the {} has {} outputs", n.describe(), n.outputs.len())) };
            match n.attrs.get("value") {
                Some(Attr::Tensor(t)) => self.consts.insert(out.clone(), t.clone()),
                _ if self.side.has(out) => None,
                _ => return Err(format!("the {} has no tensor `value` (nanhunt reads that form)", n.describe())),
            };
            return Ok(1);
        }
        if self.side.skips(i) {
            return Ok(1);
        }
        if n.inputs.first() != Some(&self.cur) {
            return Err(format!(
                "the {} reads `{}`, not the previous node's output `{}`: nanhunt imports a chain of nodes so far",
                n.describe(),
                n.inputs.first().map_or("", String::as_str),
                self.cur
            ));
        }
        if self.cnn(n)? {
            return Ok(1);
        }
        let layer = match n.op_type.as_str() {
            "Gemm" => return self.gemm(n).map(|()| 1),
            "MatMul" => return self.matmul(n, self.m.nodes.get(i + 1)).map(|()| 2),
            "Relu" => Layer::Relu(Default::default()),
            "Tanh" => Layer::Tanh(Default::default()),
            "Sigmoid" => Layer::Sigmoid(Default::default()),
            "Identity" => Layer::Identity(Default::default()),
            "Gelu" if n.string("approximate", "none") == "none" => Layer::Gelu(Default::default()),
            "Gelu" => return Err(format!("the {} is GELU's tanh approximation; nanhunt imports the exact (erf) GELU", n.describe())),
            "Softmax" if n.int("axis", -1) == -1 || self.rank().is_some_and(|r| n.int("axis", -1) == r - 1) => Layer::Softmax(Default::default()),
            "Softmax" => return Err(format!("the {} is along axis {}; nanhunt imports a softmax along the last axis", n.describe(), n.int("axis", -1))),
            other => return Err(format!("the {} cannot start a layer here ({other} reads a `MatMul`'s output as its bias)", n.describe())),
        };
        self.push(n, layer, Vec::new());
        Ok(1)
    }

    /// The graph input's rank, if known.
    fn rank(&self) -> Option<i64> {
        let dims = &self.out.input.1;
        self.dims.as_ref().map(|d| d.len() as i64 + 1).or_else(|| (!dims.is_empty()).then_some(dims.len() as i64))
    }

    /// Appends `layer` for node `n`, whose output the chain now ends in.
    fn push(&mut self, n: &OnnxNode, layer: Layer, params: Vec<(String, Vec<usize>, Vec<f64>)>) {
        self.out.names.push(n.module.clone().unwrap_or_else(|| n.name.clone()));
        self.out.layers.push(layer);
        self.out.params.extend(params);
        self.cur = n.outputs.first().cloned().unwrap_or_default();
    }

    /// The float constant `name` (an initializer or a `Constant` node's value) read by `n`.
    fn float(&self, n: &OnnxNode, name: &str) -> Result<(Vec<usize>, Vec<f64>), String> {
        let c = self
            .consts
            .get(name)
            .or_else(|| self.m.tensors.get(name))
            .ok_or_else(|| format!("the {} reads `{name}` as a weight, but it is not a constant: nanhunt imports constant weights", n.describe()))?;
        match &c.values {
            Values::Float(v, _) => Ok((c.dims.clone(), v.clone())),
            Values::Int(_) => Err(format!("the {} reads the integer tensor `{name}` as a weight", n.describe())),
        }
    }

    /// `Gemm(x, B, C)` with `alpha = beta = 1` and `transA = 0`: a linear layer.
    fn gemm(&mut self, n: &OnnxNode) -> Result<(), String> {
        if n.float("alpha", 1.0) != 1.0 || n.float("beta", 1.0) != 1.0 || n.int("transA", 0) != 0 {
            return Err(format!("the {} scales or transposes its input (alpha, beta, transA); nanhunt imports `torch.nn.Linear`'s Gemm", n.describe()));
        }
        let b = n.inputs.get(1).ok_or_else(|| format!("the {} has no weight", n.describe()))?;
        let (dims, w) = self.float(n, b)?;
        let [rows, cols] = dims[..] else { return Err(format!("the {}'s weight `{b}` is not a matrix: dims {dims:?}", n.describe())) };
        // nanhunt's weight is (in, out); transB = 1 holds PyTorch's (out, in).
        let (input, out, weight) = if n.int("transB", 0) == 1 { (cols, rows, transpose(&w, rows, cols)) } else { (rows, cols, w) };
        let bias = match n.inputs.get(2).filter(|c| !c.is_empty()) {
            Some(c) => Some(self.bias(n, c, out)?),
            None => None,
        };
        self.linear(n, (b, input, out, weight), bias)
    }

    /// `MatMul(x, W)` followed by `Add(that, b)`: a linear layer of weight `W` `(in, out)`.
    fn matmul(&mut self, n: &OnnxNode, add: Option<&OnnxNode>) -> Result<(), String> {
        let w = n.inputs.get(1).ok_or_else(|| format!("the {} has one input", n.describe()))?;
        let (dims, values) = self.float(n, w)?;
        let [input, out] = dims[..] else { return Err(format!("the {}'s weight `{w}` is not a matrix: dims {dims:?}", n.describe())) };
        let mine = n.outputs.first();
        let Some(add) = add.filter(|a| a.op_type == "Add" && a.inputs.first() == mine) else {
            return Err(format!("the {} is not followed by the `Add` of a bias: nanhunt imports a MatMul as `torch.nn.Linear` with a bias so far", n.describe()));
        };
        let c = add.inputs.get(1).ok_or_else(|| format!("the {} has one input", add.describe()))?;
        let bias = self.bias(add, c, out)?;
        self.linear(add, (w, input, out, values), Some(bias))
    }

    /// The bias `c` of `out` values read by `n`.
    fn bias(&self, n: &OnnxNode, c: &str, out: usize) -> Result<(String, Vec<f64>), String> {
        let (dims, values) = self.float(n, c)?;
        if values.len() != out || dims.len() != 1 {
            return Err(format!("the {}'s bias `{c}` has dims {dims:?}; nanhunt imports a bias of the {out} outputs", n.describe()));
        }
        Ok((c.to_string(), values))
    }

    /// Appends a linear layer (named after `n`) of weight `w` `(input, out)` and bias `b` (zeros if none).
    fn linear(&mut self, n: &OnnxNode, (w, input, out, weight): (&str, usize, usize, Vec<f64>), bias: Option<(String, Vec<f64>)>) -> Result<(), String> {
        let Some((b, bias)) = bias else {
            return Err(format!("the {} has no bias: nanhunt imports `torch.nn.Linear` with a bias so far", n.describe()));
        };
        let params = vec![(w.to_string(), vec![input, out], weight), (b, vec![out], bias)];
        self.push(n, Layer::Linear(Linear { out, init: None }), params);
        if let Some(last) = self.dims.as_mut().and_then(|d| d.last_mut()) {
            *last = out;
        }
        Ok(())
    }
}

mod cnn;

/// The transpose of a row-major `rows × cols` matrix.
fn transpose(v: &[f64], rows: usize, cols: usize) -> Vec<f64> {
    (0..cols).flat_map(|c| (0..rows).map(move |r| v[r * cols + c])).collect()
}
