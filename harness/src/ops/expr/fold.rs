//! Reshapes, which may fold the batch with other dimensions: `reshape(p, (-1, V))` of
//! `(batch, T, V)` is `(batch*T, V)` ([`Dim::Folded`]) and `reshape(z, (-1, T))` of `(batch*T,)`
//! is `(batch, T)` again, as a language model's loss is written
//! (`F.cross_entropy(logits.view(-1, V), labels.view(-1))`). The `-1` comes first: the check
//! runs before the batch size is known. A layer's output must hold the batch unfolded
//! ([`unfolded`]); a loss expression may fold anywhere.

use super::ast::Problem;
use super::check::{describe, Bound, Dim, Dims, Ir, IrOp};
use super::funcs::{Func, Value};

/// The most dimensions a tensor may have: Candle's strided iteration takes at most 8
/// (`candle_core::nditer`'s `MAX_DIMS`) and panics past it.
const MAX_RANK: usize = 8;

/// A reshape: its shape's first entry must be -1, the dimension holding the batch, which
/// PyTorch infers; the sizes after it must divide the elements per batch row, so the result
/// holds the batch times their quotient (`(-1, 64)` of `(batch, 32, 64)` is `(batch*32, 64)`,
/// `(-1, 32)` of `(batch*32,)` is `(batch, 32)` again).
pub(super) fn reshape(x: &[Dim], b: &mut Bound, col: usize) -> Result<Dims, Problem> {
    let shape = match b.params.given.get("shape") {
        Some(Value::Tuple(t)) => t.clone(),
        Some(Value::Num(v)) => vec![*v],
        Some(Value::Bool(_) | Value::Str(_)) | None => return Err(Problem { col, message: "a reshape's shape is a tuple of sizes, e.g. (-1, 4)".into() }),
    };
    let rows: Vec<usize> = x.iter().filter_map(|d| d.rows()).collect();
    let [k] = rows[..] else {
        return Err(Problem { col, message: format!("nanhunt reshapes a tensor that holds the batch in one dimension, and the input is {}", describe(x)) });
    };
    // Checked: a huge size (`2**18888**3` is inf, cast to usize::MAX) must not overflow a product.
    let per = x.iter().try_fold(k, |p, d| if let Dim::N(n) = d { p.checked_mul(*n) } else { Some(p) });
    let rest = shape.iter().skip(1).copied();
    if shape.first() != Some(&-1.0) || rest.clone().any(|v| v == -1.0) {
        let per = per.map_or_else(|| "the elements per batch row".into(), |n| n.to_string());
        return Err(Problem {
            col,
            message: format!("write the shape as (-1, sizes...), the -1 first: nanhunt checks shapes before it knows the batch size (and the last batch may be smaller), so the dimension PyTorch infers must be the one holding the batch (the input is {}, {per} elements per batch row)", describe(x)),
        });
    }
    let asked = rest.clone().try_fold(1usize, |p, v| if v >= 1.0 && v.fract() == 0.0 { p.checked_mul(v as usize) } else { None });
    let (Some(per), Some(asked)) = (per, asked) else {
        return Err(Problem { col, message: format!("a reshape's sizes after -1 are whole numbers of at least 1 (the input is {})", describe(x)) });
    };
    if per % asked != 0 {
        return Err(Problem {
            col,
            message: format!(
                "the sizes after -1 multiply to {asked}, which does not divide the {per} elements per batch row of {}: write (-1, sizes...) whose sizes multiply to {per} or a divisor of it",
                describe(x)
            ),
        });
    }
    if shape.len() > MAX_RANK {
        return Err(Problem { col, message: format!("a reshape to {} dimensions: nanhunt's tensors have at most {MAX_RANK} (Candle's limit)", shape.len()) });
    }
    b.shape = rest.map(|v| v as usize).collect();
    Ok(std::iter::once(Dim::batch_times(per / asked)).chain(b.shape.iter().map(|n| Dim::N(*n))).collect())
}

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
