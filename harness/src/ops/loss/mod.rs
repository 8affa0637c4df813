//! The loss as a node of the training graph: it reads the prediction (the model's last
//! output, or its input for an empty stack) and the targets, and outputs the scalar the
//! backward pass starts from. Written as the formulas users write them, including the
//! unstable ones: `bce` is exactly `−(y log p + (1−y) log(1−p))`, so at `p = 0, y = 0` it
//! gives `0 · (−∞) = NaN`, the seeds' failure; `bce_torch` is PyTorch's clamped
//! `binary_cross_entropy`. Each kind's formula and its PyTorch expression (which `repro.py`
//! evaluates) sit side by side: the regression losses in `regression.rs`, those of
//! probabilities and logits in `probability.rs`, the named losses people call from PyTorch
//! (`kl_div`, torchvision's focal loss, the contrastive `info_nce`) in `named.rs`, `cross_entropy`
//! of class indices (`ignore_index`, `label_smoothing`) in `classes.rs`, `ctc` in `ctc.rs`; this file
//! dispatches every kind but `expr` to them and reduces (`kind_loss`), which is what an
//! expression's named losses (`cross_entropy(p, y)` inside `[loss] expr`) call. The cause engine explains a non-finite
//! loss from its inputs (`run::cause::loss`). `stand_in.rs` is the `loss.kind` knob's hook:
//! which other kinds can take a scenario's loss's place on its model and data.

use candle_core::{DType, Tensor, D};

use super::{py, Autocast, Cx, Explained, Facts, Op, Rounding, Torch};
use crate::error::{Error, Result};
use crate::run::opmath::{div_count, in_f32, mean_all};
use crate::scenario::{LossKind, LossSpec, Part, Planner, Reduction, Shape};

mod classes;
mod ctc;
pub mod expr;
mod indices;
mod named;
mod nll;
mod probability;
mod regression;
mod stand_in;

pub use ctc::per_sequence as ctc_sequences;
pub use indices::{ignore_index, indexes, reads_indices, IGNORE_INDEX};
pub use stand_in::stand_ins;

/// Whether the loss reads targets of another width than the prediction: `cross_entropy`'s
/// class indices (one per row or position), `ctc`'s label rows, or an expression (whose
/// shapes its own check reads: `cross_entropy(p, y)` inside it takes class indices too).
pub fn reads_own_targets(s: &LossSpec, p: &crate::scenario::Plan, targets: usize) -> bool {
    reads_indices(s, p, targets) || matches!(s.kind, LossKind::Ctc | LossKind::Expr)
}

/// The loss node: a [`LossSpec`] as an op of two inputs, the prediction `x` and the targets
/// (the context's second input).
#[derive(Debug, Clone, PartialEq)]
pub struct Loss(pub LossSpec);

impl Loss {
    /// The scalar loss of predictions `p` against targets `y`, both `(batch, k)`.
    pub fn apply(&self, p: &Tensor, y: &Tensor) -> Result<Tensor> {
        self.apply_masked(p, y, None)
    }

    /// The scalar loss, an expression loss or `ctc` (its input lengths) reading the padding
    /// `mask` (`(batch, seq)`) too.
    pub fn apply_masked(&self, p: &Tensor, y: &Tensor, mask: Option<&Tensor>) -> Result<Tensor> {
        if self.0.kind == LossKind::Expr {
            return expr::apply(&self.0, p, y, mask);
        }
        if self.0.kind == LossKind::Ctc {
            return ctc::ctc(&self.0, p, y, mask);
        }
        kind_loss(&self.0, p, y)
    }

    /// The scalar loss as the training loop computes it, under autocast to `low` with the
    /// prediction holding `held` (`autocast`, `None` without). An expression computes inside
    /// the autocast block, as the AMP recipe writes `loss = loss_fn(model(x), y)`: each node in
    /// its op's dtype (`ops::expr::amp`), from `p` in the dtype it holds; its own
    /// `precision = "f32"` computes it in f32, as every named kind does: those are on CUDA's f32
    /// list (`mse_loss`, `cross_entropy`, `kl_div`, ...), or read as `loss(p.float(), y)` where
    /// their formula has an op that is not (`bce`'s `1 - p`, `focal`'s sigmoid, `info_nce`'s `@`).
    pub fn apply_autocast(&self, p: &Tensor, y: &Tensor, mask: Option<&Tensor>, autocast: Option<(DType, DType)>) -> Result<Tensor> {
        match autocast {
            Some((low, held)) if self.0.kind == LossKind::Expr && self.0.precision.is_none() => expr::apply_amp(&self.0, (p, held), y, mask, low),
            Some(_) | None => self.apply_masked(p, y, mask),
        }
    }

    /// Its PyTorch expression of the prediction `p` and targets `y` (`torch` and `F` in scope).
    pub fn torch_expr(&self) -> String {
        if self.0.kind == LossKind::Expr {
            return expr::torch_expr(&self.0);
        }
        kind_torch(&self.0)
    }
}

impl Op for Loss {
    fn check(&self) -> Vec<(&'static str, String)> {
        let l = &self.0;
        let mut out = Vec::new();
        match (l.kind, l.expr.is_some() || !l.consts.is_empty()) {
            (LossKind::Expr, _) => out.extend(expr::problems(l)),
            (_, _) if l.expr.is_some() => out.push(("expr", "only `kind = \"expr\"` takes `expr`".into())),
            (LossKind::Focal | LossKind::InfoNce, _) => out.extend(named::problems(l)),
            (_, true) => out.push(("consts", "only `kind = \"expr\"`, `focal` (gamma, alpha) and `info_nce` (temperature) take `consts`".into())),
            (_, false) => {}
        }
        out.extend(classes::problems(l));
        out.extend(ctc::problems(l));
        if l.precision.is_some() && l.kind != LossKind::Expr {
            out.push(("precision", "only `kind = \"expr\"` takes `precision`: the named losses compute in f32 under autocast already".into()));
        }
        if l.normalized && l.kind != LossKind::InfoNce {
            out.push(("normalized", "only `info_nce` takes `normalized`".into()));
        }
        match (l.kind, l.delta) {
            (LossKind::Huber, Some(d)) if !(d > 0.0 && d.is_finite()) => out.push(("delta", format!("must be a positive finite number, got {d}"))),
            (LossKind::Huber, None) => out.push(("delta", "huber needs `delta`".into())),
            (LossKind::Huber, Some(_)) => {}
            (_, Some(_)) => out.push(("delta", "only huber takes `delta`".into())),
            (_, None) => {}
        }
        if let Some(c) = l.clamp.filter(|c| !(*c > 0.0 && *c < 0.5)) {
            out.push(("clamp", format!("must be in (0, 0.5), got {c}")));
        }
        if let Some(e) = l.epsilon.filter(|e| !(*e >= 0.0 && e.is_finite())) {
            out.push(("epsilon", format!("must be a finite number ≥ 0, got {e}")));
        }
        if l.epsilon.is_some() && !l.kind.takes_epsilon() {
            out.push(("epsilon", "only bce, naive_cross_entropy and mean_abs_ratio take an epsilon".into()));
        }
        if l.clamp.is_some() && !l.kind.takes_clamp() {
            out.push(("clamp", "only bce, bce_torch and naive_cross_entropy take probabilities to clamp".into()));
        }
        out
    }

    fn plan(&self, _: &mut Planner<'_>, _: Shape) -> std::result::Result<Shape, String> {
        Ok(Shape::Flat(1))
    }

    fn held(&self, _: Shape, _: Shape, values: u128) -> u128 {
        values
    }

    /// The loss, its scaling and division, and the casts around it.
    fn levels(&self) -> (u64, u64) {
        (64, 0)
    }

    fn dropout(&self) -> f64 {
        0.0
    }

    fn forward(&self, x: &Tensor, cx: &Cx<'_>) -> Result<Tensor> {
        let y = cx.others.first().ok_or_else(|| Error::Candle(candle_core::Error::Msg("the loss node reads the targets as its second input".into())))?;
        self.apply_masked(x, y, cx.mask)
    }

    /// Every loss is on autocast's f32 list, except a `[loss] expr`: under autocast it computes
    /// node by node (`apply_autocast`), each in its op's dtype.
    fn autocast(&self, _: Part) -> Autocast {
        Autocast::F32
    }

    fn rounding(&self, _: Part) -> Rounding {
        Rounding::Outside
    }

    /// A non-finite loss is explained from both its inputs by `run::cause::loss`.
    fn explain_forward(&self, _: Part, _: &Facts<'_>) -> Explained {
        None
    }

    /// Its backward is explained from both its inputs by `run::cause::backward`.
    fn explain_backward(&self, _: &Facts<'_>) -> Explained {
        None
    }

    fn explain_zeros(&self, _: usize, _: usize) -> Explained {
        None
    }

    fn torch(&self) -> Torch {
        Torch::Expr(self.torch_expr())
    }
}

/// What a kind's formula makes before the reduction.
enum Terms {
    /// One term per element, reduced over all of them.
    Elements(Tensor),
    /// One term per element and class, summed over the classes, then reduced over rows.
    Classes(Tensor),
    /// One term per element and class, all summed at once (in f32 for f16 and bf16, rounded
    /// once) and a mean divided by the rows afterwards, in the dtype: PyTorch's
    /// `-(input * target).sum() / rows` of `cross_entropy` with probability targets.
    Whole(Tensor),
    /// One term per element, summed, and divided by the rows for a mean (`kl_div`'s `batchmean`).
    Batch(Tensor),
    /// One term per row, reduced as PyTorch's `nll_loss` reduces (`nll.rs`: in f16 and bf16, a
    /// cascade sum in the dtype).
    Nll(Tensor),
}

/// A kind's terms, or its loss if the kind reduces itself (class indices, `ctc`).
enum Made {
    /// Terms still to reduce.
    Terms(Terms),
    /// The scalar loss.
    Loss(Tensor),
}

/// The terms of kind `s.kind` (not `expr`) of predictions `p` against targets `y`.
fn made(s: &LossSpec, p: &Tensor, y: &Tensor) -> Result<Made> {
    Ok(Made::Terms(match s.kind {
        LossKind::Expr => return Err(Error::Candle(candle_core::Error::Msg("an expression loss is evaluated by `loss::expr`".into()))),
        LossKind::Mse => regression::mse(p, y)?,
        LossKind::Mae => regression::mae(p, y)?,
        LossKind::Huber => regression::huber(s, p, y)?,
        LossKind::MeanAbsRatio => regression::mean_abs_ratio(s, p, y)?,
        LossKind::Bce => probability::bce(s, p, y)?,
        LossKind::BceTorch => probability::bce_torch(s, p, y)?,
        LossKind::BceLogits => probability::bce_logits(p, y)?,
        LossKind::CrossEntropy => {
            let k = p.dims().last().copied().unwrap_or(1);
            if indexes(p.elem_count(), k, y.elem_count()) {
                return Ok(Made::Loss(classes::cross_entropy(s, p, y)?));
            }
            probability::cross_entropy(p, &classes::smoothed(s, y, k)?)?
        }
        LossKind::NaiveCrossEntropy => probability::naive_cross_entropy(s, p, y)?,
        LossKind::KlDiv => named::kl_div(p, y)?,
        LossKind::KlDivLogTarget => named::kl_div_log_target(p, y)?,
        LossKind::Focal => named::focal(s, p, y)?,
        LossKind::InfoNce => named::info_nce(s, p, y)?,
        LossKind::Ctc => return Ok(Made::Loss(ctc::ctc(s, p, y, None)?)),
    }))
}

/// A loss kind's own explanation: the rule, the reason, and the row it names (the operands
/// are shown from there), if it names one.
pub type Why = Option<(super::diagnosis::Rule, String, Option<usize>)>;

/// Why the loss of kind `s.kind` of finite predictions `p` and targets `y` (under the padding
/// `mask`) is not finite in dtype `d`, where its kind explains its own formula; `scalar` says
/// whether the loss is reduced to one number (`false` for a named loss inside an expression
/// with `reduction='none'` or an elementwise mean), and each kind decides what it can say then:
/// `cross_entropy` whose every target is `ignore_index` (0/0) or whose rows' sum overflows
/// (`classes.rs`) and `info_nce` whose logits overflow (`named.rs`) only of the scalar loss,
/// `ctc` with a row too short for its labels (`ctc.rs`, naming the row) reduced or not. `None`
/// for the other kinds, and where no rule applies.
pub fn explain(s: &LossSpec, p: &Tensor, y: &Tensor, mask: Option<&Tensor>, d: crate::scenario::DTypeName, scalar: bool) -> Result<Why> {
    let whole = |e: Explained| e.map(|(rule, why)| (rule, why, None));
    match s.kind {
        LossKind::CrossEntropy | LossKind::InfoNce if !scalar => Ok(None),
        LossKind::CrossEntropy => match classes::all_ignored(s, p, y)? {
            Some(found) => Ok(whole(Some(found))),
            None => Ok(whole(classes::overflow(s, p, y, d)?)),
        },
        LossKind::InfoNce => Ok(whole(named::info_nce_overflow(s, p, y, d)?)),
        LossKind::Ctc => Ok(ctc::infeasible(s, p, y, mask).map(|(r, why)| (super::diagnosis::Rule::LogOfZero, why, Some(r)))),
        LossKind::Expr
        | LossKind::Mse
        | LossKind::Mae
        | LossKind::Huber
        | LossKind::Bce
        | LossKind::BceTorch
        | LossKind::BceLogits
        | LossKind::NaiveCrossEntropy
        | LossKind::MeanAbsRatio
        | LossKind::KlDiv
        | LossKind::KlDivLogTarget
        | LossKind::Focal => Ok(None),
    }
}

/// The scalar loss of kind `s.kind` (not `expr`) of predictions `p` against targets `y`.
pub fn kind_loss(s: &LossSpec, p: &Tensor, y: &Tensor) -> Result<Tensor> {
    let terms = match made(s, p, y)? {
        Made::Loss(l) => return Ok(l),
        Made::Terms(t) => t,
    };
    match terms {
        Terms::Elements(e) => reduce(s.reduction, &e),
        Terms::Nll(rows) => nll::reduce(s.reduction, &rows),
        Terms::Classes(c) => reduce(s.reduction, &in_f32(&c, |t| Ok(t.sum(D::Minus1)?))?),
        Terms::Whole(c) => {
            let sum = in_f32(&c, |t| Ok(t.sum_all()?))?;
            match s.reduction {
                Reduction::Mean => in_f32(&sum, |t| div_count(t, c.elem_count() / c.dims().last().copied().unwrap_or(1).max(1))),
                Reduction::Sum => Ok(sum),
            }
        }
        // `batchmean`: PyTorch's `sum() / size(0)`, the sum rounded to the dtype (∞ in f16 past
        // 65504) and then truly divided by the rows (in f32 for f16 and bf16), as `Whole`.
        Terms::Batch(e) => match s.reduction {
            Reduction::Mean => {
                let sum = in_f32(&e, |t| Ok(t.sum_all()?))?;
                in_f32(&sum, |t| div_count(t, e.dims().first().copied().unwrap_or(1).max(1)))
            }
            Reduction::Sum => reduce(Reduction::Sum, &e),
        },
    }
}

/// The unreduced loss (PyTorch's `reduction='none'`): one term per element for `mse`,
/// `bce_logits`, `kl_div`, `focal`; one per row (or position: the prediction's shape without its
/// classes) for `cross_entropy`, 0 with a zero gradient where the target is `ignore_index`, and
/// for `info_nce`; `None` for a kind that has no such form here (`ctc`).
pub fn kind_elements(s: &LossSpec, p: &Tensor, y: &Tensor) -> Result<Option<Tensor>> {
    let k = p.dims().last().copied().unwrap_or(1);
    if s.kind == LossKind::CrossEntropy && indexes(p.elem_count(), k, y.elem_count()) {
        return Ok(Some(classes::cross_entropy_rows(s, p, y)?));
    }
    Ok(match made(s, p, y)? {
        Made::Terms(Terms::Elements(e) | Terms::Batch(e) | Terms::Nll(e)) => Some(e),
        // Summed over the classes as the reduction sums them: one term per row.
        Made::Terms(Terms::Classes(c) | Terms::Whole(c)) => Some(in_f32(&c, |t| Ok(t.sum(D::Minus1)?))?),
        Made::Loss(_) => None,
    })
}

/// Kind `s.kind`'s PyTorch expression (not `expr`) of the prediction `p` and targets `y`
/// (`torch` and `F` in scope).
pub fn kind_torch(s: &LossSpec) -> String {
    let (terms, classes) = match s.kind {
        LossKind::Mse => (regression::MSE.to_string(), false),
        LossKind::Mae => (regression::MAE.to_string(), false),
        LossKind::Huber => return regression::huber_torch(s),
        LossKind::MeanAbsRatio => (regression::mean_abs_ratio_torch(s), false),
        LossKind::Bce => (probability::bce_torch_expr(s), false),
        LossKind::BceTorch => return format!("F.binary_cross_entropy({}, y, reduction={})", clamped(s, "p"), reduction(s)),
        LossKind::BceLogits => return format!("F.binary_cross_entropy_with_logits(p, y, reduction={})", reduction(s)),
        LossKind::CrossEntropy => return classes::torch(s),
        LossKind::NaiveCrossEntropy => (probability::naive_cross_entropy_torch(s), true),
        LossKind::Expr => return "None  # an expression loss is written by `loss::expr`".into(),
        LossKind::KlDiv => return named::kl_div_torch(s, false),
        LossKind::KlDivLogTarget => return named::kl_div_torch(s, true),
        LossKind::Focal => return named::focal_torch(s),
        LossKind::InfoNce => return named::info_nce_torch(s, reduction(s)),
        LossKind::Ctc => return ctc::torch(s),
    };
    let rows = if classes { ".sum(dim=-1)" } else { "" };
    format!("({terms}){rows}.{}()", method(s))
}

/// [`kind_elements`] in PyTorch (`reduction='none'`); for a kind without that form, the reduced loss.
pub fn kind_torch_elements(s: &LossSpec) -> String {
    match s.kind {
        LossKind::Mse => "F.mse_loss(p, y, reduction='none')".into(),
        LossKind::BceLogits => "F.binary_cross_entropy_with_logits(p, y, reduction='none')".into(),
        LossKind::KlDiv => "F.kl_div(p, y, reduction='none', log_target=False)".into(),
        LossKind::KlDivLogTarget => "F.kl_div(p, y, reduction='none', log_target=True)".into(),
        LossKind::Focal => named::focal_elements_torch(s),
        LossKind::CrossEntropy => classes::torch_rows(s),
        LossKind::InfoNce => named::info_nce_torch(s, "'none'"),
        LossKind::Ctc => ctc::torch_reducing(s, "'none'"),
        LossKind::Mae | LossKind::Huber | LossKind::MeanAbsRatio | LossKind::Bce | LossKind::BceTorch | LossKind::NaiveCrossEntropy | LossKind::Expr => kind_torch(s),
    }
}

/// The reduction's PyTorch method name.
fn method(s: &LossSpec) -> &'static str {
    match s.reduction {
        Reduction::Mean => "mean",
        Reduction::Sum => "sum",
    }
}

/// `p` clamped into `[clamp, 1 − clamp]` if the loss clamps, as Python (`p` names the tensor).
fn clamped(s: &LossSpec, p: &str) -> String {
    match s.clamp {
        Some(c) => format!("torch.clamp({p}, {}, {})", py(c), py(1.0 - c)),
        None => p.to_string(),
    }
}

/// The reduction as PyTorch's `reduction=` argument.
fn reduction(s: &LossSpec) -> &'static str {
    match s.reduction {
        Reduction::Mean => "'mean'",
        Reduction::Sum => "'sum'",
    }
}

/// `p` clamped into `[clamp, 1 − clamp]` if the loss clamps.
fn clamp(s: &LossSpec, p: &Tensor) -> Result<Tensor> {
    Ok(match s.clamp {
        Some(c) => crate::run::kernel::elementwise::clamp(p, c, 1.0 - c)?,
        None => p.clone(),
    })
}

/// The reduction, accumulated in f32 for f16 and bf16 and rounded once, as PyTorch does; a
/// mean divides by the count (`opmath::mean_all`).
fn reduce(r: Reduction, elems: &Tensor) -> Result<Tensor> {
    match r {
        Reduction::Mean => mean_all(elems),
        Reduction::Sum => in_f32(elems, |e| Ok(e.sum_all()?)),
    }
}

#[cfg(test)]
mod tests;
