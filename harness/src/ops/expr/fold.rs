//! A folded batch in a layer's output: reshapes may fold the batch with other dimensions
//! (`reshape(p, (-1, V))` of `(batch, T, V)` is `(batch*T, V)`, [`Dim::Folded`], checked in
//! `check.rs`), as a language model's loss is written (`F.cross_entropy(logits.view(-1, V),
//! labels.view(-1))`); a loss expression may fold anywhere, but a layer's output must hold the
//! batch unfolded ([`unfolded`]). Its tests cover the folding reshape as a whole.

use super::ast::Problem;
use super::check::{describe, Dim, Ir, IrOp};
use super::funcs::Func;

/// Refuses a layer's result that holds a folded batch (`(batch*32, 64)`), at the column of the
/// reshape that folded it: a layer's output keeps the batch first, unfolded, since the next
/// layers, the targets and the watch's per-row views read rows of the batch. A fold inside the
/// expression, reshaped back, is fine; the loss expression may fold anywhere.
pub fn unfolded(ir: &Ir) -> Result<(), Problem> {
    let folded = |d: &[Dim]| d.iter().any(|d| matches!(d, Dim::Folded(_)));
    if !folded(&ir.dims) {
        return Ok(());
    }
    // Down the chain of folded operands to the reshape that made the fold.
    let mut at = ir;
    while !matches!(at.op, IrOp::Call(Func::Reshape, ..)) {
        match super::eval::operands(at).into_iter().find(|a| folded(&a.dims)) {
            Some(a) => at = a,
            None => break,
        }
    }
    let back = match ir.dims.first() {
        Some(Dim::Folded(k)) => format!(": reshape back with (-1, {k}{})", ir.dims[1..].iter().map(|d| format!(", {}", d.word())).collect::<String>()),
        Some(Dim::Batch | Dim::N(_)) | None => String::new(),
    };
    Err(Problem {
        col: at.col,
        message: format!(
            "the expression makes {}, and a layer's output keeps the batch first, unfolded (the next layers, the targets and the watch read rows of the batch){back}, or fold the batch in the loss expression",
            describe(&ir.dims)
        ),
    })
}

#[cfg(test)]
#[path = "fold_tests.rs"]
mod tests;
