//! Why an expression (an `expr` layer or a `[loss] expr`) made a non-finite value or gradient:
//! it is evaluated again node by node, in the dtype it ran in, on the inputs of the failing
//! step, each node from its operands' values by `eval` (so with PyTorch's forward and
//! backward), and the first sub-expression at fault is named by its text and column, with the
//! rule the registry's elementwise ops use for that function (`log` of 0, `sqrt` of a negative,
//! `rsqrt`'s derivative at 0 times a zero gradient, `x / 0`, `exp` past ln(max), ...).
//!
//! An operand that is another input than `x`, `p` or `y` is named with its value: an earlier
//! layer's named output (`a / b` where `b` is 0), or the padding `mask` (`sum(mask)` is 0 when
//! every position of the batch is padding).
//!
//! Forward: from the result down, the non-finite node whose operands are all finite. Backward:
//! from the result's gradient down, the first node whose operand's gradient is non-finite while
//! the gradient arriving at the node is finite (a `where`'s unselected branch receives 0 there,
//! and `0 · ∞` is NaN, as in PyTorch's autograd). Its rule is how the dtype lost the value, as
//! the f64 verdict classes it: a derivative infinite at exactly 0 is `zero_times_inf` (the 0 an
//! underflow where a wider dtype keeps it), a value that overflowed to ∞ (the unselected
//! `exp(x)` above ln(max)) is an `overflow`.
//!
//! Under autocast ([`explain_amp`]) each node is evaluated in its own dtype, as `amp.rs` runs
//! it, so the node named may be an overflow of the low dtype (`x * x` past f16's 65504), and
//! each rule reads the limits of its node's dtype.

use candle_core::{DType, Tensor, Var};

use super::amp::{Amp, Value};
use super::ast::{Ast, BinOp, Kind};
use super::check::{Ir, IrOp};
use super::eval::{alone, eval, operands};
use super::funcs::Func;
use crate::error::Result;
use crate::ops::diagnosis::{Limits, Rule};
use crate::ops::{Explained, Facts};
use crate::scenario::DTypeName;

/// One node of the expression, evaluated.
struct Node<'a> {
    ir: &'a Ir,
    /// Its text as written (the parse tree's), or the checked node's if none matches.
    text: String,
    value: Tensor,
    /// Its dtype under autocast (`None`: a number, which does not promote).
    kind: Option<DType>,
    /// Its operands' indices in the tape.
    kids: Vec<usize>,
    parent: Option<usize>,
}

/// The expression's nodes, operands before the node that reads them (the result last).
struct Tape<'a> {
    nodes: Vec<Node<'a>>,
    dtype: DTypeName,
    /// The inputs' names, by slot (`x`, `p`, `y`, `mask`, a named output).
    names: &'a [String],
    /// The inputs, by slot.
    inputs: &'a [Tensor],
    /// Autocast, node by node (`amp.rs`), if the expression ran under it.
    amp: Option<Amp>,
}

/// The parse tree's operands matching `operands(ir)`, where the shapes agree.
fn ast_operands<'a>(ast: Option<&'a Ast>, ir: &Ir) -> Vec<Option<&'a Ast>> {
    let n = operands(ir).len();
    let found: Vec<&Ast> = match (ast.map(|a| &a.kind), &ir.op) {
        (Some(Kind::Neg(a)), IrOp::Neg(_)) | (Some(Kind::Bin(BinOp::Pow, a, _)), IrOp::Pow(..)) => vec![a],
        (Some(Kind::Bin(_, a, b)), IrOp::Bin(..)) => vec![a, b],
        (Some(Kind::Call(_, args, _)), IrOp::Call(..)) => args.iter().take(n).collect(),
        _ => Vec::new(),
    };
    (0..n).map(|i| found.get(i).copied()).collect()
}

impl<'a> Tape<'a> {
    /// Evaluates `ir` (parsed as `ast`) over `inputs` (named `names`) node by node.
    fn new(ir: &'a Ir, ast: Option<&'a Ast>, (names, inputs): (&'a [String], &'a [Tensor]), dtype: DTypeName, amp: Option<Amp>) -> Result<Self> {
        let mut t = Tape { nodes: Vec::new(), dtype, names, inputs, amp };
        t.push(ir, ast, inputs)?;
        Ok(t)
    }

    fn push(&mut self, ir: &'a Ir, ast: Option<&'a Ast>, inputs: &[Tensor]) -> Result<usize> {
        let kids = operands(ir).into_iter().zip(ast_operands(ast, ir)).map(|(k, a)| self.push(k, a, inputs)).collect::<Result<Vec<_>>>()?;
        let dt = inputs.first().map_or(DType::F32, Tensor::dtype);
        let (value, kind) = match (&self.amp, &ir.op) {
            (Some(amp), IrOp::Input(_) | IrOp::Const(_)) => amp.value(ir, &Amp::values(inputs)?).map(|v| (v.t, v.dtype))?,
            (Some(amp), IrOp::Neg(_) | IrOp::Pow(..) | IrOp::Bin(..) | IrOp::Call(..)) => {
                let vals = kids.iter().map(|&k| self.value(k, self.nodes[k].value.clone())).collect::<Vec<_>>();
                amp.node(ir, &vals).map(|v| (v.t, v.dtype))?
            }
            (None, IrOp::Input(_) | IrOp::Const(_)) => (eval(ir, inputs, dt)?, Some(dt)),
            (None, IrOp::Neg(_) | IrOp::Pow(..) | IrOp::Bin(..) | IrOp::Call(..)) => {
                let vals: Vec<Tensor> = kids.iter().map(|&k| self.nodes[k].value.clone()).collect();
                (eval(&alone(ir), &vals, dt)?, Some(dt))
            }
        };
        let text = ast.map_or_else(|| format!("node at column {}", ir.col), |a| a.to_string());
        let me = self.nodes.len();
        for &k in &kids {
            self.nodes[k].parent = Some(me);
        }
        self.nodes.push(Node { ir, text, value, kind, kids, parent: None });
        Ok(me)
    }

    /// Node `k`'s value as `t` (its own tensor, or a variable of it), with its dtype under autocast.
    fn value(&self, k: usize, t: Tensor) -> Value {
        Value { t, dtype: self.nodes[k].kind }
    }

    /// The dtype whose limits node `k`'s rules read: its own under autocast, else the run's.
    fn dtype_of(&self, k: usize) -> DTypeName {
        match (self.amp, self.nodes[k].value.dtype()) {
            (None, _) => self.dtype,
            (Some(_), DType::F16) => DTypeName::F16,
            (Some(_), DType::BF16) => DTypeName::Bf16,
            (Some(_), DType::F64) => DTypeName::F64,
            (Some(_), _) => DTypeName::F32,
        }
    }

    /// The gradients of node `k`'s operands when `g` arrives at its output (PyTorch's backward of the node alone).
    fn local_grads(&self, k: usize, g: &Tensor) -> Result<Vec<Option<Tensor>>> {
        let n = &self.nodes[k];
        let vars = n.kids.iter().map(|&c| Var::from_tensor(&self.nodes[c].value)).collect::<candle_core::Result<Vec<_>>>()?;
        let ts: Vec<Tensor> = vars.iter().map(|v| v.as_tensor().clone()).collect();
        let out = match &self.amp {
            Some(amp) => amp.node(n.ir, &n.kids.iter().zip(&ts).map(|(&c, t)| self.value(c, t.clone())).collect::<Vec<_>>())?.t,
            None => eval(&alone(n.ir), &ts, n.value.dtype())?,
        };
        let store = out.broadcast_mul(g)?.sum_all()?.backward()?;
        Ok(vars.iter().map(|v| store.get(v.as_tensor()).cloned()).collect())
    }

    /// `"`text` (column c)"`.
    fn name(&self, k: usize) -> String {
        format!("`{}` (column {})", self.nodes[k].text, self.nodes[k].ir.col)
    }

    /// The slots node `k` reads, in order of first use.
    fn reads(&self, k: usize) -> Vec<usize> {
        fn walk(ir: &Ir, out: &mut Vec<usize>) {
            if let IrOp::Input(i) = ir.op {
                if !out.contains(&i) {
                    out.push(i);
                }
            }
            operands(ir).into_iter().for_each(|a| walk(a, out));
        }
        let mut out = Vec::new();
        walk(self.nodes[k].ir, &mut out);
        out
    }

    /// What node `k`'s value `v` owes to the inputs that are not the expression's own `x`, `p`
    /// or `y`: `": `b` is 0: the output of the layer named `b`"`, or for the padding mask,
    /// which rows of it are all padding. Empty if it reads none.
    fn source(&self, k: usize, v: f64) -> String {
        let itself = matches!(self.nodes[k].ir.op, IrOp::Input(_));
        let notes: Vec<String> = self
            .reads(k)
            .into_iter()
            .filter_map(|i| match self.names.get(i).map(String::as_str) {
                None | Some("x" | "p" | "y") => None,
                Some("mask") => Some(padding(&self.inputs[i])),
                Some(n) if itself => Some(format!("the output of the layer named `{n}`")),
                Some(n) => Some(format!("it reads `{n}`, the output of the layer named `{n}`")),
            })
            .collect();
        if notes.is_empty() {
            return String::new();
        }
        format!(": `{}` is {}: {}", self.nodes[k].text, crate::human(v), notes.join("; "))
    }
}

/// How much of a padding mask `(batch, seq)` is padding: all of it, or its first all-padding row.
fn padding(mask: &Tensor) -> String {
    let Ok(rows) = mask.to_dtype(DType::F64).and_then(|m| m.to_vec2::<f64>()) else { return "it reads the padding mask".into() };
    let empty: Vec<usize> = rows.iter().enumerate().filter(|(_, r)| r.iter().all(|v| *v == 0.0)).map(|(i, _)| i).collect();
    match empty.first() {
        Some(_) if empty.len() == rows.len() => "every position of the batch is padding (the mask is all 0)".into(),
        Some(r) => format!("row {r} of the batch is all padding ({} of {} rows are)", empty.len(), rows.len()),
        None => "it reads the padding mask".into(),
    }
}

/// A tensor's values as f64.
fn values(t: &Tensor) -> Result<Vec<f64>> {
    Ok(t.flatten_all()?.to_dtype(DType::F64)?.to_vec1::<f64>()?)
}

/// The first non-finite element's index.
fn first_bad(t: &Tensor) -> Result<Option<usize>> {
    Ok(values(t)?.iter().position(|v| !v.is_finite()))
}

/// `t` at flat index `i` of `like`'s shape, if it broadcasts to it.
fn at(t: &Tensor, like: &Tensor, i: usize) -> Option<f64> {
    let b = t.broadcast_as(like.shape()).ok()?;
    values(&b).ok()?.get(i).copied()
}

/// Why `text` (the expression as written) made a non-finite value over `inputs` (in the
/// slots `ir` reads, named `names`), in `dtype`: the first sub-expression at fault and its rule.
fn forward(text: &str, ir: &Ir, inputs: (&[String], &[Tensor]), (dtype, amp): (DTypeName, Option<Amp>)) -> Result<Explained> {
    let ast = super::parse::parse(text).ok();
    let tape = Tape::new(ir, ast.as_ref(), inputs, dtype, amp)?;
    let Some(mut k) = tape.nodes.len().checked_sub(1) else { return Ok(None) };
    if first_bad(&tape.nodes[k].value)?.is_none() {
        return Ok(None);
    }
    // Down the non-finite operands to the node that made a non-finite value from finite ones.
    'down: loop {
        for &c in &tape.nodes[k].kids {
            if first_bad(&tape.nodes[c].value)?.is_some() {
                k = c;
                continue 'down;
            }
        }
        break;
    }
    let Some(e) = first_bad(&tape.nodes[k].value)? else { return Ok(None) };
    Ok(forward_rule(&tape, k, e))
}

/// The rule for node `k`'s non-finite value at element `e` from finite operands.
fn forward_rule(tape: &Tape<'_>, k: usize, e: usize) -> Explained {
    let n = &tape.nodes[k];
    let xs: Vec<Option<f64>> = n.kids.iter().map(|&c| at(&tape.nodes[c].value, &n.value, e)).collect();
    let x = xs.first().copied().flatten().unwrap_or(f64::NAN);
    let v = values(&n.value).ok().and_then(|v| v.get(e).copied()).unwrap_or(f64::NAN);
    let d = tape.dtype_of(k);
    let (dt, lim) = (<&str>::from(d), Limits::of(d));
    let name = tape.name(k);
    let h = crate::human;
    // A named loss explains its own formula (`ops::loss::explain`, told whether the call reduces
    // to one number: its kind decides what it can say then), as the `[loss] kind` of its name.
    if let (IrOp::Call(_, _, b), &[p, y, ref mask @ ..]) = (&n.ir.op, &n.kids[..]) {
        if let Some(call) = b.loss.as_deref() {
            let mask = mask.first().map(|&m| &tape.nodes[m].value);
            let scalar = call.reduce == super::losses::Reduce::Scalar;
            if let Ok(Some((rule, why, _))) = crate::ops::loss::explain(&call.spec, &tape.nodes[p].value, &tape.nodes[y].value, mask, tape.dtype, scalar) {
                return Some((rule, format!("{name}: {why}")));
            }
        }
    }
    let found = match &n.ir.op {
        IrOp::Call(Func::Log, ..) if x == 0.0 => (Rule::LogOfZero, format!("log of exactly 0 at {name}, element {e}: it is −∞{}", tape.source(n.kids[0], x))),
        IrOp::Call(Func::Log1p, ..) if x == -1.0 => (Rule::LogOfZero, format!("log1p of exactly −1 (log of 0) at {name}, element {e}: it is −∞")),
        IrOp::Call(f @ (Func::Log | Func::Sqrt | Func::Rsqrt), ..) if x < 0.0 => {
            (Rule::OutsideDomain, format!("{} of a negative number {} at {name}, element {e}: NaN{}", <&str>::from(*f), h(x), tape.source(n.kids[0], x)))
        }
        IrOp::Call(Func::Log1p, ..) if x < -1.0 => (Rule::OutsideDomain, format!("log1p of {} (below −1) at {name}, element {e}: NaN", h(x))),
        IrOp::Call(Func::Rsqrt, ..) if x == 0.0 => (Rule::DivisionByZero, format!("rsqrt of exactly 0 at {name}, element {e}: 1/√0 = +∞{}", tape.source(n.kids[0], x))),
        IrOp::Call(Func::Exp, ..) if x > lim.max.ln() => (Rule::Overflow, format!("exp at {name} of {} at element {e}, above ln(max) = {} of {dt}: it overflows to +∞", h(x), h(lim.max.ln()))),
        IrOp::Pow(_, p) if x == 0.0 && *p < 0.0 => (Rule::DivisionByZero, format!("{name}: 0 to the power {} at element {e} divides by 0", h(*p))),
        IrOp::Pow(_, p) if x < 0.0 && p.fract() != 0.0 => (Rule::OutsideDomain, format!("{name}: the negative base {} to the fractional power {} at element {e} is NaN", h(x), h(*p))),
        IrOp::Bin(BinOp::Div, ..) if xs.get(1).copied().flatten() == Some(0.0) => {
            let what = if x == 0.0 { "0 / 0 = NaN" } else { "x / 0 = ±∞" };
            (Rule::DivisionByZero, format!("division by exactly 0 at {name}, element {e}: {what}{}", tape.source(n.kids[1], 0.0)))
        }
        _ if v.is_infinite() => (Rule::Overflow, format!("{name} is {} at element {e} from finite operands: beyond {dt}'s largest value {}", h(v), h(lim.max))),
        _ => return None,
    };
    Some(found)
}

/// Why the gradient of `text`'s inputs (named, as [`forward`]'s) went non-finite when
/// `upstream` (finite, in the result's shape) arrives at its result: the first node whose
/// operand's gradient is non-finite, and its rule.
fn backward(text: &str, ir: &Ir, inputs: (&[String], &[Tensor]), upstream: &Tensor, (dtype, amp): (DTypeName, Option<Amp>)) -> Result<Explained> {
    let ast = super::parse::parse(text).ok();
    let tape = Tape::new(ir, ast.as_ref(), inputs, dtype, amp)?;
    let Some(root) = tape.nodes.len().checked_sub(1) else { return Ok(None) };
    let mut grads: Vec<Option<Tensor>> = vec![None; tape.nodes.len()];
    grads[root] = Some(upstream.to_dtype(tape.nodes[root].value.dtype())?.broadcast_as(tape.nodes[root].value.shape())?.contiguous()?);
    // Parents come after their operands on the tape: walking it backward visits each node after its reader.
    for k in (0..tape.nodes.len()).rev() {
        let Some(g) = grads[k].clone() else { continue };
        if tape.nodes[k].kids.is_empty() {
            continue;
        }
        for (i, gc) in tape.local_grads(k, &g)?.into_iter().enumerate() {
            let c = tape.nodes[k].kids[i];
            let Some(gc) = gc else { continue };
            if let Some(e) = first_bad(&gc)? {
                return Ok(backward_rule(&tape, (k, c), (&g, &gc), e));
            }
            grads[c] = Some(gc);
        }
    }
    Ok(None)
}

/// The rule for node `k`'s backward making operand `c`'s gradient `gc` non-finite at element
/// `e` from the finite `g` arriving.
fn backward_rule(tape: &Tape<'_>, (k, c): (usize, usize), (g, gc): (&Tensor, &Tensor), e: usize) -> Explained {
    let n = &tape.nodes[k];
    let x = at(&tape.nodes[c].value, gc, e).unwrap_or(f64::NAN);
    let v = at(&n.value, gc, e);
    let gi = at(g, gc, e).unwrap_or(f64::NAN);
    let name = tape.name(k);
    // The gradient overflows in its operand's dtype; a derivative is its node's.
    let (d, dc) = (tape.dtype_of(k), tape.dtype_of(c));
    let (dt, lim, h) = (<&str>::from(dc), Limits::of(dc), crate::human);
    let unselected = if gi == 0.0 { unselected_by(tape, k) } else { String::new() };
    let derivative = match &n.ir.op {
        IrOp::Call(Func::Sqrt, ..) => Some("sqrt's derivative 1/(2√x)".to_string()),
        IrOp::Call(Func::Rsqrt, ..) => Some("rsqrt's derivative −1/(2x√x)".to_string()),
        IrOp::Call(Func::Log, ..) => Some("log's derivative 1/x".to_string()),
        IrOp::Pow(_, p) if *p < 1.0 => Some(format!("the derivative of x**{} ({}·x**{})", h(*p), h(*p), h(p - 1.0))),
        _ => None,
    };
    if let Some(derivative) = derivative {
        if let Some((rule, why)) = crate::ops::infinite_at_zero(&derivative, &Facts::at(x, gi, d)) {
            return Some((rule, format!("in the backward of {name}, element {e}: {why}{unselected}")));
        }
    }
    let found = match &n.ir.op {
        // The dtype lost the value to its range: exp's +∞ is an overflow (finite in a wider dtype),
        // which the exact 0 arriving makes NaN; the verdict's class, an overflow, says the same.
        IrOp::Call(Func::Exp, ..) if v.is_some_and(f64::is_infinite) && gi == 0.0 => (
            Rule::Overflow,
            format!(
                "in the backward of {name}, element {e}: exp({}) overflowed {dt} to +∞ (above ln(max) = {}), and the gradient arriving is exactly 0{unselected}: 0 · ∞ is NaN",
                h(x),
                h(lim.max.ln())
            ),
        ),
        IrOp::Bin(BinOp::Div, ..) if at(&tape.nodes[n.kids[1]].value, gc, e) == Some(0.0) => {
            (Rule::DivisionByZero, format!("in the backward of {name}, element {e}: the derivative divides by the divisor, exactly 0{}", tape.source(n.kids[1], 0.0)))
        }
        _ => {
            let bad = at(gc, gc, e).unwrap_or(f64::NAN);
            if bad.is_infinite() {
                (
                    Rule::Overflow,
                    format!("in the backward of {name}, element {e}: the gradient of its operand is {} from finite values (arriving {}), beyond {dt}'s largest value {}", h(bad), h(gi), h(lim.max)),
                )
            } else if gi == 0.0 && v.is_some_and(f64::is_infinite) {
                (Rule::Overflow, format!("in the backward of {name}, element {e}: its value overflowed {dt} to ±∞ and the gradient arriving is exactly 0{unselected}: 0 · ∞ is NaN"))
            } else {
                return None;
            }
        }
    };
    Some(found)
}

/// `", because `where` ... does not select it here"` if node `k` is under a `where`'s branch.
fn unselected_by(tape: &Tape<'_>, mut k: usize) -> String {
    while let Some(p) = tape.nodes[k].parent {
        if matches!(tape.nodes[p].ir.op, IrOp::Call(Func::Where, ..)) && tape.nodes[p].kids.first() != Some(&k) {
            return format!(" (the branch {} of {} that it does not select here: PyTorch's autograd still multiplies its 0 through)", tape.name(k), tape.name(p));
        }
        k = p;
    }
    String::new()
}

/// Why the expression `text` (with `consts`) over the named `inputs` made a non-finite value
/// (`upstream` None) or a non-finite input gradient when `upstream` arrives at its result, in
/// `dtype`. None if it does not check against these inputs (it reads a name not given).
pub fn explain<S: AsRef<str>>(text: &str, consts: &std::collections::BTreeMap<String, f64>, inputs: &[(S, &Tensor)], upstream: Option<&Tensor>, dtype: DTypeName) -> Result<Explained> {
    let (ts, _) = super::promoted(inputs.iter().map(|(_, t)| (*t).clone()).collect())?;
    explain_tensors(text, consts, (inputs, ts), upstream, (dtype, None))
}

/// [`explain`] for an expression that ran under autocast to `low` (`amp.rs`), whose inputs hold
/// the dtypes `holds` (in f32 storage they may be f32 tensors of low values): each node in its own dtype.
pub fn explain_amp<S: AsRef<str>>(
    text: &str,
    consts: &std::collections::BTreeMap<String, f64>,
    inputs: &[(S, &Tensor)],
    upstream: Option<&Tensor>,
    (low, holds): (DType, &[DType]),
) -> Result<Explained> {
    let ts = inputs.iter().enumerate().map(|(i, (_, t))| crate::run::kernel::cast::cast(t, holds.get(i).copied().unwrap_or(t.dtype()))).collect::<Result<Vec<_>>>()?;
    let amp = Amp::of(&ts, low);
    let dtype = if low == DType::BF16 { DTypeName::Bf16 } else { DTypeName::F16 };
    explain_tensors(text, consts, (inputs, ts), upstream, (dtype, Some(amp)))
}

/// [`explain`] over the inputs' tensors `ts` as the expression read them.
fn explain_tensors<S: AsRef<str>>(
    text: &str,
    consts: &std::collections::BTreeMap<String, f64>,
    (inputs, ts): (&[(S, &Tensor)], Vec<Tensor>),
    upstream: Option<&Tensor>,
    how: (DTypeName, Option<Amp>),
) -> Result<Explained> {
    let named: Vec<(String, super::check::Dims)> = inputs.iter().zip(&ts).map(|((n, _), t)| (n.as_ref().to_string(), super::dims_of_tensor(t))).collect();
    let Ok(c) = super::compile(text, &named, consts) else { return Ok(None) };
    match upstream {
        None => forward(text, &c.ir, (&c.names, &ts), how),
        Some(g) => backward(text, &c.ir, (&c.names, &ts), g, how),
    }
}

#[cfg(test)]
#[path = "diagnosis_tests.rs"]
mod tests;
