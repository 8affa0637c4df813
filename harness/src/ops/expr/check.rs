//! Checking an expression before anything runs: names resolved (the inputs, then `consts`),
//! calls bound to their functions, and every node's shape worked out with PyTorch's
//! broadcasting, the batch dimension kept symbolic (also when a reshape folds it with other
//! dimensions, `reshape(p, (-1, V))` of `(batch, T, V)` making `(batch*T, V)`). The result is
//! the tree `eval` runs.

use std::collections::BTreeMap;

pub use super::ast::Problem;
use super::ast::{Ast, BinOp, Kind};
use super::funcs::{arith, builtin, nearest, Family, Func, Params, Value};
use super::losses::{self, LossCall, Reads, Reduce};

/// One dimension of a shape: the batch (whatever its size), the batch folded with known
/// sizes, or a known size.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dim {
    /// The batch dimension.
    Batch,
    /// The batch times a known factor of 2 or more: `reshape(p, (-1, V))` of `(batch, T, V)`
    /// makes `(batch*T, V)` (`Folded(T)`). The batch's size is not known when the check runs
    /// (and the last batch may be smaller), so it broadcasts only with the same fold or 1.
    Folded(usize),
    /// A known size.
    N(usize),
}

impl Dim {
    /// How many times the batch it holds: 1 for the batch, `k` for a fold of `k`, `None` for a known size.
    pub fn rows(self) -> Option<usize> {
        match self {
            Dim::Batch => Some(1),
            Dim::Folded(k) => Some(k),
            Dim::N(_) => None,
        }
    }

    /// The batch times `k`: the batch itself for 1.
    fn batch_times(k: usize) -> Dim {
        if k == 1 {
            Dim::Batch
        } else {
            Dim::Folded(k)
        }
    }

    /// In words: `batch`, `batch*32` or the size.
    pub(super) fn word(self) -> String {
        match self {
            Dim::Batch => "batch".into(),
            Dim::Folded(k) => format!("batch*{k}"),
            Dim::N(n) => n.to_string(),
        }
    }
}

/// A shape, outermost dimension first (the batch, for an input).
pub type Dims = Vec<Dim>;

/// The shape in words, e.g. `(batch, 4)` or `(batch*32, 64)`.
pub fn describe(d: &[Dim]) -> String {
    let parts: Vec<String> = d.iter().map(|d| d.word()).collect();
    if parts.len() == 1 {
        return format!("({},)", parts[0]);
    }
    format!("({})", parts.join(", "))
}

/// A checked node: what it computes, where it was written and its shape.
#[derive(Debug, Clone, PartialEq)]
pub struct Ir {
    /// What it computes.
    pub op: IrOp,
    /// Its column in the expression.
    pub col: usize,
    /// Its shape.
    pub dims: Dims,
}

/// What a checked node computes.
#[derive(Debug, Clone, PartialEq)]
pub enum IrOp {
    /// The input of this index (`x`, `p`, `y`, `mask`, a named output).
    Input(usize),
    /// A constant.
    Const(f64),
    /// `-a`.
    Neg(Box<Ir>),
    /// `a op b` (not `**`).
    Bin(BinOp, Box<Ir>, Box<Ir>),
    /// `a ** e` for a constant `e`.
    Pow(Box<Ir>, f64),
    /// A call: the function, its operands, its parameters resolved.
    Call(Func, Vec<Ir>, Bound),
}

/// A call's parameters resolved against its operand's shape.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Bound {
    /// The dimensions it reduces or works along (sorted, non-negative); empty for all.
    pub dims: Vec<usize>,
    /// `keepdim`.
    pub keepdim: bool,
    /// `min`, `max` of a clamp; `p` of a norm in `lo`; `correction` of std and var in `lo`;
    /// `eps` of `cosine_similarity` in `lo`.
    pub lo: Option<f64>,
    /// `max` of a clamp.
    pub hi: Option<f64>,
    /// A reshape's sizes after its leading -1 (the dimension holding the batch, which PyTorch infers).
    pub shape: Vec<usize>,
    /// The parameters as written, for the PyTorch export.
    pub params: Params,
    /// A named loss's kind, settings and reduction.
    pub loss: Option<Box<LossCall>>,
}

/// What the expression reads: its inputs by name with their shapes, and its constants.
pub struct Env<'a> {
    /// Inputs in slot order.
    pub inputs: &'a [(String, Dims)],
    /// `consts`.
    pub consts: &'a BTreeMap<String, f64>,
    /// Every earlier named output it could read (an unknown name's message lists and suggests them).
    pub named: &'a [String],
}

impl Env<'_> {
    /// Checks `a`.
    pub fn check(&self, a: &Ast) -> Result<Ir, Problem> {
        let col = a.col;
        let ir = |op, dims| Ok(Ir { op, col, dims });
        match &a.kind {
            Kind::Num(v) => ir(IrOp::Const(*v), Vec::new()),
            Kind::Int(i) => ir(IrOp::Const(*i as f64), Vec::new()),
            Kind::Bool(_) => Err(Problem { col, message: "`true` and `false` are for keyword arguments such as `keepdim`".into() }),
            Kind::Str(_) => Err(Problem { col, message: "a string is for keyword arguments such as a loss's `reduction='sum'`".into() }),
            Kind::Tuple(_) => Err(Problem { col, message: "a tuple is for `dim=` or a `reshape`'s shape, not a value".into() }),
            Kind::Name(n) => self.name(n, col),
            Kind::Neg(x) => match self.check(x)? {
                Ir { op: IrOp::Const(v), .. } => ir(IrOp::Const(-v), Vec::new()),
                x => ir(IrOp::Neg(Box::new(x.clone())), x.dims),
            },
            Kind::Bin(op, x, y) => self.binary(*op, x, y, col),
            Kind::Call(name, args, kwargs) => self.call(name, args, kwargs, col),
        }
    }

    fn name(&self, n: &str, col: usize) -> Result<Ir, Problem> {
        if let Some(i) = self.inputs.iter().position(|(m, _)| m == n) {
            return Ok(Ir { op: IrOp::Input(i), col, dims: self.inputs[i].1.clone() });
        }
        if let Some(v) = self.consts.get(n).copied().or_else(|| builtin(n)) {
            return Ok(Ir { op: IrOp::Const(v), col, dims: Vec::new() });
        }
        // The inputs proper (`x`; `p`, `y`, `mask`), then the named outputs, then the constants.
        let (own, read): (Vec<&str>, Vec<&str>) = self.inputs.iter().map(|(m, _)| m.as_str()).partition(|m| matches!(*m, "x" | "p" | "y" | "mask"));
        let mut named: Vec<&str> = self.named.iter().map(String::as_str).chain(read).collect();
        named.sort_unstable();
        named.dedup();
        let consts: Vec<&str> = self.consts.keys().map(String::as_str).collect();
        let known = own.iter().chain(&named).chain(&consts).copied();
        let hint = nearest(n, known).map_or_else(String::new, |m| format!(", did you mean `{m}`?"));
        let list = |what: &str, names: &[&str]| match names {
            [] => format!("no {what}"),
            _ => format!("the {what} {}", names.iter().map(|m| format!("`{m}`")).collect::<Vec<_>>().join(", ")),
        };
        let own = own.iter().map(|m| format!("`{m}`")).collect::<Vec<_>>().join(", ");
        let readable = format!("{own}, {}, and {}", list("named outputs", &named), list("constants", &consts));
        Err(Problem { col, message: format!("unknown name `{n}`{hint} (the expression can read {readable})") })
    }

    fn binary(&self, op: BinOp, x: &Ast, y: &Ast, col: usize) -> Result<Ir, Problem> {
        let (a, b) = (self.check(x)?, self.check(y)?);
        if let (IrOp::Const(u), IrOp::Const(v)) = (&a.op, &b.op) {
            return Ok(Ir { op: IrOp::Const(arith(op, *u, *v)), col, dims: Vec::new() });
        }
        match op {
            BinOp::Pow => match b.op {
                IrOp::Const(e) => Ok(Ir { dims: a.dims.clone(), op: IrOp::Pow(Box::new(a), e), col }),
                _ => Err(Problem { col: b.col, message: format!("the exponent `{y}` must be a constant (a tensor exponent is not supported yet)") }),
            },
            BinOp::MatMul => {
                let dims = matmul(&a.dims, &b.dims).map_err(|message| Problem { col, message })?;
                Ok(Ir { op: IrOp::Bin(op, Box::new(a), Box::new(b)), col, dims })
            }
            _ => {
                let dims = broadcast(&a.dims, &b.dims).map_err(|message| Problem { col, message })?;
                Ok(Ir { op: IrOp::Bin(op, Box::new(a), Box::new(b)), col, dims })
            }
        }
    }

    fn call(&self, name: &str, args: &[Ast], kwargs: &[(String, Ast)], col: usize) -> Result<Ir, Problem> {
        let f = Func::named(name, col)?;
        let n = f.operands();
        if args.len() < n {
            return Err(Problem { col, message: format!("`{name}` needs {n} tensor operand(s), and gets {}", args.len()) });
        }
        let params = Params::bind(f, name, col, &args[n..], kwargs, self.consts)?;
        let mut operands = args[..n].iter().map(|a| self.check(a)).collect::<Result<Vec<_>, _>>()?;
        let (bound, dims) = resolve(f, params, &operands, col)?;
        // `ctc` reads its input lengths from the padding mask, as `[loss] kind = "ctc"` does.
        if let (Func::Ctc, Some(m)) = (f, self.inputs.iter().position(|(m, _)| m == "mask")) {
            operands.push(Ir { op: IrOp::Input(m), col, dims: self.inputs[m].1.clone() });
        }
        Ok(Ir { op: IrOp::Call(f, operands, bound), col, dims })
    }
}

/// A dimension index (negative from the end) of a shape of `rank` dimensions, as PyTorch wraps it.
fn wrap(d: f64, rank: usize, col: usize) -> Result<usize, Problem> {
    let r = rank as f64;
    if d.fract() != 0.0 || d < -r.max(1.0) || d >= r.max(1.0) {
        return Err(Problem { col, message: format!("dimension {d} is out of range for a tensor of {rank} dimension(s)") });
    }
    Ok(if d < 0.0 { (d + r) as usize } else { d as usize })
}

/// Works out a call's resolved parameters and its shape.
fn resolve(f: Func, params: Params, ops: &[Ir], col: usize) -> Result<(Bound, Dims), Problem> {
    let x = &ops[0].dims;
    let rank = x.len();
    let mut b = Bound { params, ..Bound::default() };
    let dims = match f.family() {
        Family::Pointwise => {
            b.lo = b.params.num("min");
            b.hi = b.params.num("max");
            if f == Func::Clamp && b.lo.is_none() && b.hi.is_none() {
                return Err(Problem { col, message: "`clamp` needs `min=`, `max=` or both (torch.clamp refuses neither)".into() });
            }
            x.clone()
        }
        Family::Select => {
            let ab = broadcast(&ops[1].dims, &ops[2].dims).map_err(|message| Problem { col, message })?;
            broadcast(&ops[0].dims, &ab).map_err(|message| Problem { col, message })?
        }
        Family::Reduce => {
            let mut ds = b.params.ints("dim").unwrap_or_default().into_iter().map(|d| wrap(d, rank, col)).collect::<Result<Vec<_>, _>>()?;
            ds.sort_unstable();
            if let Some(w) = ds.windows(2).find(|w| w[0] == w[1]) {
                return Err(Problem { col, message: format!("dim {} appears multiple times in the list of dims (PyTorch refuses it)", w[0]) });
            }
            b.dims = if ds.is_empty() { (0..rank).collect() } else { ds };
            b.keepdim = b.params.flag("keepdim");
            b.lo = Some(match f {
                Func::Norm => b.params.num("p").unwrap_or(2.0),
                _ => b.params.num("correction").unwrap_or(1.0),
            });
            let p_given = b.params.given.get("p");
            if f == Func::Norm && (b.lo.is_some_and(f64::is_nan) || matches!(p_given, Some(Value::Str(_) | Value::Tuple(_)))) {
                return Err(Problem { col, message: "`p` of `norm` must be a number (0, 1, 2, inf, -inf or any other): nanhunt has no matrix norms ('fro', 'nuc')".into() });
            }
            reduced(x, &b.dims, b.keepdim)
        }
        Family::Along => {
            let d = b.params.num("dim").unwrap_or(-1.0);
            b.dims = vec![wrap(d, rank, col)?];
            x.clone()
        }
        Family::Transpose => {
            let (d0, d1) = (wrap(b.params.num("dim0").unwrap_or(0.0), rank, col)?, wrap(b.params.num("dim1").unwrap_or(0.0), rank, col)?);
            b.dims = vec![d0, d1];
            let mut out = x.clone();
            out.swap(d0, d1);
            out
        }
        Family::Reshape => reshape(x, &mut b, col)?,
        Family::Pair => {
            // PyTorch's defaults: dim 1, eps 1e-8; the operands broadcast, then `dim` goes.
            let both = broadcast(x, &ops[1].dims).map_err(|message| Problem { col, message })?;
            b.dims = vec![wrap(b.params.num("dim").unwrap_or(1.0), both.len(), col)?];
            b.lo = Some(b.params.num("eps").unwrap_or(1e-8));
            reduced(&both, &b.dims, false)
        }
        Family::Loss => {
            let call = losses::call_of(f, <&str>::from(f), &b.params, col)?;
            let out = loss_dims(f, &call, x, &ops[1].dims, col)?;
            b.loss = Some(Box::new(call));
            out
        }
    };
    Ok((b, dims))
}

/// The shape of a named loss's result for a prediction `p` and targets `y`, or why they do not fit.
fn loss_dims(f: Func, call: &LossCall, p: &[Dim], y: &[Dim], col: usize) -> Result<Dims, Problem> {
    let bad = |what: &str| Problem { col, message: format!("`{}` {what}, and gets {} and {}", <&str>::from(f), describe(p), describe(y)) };
    let per_row = |d: &[Dim]| -> Option<usize> { d.iter().skip(1).map(|d| if let Dim::N(n) = d { Some(*n) } else { None }).product() };
    // The batch, or a folded batch (`(batch*T, C)` rows), first, and the same in both.
    if p.first().and_then(|d| d.rows()).is_none() || p.first() != y.first() {
        return Err(bad("reads a batch of predictions and a batch of targets (the batch, or one folded alike, first in both)"));
    }
    if call.reads == Reads::Labels && p[0] != Dim::Batch {
        return Err(bad("reads sequences of the batch, whose lengths are the padding mask's rows: the batch first, not folded"));
    }
    match call.reads {
        Reads::Classes => {
            let k = match p.last() {
                Some(Dim::N(k)) if p.len() >= 2 && *k >= 2 => *k,
                Some(_) | None => return Err(bad("reads logits whose last dimension is 2 or more classes")),
            };
            let indices = per_row(y).zip(per_row(p)).is_some_and(|(t, o)| crate::ops::loss::indexes(o, k, t));
            if !indices && p != y {
                return Err(bad("reads one class index per row (or position), or one probability per class"));
            }
        }
        Reads::Embeddings if p.len() != 2 || p != y => return Err(bad("reads two batches of embeddings of one width (batch, d)")),
        Reads::Labels if p.len() != 3 || y.len() != 2 || !matches!(p[2], Dim::N(k) if k >= 2) => {
            return Err(bad("reads log-probabilities (batch, steps, classes) and label rows (batch, length) padded with the blank"))
        }
        Reads::Labels if matches!(p[2], Dim::N(k) if call.spec.blank.unwrap_or(0) >= k) => {
            return Err(bad("takes a blank that is one of its classes (blank < the last dimension of its log-probabilities)"))
        }
        Reads::Alike if p != y => return Err(bad("reads a prediction and targets of one shape")),
        Reads::Embeddings | Reads::Alike | Reads::Labels => {}
    }
    Ok(match (call.reduce, call.reads) {
        (Reduce::None, Reads::Alike) => p.to_vec(),
        // One loss per row or position: the prediction without its classes.
        (Reduce::None, Reads::Classes) => p[..p.len() - 1].to_vec(),
        (Reduce::None, Reads::Embeddings | Reads::Labels) => vec![p[0]],
        (Reduce::Scalar | Reduce::Elements, _) => Vec::new(),
    })
}

/// The shape after reducing `dims` (kept as 1 with `keepdim`).
fn reduced(x: &[Dim], dims: &[usize], keepdim: bool) -> Dims {
    x.iter()
        .enumerate()
        .filter_map(|(i, d)| {
            if !dims.contains(&i) {
                Some(*d)
            } else if keepdim {
                Some(Dim::N(1))
            } else {
                None
            }
        })
        .collect()
}

/// The most dimensions a tensor may have: Candle's strided iteration takes at most 8
/// (`candle_core::nditer`'s `MAX_DIMS`) and panics past it.
const MAX_RANK: usize = 8;

/// A reshape: its shape's first entry must be -1, the dimension holding the batch, which
/// PyTorch infers; the sizes after it must divide the elements per batch row, so the result
/// holds the batch times their quotient (`(-1, 64)` of `(batch, 32, 64)` is `(batch*32, 64)`,
/// `(-1, 32)` of `(batch*32,)` is `(batch, 32)` again).
fn reshape(x: &[Dim], b: &mut Bound, col: usize) -> Result<Dims, Problem> {
    let shape = match b.params.given.get("shape") {
        Some(Value::Tuple(t)) => t.clone(),
        Some(Value::Num(v)) => vec![*v],
        Some(Value::Bool(_) | Value::Str(_)) | None => return Err(Problem { col, message: "a reshape's shape is a tuple of sizes, e.g. (-1, 4)".into() }),
    };
    let rows: Vec<usize> = x.iter().filter_map(|d| d.rows()).collect();
    // The batch (or a fold of it) first: after a transpose that moved it, a fold would mix
    // positions of different examples in one row.
    let ([k], Some(_)) = (&rows[..], x.first().and_then(|d| d.rows())) else {
        return Err(Problem { col, message: format!("nanhunt reshapes a tensor that holds the batch in its first dimension, and only there, and the input is {}", describe(x)) });
    };
    let k = *k;
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

/// PyTorch's broadcast of two shapes (aligned at their last dimensions), or why they do not broadcast.
pub fn broadcast(a: &[Dim], b: &[Dim]) -> Result<Dims, String> {
    let n = a.len().max(b.len());
    let at = |s: &[Dim], i: usize| if i + s.len() >= n { s[i + s.len() - n] } else { Dim::N(1) };
    (0..n)
        .map(|i| match (at(a, i), at(b, i)) {
            (u, v) if u == v => Ok(u),
            (Dim::N(1), v) | (v, Dim::N(1)) => Ok(v),
            (u @ Dim::Folded(_), v) | (v, u @ Dim::Folded(_)) => Err(format!(
                "shapes {} and {} do not broadcast: {} against {} (a folded batch matches only the same fold, or 1: nanhunt checks before it knows the batch size)",
                describe(a),
                describe(b),
                u.word(),
                v.word()
            )),
            _ => Err(format!("shapes {} and {} do not broadcast (PyTorch's rules: sizes equal or 1, from the last dimension)", describe(a), describe(b))),
        })
        .collect()
}

/// The shape of `a @ b` (both at least matrices), or why they do not multiply.
fn matmul(a: &[Dim], b: &[Dim]) -> Result<Dims, String> {
    if a.len() < 2 || b.len() < 2 {
        return Err(format!("`@` multiplies matrices (2 or more dimensions), and gets {} and {}", describe(a), describe(b)));
    }
    let (ra, rb) = (a.len(), b.len());
    if a[ra - 1] != b[rb - 2] {
        return Err(format!("`@` of {} and {}: the inner sizes differ", describe(a), describe(b)));
    }
    let mut out = broadcast(&a[..ra - 2], &b[..rb - 2])?;
    out.extend([a[ra - 2], b[rb - 1]]);
    Ok(out)
}
