//! The functions an expression may call, by PyTorch's names, and how a call's arguments bind:
//! its tensor operands first, then its parameters (positional after the operands, in
//! PyTorch's order, or by keyword), each a constant (a number, `true`/`false`, a constant
//! of `consts`, a tuple of numbers, or arithmetic on them).

use std::collections::BTreeMap;

use strum::{EnumString, IntoStaticStr, VariantArray};

use super::ast::{Ast, BinOp, Kind, Problem};

/// A function of the language (its snake_case name is what the expression calls).
#[derive(Debug, Clone, Copy, PartialEq, Eq, EnumString, IntoStaticStr, VariantArray)]
#[strum(serialize_all = "snake_case")]
pub enum Func {
    /// `torch.abs`
    Abs,
    /// `torch.exp`
    Exp,
    /// `torch.log`
    Log,
    /// `torch.log1p`
    Log1p,
    /// `torch.sqrt`
    Sqrt,
    /// `torch.rsqrt`
    Rsqrt,
    /// `torch.sigmoid`
    Sigmoid,
    /// `F.logsigmoid`
    Logsigmoid,
    /// `torch.tanh`
    Tanh,
    /// `torch.relu`
    Relu,
    /// `F.gelu` (erf form)
    Gelu,
    /// `F.softplus` (β = 1, threshold 20)
    Softplus,
    /// `torch.clamp(x, min=, max=)`
    Clamp,
    /// `torch.where(c, a, b)`
    Where,
    /// `torch.sum(x, dim=, keepdim=)`
    Sum,
    /// `torch.mean(x, dim=, keepdim=)`
    Mean,
    /// `torch.amax(x, dim=, keepdim=)`
    Amax,
    /// `torch.amin(x, dim=, keepdim=)`
    Amin,
    /// `torch.logsumexp(x, dim=, keepdim=)`
    Logsumexp,
    /// `torch.std(x, dim=, keepdim=, correction=1)`
    Std,
    /// `torch.var(x, dim=, keepdim=, correction=1)`
    Var,
    /// `torch.norm(x, p=2, dim=, keepdim=)`: `torch.linalg.vector_norm` of any `p` (`0`, `1`, `2`, `inf`, `-inf`, any other)
    Norm,
    /// `torch.softmax(x, dim=)`
    Softmax,
    /// `torch.log_softmax(x, dim=)`
    LogSoftmax,
    /// `torch.transpose(x, dim0, dim1)`
    Transpose,
    /// `torch.reshape(x, shape)`
    Reshape,
    /// `torch.cumsum(x, dim=)`
    Cumsum,
    /// `torch.cosine_similarity(x1, x2, dim=1, eps=1e-8)`
    CosineSimilarity,
    /// `F.cross_entropy(p, y, ignore_index=-100, reduction='mean', label_smoothing=0.0)`
    CrossEntropy,
    /// `F.kl_div(p, y, reduction='mean', log_target=False)`
    KlDiv,
    /// torchvision's `sigmoid_focal_loss(p, y, alpha=0.25, gamma=2, reduction='none')`
    Focal,
    /// `F.mse_loss(p, y, reduction='mean')`
    Mse,
    /// `F.binary_cross_entropy_with_logits(p, y, reduction='mean')`
    BceWithLogits,
    /// The contrastive loss `F.cross_entropy(p @ y.T / temperature, arange(batch))`, of
    /// `F.normalize(p)` and `F.normalize(y)` with `normalized=True`
    InfoNce,
    /// `F.ctc_loss(p.transpose(0, 1), y, input_lengths, target_lengths, blank=0,
    /// reduction='mean', zero_infinity=False)` of `(batch, steps, classes)` log-probabilities and
    /// label rows padded with the blank; the lengths from the data, as `[loss] kind = "ctc"` takes
    /// them (the padding mask's row sums, the labels before the blank)
    Ctc,
}

/// What a function does to its operands' shapes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Family {
    /// Elementwise on one operand.
    Pointwise,
    /// Elementwise on three, broadcast (`where`).
    Select,
    /// Reduces over `dim` (all when absent), keeping it as size 1 with `keepdim`.
    Reduce,
    /// Keeps the shape, along one `dim` (softmax, log_softmax, cumsum).
    Along,
    /// Swaps two dimensions.
    Transpose,
    /// Reshapes.
    Reshape,
    /// Two operands broadcast, then reduced over one `dim` (`cosine_similarity`).
    Pair,
    /// A named loss of a prediction and targets (`ops::loss`'s kernels, `losses.rs`): one
    /// number, or one per element with `reduction='none'`.
    Loss,
}

impl Func {
    /// Its family.
    pub fn family(self) -> Family {
        use Func::*;
        match self {
            Abs | Exp | Log | Log1p | Sqrt | Rsqrt | Sigmoid | Logsigmoid | Tanh | Relu | Gelu | Softplus | Clamp => Family::Pointwise,
            Where => Family::Select,
            Sum | Mean | Amax | Amin | Logsumexp | Std | Var | Norm => Family::Reduce,
            Softmax | LogSoftmax | Cumsum => Family::Along,
            Transpose => Family::Transpose,
            Reshape => Family::Reshape,
            CosineSimilarity => Family::Pair,
            CrossEntropy | KlDiv | Focal | Mse | BceWithLogits | InfoNce | Ctc => Family::Loss,
        }
    }

    /// How many tensor operands it takes before its parameters.
    pub fn operands(self) -> usize {
        use Func::*;
        match self {
            Where => 3,
            CosineSimilarity | CrossEntropy | KlDiv | Focal | Mse | BceWithLogits | InfoNce | Ctc => 2,
            Abs | Exp | Log | Log1p | Sqrt | Rsqrt | Sigmoid | Logsigmoid | Tanh | Relu | Gelu | Softplus | Clamp | Sum | Mean | Amax | Amin | Logsumexp | Std | Var | Norm | Softmax | LogSoftmax
            | Transpose | Reshape | Cumsum => 1,
        }
    }

    /// Its parameters, in PyTorch's positional order.
    pub fn params(self) -> &'static [&'static str] {
        use Func::*;
        match self {
            Abs | Exp | Log | Log1p | Sqrt | Rsqrt | Sigmoid | Logsigmoid | Tanh | Relu | Gelu | Softplus | Where => &[],
            Clamp => &["min", "max"],
            Sum | Mean | Amax | Amin | Logsumexp => &["dim", "keepdim"],
            Std | Var => &["dim", "keepdim", "correction"],
            Norm => &["p", "dim", "keepdim"],
            Softmax | LogSoftmax | Cumsum => &["dim"],
            Transpose => &["dim0", "dim1"],
            Reshape => &["shape"],
            CosineSimilarity => &["dim", "eps"],
            CrossEntropy => &["ignore_index", "reduction", "label_smoothing"],
            KlDiv => &["reduction", "log_target"],
            Focal => &["alpha", "gamma", "reduction"],
            Mse | BceWithLogits => &["reduction"],
            InfoNce => &["temperature", "reduction", "normalized"],
            Ctc => &["blank", "reduction", "zero_infinity"],
        }
    }

    /// Parameters it cannot do without (PyTorch's required ones).
    pub fn required(self) -> &'static [&'static str] {
        match self.family() {
            Family::Along => &["dim"],
            Family::Transpose => &["dim0", "dim1"],
            Family::Reshape => &["shape"],
            Family::Reduce if self == Func::Logsumexp => &["dim"],
            Family::Pointwise | Family::Select | Family::Reduce | Family::Pair | Family::Loss => &[],
        }
    }

    /// On autocast's f32 list (PyTorch's `autocast_mode.h`): it computes in f32 under autocast.
    /// `Focal` and `InfoNce` are formulas in PyTorch (no entry of the list): computing them
    /// whole in f32 is nanhunt's convention.
    pub fn f32_under_autocast(self) -> bool {
        use Func::*;
        match self {
            Exp | Log | Log1p | Rsqrt | Softplus | Sum | Logsumexp | Norm | Softmax | LogSoftmax | Cumsum | CosineSimilarity => true,
            CrossEntropy | KlDiv | Focal | Mse | BceWithLogits | InfoNce | Ctc => true,
            Abs | Sqrt | Sigmoid | Logsigmoid | Tanh | Relu | Gelu | Clamp | Where | Mean | Amax | Amin | Std | Var | Transpose | Reshape => false,
        }
    }

    /// What is wrong with the argument `a` (of value `v`) as parameter `key` by its Python type,
    /// in PyTorch's words (its `TypeError`), with the column at fault: an integer parameter
    /// (`dim`, `dim0`, `dim1`, a `reshape`'s `shape`, `ignore_index`, `blank`) refuses a float
    /// (`1.0`, `1e0`, `4 / 2`), a dimension also a bool or a string, and a tuple unless a
    /// reduction's `dim` (a tuple of ints); a boolean one (`keepdim`, `log_target`,
    /// `zero_infinity`, `normalized`) anything but `true`/`false`. A constant of `consts` is an
    /// int when whole (TOML `consts` are numbers without Python's two types).
    pub fn type_problem(self, key: &str, a: &Ast, v: &Value, consts: &BTreeMap<String, f64>) -> Option<(usize, String)> {
        let name: &str = self.into();
        let kind = |a: &Ast| if float_typed(a, consts) { "float" } else { "int" };
        let int = |x: f64| x.is_finite() && x.fract() == 0.0;
        let tuples = self.family() == Family::Reduce && key == "dim";
        let want = if tuples { "must be int or a tuple of ints" } else { "must be int" };
        let wrong = |col: usize, what: String| Some((col, format!("{name}(): argument '{key}' {what}")));
        let dim = matches!(key, "dim" | "dim0" | "dim1");
        match (key, v, &a.kind) {
            ("keepdim" | "log_target" | "zero_infinity" | "normalized", Value::Bool(_), _) => None,
            ("keepdim" | "log_target" | "zero_infinity" | "normalized", _, _) => {
                let got = match v {
                    Value::Num(_) => kind(a),
                    Value::Str(_) => "str",
                    Value::Tuple(_) => "tuple",
                    Value::Bool(_) => "bool",
                };
                wrong(a.col, format!("must be bool, not {got}"))
            }
            ("shape", _, Kind::Tuple(items)) => {
                let i = items.iter().position(|it| float_typed(it, consts))?;
                wrong(items[i].col, format!("must be tuple of ints, but found element of type float at pos {i}"))
            }
            ("dim", Value::Tuple(t), Kind::Tuple(items)) if tuples => {
                let i = items.iter().position(|it| float_typed(it, consts)).or_else(|| t.iter().position(|x| !int(*x)))?;
                wrong(items.get(i).map_or(a.col, |it| it.col), format!("must be a tuple of ints, and holds a float at pos {i}"))
            }
            ("dim" | "dim0" | "dim1" | "shape" | "ignore_index" | "blank", Value::Num(x), _) if float_typed(a, consts) || !int(*x) => wrong(a.col, format!("{want}, not float")),
            (_, Value::Bool(_), _) if dim => wrong(a.col, format!("{want}, not bool")),
            (_, Value::Str(_), _) if dim => wrong(a.col, format!("{want}, not str")),
            (_, Value::Tuple(_), _) if dim && !tuples => wrong(a.col, format!("{want}, not tuple")),
            _ => None,
        }
    }

    /// The function called `name`, or the error naming the nearest one ("did you mean `log`?").
    pub fn named(name: &str, col: usize) -> Result<Func, Problem> {
        name.parse().map_err(|_| {
            let names = Func::VARIANTS.iter().map(|f| <&str>::from(*f));
            let hint = nearest(name, names).map_or_else(String::new, |n| format!(", did you mean `{n}`?"));
            Problem { col, message: format!("unknown function `{name}`{hint}") }
        })
    }
}

/// The nearest of `choices` to `wrong`, if one is close: a Damerau–Levenshtein distance of at
/// most a third of the longer name, and at most 2 (so a one-letter name suggests nothing).
pub fn nearest<'a>(wrong: &str, choices: impl Iterator<Item = &'a str>) -> Option<&'a str> {
    choices.map(|c| (strsim::damerau_levenshtein(wrong, c), c)).filter(|(d, c)| *d <= (c.len().max(wrong.len()) / 3).min(2)).min_by_key(|(d, _)| *d).map(|(_, c)| c)
}

/// A constant value: a parameter's or a constant operand's.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    /// A number.
    Num(f64),
    /// `true` or `false`.
    Bool(bool),
    /// A tuple of numbers.
    Tuple(Vec<f64>),
    /// A string (a loss's `reduction`).
    Str(String),
}

/// The constant `a` stands for, if it is one (numbers, booleans, `consts`, tuples, arithmetic
/// of them); `Ok(None)` if it reads a tensor.
pub fn constant(a: &Ast, consts: &BTreeMap<String, f64>) -> Result<Option<Value>, Problem> {
    let num = |a: &Ast| -> Result<Option<f64>, Problem> {
        match constant(a, consts)? {
            Some(Value::Num(v)) => Ok(Some(v)),
            Some(Value::Bool(_) | Value::Tuple(_) | Value::Str(_)) => Err(Problem { col: a.col, message: format!("`{a}` is not a number") }),
            None => Ok(None),
        }
    };
    Ok(match &a.kind {
        Kind::Num(v) => Some(Value::Num(*v)),
        Kind::Int(i) => Some(Value::Num(*i as f64)),
        Kind::Bool(b) => Some(Value::Bool(*b)),
        Kind::Str(s) => Some(Value::Str(s.clone())),
        Kind::Name(n) => consts.get(n).copied().or_else(|| builtin(n)).map(Value::Num),
        Kind::Neg(x) => num(x)?.map(|v| Value::Num(-v)),
        Kind::Bin(op, x, y) => match (num(x)?, num(y)?) {
            (Some(u), Some(v)) => Some(Value::Num(arith(*op, u, v))),
            _ => None,
        },
        Kind::Call(..) => None,
        Kind::Tuple(items) => {
            let mut out = Vec::with_capacity(items.len());
            for it in items {
                match num(it)? {
                    Some(v) => out.push(v),
                    None => return Err(Problem { col: it.col, message: format!("a tuple holds numbers, and `{it}` is a tensor") }),
                }
            }
            Some(Value::Tuple(out))
        }
    })
}

/// Whether Python makes `a` a float rather than an int (or a bool): a float literal, `inf`, a
/// quotient (`/` is true division), or arithmetic with a float in it, or an int to a negative
/// power. A constant of `consts` counts as an int where it is whole (see [`Func::type_problem`]).
pub fn float_typed(a: &Ast, consts: &BTreeMap<String, f64>) -> bool {
    match &a.kind {
        Kind::Num(_) => true,
        Kind::Int(_) | Kind::Bool(_) | Kind::Str(_) | Kind::Tuple(_) | Kind::Call(..) => false,
        Kind::Name(n) => consts.get(n).map_or(builtin(n).is_some(), |v| v.fract() != 0.0),
        Kind::Neg(x) => float_typed(x, consts),
        Kind::Bin(op, _, _) if op.compares() => false,
        Kind::Bin(BinOp::Div, _, _) => true,
        Kind::Bin(BinOp::Pow, x, y) => float_typed(x, consts) || float_typed(y, consts) || matches!(constant(y, consts), Ok(Some(Value::Num(e))) if e < 0.0),
        Kind::Bin(_, x, y) => float_typed(x, consts) || float_typed(y, consts),
    }
}

/// The numbers the language names without a constant: `inf` (Python's `math.inf`, for
/// `norm(x, p=inf)`). A constant of `consts` of that name comes first.
pub fn builtin(name: &str) -> Option<f64> {
    (name == "inf").then_some(f64::INFINITY)
}

/// `u op v` on numbers, as Python computes it on floats (comparisons give 1 or 0).
pub fn arith(op: BinOp, u: f64, v: f64) -> f64 {
    let b = |t: bool| if t { 1.0 } else { 0.0 };
    match op {
        BinOp::Add => u + v,
        BinOp::Sub => u - v,
        BinOp::Mul | BinOp::MatMul => u * v,
        BinOp::Div => u / v,
        BinOp::Pow => u.powf(v),
        BinOp::Lt => b(u < v),
        BinOp::Le => b(u <= v),
        BinOp::Gt => b(u > v),
        BinOp::Ge => b(u >= v),
        BinOp::Eq => b(u == v),
        BinOp::Ne => b(u != v),
    }
}

/// A call's parameters, bound.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Params {
    /// The values by parameter name.
    pub given: BTreeMap<&'static str, Value>,
}

impl Params {
    /// Binds `f`'s parameters from the positional arguments after its operands and the keyword ones.
    pub fn bind(f: Func, name: &str, col: usize, rest: &[Ast], kwargs: &[(String, Ast)], consts: &BTreeMap<String, f64>) -> Result<Params, Problem> {
        let names = f.params();
        if f.family() == Family::Loss && !rest.is_empty() {
            let keys: Vec<String> = names.iter().map(|n| format!("{n}=")).collect();
            return Err(Problem { col: rest[0].col, message: format!("pass `{name}`'s parameters by keyword ({})", keys.join(", ")) });
        }
        if rest.len() > names.len() {
            return Err(Problem { col: rest[names.len()].col, message: format!("`{name}` takes {} positional argument(s) at most", f.operands() + names.len()) });
        }
        let mut given = BTreeMap::new();
        let keyed = kwargs.iter().map(|(k, v)| (k.as_str(), v));
        for (key, a) in names.iter().copied().zip(rest).chain(keyed) {
            let Some(&key) = names.iter().find(|n| **n == key) else {
                let hint = nearest(key, names.iter().copied()).map_or_else(String::new, |n| format!(", did you mean `{n}`?"));
                return Err(Problem { col: a.col, message: format!("`{name}` takes no argument `{key}`{hint}") });
            };
            let Some(v) = constant(a, consts)? else {
                return Err(Problem { col: a.col, message: format!("`{key}` of `{name}` must be a constant, and `{a}` reads a tensor") });
            };
            if let Some((at, wrong)) = f.type_problem(key, a, &v, consts) {
                return Err(Problem { col: at, message: format!("{wrong} (PyTorch's TypeError)") });
            }
            if given.insert(key, v).is_some() {
                return Err(Problem { col: a.col, message: format!("`{name}` gets `{key}` twice") });
            }
        }
        if let Some(missing) = f.required().iter().find(|k| !given.contains_key(*k)) {
            return Err(Problem { col, message: format!("`{name}` needs `{missing}=`") });
        }
        Ok(Params { given })
    }

    /// Parameter `key` as a number (`None` if absent).
    pub fn num(&self, key: &str) -> Option<f64> {
        match self.given.get(key) {
            Some(Value::Num(v)) => Some(*v),
            Some(Value::Bool(b)) => Some(f64::from(u8::from(*b))),
            Some(Value::Tuple(_) | Value::Str(_)) | None => None,
        }
    }

    /// Parameter `key` as a string (`None` if absent or not a string).
    pub fn text(&self, key: &str) -> Option<&str> {
        match self.given.get(key) {
            Some(Value::Str(s)) => Some(s),
            Some(Value::Num(_) | Value::Bool(_) | Value::Tuple(_)) | None => None,
        }
    }

    /// Parameter `key` as a flag (`false` if absent).
    pub fn flag(&self, key: &str) -> bool {
        match self.given.get(key) {
            Some(Value::Bool(b)) => *b,
            Some(Value::Num(v)) => *v != 0.0,
            Some(Value::Tuple(_) | Value::Str(_)) | None => false,
        }
    }

    /// Parameter `key` as a list of integers (a number is a list of one; `None` if absent).
    pub fn ints(&self, key: &str) -> Option<Vec<f64>> {
        match self.given.get(key) {
            Some(Value::Num(v)) => Some(vec![*v]),
            Some(Value::Tuple(t)) => Some(t.clone()),
            Some(Value::Bool(_) | Value::Str(_)) | None => None,
        }
    }
}

#[cfg(test)]
#[path = "funcs_tests.rs"]
mod tests;
