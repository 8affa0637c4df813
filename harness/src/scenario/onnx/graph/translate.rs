//! Each ONNX op type the graph compiler imports as a [`Kind`] with its attributes (opsets
//! 17–20: axes and shapes as constant inputs where those opsets pass them so), and the names
//! of the values it reads as tensors.

use super::{Attr, OnnxNode, G};
use crate::ops::onnx::{CastTo, Kind};

/// ONNX's `TensorProto.DataType` as a cast's target.
fn cast_to(t: i64) -> Result<CastTo, String> {
    match t {
        1 | 10 | 11 | 16 => Ok(CastTo::Float),
        9 => Ok(CastTo::Bool),
        2..=7 | 12 | 13 => Ok(CastTo::Int),
        t => Err(format!("a cast to ONNX data type {t}, which nanhunt does not compute in")),
    }
}

impl G<'_> {
    /// Node `n` as a kind and the values it reads as tensors.
    pub(super) fn translate(&self, n: &OnnxNode) -> Result<(Kind, Vec<String>), String> {
        let ins = |k: usize| -> Vec<String> { n.inputs.iter().take(k).cloned().collect() };
        let first = || ins(1);
        let need = |k: usize| -> Result<(), String> {
            if n.inputs.len() < k || n.inputs.iter().take(k).any(String::is_empty) {
                return Err(format!("the {} has {} inputs, fewer than {k}", n.describe(), n.inputs.len()));
            }
            Ok(())
        };
        let ints_attr = |k: &str| match n.attrs.get(k) {
            Some(Attr::Ints(v)) => Some(v.clone()),
            _ => None,
        };
        let two = |k: Kind| -> Result<(Kind, Vec<String>), String> {
            need(2)?;
            Ok((k, ins(2)))
        };
        let one = |k: Kind| -> Result<(Kind, Vec<String>), String> {
            need(1)?;
            Ok((k, first()))
        };
        let axes_in = |i: usize| -> Result<Vec<i64>, String> { Ok(self.ints(n, i)?.or_else(|| ints_attr("axes")).unwrap_or_default()) };
        match n.op_type.as_str() {
            "Add" => two(Kind::Add),
            "Sub" => two(Kind::Sub),
            "Mul" => two(Kind::Mul),
            "Div" => two(Kind::Div),
            "Equal" => two(Kind::Equal),
            "Less" => two(Kind::Less),
            "Greater" => two(Kind::Greater),
            "And" => two(Kind::And),
            "Or" => two(Kind::Or),
            "MatMul" => two(Kind::MatMul),
            "Not" => one(Kind::Not),
            "Neg" => one(Kind::Neg),
            "Sqrt" => one(Kind::Sqrt),
            "Reciprocal" => one(Kind::Reciprocal),
            "Erf" => one(Kind::Erf),
            "Exp" => one(Kind::Exp),
            "Log" => one(Kind::Log),
            "Tanh" => one(Kind::Tanh),
            "Sigmoid" => one(Kind::Sigmoid),
            "Relu" => one(Kind::Relu),
            "Abs" => one(Kind::Abs),
            "Identity" => one(Kind::Identity),
            "Gelu" if n.string("approximate", "none") == "none" => one(Kind::Gelu),
            "Gelu" => Err(format!("the {} is GELU's tanh approximation; nanhunt imports the exact (erf) GELU", n.describe())),
            "Pow" => {
                need(2)?;
                let e = self.ints_f(n, 1).map_err(|_| format!("the {} raises to a power computed from the data: nanhunt imports a constant exponent", n.describe()))?;
                let [exponent] = e[..] else { return Err(format!("the {}'s exponent is not one number", n.describe())) };
                Ok((Kind::Pow { exponent }, first()))
            }
            "Where" => {
                need(3)?;
                Ok((Kind::Where, ins(3)))
            }
            "Gemm" => {
                need(2)?;
                let mut xs = ins(2);
                let c = n.inputs.get(2).filter(|c| !c.is_empty()).cloned();
                let Some(c) = c else { return Err(format!("the {} has no bias C: nanhunt imports Gemm with one", n.describe())) };
                xs.push(c);
                let (alpha, beta) = (f64::from(n.float("alpha", 1.0)), f64::from(n.float("beta", 1.0)));
                Ok((Kind::Gemm { alpha, beta, trans_a: n.int("transA", 0) != 0, trans_b: n.int("transB", 0) != 0 }, xs))
            }
            "Softmax" | "LogSoftmax" => {
                need(1)?;
                let (axis, log) = (n.int("axis", -1), n.op_type == "LogSoftmax");
                Ok(match self.masks.get(&n.inputs[0]) {
                    Some((reads, fill, on, add)) => (Kind::Masked { axis, log, fill: *fill, on: *on, add: *add }, reads.clone()),
                    None if log => (Kind::LogSoftmax { axis }, first()),
                    None => (Kind::Softmax { axis }, first()),
                })
            }
            "LayerNormalization" => {
                need(3).map_err(|_| format!("the {} has no bias: nanhunt imports `nn.LayerNorm` with one", n.describe()))?;
                let rank = self.val(n, &n.inputs[0])?.t.rank() as i64;
                let axis = n.int("axis", -1);
                if axis != -1 && axis != rank - 1 {
                    return Err(format!("the {} normalises from axis {axis}; nanhunt imports a layer norm over the last axis", n.describe()));
                }
                if n.outputs.iter().skip(1).any(|o| !o.is_empty()) && n.outputs.len() > 1 {
                    self.unused_outputs(n)?;
                }
                Ok((Kind::LayerNorm { eps: f64::from(n.float("epsilon", 1e-5)) }, ins(3)))
            }
            "ReduceMean" | "ReduceSum" => {
                need(1)?;
                let axes = axes_in(1)?;
                if axes.is_empty() && n.int("noop_with_empty_axes", 0) != 0 {
                    return one(Kind::Identity);
                }
                let keepdims = n.int("keepdims", 1) != 0;
                Ok((if n.op_type == "ReduceMean" { Kind::ReduceMean { axes, keepdims } } else { Kind::ReduceSum { axes, keepdims } }, first()))
            }
            "Transpose" => {
                need(1)?;
                let rank = self.val(n, &n.inputs[0])?.t.rank();
                let perm = ints_attr("perm").map_or_else(|| (0..rank).rev().collect(), |p| p.iter().map(|&d| d.max(0) as usize).collect());
                Ok((Kind::Transpose { perm }, first()))
            }
            "Reshape" => {
                need(2)?;
                Ok((Kind::Reshape { shape: self.ints(n, 1)?.unwrap_or_default() }, first()))
            }
            "Unsqueeze" => one(Kind::Unsqueeze { axes: axes_in(1)? }),
            "Squeeze" => one(Kind::Squeeze { axes: axes_in(1)? }),
            "Expand" => {
                need(2)?;
                Ok((Kind::Expand { shape: self.ints(n, 1)?.unwrap_or_default() }, first()))
            }
            "Slice" => {
                need(3)?;
                let starts = self.ints(n, 1)?.unwrap_or_default();
                let ends = self.ints(n, 2)?.unwrap_or_default();
                let axes = self.ints(n, 3)?.unwrap_or_default();
                if self.ints(n, 4)?.is_some_and(|s| s.iter().any(|&s| s != 1)) {
                    return Err(format!("the {} slices with a step other than 1, which nanhunt does not import", n.describe()));
                }
                Ok((Kind::Slice { starts, ends, axes }, first()))
            }
            "Concat" => {
                need(1)?;
                Ok((Kind::Concat { axis: n.int("axis", 0) }, n.inputs.clone()))
            }
            "Gather" => two(Kind::Gather { axis: n.int("axis", 0) }),
            "Cast" => one(Kind::Cast { to: cast_to(n.int("to", 1)).map_err(|m| format!("the {} is {m}", n.describe()))? }),
            "CastLike" => {
                need(2)?;
                let to = match self.val(n, &n.inputs[1])?.ty {
                    super::Ty::Float => CastTo::Float,
                    super::Ty::Int => CastTo::Int,
                    super::Ty::Bool => CastTo::Bool,
                };
                Ok((Kind::Cast { to }, first()))
            }
            "Trilu" => {
                need(1)?;
                let k = self.ints(n, 1)?.and_then(|k| k.first().copied()).unwrap_or(0);
                Ok((Kind::Trilu { upper: n.int("upper", 1) != 0, k }, first()))
            }
            "Dropout" => {
                need(1)?;
                let p = if n.inputs.get(1).is_some_and(|r| !r.is_empty()) { self.scalar(n, 1)? } else { 0.5 };
                if n.outputs.len() > 1 {
                    self.unused_outputs(n)?;
                }
                Ok((Kind::Dropout { p }, first()))
            }
            "SequenceAt" => {
                need(2)?;
                let (x, axis, sizes) = self.seqs.get(&n.inputs[0]).cloned().ok_or_else(|| format!("the {} reads `{}`, which is not a SplitToSequence's", n.describe(), n.inputs[0]))?;
                let i = self.scalar(n, 1)? as i64;
                let i = if i < 0 { i + sizes.len() as i64 } else { i };
                let Some(&len) = usize::try_from(i).ok().and_then(|i| sizes.get(i)) else { return Err(format!("the {} reads item {i} of {}", n.describe(), sizes.len())) };
                let start = sizes[..i as usize].iter().sum();
                Ok((Kind::Narrow { axis, start, len }, vec![x]))
            }
            other => Err(format!("the {} is not an op nanhunt imports ({other})", n.describe())),
        }
    }

    /// Refuses a node whose second or later output another node reads (nanhunt computes the first).
    fn unused_outputs(&self, n: &OnnxNode) -> Result<(), String> {
        let extra: Vec<&String> = n.outputs.iter().skip(1).filter(|o| !o.is_empty()).collect();
        let read = self.m.nodes.iter().flat_map(|m| &m.inputs).find(|i| extra.contains(i)).cloned();
        match read {
            Some(o) => Err(format!("the {}'s output `{o}` is read: nanhunt computes only its first output", n.describe())),
            None => Ok(()),
        }
    }
}
