//! The data's knobs: `data.scale`, `data.inputs.mean` and `.std`, `data.target_scale`,
//! `data.inject`, `data.padding.max_fraction`, `data.seq_len` and `data.targets.ignore_fraction`.

use super::def::{around, Ctx, Def, Domain, End, Spec};
use super::value::{Added, Factor, Scale};
use crate::scenario::{input_shape, InjectInto, InjectValue, Injection, InputSpec, Layer, PaddingSpec, Scenario, SplitSel, TargetSpec};

/// Whether the inputs are drawn (normal or uniform), so they have a mean and a spread.
fn synthetic(s: &Scenario) -> bool {
    matches!(s.data.inputs, InputSpec::Normal { .. } | InputSpec::Uniform { .. })
}

/// Whether the inputs are token ids.
fn tokens(s: &Scenario) -> bool {
    matches!(s.data.inputs, InputSpec::Tokens { .. })
}

/// Whether padding is given as explicit lengths (not a fraction).
fn explicit_lengths(s: &Scenario) -> bool {
    s.data.padding.as_ref().is_some_and(|p| !p.lengths.is_empty())
}

/// `data.scale`: per-feature input multipliers, moved by a factor on one feature or all
/// (relative to the base scale, so its own value is always 1). Needs a known feature count.
pub struct InputScale;

impl Def for InputScale {
    type Value = Factor;
    const SPEC: Spec = Spec { scale: Some(Scale::Log), margin: true, by_default: true, riskier: End::High, within: None };
    fn applies(s: &Scenario) -> bool {
        input_shape(&s.data).is_some() && !tokens(s)
    }
    fn get(_: &Scenario) -> Option<Factor> {
        Some(Factor { feature: None, value: 1.0 })
    }
    fn set(s: &mut Scenario, Factor { feature, value }: Factor) -> bool {
        let Some(features) = input_shape(&s.data).map(|i| i.features) else { return false };
        if feature.is_some_and(|f| usize::from(f) >= features) {
            return false;
        }
        if s.data.scale.len() != features {
            s.data.scale = vec![1.0; features];
        }
        for (i, sc) in s.data.scale.iter_mut().enumerate() {
            if feature.is_none_or(|f| usize::from(f) == i) {
                *sc *= value;
            }
        }
        true
    }
    fn domain(c: &Ctx) -> Option<Domain> {
        let features = input_shape(&c.base.data)?.features;
        let (a, b) = c.spec.input_scale.map_or(around(1.0, c.decades), |[a, b]| (a, b));
        Some(Domain::Features(a, b, features))
    }
}

/// `data.inputs.mean` of synthetic inputs (the centre, for uniform inputs).
pub struct InputMean;

impl Def for InputMean {
    type Value = f64;
    const SPEC: Spec = Spec { scale: Some(Scale::Linear), margin: true, by_default: true, riskier: End::High, within: None };
    fn applies(s: &Scenario) -> bool {
        synthetic(s)
    }
    fn get(s: &Scenario) -> Option<f64> {
        match s.data.inputs {
            InputSpec::Normal { mean, .. } => Some(mean),
            InputSpec::Uniform { low, high } => Some((low + high) / 2.0),
            _ => None,
        }
    }
    fn set(s: &mut Scenario, value: f64) -> bool {
        match &mut s.data.inputs {
            InputSpec::Normal { mean, .. } => *mean = value,
            InputSpec::Uniform { low, high } => {
                let half = (*high - *low) / 2.0;
                (*low, *high) = (value - half, value + half);
            }
            _ => return false,
        }
        true
    }
    fn domain(c: &Ctx) -> Option<Domain> {
        Some(Domain::Range(-10f64.powf(c.narrow), 10f64.powf(c.narrow)))
    }
}

/// `data.inputs.std` of synthetic inputs (uniform inputs keep their centre and take this std).
pub struct InputStd;

impl Def for InputStd {
    type Value = f64;
    const SPEC: Spec = Spec { scale: Some(Scale::Log), margin: true, by_default: true, riskier: End::High, within: None };
    fn applies(s: &Scenario) -> bool {
        synthetic(s)
    }
    fn get(s: &Scenario) -> Option<f64> {
        match s.data.inputs {
            InputSpec::Normal { std, .. } => Some(std),
            InputSpec::Uniform { low, high } => Some((high - low) / 12f64.sqrt()),
            _ => None,
        }
    }
    fn set(s: &mut Scenario, value: f64) -> bool {
        match &mut s.data.inputs {
            InputSpec::Normal { std, .. } => *std = value,
            InputSpec::Uniform { low, high } => {
                let (mid, half) = ((*low + *high) / 2.0, value * 3f64.sqrt());
                (*low, *high) = (mid - half, mid + half);
            }
            _ => return false,
        }
        true
    }
    fn domain(c: &Ctx) -> Option<Domain> {
        Self::get(c.base).filter(|s| *s > 0.0).map(|s| c.around(s))
    }
}

/// `data.target_scale`.
pub struct TargetScale;

impl Def for TargetScale {
    type Value = f64;
    const SPEC: Spec = Spec { scale: Some(Scale::Log), margin: true, by_default: true, riskier: End::High, within: None };
    /// Not for class indices or label sequences (`labels`, `sequences`), which name classes.
    fn applies(s: &Scenario) -> bool {
        !matches!(s.data.targets, Some(TargetSpec::Labels { .. } | TargetSpec::NextTokenLabels { .. } | TargetSpec::Sequences { .. }))
    }
    fn get(s: &Scenario) -> Option<f64> {
        Some(s.data.target_scale)
    }
    fn set(s: &mut Scenario, v: f64) -> bool {
        s.data.target_scale = v;
        true
    }
    fn domain(c: &Ctx) -> Option<Domain> {
        Some(c.given(c.spec.target_scale, around(c.base.data.target_scale.abs().max(1e-3), c.decades)))
    }
}

/// `data.inject`: an added injection of a fraction of one split's input cells (several may be
/// added; it has no base value, and no margin).
pub struct Inject;

impl Def for Inject {
    type Value = Added;
    const SPEC: Spec = Spec { scale: Some(Scale::Log), margin: false, by_default: true, riskier: End::High, within: None };
    fn applies(s: &Scenario) -> bool {
        !tokens(s)
    }
    fn get(_: &Scenario) -> Option<Added> {
        None
    }
    fn set(s: &mut Scenario, Added { what, split, fraction }: Added) -> bool {
        if split != SplitSel::Train && s.data.validation.is_none() {
            return false;
        }
        s.data.inject.push(Injection { value: what, split, into: InjectInto::Inputs, fraction: Some(fraction), rows: vec![], columns: vec![], magnitude: 1e6 });
        true
    }
    fn domain(c: &Ctx) -> Option<Domain> {
        let (low, high) = c.spec.inject_fraction.map_or((1e-4, 0.1), |[a, b]| (a, b));
        let values = c.spec.inject_values.clone().unwrap_or(vec![InjectValue::Zero, InjectValue::Outlier]);
        Some(Domain::Inject { low, high, values, validation: c.base.data.validation.is_some() })
    }
}

/// `data.padding.max_fraction`: how much of each sequence may be padding (1: whole rows). Padding
/// is masked by attention and pooling, and is `ctc`'s input lengths, so it needs one of them;
/// explicit lengths are not a fraction.
pub struct PaddingFraction;

impl Def for PaddingFraction {
    type Value = f64;
    const SPEC: Spec = Spec { scale: Some(Scale::Linear), margin: true, by_default: true, riskier: End::High, within: Some((0.0, 1.0)) };
    fn applies(s: &Scenario) -> bool {
        s.data.seq_len.is_some()
            && !explicit_lengths(s)
            && (s.loss.kind == crate::scenario::LossKind::Ctc || s.model.all_layers().iter().any(|l| matches!(l, Layer::Attention(_) | Layer::MeanPool(_) | Layer::MaxPool(_))))
    }
    fn get(s: &Scenario) -> Option<f64> {
        Some(s.data.padding.as_ref().and_then(|p| p.max_fraction).unwrap_or(0.0))
    }
    fn set(s: &mut Scenario, v: f64) -> bool {
        s.data.padding = Some(PaddingSpec { max_fraction: Some(v), lengths: vec![] });
        true
    }
    fn domain(_: &Ctx) -> Option<Domain> {
        Some(Domain::Range(0.0, 1.0))
    }
}

/// `data.seq_len` of generated sequences.
pub struct SeqLen;

impl Def for SeqLen {
    type Value = u32;
    const SPEC: Spec = Spec { scale: Some(Scale::Integer), margin: true, by_default: true, riskier: End::High, within: Some((1.0, u32::MAX as f64)) };
    fn applies(s: &Scenario) -> bool {
        s.data.seq_len.is_some() && !explicit_lengths(s) && (synthetic(s) || matches!(&s.data.inputs, InputSpec::Tokens { rows, .. } if rows.is_empty()))
    }
    fn get(s: &Scenario) -> Option<u32> {
        s.data.seq_len.and_then(|l| u32::try_from(l).ok())
    }
    fn set(s: &mut Scenario, v: u32) -> bool {
        s.data.seq_len = Some(v as usize);
        true
    }
    fn domain(c: &Ctx) -> Option<Domain> {
        c.base.data.seq_len.map(|l| Domain::Range(1.0, f64::from((l as u32).saturating_mul(4))))
    }
}

/// `data.targets.ignore_fraction` of drawn class-index targets (`kind = "labels"`, and per
/// position `kind = "next_token_labels"`): the chance that a row's (a position's) target is the loss's `ignore_index`. More is riskier: a batch whose every target
/// is ignored is 0/0 = NaN in a mean `cross_entropy`, as in PyTorch.
pub struct IgnoreFraction;

impl Def for IgnoreFraction {
    type Value = f64;
    const SPEC: Spec = Spec { scale: Some(Scale::Linear), margin: true, by_default: true, riskier: End::High, within: Some((0.0, 1.0)) };
    fn applies(s: &Scenario) -> bool {
        matches!(s.data.targets, Some(TargetSpec::Labels { .. } | TargetSpec::NextTokenLabels { .. }))
    }
    fn get(s: &Scenario) -> Option<f64> {
        let Some(TargetSpec::Labels { ignore_fraction, .. } | TargetSpec::NextTokenLabels { ignore_fraction, .. }) = s.data.targets else { return None };
        Some(ignore_fraction)
    }
    fn set(s: &mut Scenario, v: f64) -> bool {
        let Some(TargetSpec::Labels { ignore_fraction, .. } | TargetSpec::NextTokenLabels { ignore_fraction, .. }) = &mut s.data.targets else { return false };
        *ignore_fraction = v;
        true
    }
    fn domain(_: &Ctx) -> Option<Domain> {
        Some(Domain::Range(0.0, 1.0))
    }
}
