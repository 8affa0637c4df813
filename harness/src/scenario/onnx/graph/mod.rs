//! Compiling an ONNX graph that is not a chain into `onnx` layers (`ops::onnx`), one per node
//! that depends on the data or a weight, each reading earlier nodes' outputs by name.
//!
//! The graph is run once here, in f64 on the CPU, on a stand-in batch (zeros for the data, ones
//! for the mask, the file's weights): every value gets its dims, and every node whose inputs are
//! all constants is folded into a constant (`Shape`, `Range`, `ConstantOfShape`, a causal mask's
//! `Trilu`, the `Concat` of a reshape's target). A constant that a node reads as an attribute (a
//! `Reshape`'s shape, `Unsqueeze`'s axes, `Slice`'s bounds) must fold; one computed from the data
//! is refused. A reshape or expand to the stand-in batch keeps the data's batch (`0`, `1`), so a
//! graph exported at one batch size trains at another; a graph exported with a symbolic batch is
//! run at two stand-in batches, and a reshape's entry that scales with the batch is inferred. The graph's first input is the data, a
//! second one the padding mask (1 where a position holds data); each float initializer is the
//! parameter of the one node that reads it.

use std::collections::{BTreeMap, BTreeSet};

use candle_core::{DType, Device, Tensor};

use super::{Attr, OnnxModel, OnnxNode, Values};
use crate::ops::onnx::{CastTo, Kind, Lit, OnnxNode as Layer1, Src, Weight, WeightRole};
use crate::scenario::model::Compiled;
use crate::scenario::Layer;

/// The op types the graph compiler imports.
pub const SUPPORTED: [&str; 53] = [
    "Constant",
    "Identity",
    "Add",
    "Sub",
    "Mul",
    "Div",
    "Pow",
    "Equal",
    "Less",
    "Greater",
    "And",
    "Or",
    "Not",
    "Where",
    "Neg",
    "Sqrt",
    "Reciprocal",
    "Erf",
    "Exp",
    "Log",
    "Tanh",
    "Sigmoid",
    "Relu",
    "Abs",
    "Gelu",
    "MatMul",
    "Gemm",
    "Softmax",
    "LogSoftmax",
    "LayerNormalization",
    "ReduceMean",
    "ReduceSum",
    "Transpose",
    "Reshape",
    "Unsqueeze",
    "Squeeze",
    "Expand",
    "Slice",
    "Concat",
    "Split",
    "SplitToSequence",
    "SequenceAt",
    "Gather",
    "Cast",
    "CastLike",
    "Trilu",
    "Dropout",
    "Shape",
    "Range",
    "ConstantOfShape",
    "Size",
    "LSTM",
    "GRU",
];

/// A value's element type, as ONNX types it (bools and integers are kept as floats at run time).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Ty {
    Float,
    Int,
    Bool,
}

/// A value of the stand-in run: its tensor, type, and where it comes from at run time.
#[derive(Debug, Clone)]
struct Val {
    t: Tensor,
    ty: Ty,
    /// How a node reads it at run time, if it is not a constant.
    src: Option<Src>,
    /// The float initializer it is, if it is one (a parameter).
    param: Option<String>,
    /// Whether its first dim is the batch.
    batch: bool,
}

impl Val {
    fn fixed(t: Tensor, ty: Ty) -> Val {
        Val { t, ty, src: None, param: None, batch: false }
    }

    fn dynamic(&self) -> bool {
        self.src.is_some() || self.param.is_some()
    }
}

/// The compiler's state: the values so far, the sequences `SplitToSequence` made, the layers.
struct G<'a> {
    m: &'a OnnxModel,
    vals: BTreeMap<String, Val>,
    seqs: BTreeMap<String, (String, i64, Vec<usize>)>,
    /// Masked fills of `-inf` that only a softmax reads: what it reads in their place (see `mask`).
    masks: BTreeMap<String, (Vec<String>, f64, bool, bool)>,
    claimed: BTreeSet<String>,
    /// The recurrent nodes and the nodes that compile with them (`recurrent.rs`).
    rnn: recurrent::Recurrent,
    batch: usize,
    out: Compiled,
    modules: Vec<String>,
}

fn err(e: impl std::fmt::Display) -> String {
    e.to_string()
}

/// Compiles `m` into `onnx` layers. A graph exported with a symbolic batch is compiled at two
/// stand-in batches: a reshape's target entry that differs between them scales with the batch
/// (`nn.MultiheadAttention`'s `(seq, batch · heads, d)`), and is inferred (`-1`) at run time.
pub fn compile(m: &OnnxModel) -> Result<Compiled, String> {
    let symbolic = m.inputs.first().is_some_and(|(_, d)| d.first().is_some_and(Option::is_none));
    let mut out = compile_at(m, 2)?;
    if symbolic {
        let other = compile_at(m, 3)?;
        if other.layers.len() == out.layers.len() {
            for (a, b) in out.layers.iter_mut().zip(&other.layers) {
                if let (Layer::Onnx(Layer1 { op: Kind::Reshape { shape }, .. }), Layer::Onnx(Layer1 { op: Kind::Reshape { shape: theirs }, .. })) = (a, b) {
                    let differ: Vec<usize> = (0..shape.len()).filter(|&i| theirs.get(i) != Some(&shape[i])).collect();
                    if let ([i], false) = (differ.as_slice(), shape.contains(&-1)) {
                        shape[*i] = -1;
                    }
                }
            }
        }
    }
    Ok(out)
}

/// Compiles `m` with a stand-in batch of `stand_in` where the data's batch is symbolic.
fn compile_at(m: &OnnxModel, stand_in: usize) -> Result<Compiled, String> {
    let (data, mask) = match m.inputs.as_slice() {
        [d] => (d, None),
        [d, k] => (d, Some(k)),
        more => {
            let names: Vec<&str> = more.iter().map(|(n, _)| n.as_str()).collect();
            return Err(format!("the graph reads {} inputs ({}): nanhunt binds the first to the data and a second to the padding mask", names.len(), names.join(", ")));
        }
    };
    let [output] = m.outputs.as_slice() else { return Err(format!("the graph has {} outputs: nanhunt trains one prediction", m.outputs.len())) };
    if let Some((name, _)) = m.inputs.iter().find(|(_, d)| d.is_empty()) {
        return Err(format!("the graph's input `{name}` declares no shape: nanhunt compiles a graph from its inputs' dims"));
    }
    let batch = data.1.first().copied().flatten().unwrap_or(stand_in);
    let mut g = G {
        m,
        vals: BTreeMap::new(),
        seqs: BTreeMap::new(),
        masks: BTreeMap::new(),
        claimed: BTreeSet::new(),
        rnn: recurrent::prepass(m)?,
        batch,
        out: Compiled { input: data.clone(), layers: Vec::new(), names: Vec::new(), params: Vec::new() },
        modules: Vec::new(),
    };
    let dims = |(name, d): &(String, Vec<Option<usize>>)| -> Result<Vec<usize>, String> {
        d.iter()
            .enumerate()
            .map(|(i, d)| if i == 0 { Ok(batch) } else { d.ok_or_else(|| format!("the graph's input `{name}` has a symbolic dim {i}: export it with static dims beyond the batch")) })
            .collect()
    };
    let t = Tensor::zeros(dims(data)?, DType::F64, &Device::Cpu).map_err(err)?;
    g.vals.insert(data.0.clone(), Val { t, ty: Ty::Float, src: Some(Src::Input), param: None, batch: true });
    if let Some(k) = mask {
        let t = Tensor::ones(dims(k)?, DType::F64, &Device::Cpu).map_err(err)?;
        g.vals.insert(k.0.clone(), Val { t, ty: Ty::Float, src: Some(Src::Mask), param: None, batch: true });
    }
    for (name, c) in &m.tensors {
        let (v, ty) = match &c.values {
            Values::Float(v, _) => (v.clone(), Ty::Float),
            Values::Int(v) => (v.iter().map(|&i| i as f64).collect(), Ty::Int),
        };
        let t = Tensor::from_vec(v, c.dims.as_slice(), &Device::Cpu).map_err(err)?;
        let param = (ty == Ty::Float && m.initializers.contains(name)).then(|| name.clone());
        g.vals.insert(name.clone(), Val { t, ty, src: None, param, batch: false });
    }
    for n in &m.nodes {
        g.node(n)?;
    }
    g.finish(output)
}

impl G<'_> {
    fn val(&self, n: &OnnxNode, name: &str) -> Result<&Val, String> {
        self.vals.get(name).ok_or_else(|| format!("the {} reads `{name}`, which nanhunt does not compute (an unused output of another node)", n.describe()))
    }

    /// Input `i` of `n` as a constant's integers, or why it is not one.
    fn ints(&self, n: &OnnxNode, i: usize) -> Result<Option<Vec<i64>>, String> {
        let Some(name) = n.inputs.get(i).filter(|s| !s.is_empty()) else { return Ok(None) };
        let v = self.val(n, name)?;
        if v.dynamic() {
            return Err(format!("the {} reads its input {i} `{name}` as a constant, but it is computed from the data or a weight", n.describe()));
        }
        let f = v.t.flatten_all().and_then(|t| t.to_vec1::<f64>()).map_err(err)?;
        Ok(Some(f.into_iter().map(|x| x as i64).collect()))
    }

    /// Compiles one node: folded if its inputs are constants, else emitted as a layer.
    fn node(&mut self, n: &OnnxNode) -> Result<(), String> {
        if self.recurrent_part(n)? {
            return Ok(());
        }
        let out = n.outputs.first().cloned().unwrap_or_default();
        match n.op_type.as_str() {
            "Constant" => return self.constant(n, &out),
            "Shape" | "Size" | "Range" | "ConstantOfShape" => return self.fold_only(n, &out),
            "SplitToSequence" => {
                let x = n.inputs.first().cloned().unwrap_or_default();
                let dim = self.val(n, &x)?.t.dims().get(kind_axis(n.int("axis", 0), self.val(n, &x)?.t.rank())?).copied().unwrap_or(0);
                let sizes = match self.ints(n, 1)? {
                    Some(s) if s.len() == 1 && n.inputs.get(1).is_some_and(|i| self.vals[i].t.rank() == 0) => chunks(dim, s[0].max(1) as usize),
                    Some(s) => s.iter().map(|&v| v.max(0) as usize).collect(),
                    None => vec![1; dim],
                };
                self.seqs.insert(out, (x, n.int("axis", 0), sizes));
                return Ok(());
            }
            "Split" => return self.split(n),
            "Where" | "Add" if self.mask(n, &out)? => return Ok(()),
            _ => {}
        }
        let (kind, inputs) = self.translate(n)?;
        self.apply(n, kind, &inputs, &out)
    }

    /// Runs `kind` on `inputs` for node `n`'s output `out`: folds it, or emits its layer.
    fn apply(&mut self, n: &OnnxNode, mut kind: Kind, inputs: &[String], out: &str) -> Result<(), String> {
        let vals: Vec<Val> = inputs.iter().map(|i| self.val(n, i).cloned()).collect::<Result<_, _>>()?;
        let lead = vals.first().is_some_and(|v| v.batch && v.t.dims().first() == Some(&self.batch));
        match &mut kind {
            Kind::Reshape { shape } if lead && shape.first() == Some(&(self.batch as i64)) => shape[0] = 0,
            Kind::Expand { shape } if lead && shape.first() == Some(&(self.batch as i64)) => shape[0] = 1,
            _ => {}
        }
        let ts: Vec<Tensor> = vals.iter().map(|v| v.t.clone()).collect();
        let t = kind.eval(&ts, &mut |_, _| Ok(None)).map_err(|e| format!("the {} does not compute: {e}", n.describe()))?;
        let ty = self.ty(&kind, &vals);
        let t = if ty == Ty::Int && matches!(kind, Kind::Div) { t.floor().map_err(err)? } else { t };
        if !vals.iter().any(Val::dynamic) {
            self.vals.insert(out.to_string(), Val::fixed(t, ty));
            return Ok(());
        }
        let moves_batch = matches!(&kind, Kind::Transpose { perm } if perm.first() != Some(&0));
        let batch = vals.iter().any(|v| v.batch) && t.dims().first() == Some(&self.batch) && !moves_batch;
        let mut srcs = Vec::with_capacity(vals.len());
        let mut params = Vec::new();
        for (i, v) in vals.iter().enumerate() {
            srcs.push(match (&v.src, &v.param) {
                (Some(s), _) => s.clone(),
                (None, Some(p)) => {
                    if !self.claimed.insert(p.clone()) {
                        return Err(format!("the weight `{p}` is read by several nodes (the {} among them): nanhunt imports each weight read by one node, so untie it before exporting", n.describe()));
                    }
                    let c = &self.m.tensors[p];
                    let values = match &c.values {
                        Values::Float(v, _) => v.clone(),
                        Values::Int(v) => v.iter().map(|&i| i as f64).collect(),
                    };
                    self.out.params.push((p.clone(), c.dims.clone(), values));
                    params.push(Weight { name: p.clone(), shape: c.dims.clone(), role: role(&kind, i, p, c.dims.len()) });
                    Src::Param(params.len() - 1)
                }
                (None, None) => Src::Const(lit(&v.t)?),
            });
        }
        let layer = Layer1 { op: kind, inputs: srcs, params, name: out.to_string(), dims: t.dims().to_vec(), batch };
        self.out.layers.push(Layer::Onnx(layer));
        self.modules.push(n.module.clone().unwrap_or_else(|| n.name.clone()));
        self.out.names.push(n.name.clone());
        self.vals.insert(out.to_string(), Val { t, ty, src: Some(Src::Value(out.to_string())), param: None, batch });
        Ok(())
    }

    /// The type of `kind`'s output from its inputs'.
    fn ty(&self, kind: &Kind, vals: &[Val]) -> Ty {
        let first = vals.first().map_or(Ty::Float, |v| v.ty);
        match kind {
            Kind::Equal | Kind::Less | Kind::Greater | Kind::And | Kind::Or | Kind::Not | Kind::Cast { to: CastTo::Bool } => Ty::Bool,
            Kind::Cast { to: CastTo::Int } => Ty::Int,
            Kind::Cast { to: CastTo::Float } => Ty::Float,
            Kind::Where => vals.get(1).map_or(first, |v| v.ty),
            Kind::Masked { .. } => first,
            Kind::Add
            | Kind::Sub
            | Kind::Mul
            | Kind::Div
            | Kind::Pow { .. }
            | Kind::Neg
            | Kind::Sqrt
            | Kind::Reciprocal
            | Kind::Erf
            | Kind::Exp
            | Kind::Log
            | Kind::Tanh
            | Kind::Sigmoid
            | Kind::Relu => first,
            Kind::Abs | Kind::Gelu | Kind::MatMul | Kind::Gemm { .. } | Kind::Softmax { .. } | Kind::LogSoftmax { .. } | Kind::LayerNorm { .. } | Kind::ReduceMean { .. } | Kind::ReduceSum { .. } => {
                first
            }
            Kind::Transpose { .. } | Kind::Reshape { .. } | Kind::Unsqueeze { .. } | Kind::Squeeze { .. } | Kind::Expand { .. } | Kind::Slice { .. } | Kind::Concat { .. } | Kind::Narrow { .. } => {
                first
            }
            Kind::Gather { .. } | Kind::Trilu { .. } | Kind::Identity | Kind::Dropout { .. } => first,
        }
    }

    /// The compiled graph, its output the last layer's, each layer named by its module path.
    fn finish(mut self, output: &str) -> Result<Compiled, String> {
        let v = self.vals.get(output).ok_or_else(|| format!("the graph's output `{output}` is not computed"))?;
        if !v.dynamic() {
            return Err(format!("the graph's output `{output}` is a constant: it reads neither the data nor a weight"));
        }
        let last = matches!(self.out.layers.last(), Some(Layer::Onnx(l)) if l.name == output);
        if !last {
            let (t, batch) = (v.t.clone(), v.batch);
            let src = v.src.clone().unwrap_or(Src::Input);
            self.out.layers.push(Layer::Onnx(Layer1 { op: Kind::Identity, inputs: vec![src], params: Vec::new(), name: format!("{output}.out"), dims: t.dims().to_vec(), batch }));
            self.modules.push("output".into());
            self.out.names.push(String::new());
        }
        // A module path names one layer: where several nodes share one, the last (which makes
        // the module's output) keeps it and the others add their node's name.
        let mut seen = BTreeSet::new();
        for i in (0..self.modules.len()).rev() {
            let m = &self.modules[i];
            self.out.names[i] = if seen.insert(m.clone()) { m.clone() } else { format!("{m}.{}", self.out.names[i]) };
        }
        Ok(self.out)
    }
}

/// What an initializer read by `kind` as its input `i` is.
fn role(kind: &Kind, i: usize, name: &str, rank: usize) -> WeightRole {
    match (kind, i) {
        (Kind::LayerNorm { .. }, 1) => WeightRole::Gain,
        (Kind::LayerNorm { .. }, 2) => WeightRole::Shift,
        (Kind::Gather { .. }, 0) => WeightRole::Embedding,
        _ if name.ends_with("bias") || rank == 1 => WeightRole::Bias,
        _ => WeightRole::Weight,
    }
}

fn lit(t: &Tensor) -> Result<Lit, String> {
    Ok(Lit { dims: t.dims().to_vec(), values: t.flatten_all().and_then(|t| t.to_vec1::<f64>()).map_err(err)? })
}

fn chunks(dim: usize, size: usize) -> Vec<usize> {
    let size = size.max(1);
    (0..dim.div_ceil(size)).map(|k| size.min(dim - k * size)).collect()
}

fn kind_axis(a: i64, rank: usize) -> Result<usize, String> {
    crate::ops::onnx::shape::axis(a, rank, "axis").map_err(err)
}

mod fold;
mod recurrent;
mod translate;
