//! `kind = "expr"`: a loss written as an expression (`ops::expr`) of `p` (the predictions),
//! `y` (the targets) and, when the data is padded, `mask` (1 at real positions), with its
//! `consts`, reduced by the expression itself to one number, e.g. a focal loss
//! `mean(-y * (1 - p)**gamma * log(p) - (1 - y) * p**gamma * log(1 - p))`.

use candle_core::Tensor;

use crate::error::{Error, Result};
use crate::ops::expr::check::Dims;
use crate::ops::expr::{compile, dims_of_tensor, eval, parse, promoted, torch, Checked};
use crate::scenario::LossSpec;

/// The expression's text (empty if absent: `check` refuses that).
fn text(s: &LossSpec) -> &str {
    s.expr.as_deref().unwrap_or("")
}

/// Checks the loss expression reading `p`, `y` and `mask` (if the data is padded) of these
/// shapes: it must give one number.
pub fn checked(s: &LossSpec, p: Dims, y: Dims, mask: Option<Dims>) -> std::result::Result<Checked, String> {
    let mut inputs = vec![("p".to_string(), p), ("y".to_string(), y)];
    inputs.extend(mask.map(|m| ("mask".to_string(), m)));
    let c = compile(text(s), &inputs, &s.consts)?;
    if !c.ir.dims.is_empty() {
        return Err(format!("column 1: the loss expression makes {}, and a loss is one number: reduce it with mean(...) or sum(...)", crate::ops::expr::check::describe(&c.ir.dims)));
    }
    Ok(c)
}

/// The loss of predictions `p` against targets `y` (and the padding `mask`, if any).
pub fn apply(s: &LossSpec, p: &Tensor, y: &Tensor, mask: Option<&Tensor>) -> Result<Tensor> {
    let mut all = vec![p.clone(), y.clone()];
    all.extend(mask.cloned());
    let (all, dtype) = promoted(all)?;
    let c = checked(s, dims_of_tensor(&all[0]), dims_of_tensor(&all[1]), all.get(2).map(dims_of_tensor)).map_err(|message| Error::Invalid { location: "loss".into(), key: "expr".into(), message })?;
    eval::eval(&c.ir, &all, dtype)
}

/// Its problems as the loss's `check` reports them.
pub fn problems(s: &LossSpec) -> Vec<(&'static str, String)> {
    match &s.expr {
        None => vec![("expr", "a loss of kind `expr` needs `expr = \"...\"` (an expression of p, y and mask)".into())],
        Some(t) => parse::parse(t).err().map(|e| ("expr", e.to_string())).into_iter().collect(),
    }
}

/// Its PyTorch expression of `p`, `y` (and `mask`).
pub fn torch_expr(s: &LossSpec) -> String {
    parse::parse(text(s)).map(|a| torch::python(&a, &s.consts, "p")).unwrap_or_else(|e| format!("None  # {e}"))
}
