//! The optimizer's knobs: `optimizer.lr`, `.kind`, `.clip_grad_norm`, `.eps`, `.beta2` and `.momentum`.

use super::def::{around_one, Ctx, Def, Domain, End, Spec};
use super::value::{Scale, Value};
use crate::scenario::{OptimizerKind, Scenario};

/// `optimizer.lr`.
pub struct Lr;

impl Def for Lr {
    type Value = f64;
    const SPEC: Spec = Spec { scale: Some(Scale::Log), margin: true, by_default: true, riskier: End::High, within: None };
    fn applies(_: &Scenario) -> bool {
        true
    }
    fn get(s: &Scenario) -> Option<f64> {
        Some(s.optimizer.lr)
    }
    fn set(s: &mut Scenario, v: f64) -> bool {
        s.optimizer.lr = v;
        true
    }
    fn domain(c: &Ctx) -> Option<Domain> {
        Some(c.given(c.spec.lr, super::def::around(c.base.optimizer.lr, c.decades)))
    }
}

/// `optimizer.kind`: tried value by value.
pub struct Optimizer;

impl Def for Optimizer {
    type Value = OptimizerKind;
    const SPEC: Spec = Spec { scale: None, margin: false, by_default: true, riskier: End::High, within: None };
    fn applies(_: &Scenario) -> bool {
        true
    }
    fn get(s: &Scenario) -> Option<OptimizerKind> {
        Some(s.optimizer.kind)
    }
    fn set(s: &mut Scenario, v: OptimizerKind) -> bool {
        s.optimizer.kind = v;
        true
    }
    fn domain(c: &Ctx) -> Option<Domain> {
        let all = vec![OptimizerKind::Sgd, OptimizerKind::Adam, OptimizerKind::Adamw, OptimizerKind::Rmsprop];
        let other: Vec<Value> = c.spec.optimizers.clone().unwrap_or(all).into_iter().filter(|o| *o != c.base.optimizer.kind).map(Value::Optimizer).collect();
        (!other.is_empty()).then_some(Domain::Choice(other))
    }
}

/// `optimizer.clip_grad_norm`: switched off, or on at 1 or 10 (no margin: a switch).
pub struct ClipNorm;

impl Def for ClipNorm {
    type Value = Option<f64>;
    const SPEC: Spec = Spec { scale: Some(Scale::Log), margin: false, by_default: true, riskier: End::High, within: None };
    fn applies(_: &Scenario) -> bool {
        true
    }
    fn get(s: &Scenario) -> Option<Option<f64>> {
        Some(s.optimizer.clip_grad_norm)
    }
    fn set(s: &mut Scenario, v: Option<f64>) -> bool {
        s.optimizer.clip_grad_norm = v;
        true
    }
    fn domain(_: &Ctx) -> Option<Domain> {
        Some(Domain::Switch(&[1.0, 10.0]))
    }
}

/// `optimizer.eps`: the update's denominator epsilon (Adam, AdamW, RMSprop).
pub struct OptimizerEps;

impl Def for OptimizerEps {
    type Value = f64;
    const SPEC: Spec = Spec { scale: Some(Scale::Log), margin: true, by_default: true, riskier: End::High, within: None };
    fn applies(s: &Scenario) -> bool {
        s.optimizer.kind.takes_eps()
    }
    fn get(s: &Scenario) -> Option<f64> {
        Some(s.optimizer.eps)
    }
    fn set(s: &mut Scenario, v: f64) -> bool {
        s.optimizer.eps = v;
        true
    }
    fn domain(c: &Ctx) -> Option<Domain> {
        (c.base.optimizer.eps > 0.0).then(|| c.eps(c.base.optimizer.eps))
    }
}

/// `optimizer.beta2`: Adam's second-moment decay, searched on `1 − β₂`.
pub struct Beta2;

impl Def for Beta2 {
    type Value = f64;
    const SPEC: Spec = Spec { scale: Some(Scale::Complement), margin: true, by_default: true, riskier: End::High, within: None };
    fn applies(s: &Scenario) -> bool {
        s.optimizer.kind.takes_beta2()
    }
    fn get(s: &Scenario) -> Option<f64> {
        Some(s.optimizer.beta2)
    }
    fn set(s: &mut Scenario, v: f64) -> bool {
        s.optimizer.beta2 = v;
        true
    }
    fn domain(c: &Ctx) -> Option<Domain> {
        let (a, b) = around_one(c.base.optimizer.beta2, c.decades);
        Some(Domain::Range(a, b))
    }
}

/// `optimizer.momentum` (SGD, RMSprop), searched on `1 − momentum`.
pub struct Momentum;

impl Def for Momentum {
    type Value = f64;
    const SPEC: Spec = Spec { scale: Some(Scale::Complement), margin: true, by_default: true, riskier: End::High, within: None };
    fn applies(s: &Scenario) -> bool {
        s.optimizer.kind.takes_momentum()
    }
    fn get(s: &Scenario) -> Option<f64> {
        Some(s.optimizer.momentum)
    }
    fn set(s: &mut Scenario, v: f64) -> bool {
        s.optimizer.momentum = v;
        true
    }
    fn domain(c: &Ctx) -> Option<Domain> {
        let (a, b) = around_one(c.base.optimizer.momentum, c.decades);
        Some(Domain::Range(a, b))
    }
}
