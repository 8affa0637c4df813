//! `onnx`: one node of an imported ONNX graph that is not a chain (a transformer's residual
//! adds, `q·kᵀ`, values read by several nodes). `scenario/onnx/graph/` compiles each
//! ONNX node that depends on the data or a weight into one such layer: its op ([`Kind`]), what
//! it reads ([`Src`]: the graph's input, its padding mask, an earlier node's named output, one
//! of its own weights, or a constant the compiler folded), and the name of the value it writes,
//! which later nodes read as expressions read named outputs (`Planner::name_output`). Each
//! float initializer is the parameter of the one node that reads it, in PyTorch's layout.

use candle_core::{DType, Tensor};
use serde::{Deserialize, Serialize};

use super::{Autocast, Cx, Explained, Facts, Op, Rounding, Torch};
use crate::error::Result;
use crate::scenario::{Input, Part, Planner, Role, Shape};

mod diagnosis;
pub mod kind;
pub mod shape;
pub mod torch;

pub use kind::{CastTo, Kind};

/// An imported ONNX node: `kind` of `inputs`, writing the value `name`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, arbitrary::Arbitrary)]
#[serde(deny_unknown_fields)]
pub struct OnnxNode {
    /// The op and its attributes.
    pub op: Kind,
    /// What it reads, in ONNX's order.
    pub inputs: Vec<Src>,
    /// Its parameters (the initializers it reads as `Src::Param`), in order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub params: Vec<Weight>,
    /// The value it writes, which later nodes read by this name.
    pub name: String,
    /// Its output's dims when the graph compiled (the batch first if `batch`).
    pub dims: Vec<usize>,
    /// Whether its output's first dim is the batch.
    #[serde(default)]
    pub batch: bool,
}

/// What a node reads.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, arbitrary::Arbitrary)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum Src {
    /// The graph's input: the scenario's data.
    Input,
    /// The graph's second input: the padding mask `(batch, seq)`, 1 where a position holds data (all ones without `data.padding`).
    Mask,
    /// An earlier node's output, by name.
    Value(String),
    /// Its parameter `k`.
    Param(usize),
    /// A constant, folded when the graph compiled.
    Const(Lit),
}

/// A constant tensor.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, arbitrary::Arbitrary)]
#[serde(deny_unknown_fields)]
pub struct Lit {
    /// Its dims.
    pub dims: Vec<usize>,
    /// Its values, row-major (booleans as 0/1).
    pub values: Vec<f64>,
}

/// One of a node's parameters: its initializer's shape (PyTorch's layout) and what it is.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, arbitrary::Arbitrary)]
#[serde(deny_unknown_fields)]
pub struct Weight {
    /// The initializer's name (`block.ln1.weight`).
    pub name: String,
    /// Its dims.
    pub shape: Vec<usize>,
    /// What it is, for `[model] init` and `init_scale`.
    pub role: WeightRole,
}

/// What an imported parameter is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, arbitrary::Arbitrary)]
#[serde(rename_all = "snake_case")]
pub enum WeightRole {
    /// A matrix or kernel.
    Weight,
    /// A bias.
    Bias,
    /// A layer norm's scale.
    Gain,
    /// A layer norm's bias.
    Shift,
    /// An embedding table.
    Embedding,
}

impl WeightRole {
    fn role(self) -> Role {
        match self {
            WeightRole::Weight => Role::Weight,
            WeightRole::Bias => Role::Bias,
            WeightRole::Gain => Role::Gain,
            WeightRole::Shift => Role::Shift,
            WeightRole::Embedding => Role::Embedding,
        }
    }
}

/// The layer shape of a value of `dims`: the batch first if `batch`, else its values as one
/// flat row (a weight's transpose), which the memory estimate counts per example.
pub fn shape_of(dims: &[usize], batch: bool) -> Shape {
    match (batch, dims) {
        (true, [_, w]) => Shape::Flat(*w),
        (true, [_, len, width]) => Shape::Seq { len: *len, width: *width },
        (true, [_, channels, height, width]) => Shape::Image { channels: *channels, height: *height, width: *width },
        (true, [_, rest @ ..]) => Shape::Flat(saturating_product(rest)),
        (_, d) => Shape::Flat(saturating_product(d)),
    }
}

/// The product of `dims`, at least 1, saturating where it would overflow (the memory estimate
/// then refuses it).
fn saturating_product(dims: &[usize]) -> usize {
    dims.iter().fold(1usize, |a, &d| a.saturating_mul(d)).max(1)
}

impl OnnxNode {
    /// The tensors it reads, in ONNX's order: `main` and `others` (its inputs from the graph, as
    /// the plan lists them), its parameters and its constants (in `like`'s float dtype).
    fn operands(&self, main: &Tensor, cx: &Cx<'_>) -> Result<Vec<Tensor>> {
        let mut graph = std::iter::once(main).chain(cx.others.iter());
        let float = std::iter::once(main).chain(cx.others.iter()).map(Tensor::dtype).find(|d| d.is_float()).unwrap_or(cx.storage);
        let mut out = Vec::with_capacity(self.inputs.len());
        let missing = || crate::ops::unplanned(format!("the ONNX node `{}` reads more inputs than the plan gives it", self.name));
        for s in &self.inputs {
            out.push(match s {
                Src::Input | Src::Value(_) => graph.next().ok_or_else(missing)?.clone(),
                Src::Param(k) if *k < self.params.len() => cx.param(*k).clone(),
                Src::Param(k) => return Err(crate::ops::unplanned(format!("the ONNX node `{}` has no parameter {k}", self.name))),
                Src::Const(l) => Tensor::from_vec(l.values.clone(), l.dims.as_slice(), main.device())?.to_dtype(float)?,
                Src::Mask => {
                    // The model's input is the node's last planned input (see `plan`).
                    let x = cx.others.last().unwrap_or(main);
                    let (b, t) = (x.dims().first().copied().unwrap_or(1), x.dims().get(1).copied().unwrap_or(1));
                    match cx.mask {
                        Some(m) => m.to_dtype(float)?,
                        None => Tensor::ones((b, t), float, main.device())?,
                    }
                }
            });
        }
        Ok(out)
    }
}

impl Op for OnnxNode {
    fn check(&self) -> Vec<(&'static str, String)> {
        let mut out = Vec::new();
        if self.op.arity().is_some_and(|n| n != self.inputs.len()) || self.inputs.is_empty() {
            out.push(("inputs", format!("the op reads {} inputs, not {}", self.op.arity().unwrap_or(1), self.inputs.len())));
        }
        for s in &self.inputs {
            match s {
                Src::Param(k) if *k >= self.params.len() => out.push(("inputs", format!("it reads parameter {k} of {}", self.params.len()))),
                Src::Const(l) if l.dims.iter().try_fold(1usize, |a, &d| a.checked_mul(d)) != Some(l.values.len()) => {
                    out.push(("inputs", format!("a constant of dims {:?} holds {} values", l.dims, l.values.len())))
                }
                Src::Input | Src::Mask | Src::Value(_) | Src::Param(_) | Src::Const(_) => {}
            }
        }
        if self.name.is_empty() {
            out.push(("name", "the node names no output".into()));
        }
        out
    }

    fn plan(&self, p: &mut Planner<'_>, _: Shape) -> std::result::Result<Shape, String> {
        let mut inputs = Vec::new();
        for s in &self.inputs {
            match s {
                Src::Input => inputs.push(Input::Model),
                Src::Value(v) => inputs.push(p.output_named(v).ok_or_else(|| format!("the node `{}` reads `{v}`, which no earlier node writes", self.name))?.0),
                Src::Mask | Src::Param(_) | Src::Const(_) => {}
            }
        }
        if self.inputs.contains(&Src::Mask) || inputs.is_empty() {
            // The padding mask's fallback takes its shape from the model's input.
            inputs.push(Input::Model);
        }
        for w in &self.params {
            let (fan_in, fan_out) = match w.shape.as_slice() {
                [out, inp, ..] => (*inp, *out),
                [n] => (*n, *n),
                _ => (1, 1),
            };
            p.param(&w.name, w.shape.clone(), w.role.role(), (fan_in, fan_out), fan_in, None);
        }
        let out = shape_of(&self.dims, self.batch);
        let node = p.node(Part::Whole, "", &inputs, out);
        p.name_value(&self.name, node, out)?;
        Ok(out)
    }

    fn held(&self, _: Shape, _: Shape, values: u128) -> u128 {
        values
    }

    fn levels(&self) -> (u64, u64) {
        // The most Candle ops one kind records (layer norm's, with the casts around it), and a tap.
        (24, 0)
    }

    fn dropout(&self) -> f64 {
        if let Kind::Dropout { p } = self.op {
            p
        } else {
            0.0
        }
    }

    fn forward(&self, x: &Tensor, cx: &Cx<'_>) -> Result<Tensor> {
        let xs = self.operands(x, cx)?;
        let (xs, _) = if matches!(self.op, Kind::Gather { .. }) { (xs, DType::F32) } else { super::expr::promoted(xs)? };
        let mut drop = |t: &Tensor, p: f64| -> Result<Option<Tensor>> {
            let rows = t.dims().first().copied().unwrap_or(1).max(1);
            Ok(match cx.dropout_mask(rows, t.elem_count() / rows, p, t)? {
                Some(m) => Some(m.reshape(t.shape())?),
                None => None,
            })
        };
        self.op.eval(&xs, &mut drop)
    }

    fn autocast(&self, _: Part) -> Autocast {
        self.op.autocast()
    }

    fn rounding(&self, _: Part) -> Rounding {
        Rounding::Outside
    }

    fn explain_forward(&self, _: Part, f: &Facts<'_>) -> Explained {
        self.op.explain_forward(f)
    }

    fn explain_backward(&self, _: &Facts<'_>) -> Explained {
        None
    }

    fn explain_zeros(&self, _: usize, _: usize) -> Explained {
        None
    }

    fn torch(&self) -> Torch {
        Torch::Module(self.torch_module())
    }
}

#[cfg(test)]
mod tests;
