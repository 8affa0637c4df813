//! The loss's knobs: `loss.kind`, `loss.reduction`, `loss.epsilon`, `loss.clamp` and
//! `loss.label_smoothing`.

use super::def::{around, Ctx, Def, Domain, End, Spec};
use super::value::{Scale, Value};
use crate::ops::loss::stand_ins;
use crate::scenario::{LossKind, Reduction, Scenario};

/// PyTorch's `HuberLoss` default `delta`, which a change to `huber` sets when none is given.
const HUBER_DELTA: f64 = 1.0;

/// `loss.kind`: tried value by value, among the kinds that can stand in for the base's on its
/// model and data (`ops::loss::stand_ins`: they read the prediction alike and take its targets).
/// A change keeps what the new kind takes and drops the rest, as a user switching losses does:
/// `epsilon` and `clamp` where it takes them, `delta` for `huber` (PyTorch's 1 when unset).
pub struct Kind;

impl Def for Kind {
    type Value = LossKind;
    const SPEC: Spec = Spec { scale: None, margin: false, by_default: true, riskier: End::High, within: None };
    fn applies(s: &Scenario) -> bool {
        // A loss exported with the model (`from_model`) is the graph's: it does not move.
        s.loss.from_model.is_none()
    }
    fn get(s: &Scenario) -> Option<LossKind> {
        Some(s.loss.kind)
    }
    fn set(s: &mut Scenario, v: LossKind) -> bool {
        if v != s.loss.kind && !stand_ins(s.loss.kind, &s.data).contains(&v) {
            return false;
        }
        let l = &mut s.loss;
        l.kind = v;
        l.epsilon = l.epsilon.filter(|_| v.takes_epsilon());
        l.clamp = l.clamp.filter(|_| v.takes_clamp());
        l.delta = (v == LossKind::Huber).then(|| l.delta.unwrap_or(HUBER_DELTA));
        let ce = v == LossKind::CrossEntropy;
        l.ignore_index = l.ignore_index.filter(|_| ce);
        l.label_smoothing = l.label_smoothing.filter(|_| ce);
        l.precision = l.precision.filter(|_| v == LossKind::Expr);
        true
    }
    fn domain(c: &Ctx) -> Option<Domain> {
        let other: Vec<Value> = stand_ins(c.base.loss.kind, &c.base.data).into_iter().map(Value::Loss).collect();
        (!other.is_empty()).then_some(Domain::Choice(other))
    }
}

/// `loss.reduction`: the mean over elements, or their sum (which grows with the batch).
pub struct LossReduction;

impl Def for LossReduction {
    type Value = Reduction;
    const SPEC: Spec = Spec { scale: None, margin: false, by_default: true, riskier: End::High, within: None };
    fn applies(s: &Scenario) -> bool {
        // A loss exported with the model (`from_model`) is the graph's: it does not move.
        s.loss.from_model.is_none()
    }
    fn get(s: &Scenario) -> Option<Reduction> {
        Some(s.loss.reduction)
    }
    fn set(s: &mut Scenario, v: Reduction) -> bool {
        s.loss.reduction = v;
        true
    }
    fn domain(c: &Ctx) -> Option<Domain> {
        let other = match c.base.loss.reduction {
            Reduction::Mean => Reduction::Sum,
            Reduction::Sum => Reduction::Mean,
        };
        Some(Domain::Choice(vec![Value::Reduction(other)]))
    }
}

/// `loss.epsilon` (only some losses take one): a value on a log scale, or unset.
pub struct LossEpsilon;

impl Def for LossEpsilon {
    type Value = Option<f64>;
    const SPEC: Spec = Spec { scale: Some(Scale::Log), margin: true, by_default: true, riskier: End::High, within: None };
    fn applies(s: &Scenario) -> bool {
        s.loss.kind.takes_epsilon()
    }
    fn get(s: &Scenario) -> Option<Option<f64>> {
        Some(s.loss.epsilon)
    }
    fn set(s: &mut Scenario, v: Option<f64>) -> bool {
        s.loss.epsilon = v;
        true
    }
    fn domain(c: &Ctx) -> Option<Domain> {
        c.base.loss.epsilon.filter(|e| *e > 0.0).map(|e| c.eps(e))
    }
}

/// `loss.clamp`: the loss's probability clamp (only some losses take one), kept below 0.5.
pub struct LossClamp;

impl Def for LossClamp {
    type Value = Option<f64>;
    const SPEC: Spec = Spec { scale: Some(Scale::Log), margin: true, by_default: true, riskier: End::High, within: None };
    fn applies(s: &Scenario) -> bool {
        s.loss.kind.takes_clamp()
    }
    fn get(s: &Scenario) -> Option<Option<f64>> {
        Some(s.loss.clamp)
    }
    fn set(s: &mut Scenario, v: Option<f64>) -> bool {
        s.loss.clamp = v;
        true
    }
    fn domain(c: &Ctx) -> Option<Domain> {
        c.base.loss.clamp.filter(|c| *c > 0.0).map(|cl| {
            let (a, b) = around(cl, c.decades);
            Domain::Range(a, b.min(0.49))
        })
    }
}

/// `loss.label_smoothing`: `cross_entropy`'s ε in [0, 1] (unset is 0), PyTorch's formula. Above 0
/// the loss reads every class's log-probability (`−Σ_c log_softmax(p)_c`), not only the target's,
/// so a class whose log-probability is −∞ makes it ∞: larger is riskier. An expression's
/// `cross_entropy(p, y, label_smoothing=ls)` moves through its constant (`consts`).
pub struct LabelSmoothing;

impl Def for LabelSmoothing {
    type Value = f64;
    const SPEC: Spec = Spec { scale: Some(Scale::Linear), margin: true, by_default: true, riskier: End::High, within: Some((0.0, 1.0)) };
    fn applies(s: &Scenario) -> bool {
        s.loss.kind == LossKind::CrossEntropy && s.loss.from_model.is_none()
    }
    fn get(s: &Scenario) -> Option<f64> {
        Some(s.loss.label_smoothing.unwrap_or(0.0))
    }
    fn set(s: &mut Scenario, v: f64) -> bool {
        s.loss.label_smoothing = Some(v).filter(|e| *e > 0.0);
        true
    }
    fn domain(_: &Ctx) -> Option<Domain> {
        Some(Domain::Range(0.0, 1.0))
    }
}
