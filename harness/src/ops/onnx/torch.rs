//! The PyTorch form of an imported ONNX node, for `export-torch`'s `repro.py`: each [`Kind`]
//! as one torch call of its operands (a Python lambda of `a, b, c` in ONNX's order, booleans as
//! 0/1 values of the float dtype, as `kind.rs` computes them), and the node as repro.py's `Onnx`
//! module, which holds the node's parameters under their graph names (dots made `_`, so they are
//! attribute names; `export-torch` maps them back) and its folded constants, and reads the
//! graph's input, the padding mask and earlier nodes' outputs by name.

use super::{CastTo, Kind, OnnxNode, Src};
use crate::ops::py;

/// A Python list of numbers.
fn list<T: std::fmt::Display>(v: &[T]) -> String {
    format!("[{}]", v.iter().map(ToString::to_string).collect::<Vec<_>>().join(", "))
}

/// A Python tuple of numbers (a trailing comma for one).
fn tuple<T: std::fmt::Display>(v: &[T]) -> String {
    match v {
        [one] => format!("({one},)"),
        _ => format!("({})", v.iter().map(ToString::to_string).collect::<Vec<_>>().join(", ")),
    }
}

/// A Python string literal of `s` (JSON's, which Python reads).
fn pystr(s: &str) -> String {
    serde_json::Value::from(s).to_string()
}

/// Python of a boolean.
fn pybool(b: bool) -> &'static str {
    if b {
        "True"
    } else {
        "False"
    }
}

/// A reduction (`mean` or `sum`) over `axes` (every axis if empty).
fn reduce(how: &str, axes: &[i64], keepdims: bool) -> String {
    let dims = if axes.is_empty() { "tuple(range(a.dim()))".to_string() } else { tuple(axes) };
    format!("lambda a: a.{how}(dim={dims}, keepdim={})", pybool(keepdims))
}

/// ONNX `Reshape`: a 0 copies the input's dim there.
fn reshape(shape: &[i64]) -> String {
    let dims: Vec<String> = shape.iter().enumerate().map(|(i, &d)| if d == 0 { format!("a.shape[{i}]") } else { d.to_string() }).collect();
    format!("lambda a: a.reshape({})", tuple(&dims))
}

/// ONNX `Slice` (step 1): Python's slicing clamps the bounds as ONNX does.
fn slice(starts: &[i64], ends: &[i64], axes: &[i64]) -> String {
    let mut e = "a".to_string();
    for (i, (s, end)) in starts.iter().zip(ends).enumerate() {
        let ax = axes.get(i).copied().unwrap_or(i as i64);
        e = format!("{e}[(slice(None),) * ({ax} % a.dim()) + (slice({s}, {end}),)]");
    }
    format!("lambda a: {e}")
}

/// `Gemm`: `alpha · a' b' + beta · c`.
fn gemm(alpha: f64, beta: f64, ta: bool, tb: bool) -> String {
    let a = if ta { "a.T" } else { "a" };
    let b = if tb { "b.T" } else { "b" };
    let ab = if alpha == 1.0 { format!("{a} @ {b}") } else { format!("{} * ({a} @ {b})", py(alpha)) };
    let c = if beta == 1.0 { "c".to_string() } else { format!("{} * c", py(beta)) };
    format!("lambda a, b, c: {ab} + {c}")
}

impl Kind {
    /// Its PyTorch form: a Python lambda of its operands, in ONNX's order.
    pub fn torch(&self) -> String {
        use Kind::*;
        let cmp = |op: &str| format!("lambda a, b: (a {op} b).to(a.dtype)");
        let f1 = |f: &str| format!("lambda a: {f}(a)");
        match self {
            Add => "lambda a, b: a + b".into(),
            Sub => "lambda a, b: a - b".into(),
            Mul => "lambda a, b: a * b".into(),
            Div => "lambda a, b: a / b".into(),
            Pow { exponent } => format!("lambda a: torch.pow(a, {})", py(*exponent)),
            Equal => cmp("=="),
            Less => cmp("<"),
            Greater => cmp(">"),
            And => "lambda a, b: ((a != 0) & (b != 0)).to(a.dtype)".into(),
            Or => "lambda a, b: ((a != 0) | (b != 0)).to(a.dtype)".into(),
            Not => "lambda a: (a == 0).to(a.dtype)".into(),
            Where => "lambda a, b, c: torch.where(a != 0, b, c)".into(),
            Neg => "lambda a: -a".into(),
            Sqrt => f1("torch.sqrt"),
            Reciprocal => f1("torch.reciprocal"),
            Erf => f1("torch.erf"),
            Exp => f1("torch.exp"),
            Log => f1("torch.log"),
            Tanh => f1("torch.tanh"),
            Sigmoid => f1("torch.sigmoid"),
            Relu => f1("torch.relu"),
            Abs => f1("torch.abs"),
            Gelu => f1("F.gelu"),
            MatMul => "lambda a, b: torch.matmul(a, b)".into(),
            Gemm { alpha, beta, trans_a, trans_b } => gemm(*alpha, *beta, *trans_a, *trans_b),
            Softmax { axis } => format!("lambda a: torch.softmax(a, {axis})"),
            LogSoftmax { axis } => format!("lambda a: torch.log_softmax(a, {axis})"),
            Masked { axis, log, fill, on, add } => {
                let f = if *log { "torch.log_softmax" } else { "torch.softmax" };
                let x = match (add, on) {
                    (true, _) => "a + b".to_string(),
                    (false, true) => format!("a.masked_fill(b != 0, {})", py(*fill)),
                    (false, false) => format!("a.masked_fill(b == 0, {})", py(*fill)),
                };
                format!("lambda a, b: {f}({x}, {axis})")
            }
            LayerNorm { eps } => format!("lambda a, b, c: F.layer_norm(a, a.shape[-1:], b, c, {})", py(*eps)),
            ReduceMean { axes, keepdims } => reduce("mean", axes, *keepdims),
            ReduceSum { axes, keepdims } => reduce("sum", axes, *keepdims),
            Transpose { perm } => format!("lambda a: a.permute({})", tuple(perm)),
            Reshape { shape } => reshape(shape),
            Unsqueeze { axes } => format!("lambda a: onnx_unsqueeze(a, {})", list(axes)),
            Squeeze { axes } if axes.is_empty() => "lambda a: a.squeeze()".into(),
            Squeeze { axes } => format!("lambda a: a.squeeze({})", tuple(axes)),
            Expand { shape } => format!("lambda a: torch.broadcast_to(a, torch.broadcast_shapes(a.shape, {}))", tuple(shape)),
            Slice { starts, ends, axes } => slice(starts, ends, axes),
            Concat { axis } => format!("lambda *xs: torch.cat(xs, {axis})"),
            Narrow { axis, start, len } => format!("lambda a: a.narrow({axis}, {start}, {len})"),
            Gather { axis } => format!("lambda a, b: onnx_gather(a, b, {axis})"),
            Cast { to: CastTo::Float } | Identity => "lambda a: a".into(),
            Cast { to: CastTo::Bool } => "lambda a: (a != 0).to(a.dtype)".into(),
            Cast { to: CastTo::Int } => "lambda a: torch.trunc(a.detach())".into(),
            Trilu { upper: true, k } => format!("lambda a: torch.triu(a, {k})"),
            Trilu { upper: false, k } => format!("lambda a: torch.tril(a, {k})"),
            Dropout { p } => format!("Dropout({}, NODES[name][\"name\"])", py(*p)),
        }
    }
}

/// A parameter's attribute name in repro.py's `Onnx` module: its graph name with every
/// character that cannot be in a Python name made `_` (`block.ln1.weight` → `block_ln1_weight`),
/// `p{k}_` in front where that would start with a digit or repeat an earlier one.
pub fn attr(names: &[String]) -> Vec<String> {
    let mut out: Vec<String> = Vec::with_capacity(names.len());
    for (k, n) in names.iter().enumerate() {
        let a: String = n.chars().map(|c| if c.is_ascii_alphanumeric() || c == '_' { c } else { '_' }).collect();
        let clash = a.is_empty() || a.starts_with(|c: char| c.is_ascii_digit()) || out.contains(&a);
        out.push(if clash { format!("p{k}_{a}") } else { a });
    }
    out
}

impl OnnxNode {
    /// Its parameters' attribute names in repro.py's `Onnx` module (see [`attr`]).
    pub fn attrs(&self) -> Vec<String> {
        attr(&self.params.iter().map(|w| w.name.clone()).collect::<Vec<_>>())
    }

    /// Its PyTorch form: repro.py's `Onnx` module of its sources and its kind's call.
    pub fn torch_module(&self) -> String {
        let attrs = self.attrs();
        let srcs: Vec<String> = self
            .inputs
            .iter()
            .map(|s| match s {
                Src::Input => "(\"input\",)".to_string(),
                Src::Mask => "(\"mask\",)".to_string(),
                Src::Value(v) => format!("(\"value\", {})", pystr(v)),
                Src::Param(k) => {
                    let shape = self.params.get(*k).map_or_else(Vec::new, |w| w.shape.clone());
                    format!("(\"param\", {}, {})", pystr(attrs.get(*k).map_or("", String::as_str)), list(&shape))
                }
                Src::Const(l) => format!("(\"const\", [{}], {})", l.values.iter().map(|v| py(*v)).collect::<Vec<_>>().join(", "), list(&l.dims)),
            })
            .collect();
        // A Gather's indices stay as they are (token ids); every other operand is a float.
        let floats = if matches!(self.op, Kind::Gather { .. }) { ", floats=False" } else { "" };
        format!("(Onnx(name, {}, [{}], {}{floats}), width)", pystr(&self.name), srcs.join(", "), self.op.torch())
    }
}
