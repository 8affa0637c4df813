//! The model's knobs: `model.init_scale`, `model.layer_norm.eps` and `model.dropout.p`.

use super::def::{around, Ctx, Def, Domain, End, Spec};
use super::value::Scale;
use crate::ops::batch_norm::BatchNorm;
use crate::ops::dropout::Dropout;
use crate::ops::gated::Gated;
use crate::ops::layer_norm::LayerNorm;
use crate::ops::rms_norm::RmsNorm;
use crate::scenario::{Layer, Scenario};

/// `model.init_scale`.
pub struct InitScale;

impl Def for InitScale {
    type Value = f64;
    const SPEC: Spec = Spec { scale: Some(Scale::Log), margin: true, by_default: true, riskier: End::High, within: None };
    fn applies(_: &Scenario) -> bool {
        true
    }
    fn get(s: &Scenario) -> Option<f64> {
        Some(s.model.init_scale)
    }
    fn set(s: &mut Scenario, v: f64) -> bool {
        s.model.init_scale = v;
        true
    }
    fn domain(c: &Ctx) -> Option<Domain> {
        // Unless `[search] decades` says, it moves less: 100× is already extreme.
        Some(c.given(c.spec.init_scale, around(c.base.model.init_scale.abs().max(1e-3), c.narrow)))
    }
}

/// `model.layer_norm.eps`: the `eps` of every norm layer (`layer_norm`, `rms_norm`, `batch_norm`), nested ones included.
pub struct NormEps;

impl Def for NormEps {
    type Value = f64;
    const SPEC: Spec = Spec { scale: Some(Scale::Log), margin: true, by_default: true, riskier: End::High, within: None };
    fn applies(s: &Scenario) -> bool {
        s.model.all_layers().iter().any(|l| matches!(l, Layer::LayerNorm(_) | Layer::RmsNorm(_) | Layer::BatchNorm(_)))
    }
    fn get(s: &Scenario) -> Option<f64> {
        s.model.all_layers().into_iter().find_map(|l| match l {
            Layer::LayerNorm(LayerNorm { eps }) | Layer::BatchNorm(BatchNorm { eps, .. }) | Layer::RmsNorm(RmsNorm { eps: Some(eps) }) => Some(*eps),
            _ => None,
        })
    }
    fn set(s: &mut Scenario, value: f64) -> bool {
        s.model.for_each_layer_mut(&mut |l| match l {
            Layer::LayerNorm(LayerNorm { eps }) | Layer::BatchNorm(BatchNorm { eps, .. }) => *eps = value,
            Layer::RmsNorm(RmsNorm { eps }) => *eps = Some(value),
            _ => {}
        });
        true
    }
    fn domain(c: &Ctx) -> Option<Domain> {
        Self::get(c.base).filter(|e| *e > 0.0).map(|e| c.eps(e))
    }
}

/// `model.dropout.p`: `p` of every `dropout` layer and every recurrent dropout already on.
pub struct DropoutP;

impl Def for DropoutP {
    type Value = f64;
    const SPEC: Spec = Spec { scale: Some(Scale::Linear), margin: true, by_default: true, riskier: End::High, within: Some((0.0, 0.99)) };
    fn applies(s: &Scenario) -> bool {
        s.model.all_layers().iter().any(|l| l.op().dropout() > 0.0 || matches!(l, Layer::Dropout(_)))
    }
    fn get(s: &Scenario) -> Option<f64> {
        Some(s.model.all_layers().into_iter().map(|l| l.op().dropout()).find(|p| *p > 0.0).unwrap_or(0.0))
    }
    fn set(s: &mut Scenario, value: f64) -> bool {
        s.model.for_each_layer_mut(&mut |l| match l {
            Layer::Dropout(Dropout { p }) => *p = value,
            Layer::Lstm(Gated { recurrent_dropout, .. }) | Layer::Gru(Gated { recurrent_dropout, .. }) if *recurrent_dropout > 0.0 => *recurrent_dropout = value,
            _ => {}
        });
        true
    }
    fn domain(_: &Ctx) -> Option<Domain> {
        Some(Domain::Range(0.0, 0.9))
    }
}
