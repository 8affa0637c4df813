//! An expression as PyTorch code for `repro.py`: the same text with each function mapped to
//! its `torch` or `F` call (parameters written as keywords, integers as integers), constants
//! written as their values, and comparisons made masks of the main input's dtype, as nanhunt
//! computes them (`(x > 0).to(x.dtype)`). A named loss is its loss kind's own line
//! (`ops::loss::kind_torch`) as a function of `p` and `y`, applied to its operands.

use std::collections::BTreeMap;

use super::ast::{Ast, Kind};
use super::funcs::{Family, Func, Params};
use super::losses;
use crate::ops::py;

/// `a` as one Python expression; `main` names the tensor whose dtype masks take (`x`, or `p` in a loss).
pub fn python(a: &Ast, consts: &BTreeMap<String, f64>, main: &str) -> String {
    let go = |b: &Ast| python(b, consts, main);
    match &a.kind {
        Kind::Num(v) => py(*v),
        Kind::Int(i) => i.to_string(),
        Kind::Bool(b) => if *b { "True" } else { "False" }.into(),
        Kind::Str(s) => format!("'{s}'"),
        Kind::Name(n) => consts.get(n).copied().or_else(|| super::funcs::builtin(n)).map_or_else(|| n.clone(), py),
        Kind::Neg(x) => format!("(-{})", go(x)),
        Kind::Bin(op, x, y) if op.compares() => format!("({} {} {}).to({main}.dtype)", go(x), op.symbol(), go(y)),
        Kind::Bin(op, x, y) => format!("({} {} {})", go(x), op.symbol(), go(y)),
        Kind::Tuple(items) => format!("({},)", items.iter().map(go).collect::<Vec<_>>().join(", ")),
        Kind::Call(name, args, kwargs) => call(name, args, kwargs, consts, main),
    }
}

fn call(name: &str, args: &[Ast], kwargs: &[(String, Ast)], consts: &BTreeMap<String, f64>, main: &str) -> String {
    let Ok(f) = name.parse::<Func>() else { return format!("{name}(...)") };
    let n = f.operands().min(args.len());
    let mut parts: Vec<String> = args[..n].iter().map(|a| python(a, consts, main)).collect();
    if let (Family::Loss, [a, b]) = (f.family(), &parts[..]) {
        let call = Params::bind(f, name, 1, &args[n..], kwargs, consts).and_then(|p| losses::call_of(f, name, &p, 1));
        // `repro.py`'s loss reads `mask` (None without padding); a layer has none.
        let mask = if main == "p" { "mask" } else { "None" };
        return call.map_or_else(|e| format!("None  # {e}"), |c| losses::python(&c, a, b, mask));
    }
    if f == Func::Where {
        if let Some(c) = parts.first_mut() {
            *c = format!("({c} != 0)");
        }
    }
    let keyed = f.params().iter().map(|k| k.to_string()).zip(&args[n..]).chain(kwargs.iter().map(|(k, v)| (k.clone(), v)));
    parts.extend(keyed.map(|(k, v)| format!("{k}={}", param(v, consts, main))));
    let module = match f {
        Func::Logsigmoid | Func::Gelu | Func::Softplus => "F",
        _ => "torch",
    };
    format!("{module}.{name}({})", parts.join(", "))
}

/// A parameter's value: integers as Python integers (dimensions), tuples as tuples.
fn param(a: &Ast, consts: &BTreeMap<String, f64>, main: &str) -> String {
    match super::funcs::constant(a, consts) {
        Ok(Some(super::funcs::Value::Num(v))) => number(v),
        Ok(Some(super::funcs::Value::Bool(b))) => if b { "True" } else { "False" }.into(),
        Ok(Some(super::funcs::Value::Str(s))) => format!("'{s}'"),
        Ok(Some(super::funcs::Value::Tuple(t))) => format!("({},)", t.iter().map(|v| number(*v)).collect::<Vec<_>>().join(", ")),
        Ok(None) | Err(_) => python(a, consts, main),
    }
}

fn number(v: f64) -> String {
    if v.fract() == 0.0 && v.abs() < 1e15 {
        format!("{}", v as i64)
    } else {
        py(v)
    }
}
