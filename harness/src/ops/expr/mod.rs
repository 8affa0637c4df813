//! `expr`: a layer written as a PyTorch expression, `{ type = "expr", expr = "x / norm(x,
//! dim=-1, keepdim=true)", consts = { eps = 1e-12 } }`. It reads `x` (the previous node's
//! output) and any earlier output named with `name = "..."` (any layer's), so branches
//! can be multiplied, divided or matrix-multiplied; `consts` are its named numbers (hunt and
//! margins knobs).
//!
//! The language (`parse.rs`, `ast.rs`): numbers, names, `+ - * / ** @`, unary minus,
//! comparisons giving 0/1 masks, calls with keyword arguments, with Python's precedence. Its
//! functions (`funcs.rs`) are PyTorch's, by name and semantics; shapes are checked in the plan
//! with PyTorch's broadcasting (`check.rs`, a reshape folding the batch too; a layer refuses a folded output, `fold.rs`), before training; `eval.rs` runs it, with
//! PyTorch's forward and backward (`grad.rs` and `norm.rs` where PyTorch's backward is not the chain rule;
//! `losses.rs`, the named losses, through the loss op's kernels);
//! `amp.rs` runs it under autocast, each node in the dtype PyTorch's autocast gives its op;
//! `torch.rs` writes the same expression as PyTorch calls for `repro.py`; `diagnosis.rs` names
//! the sub-expression that made a non-finite value or gradient, for the cause engine.

use std::collections::BTreeMap;

use candle_core::{DType, Tensor};

use super::{Autocast, Cx, Inner, Op, Rounding, Torch};
use crate::error::Result;
use crate::scenario::{Part, Planner, Shape};

pub mod amp;
pub mod ast;
pub mod check;
pub mod diagnosis;
pub mod domains;
pub mod eval;
pub mod fold;
pub mod funcs;
pub(crate) mod grad;
pub mod losses;
pub mod norm;
pub mod parse;
pub mod torch;

#[cfg(test)]
mod tests;

#[cfg(test)]
#[path = "nan_tests.rs"]
mod nan_tests;

use check::{Dim, Dims, Env, Ir};

/// An expression layer: `expr` over `x` and earlier named outputs, with constants `consts`.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize, arbitrary::Arbitrary)]
#[serde(deny_unknown_fields)]
pub struct Expr {
    /// The expression, e.g. `x / norm(x, dim=-1, keepdim=true)`.
    pub expr: String,
    /// Its named constants, e.g. `{ eps = 1e-12, T = 0.07 }`.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub consts: BTreeMap<String, f64>,
}

impl Default for Expr {
    /// `x * 1`: an example that keeps any input.
    fn default() -> Self {
        Expr { expr: "x * 1".into(), consts: BTreeMap::new() }
    }
}

/// An expression checked against its inputs: the tree `eval` runs and the inputs' names in slot order.
#[derive(Debug, Clone, PartialEq)]
pub struct Checked {
    /// The checked tree.
    pub ir: Ir,
    /// The names of its inputs, in the slots `ir` reads.
    pub names: Vec<String>,
}

/// Parses `text` and checks it reading `inputs` (name and shape, in slot order) and `consts`;
/// errors carry the column inside the expression ("column 14: unknown function `lgo`, did you mean `log`?").
pub fn compile(text: &str, inputs: &[(String, Dims)], consts: &BTreeMap<String, f64>) -> std::result::Result<Checked, String> {
    compile_naming(text, inputs, consts, &[])
}

/// [`compile`], where `named` are all the earlier named outputs the expression could read
/// (an unknown name's message lists them and suggests the nearest).
pub fn compile_naming(text: &str, inputs: &[(String, Dims)], consts: &BTreeMap<String, f64>, named: &[String]) -> std::result::Result<Checked, String> {
    let ast = parse::parse(text).map_err(|e| e.to_string())?;
    let ir = Env { inputs, consts, named }.check(&ast).map_err(|e| e.to_string())?;
    Ok(Checked { ir, names: inputs.iter().map(|(n, _)| n.clone()).collect() })
}

/// Checks a preprocessing step's expression over `x`, the inputs of shape `input` (rows first):
/// it must keep that shape.
pub fn compile_step(text: &str, consts: &BTreeMap<String, f64>, input: &[Dim]) -> std::result::Result<Checked, String> {
    let checked = compile(text, &[("x".to_string(), input.to_vec())], consts)?;
    if checked.ir.dims != input {
        let (made, want) = (check::describe(&checked.ir.dims), check::describe(input));
        return Err(format!("the expression makes {made}, and a preprocessing step keeps the inputs' shape {want}"));
    }
    Ok(checked)
}

/// A layer's shape as the expression sees it: the batch first.
pub fn dims_of(s: Shape) -> Dims {
    let n = Dim::N;
    match s {
        Shape::Flat(w) => vec![Dim::Batch, n(w)],
        Shape::Seq { len, width } => vec![Dim::Batch, n(len), n(width)],
        Shape::Tokens { len, .. } => vec![Dim::Batch, n(len)],
        Shape::Image { channels, height, width } => vec![Dim::Batch, n(channels), n(height), n(width)],
    }
}

/// The layer shape of an expression's result, or why a layer cannot output it.
fn shape_of(d: &[Dim]) -> std::result::Result<Shape, String> {
    let fixed: Option<Vec<usize>> = d.iter().skip(1).map(|d| if let Dim::N(n) = d { Some(*n) } else { None }).collect();
    match (d.first(), fixed.as_deref()) {
        (Some(Dim::Batch), Some(&[w])) => Ok(Shape::Flat(w)),
        (Some(Dim::Batch), Some(&[len, width])) => Ok(Shape::Seq { len, width }),
        (Some(Dim::Batch), Some(&[channels, height, width])) => Ok(Shape::Image { channels, height, width }),
        _ => Err(format!(
            "the expression makes {}, and a layer outputs (batch, width), (batch, seq, width) or (batch, channels, height, width): reduce with keepdim=true, or reshape",
            check::describe(d)
        )),
    }
}

impl Expr {
    /// The names it reads besides `x` and its constants (earlier named outputs), in order of first use.
    pub fn reads(&self) -> Vec<String> {
        parse::parse(&self.expr).map(|a| a.names().into_iter().map(|(n, _)| n).filter(|n| n != "x" && !self.consts.contains_key(n) && funcs::builtin(n).is_none()).collect()).unwrap_or_default()
    }

    /// Checks it reading `x` of `x` and the named outputs `others` (in [`Expr::reads`]'s order).
    fn compiled(&self, x: Dims, others: Vec<Dims>) -> std::result::Result<Checked, String> {
        self.compiled_naming(x, self.reads().into_iter().zip(others).collect(), &[])
    }

    /// Checks it reading `x` of `x` and the named outputs `others` (name and shape), where
    /// `named` are all the outputs it could read.
    fn compiled_naming(&self, x: Dims, others: Vec<(String, Dims)>, named: &[String]) -> std::result::Result<Checked, String> {
        let inputs: Vec<(String, Dims)> = std::iter::once(("x".to_string(), x)).chain(others).collect();
        compile_naming(&self.expr, &inputs, &self.consts, named)
    }
}

/// A tensor's shape as the expression sees it (its first dimension the batch).
pub fn dims_of_tensor(t: &Tensor) -> Dims {
    t.dims().iter().enumerate().map(|(i, n)| if i == 0 { Dim::Batch } else { Dim::N(*n) }).collect()
}

/// The inputs in one dtype: theirs if they agree, else f32 (PyTorch promotes to the wider).
pub fn promoted(ts: Vec<Tensor>) -> Result<(Vec<Tensor>, DType)> {
    let d = ts.first().map_or(DType::F32, Tensor::dtype);
    if ts.iter().all(|t| t.dtype() == d) {
        return Ok((ts, d));
    }
    let up = ts.iter().map(|t| crate::run::kernel::cast::cast(t, DType::F32)).collect::<Result<Vec<_>>>()?;
    Ok((up, DType::F32))
}

impl Op for Expr {
    fn check(&self) -> Vec<(&'static str, String)> {
        let mut out = Vec::new();
        if let Err(e) = parse::parse(&self.expr) {
            out.push(("expr", e.to_string()));
        }
        for (k, v) in &self.consts {
            if !is_ident(k) || k == "x" || funcs::Func::named(k, 1).is_ok() {
                out.push(("consts", format!("`{k}` cannot name a constant: use a name of letters, digits and `_` that is not `x` or a function")));
            }
            if v.is_nan() {
                out.push(("consts", format!("`{k}` is NaN")));
            }
        }
        out
    }

    fn plan(&self, p: &mut Planner<'_>, input: Shape) -> std::result::Result<Shape, String> {
        let known = p.output_names();
        // A constant would hide the output of its name: refused at the constant.
        if let Some(k) = self.consts.keys().find(|k| known.contains(k)) {
            p.fail_at(&format!("consts.{k}"));
            return Err(format!("the constant `{k}` has the name of an earlier output (`name = \"{k}\"`): the expression could not tell them apart; rename one"));
        }
        let mut inputs = vec![p.input()];
        let mut others = Vec::new();
        for n in self.reads() {
            // An unknown name is reported by the check below, with its column.
            let Some((at, shape)) = p.output_named(&n) else { continue };
            inputs.push(at);
            others.push((n, dims_of(shape)));
        }
        let checked = self.compiled_naming(dims_of(input), others, &known)?;
        if let Some(missing) = self.reads().into_iter().find(|n| !known.contains(n)) {
            return Err(format!("unknown name `{missing}`"));
        }
        fold::unfolded(&checked.ir).map_err(|e| e.to_string())?;
        let out = shape_of(&checked.ir.dims)?;
        p.node(Part::Whole, "", &inputs, out);
        Ok(out)
    }

    fn held(&self, _: Shape, _: Shape, values: u128) -> u128 {
        // Each operator keeps an output of about the node's size for the backward.
        let ops = parse::parse(&self.expr).map_or(1, |a| {
            let mut n = 0u128;
            a.walk(&mut |_| n += 1);
            n
        });
        values.saturating_mul(ops.max(1))
    }

    fn levels(&self) -> (u64, u64) {
        let ops = parse::parse(&self.expr).map_or(1, |a| {
            let mut n = 0u64;
            a.walk(&mut |_| n += 1);
            n
        });
        (4 * ops.max(1), 0)
    }

    fn dropout(&self) -> f64 {
        0.0
    }

    fn forward(&self, x: &Tensor, cx: &Cx<'_>) -> Result<Tensor> {
        let all: Vec<Tensor> = std::iter::once(x.clone()).chain(cx.others.iter().cloned()).collect();
        let checked =
            |all: &[Tensor]| self.compiled(dims_of_tensor(&all[0]), all[1..].iter().map(dims_of_tensor).collect()).map_err(|m| crate::ops::unplanned(format!("expression `{}`: {m}", self.expr)));
        match cx.inner {
            // Under autocast each node computes in its own dtype, as PyTorch runs each op (`amp.rs`).
            Inner::Cast(low) => amp::eval(&checked(&all)?.ir, &all, low),
            Inner::Off | Inner::Round(_) => {
                let (all, dtype) = promoted(all)?;
                eval::eval(&checked(&all)?.ir, &all, dtype)
            }
        }
    }

    /// On no list as a whole: under autocast each of its nodes has its own class (`amp.rs`).
    fn autocast(&self, _: Part) -> Autocast {
        Autocast::Same
    }

    /// It reads its inputs as tensors of the dtypes PyTorch holds them in, and rounds at every
    /// node inside (`amp.rs`); its output's dtype is its result's.
    fn rounding(&self, _: Part) -> Rounding {
        Rounding::HalfTensors
    }

    /// Explained by `run::cause` from all its inputs, node by node (`diagnosis.rs`).
    fn explain_forward(&self, _: Part, _: &super::Facts<'_>) -> super::Explained {
        None
    }

    /// Explained by `run::cause::backward` from all its inputs, node by node (`diagnosis.rs`).
    fn explain_backward(&self, _: &super::Facts<'_>) -> super::Explained {
        None
    }

    fn explain_zeros(&self, _: usize, _: usize) -> super::Explained {
        None
    }

    fn torch(&self) -> Torch {
        let text = parse::parse(&self.expr).map(|a| torch::python(&a, &self.consts, "x")).unwrap_or_else(|e| format!("None  # {e}"));
        Torch::Expr(text)
    }
}

/// Parses, checks and (if it checks) evaluates `text` over `x` of shape (2, 3), `h` of shape
/// (2, 2, 3) and a constant `eps`: the fuzz target's body (`fuzz/fuzz_targets/expr.rs`), which
/// must never panic. Returns whether it evaluated.
pub fn fuzz_one(text: &str) -> bool {
    let consts = BTreeMap::from([("eps".to_string(), 1e-12)]);
    let inputs = [("x".to_string(), vec![Dim::Batch, Dim::N(3)]), ("h".to_string(), vec![Dim::Batch, Dim::N(2), Dim::N(3)])];
    let Ok(c) = compile(text, &inputs, &consts) else { return false };
    let dev = candle_core::Device::Cpu;
    let (Ok(x), Ok(h)) = (Tensor::arange(-3f32, 3.0, &dev).and_then(|t| t.reshape((2, 3))), Tensor::arange(-6f32, 6.0, &dev).and_then(|t| t.reshape((2, 2, 3)))) else { return false };
    eval::eval(&c.ir, &[x, h], DType::F32).is_ok()
}

/// Whether `s` is a name of the language: a letter or `_`, then letters, digits and `_`.
pub fn is_ident(s: &str) -> bool {
    let mut c = s.chars();
    c.next().is_some_and(|f| f.is_ascii_alphabetic() || f == '_') && c.all(|c| c.is_ascii_alphanumeric() || c == '_')
}
