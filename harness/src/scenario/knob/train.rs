//! The training loop's knobs: `train.batch_size`, `.epochs`, `.dtype`, `.precision`,
//! `.loss_scale.init`, `.loss_scale.growth_interval`, `.schedule.warmup_steps`,
//! `.accumulate`, and the scenario's `seed`.

use super::def::{Ctx, Def, Domain, End, Spec};
use super::value::{Scale, Value};
use crate::scenario::{rows, DTypeName, Precision, Scenario};

/// The values a count can take when moved: 1 and up.
const COUNT: Option<(f64, f64)> = Some((1.0, u32::MAX as f64));

/// `train.batch_size` (its base is the whole training set when unset).
pub struct BatchSize;

impl Def for BatchSize {
    type Value = u32;
    const SPEC: Spec = Spec { scale: Some(Scale::Integer), margin: true, by_default: true, riskier: End::High, within: COUNT };
    fn applies(_: &Scenario) -> bool {
        true
    }
    fn get(s: &Scenario) -> Option<u32> {
        s.train.batch_size.or(rows(s)).map(|n| n as u32)
    }
    fn set(s: &mut Scenario, v: u32) -> bool {
        s.train.batch_size = Some(v as usize);
        true
    }
    fn domain(c: &Ctx) -> Option<Domain> {
        let n = rows(c.base)?;
        let (a, b) = c.spec.batch_size.map_or((1, n as u32), |[a, b]| (a, b));
        Some(Domain::Range(f64::from(a), f64::from(b)))
    }
}

/// `train.epochs`.
pub struct Epochs;

impl Def for Epochs {
    type Value = u32;
    const SPEC: Spec = Spec { scale: Some(Scale::Integer), margin: true, by_default: true, riskier: End::High, within: COUNT };
    fn applies(_: &Scenario) -> bool {
        true
    }
    fn get(s: &Scenario) -> Option<u32> {
        Some(s.train.epochs as u32)
    }
    fn set(s: &mut Scenario, v: u32) -> bool {
        s.train.epochs = v as usize;
        true
    }
    fn domain(c: &Ctx) -> Option<Domain> {
        let (a, b) = c.spec.epochs.map_or((1, (c.base.train.epochs * 4) as u32), |[a, b]| (a, b));
        Some(Domain::Range(f64::from(a), f64::from(b)))
    }
}

/// `train.dtype`: only without autocast or a scaler, which keep f32 master weights.
pub struct Dtype;

impl Def for Dtype {
    type Value = DTypeName;
    const SPEC: Spec = Spec { scale: None, margin: false, by_default: true, riskier: End::High, within: None };
    fn applies(s: &Scenario) -> bool {
        s.train.precision.low().is_none() && !s.train.loss_scale.as_ref().is_some_and(|l| l.enabled)
    }
    fn get(s: &Scenario) -> Option<DTypeName> {
        Some(s.train.dtype)
    }
    fn set(s: &mut Scenario, v: DTypeName) -> bool {
        s.train.dtype = v;
        true
    }
    fn domain(c: &Ctx) -> Option<Domain> {
        let all = vec![DTypeName::F32, DTypeName::F16, DTypeName::Bf16];
        let other: Vec<Value> = c.spec.dtypes.clone().unwrap_or(all).into_iter().filter(|d| *d != c.base.train.dtype).map(Value::Dtype).collect();
        (!other.is_empty()).then_some(Domain::Choice(other))
    }
}

/// `train.precision`: autocast to f16 or bf16 over f32 master weights, or none (needs an f32 model).
pub struct Autocast;

impl Def for Autocast {
    type Value = Precision;
    const SPEC: Spec = Spec { scale: None, margin: false, by_default: true, riskier: End::High, within: None };
    fn applies(s: &Scenario) -> bool {
        s.train.dtype == DTypeName::F32
    }
    fn get(s: &Scenario) -> Option<Precision> {
        Some(s.train.precision)
    }
    fn set(s: &mut Scenario, v: Precision) -> bool {
        s.train.precision = v;
        true
    }
    fn domain(c: &Ctx) -> Option<Domain> {
        let other: Vec<Value> = [Precision::F32, Precision::AmpF16, Precision::AmpBf16].into_iter().filter(|p| *p != c.base.train.precision).map(Value::Precision).collect();
        (!other.is_empty()).then_some(Domain::Choice(other))
    }
}

/// Whether the loss scaler is on (its knobs need it).
fn scaler_on(s: &Scenario) -> bool {
    s.train.loss_scale.as_ref().is_some_and(|l| l.enabled)
}

/// `train.loss_scale.init`: the loss scaler's first scale.
pub struct LossScaleInit;

impl Def for LossScaleInit {
    type Value = f64;
    const SPEC: Spec = Spec { scale: Some(Scale::Log), margin: true, by_default: true, riskier: End::High, within: None };
    fn applies(s: &Scenario) -> bool {
        scaler_on(s)
    }
    fn get(s: &Scenario) -> Option<f64> {
        Some(s.train.loss_scale.as_ref()?.init)
    }
    fn set(s: &mut Scenario, v: f64) -> bool {
        s.train.loss_scale.get_or_insert_with(Default::default).init = v;
        true
    }
    fn domain(c: &Ctx) -> Option<Domain> {
        c.base.train.loss_scale.as_ref().map(|l| c.around(l.init))
    }
}

/// `train.loss_scale.growth_interval`: clean steps before the scale grows.
pub struct GrowthInterval;

impl Def for GrowthInterval {
    type Value = u32;
    const SPEC: Spec = Spec { scale: Some(Scale::Integer), margin: true, by_default: true, riskier: End::High, within: COUNT };
    fn applies(s: &Scenario) -> bool {
        scaler_on(s)
    }
    fn get(s: &Scenario) -> Option<u32> {
        Some(s.train.loss_scale.as_ref()?.growth_interval as u32)
    }
    fn set(s: &mut Scenario, v: u32) -> bool {
        s.train.loss_scale.get_or_insert_with(Default::default).growth_interval = v as usize;
        true
    }
    fn domain(c: &Ctx) -> Option<Domain> {
        // Up to 4× the base interval, and down to growing after every clean step.
        c.base.train.loss_scale.as_ref().map(|l| Domain::Range(1.0, f64::from((l.growth_interval as u32).saturating_mul(4))))
    }
}

/// `train.schedule.warmup_steps`: the linear warmup's length (0: none; less is riskier).
pub struct WarmupSteps;

impl Def for WarmupSteps {
    type Value = u32;
    const SPEC: Spec = Spec { scale: Some(Scale::Integer), margin: true, by_default: true, riskier: End::Low, within: Some((0.0, u32::MAX as f64)) };
    fn applies(s: &Scenario) -> bool {
        s.train.schedule.is_some()
    }
    fn get(s: &Scenario) -> Option<u32> {
        Some(s.train.schedule.as_ref()?.warmup_steps as u32)
    }
    fn set(s: &mut Scenario, v: u32) -> bool {
        s.train.schedule.get_or_insert_with(Default::default).warmup_steps = v as usize;
        true
    }
    fn domain(c: &Ctx) -> Option<Domain> {
        c.base.train.schedule.as_ref().map(|sch| Domain::Range(0.0, f64::from((sch.warmup_steps as u32).saturating_mul(4).max(8))))
    }
}

/// `train.accumulate`: micro-batches per optimizer step.
pub struct Accumulate;

impl Def for Accumulate {
    type Value = u32;
    const SPEC: Spec = Spec { scale: Some(Scale::Integer), margin: true, by_default: true, riskier: End::High, within: COUNT };
    fn applies(_: &Scenario) -> bool {
        true
    }
    fn get(s: &Scenario) -> Option<u32> {
        Some(s.train.accumulate as u32)
    }
    fn set(s: &mut Scenario, v: u32) -> bool {
        s.train.accumulate = v as usize;
        true
    }
    fn domain(c: &Ctx) -> Option<Domain> {
        Some(Domain::Range(1.0, f64::from((c.base.train.accumulate as u32).saturating_mul(4).max(8))))
    }
}

/// `seed`: the scenario's random streams. It moves only when `[search] knobs` lists it (a finding
/// that needs another seed is a different question) and has no order, so no margin.
pub struct Seed;

impl Def for Seed {
    type Value = u64;
    const SPEC: Spec = Spec { scale: None, margin: false, by_default: false, riskier: End::High, within: None };
    fn applies(_: &Scenario) -> bool {
        true
    }
    fn get(s: &Scenario) -> Option<u64> {
        Some(s.seed)
    }
    fn set(s: &mut Scenario, v: u64) -> bool {
        s.seed = v;
        true
    }
    fn domain(_: &Ctx) -> Option<Domain> {
        Some(Domain::Seeds)
    }
}
