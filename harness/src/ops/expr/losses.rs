//! The named losses an expression may call, `cross_entropy(p, y, ignore_index=-100,
//! label_smoothing=0.0)`, `kl_div(p, y, log_target=False, reduction='mean')`,
//! `focal(p, y, alpha=0.25, gamma=2, reduction='none')` (torchvision's `sigmoid_focal_loss`),
//! `mse(p, y)`, `bce_with_logits(p, y)`, `info_nce(p, y, temperature=0.07, normalized=False)` and
//! `ctc(p, y, blank=0, reduction='mean', zero_infinity=False)`, each with its PyTorch defaults: a call becomes the loss kind's [`LossSpec`] and runs the loss
//! op's own kernel (`ops::loss::kind_loss`), so its value, its backward and its PyTorch line are
//! the `[loss] kind`'s. `reduction='none'` gives one term per element (`mse`, `bce_with_logits`,
//! `kl_div`, `focal`), per row or position (`cross_entropy`, 0 where the target is ignored: a
//! masked mean is `sum(cross_entropy(p, y, reduction='none') * mask) / sum(mask)`) or per row
//! (`info_nce`, `ctc`: its negative log-likelihood per sequence); `kl_div`'s `'mean'` is PyTorch's
//! mean over elements, `'batchmean'` the KL divergence. `ctc` reads `(batch, steps, classes)`
//! log-probabilities and label rows padded with the blank, and its input lengths from the padding
//! mask when the loss expression reads padded data (the check passes it `mask` as a third operand),
//! as `[loss] kind = "ctc"` does; the data's label sequences pad with the expression's blank.

use std::collections::BTreeMap;

use candle_core::Tensor;

use super::ast::Problem;
use super::funcs::{Func, Params};
use crate::error::Result;
use crate::scenario::{LossKind, LossSpec, Reduction};

/// How a named loss's terms are reduced.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reduce {
    /// To one number, as the spec's `reduction` says (`kl_div`'s `batchmean` is its `mean`).
    Scalar,
    /// The mean over every element (`kl_div`'s `reduction='mean'`).
    Elements,
    /// Not at all: one term per element (`reduction='none'`).
    None,
}

/// What a named loss reads, as the check holds its operands' shapes to it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reads {
    /// Logits whose last dimension is the classes (2 or more), and one class index per row
    /// or position, or one probability per class (`cross_entropy`).
    Classes,
    /// Two batches of embeddings of one width, `(batch, d)` (`info_nce`).
    Embeddings,
    /// A prediction and targets of one shape.
    Alike,
    /// `(batch, steps, classes)` log-probabilities and `(batch, length)` label rows (`ctc`).
    Labels,
}

/// A named loss call: the loss it runs and how it reduces.
#[derive(Debug, Clone, PartialEq)]
pub struct LossCall {
    /// The loss kind and its settings, as a `[loss]` table would give them.
    pub spec: LossSpec,
    /// Its reduction.
    pub reduce: Reduce,
    /// The `reduction` as PyTorch's argument (`'mean'`, `'batchmean'`, `'sum'`, `'none'`).
    pub reduction: String,
    /// What it reads.
    pub reads: Reads,
}

/// The functions that are named losses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Named {
    CrossEntropy,
    KlDiv,
    Focal,
    Mse,
    BceWithLogits,
    InfoNce,
    Ctc,
}

/// The named loss `f` is, if it is one.
fn named(f: Func) -> Option<Named> {
    Some(match f {
        Func::CrossEntropy => Named::CrossEntropy,
        Func::KlDiv => Named::KlDiv,
        Func::Focal => Named::Focal,
        Func::Mse => Named::Mse,
        Func::BceWithLogits => Named::BceWithLogits,
        Func::InfoNce => Named::InfoNce,
        Func::Ctc => Named::Ctc,
        Func::Abs
        | Func::Exp
        | Func::Log
        | Func::Log1p
        | Func::Sqrt
        | Func::Rsqrt
        | Func::Sigmoid
        | Func::Logsigmoid
        | Func::Tanh
        | Func::Relu
        | Func::Gelu
        | Func::Softplus
        | Func::Clamp
        | Func::Where
        | Func::Sum
        | Func::Mean
        | Func::Amax
        | Func::Amin
        | Func::Logsumexp
        | Func::Std
        | Func::Var
        | Func::Norm
        | Func::Softmax
        | Func::LogSoftmax
        | Func::Transpose
        | Func::Reshape
        | Func::Cumsum
        | Func::CosineSimilarity => return None,
    })
}

/// The reductions a named loss takes, its default first (PyTorch's, or torchvision's `'none'` for `focal`).
fn reductions(n: Named) -> &'static [&'static str] {
    match n {
        Named::CrossEntropy | Named::InfoNce | Named::Ctc => &["mean", "sum", "none"],
        Named::KlDiv => &["mean", "batchmean", "sum", "none"],
        Named::Focal => &["none", "mean", "sum"],
        Named::Mse | Named::BceWithLogits => &["mean", "sum", "none"],
    }
}

/// A finite constant parameter, or its default.
fn finite(params: &Params, key: &str, default: f64, col: usize) -> std::result::Result<f64, Problem> {
    match params.num(key) {
        Some(v) if !v.is_finite() => Err(Problem { col, message: format!("`{key}` must be a finite number, got {v}") }),
        Some(v) => Ok(v),
        None => Ok(default),
    }
}

/// The loss call of `f` with parameters `params` (written at column `col`).
pub fn call_of(f: Func, name: &str, params: &Params, col: usize) -> std::result::Result<LossCall, Problem> {
    let Some(n) = named(f) else { return Err(Problem { col, message: format!("`{name}` is not a loss") }) };
    let allowed = reductions(n);
    let reduction = params.text("reduction").or(allowed.first().copied()).unwrap_or("mean").to_string();
    if params.given.contains_key("reduction") && params.text("reduction").is_none() || !allowed.contains(&reduction.as_str()) {
        let names: Vec<String> = allowed.iter().map(|r| format!("'{r}'")).collect();
        return Err(Problem { col, message: format!("`{name}` takes reduction={}", names.join(", ")) });
    }
    let mut spec = LossSpec { reduction: if reduction == "sum" { Reduction::Sum } else { Reduction::Mean }, ..LossSpec::default() };
    spec.kind = match n {
        Named::CrossEntropy => {
            let ignore = finite(params, "ignore_index", crate::ops::loss::IGNORE_INDEX as f64, col)?;
            let eps = finite(params, "label_smoothing", 0.0, col)?;
            if ignore.fract() != 0.0 || ignore.abs() > 1e15 || !(0.0..=1.0).contains(&eps) {
                return Err(Problem { col, message: format!("`{name}` takes an integer ignore_index and a label_smoothing in [0, 1] (PyTorch's check), got {ignore} and {eps}") });
            }
            spec.ignore_index = Some(ignore as i64);
            spec.label_smoothing = Some(eps).filter(|e| *e > 0.0);
            LossKind::CrossEntropy
        }
        Named::KlDiv if params.flag("log_target") => LossKind::KlDivLogTarget,
        Named::KlDiv => LossKind::KlDiv,
        Named::Focal => {
            spec.consts = BTreeMap::from([("alpha".to_string(), finite(params, "alpha", 0.25, col)?), ("gamma".to_string(), finite(params, "gamma", 2.0, col)?)]);
            LossKind::Focal
        }
        Named::Mse => LossKind::Mse,
        Named::BceWithLogits => LossKind::BceLogits,
        Named::InfoNce => {
            let t = finite(params, "temperature", 0.07, col)?;
            if t == 0.0 {
                return Err(Problem { col, message: "`temperature` must not be 0 (the logits divide by it)".into() });
            }
            spec.consts = BTreeMap::from([("temperature".to_string(), t)]);
            spec.normalized = params.flag("normalized");
            LossKind::InfoNce
        }
        Named::Ctc => {
            let blank = finite(params, "blank", 0.0, col)?;
            if blank.fract() != 0.0 || !(0.0..=1e9).contains(&blank) {
                return Err(Problem { col, message: format!("`{name}` takes a class index ≥ 0 as its blank, got {blank}") });
            }
            spec.blank = Some(blank as usize);
            spec.zero_infinity = params.flag("zero_infinity");
            LossKind::Ctc
        }
    };
    let reduce = match reduction.as_str() {
        "none" => Reduce::None,
        "mean" if n == Named::KlDiv => Reduce::Elements,
        _ => Reduce::Scalar,
    };
    let reads = match n {
        Named::CrossEntropy => Reads::Classes,
        Named::InfoNce => Reads::Embeddings,
        Named::Ctc => Reads::Labels,
        Named::KlDiv | Named::Focal | Named::Mse | Named::BceWithLogits => Reads::Alike,
    };
    Ok(LossCall { spec, reduce, reduction, reads })
}

/// The call's value: the loss kind's kernel on the prediction `p` and targets `y` (and `ctc`'s
/// padding `mask`, when the expression reads padded data).
pub fn eval(call: &LossCall, p: &Tensor, y: &Tensor, mask: Option<&Tensor>) -> Result<Tensor> {
    if call.spec.kind == LossKind::Ctc {
        return match call.reduce {
            Reduce::None => crate::ops::loss::ctc_sequences(&call.spec, p, y, mask),
            Reduce::Scalar | Reduce::Elements => crate::ops::loss::Loss(call.spec.clone()).apply_masked(p, y, mask),
        };
    }
    let terms = || crate::ops::loss::kind_elements(&call.spec, p, y)?.ok_or_else(|| crate::ops::unplanned(format!("`{}` has no reduction='none'", <&str>::from(call.spec.kind))));
    match call.reduce {
        Reduce::Scalar => crate::ops::loss::kind_loss(&call.spec, p, y),
        Reduce::Elements => crate::run::opmath::mean_all(&terms()?),
        Reduce::None => terms(),
    }
}

/// The call in PyTorch, of the Python expressions `a` (the prediction) and `b` (the targets):
/// the loss kind's own line, as a function of `p` and `y` applied to them by `repro.py`'s
/// `f32_loss` (under autocast: in f32, outside autocast); `ctc`'s also of the padding mask,
/// `mask` (`repro.py`'s, `None` without padding; `None` in a layer).
pub fn python(call: &LossCall, a: &str, b: &str, mask: &str) -> String {
    let body = match (call.spec.kind, call.reduce) {
        (LossKind::KlDiv | LossKind::KlDivLogTarget, _) => {
            let log_target = if call.spec.kind == LossKind::KlDivLogTarget { "True" } else { "False" };
            format!("F.kl_div(p, y, reduction='{}', log_target={log_target})", call.reduction)
        }
        (_, Reduce::None) => crate::ops::loss::kind_torch_elements(&call.spec),
        (_, Reduce::Scalar | Reduce::Elements) => crate::ops::loss::kind_torch(&call.spec),
    };
    // One op of autocast's f32 list, as nanhunt computes it (`Func::f32_under_autocast`):
    // `repro.py`'s `f32_loss` runs it outside autocast on its operands cast up. PyTorch's own
    // autocast for mse, kl_div, bce_with_logits, cross_entropy and ctc (CUDA's f32 list); for
    // info_nce and focal, formulas in PyTorch whose `@` / `sigmoid` run in f16, nanhunt's
    // convention: a user writes the formula out for PyTorch's per-op autocast.
    if call.spec.kind == LossKind::Ctc {
        return format!("f32_loss(lambda p, y, mask: {body}, {a}, {b}, {mask})");
    }
    format!("f32_loss(lambda p, y: {body}, {a}, {b})")
}

/// The blank the data's label sequences pad with: the loss's `blank`, or for an expression the
/// blank of the `ctc(...)` it calls, or PyTorch's default 0.
pub fn blank(s: &LossSpec) -> usize {
    match (s.kind, s.blank) {
        (_, Some(b)) => b,
        (LossKind::Expr, None) => s.expr.as_deref().and_then(|t| ctc_blank(t, &s.consts)).unwrap_or(0),
        (_, None) => 0,
    }
}

/// The blank of the first `ctc(...)` the expression `text` calls (with `consts`), if it calls one
/// whose parameters bind: the class the data's label sequences pad with.
pub fn ctc_blank(text: &str, consts: &BTreeMap<String, f64>) -> Option<usize> {
    let ast = super::parse::parse(text).ok()?;
    let mut found = None;
    ast.walk(&mut |a| {
        let super::ast::Kind::Call(name, args, kwargs) = &a.kind else { return };
        if found.is_some() || name != "ctc" || args.len() < 2 {
            return;
        }
        let call = Params::bind(Func::Ctc, name, a.col, &args[2..], kwargs, consts).and_then(|p| call_of(Func::Ctc, name, &p, a.col));
        found = call.ok().and_then(|c| c.spec.blank);
    });
    found
}

#[cfg(test)]
#[path = "losses_tests.rs"]
mod tests;

#[cfg(test)]
#[path = "losses_ctc_tests.rs"]
mod ctc_tests;
