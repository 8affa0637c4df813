//! Mutations: the typed moves every search engine makes on a scenario.
//!
//! A [`Mutation`] sets one [`Knob`] (learning rate, a scale, the dtype, an
//! injection, ...). The proptest strategies in `space` produce them,
//! the fuzz targets build them from raw bytes through `arbitrary`, and the
//! minimizer moves their values back towards the base. Applying a mutation
//! never panics: it either changes the scenario or reports that the knob does
//! not apply; values out of range are caught by validation afterwards.

use serde::{Deserialize, Serialize};

use crate::scenario::*;

/// One change to one knob of a scenario.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, arbitrary::Arbitrary)]
#[serde(tag = "knob")]
pub enum Mutation {
    /// Set `optimizer.lr`.
    #[serde(rename = "optimizer.lr")]
    Lr {
        /// New learning rate.
        value: f64,
    },
    /// Set `model.init_scale`.
    #[serde(rename = "model.init_scale")]
    InitScale {
        /// New scale of the initial weights.
        value: f64,
    },
    /// Multiply one input feature (or every feature) by a factor.
    #[serde(rename = "data.scale")]
    InputScale {
        /// Feature index, or all features.
        feature: Option<u16>,
        /// Factor relative to the base scale.
        value: f64,
    },
    /// Set the mean of synthetic inputs (the centre, for uniform inputs).
    #[serde(rename = "data.inputs.mean")]
    InputMean {
        /// New mean.
        value: f64,
    },
    /// Set the spread of synthetic inputs (std; uniform inputs keep the same std).
    #[serde(rename = "data.inputs.std")]
    InputStd {
        /// New standard deviation.
        value: f64,
    },
    /// Set `data.target_scale`.
    #[serde(rename = "data.target_scale")]
    TargetScale {
        /// New target multiplier.
        value: f64,
    },
    /// Set `train.batch_size`.
    #[serde(rename = "train.batch_size")]
    BatchSize {
        /// New batch size.
        value: u32,
    },
    /// Set `train.epochs`.
    #[serde(rename = "train.epochs")]
    Epochs {
        /// New number of epochs.
        value: u32,
    },
    /// Add an injection of a fraction of one split's input cells.
    #[serde(rename = "data.inject")]
    Inject {
        /// What to write.
        what: InjectValue,
        /// Which split.
        split: SplitSel,
        /// Fraction of cells.
        value: f64,
    },
    /// Set `train.dtype`.
    #[serde(rename = "train.dtype")]
    Dtype {
        /// New dtype.
        value: DTypeName,
    },
    /// Set `optimizer.kind`.
    #[serde(rename = "optimizer.kind")]
    Optimizer {
        /// New update rule.
        value: OptimizerKind,
    },
    /// Set or remove `optimizer.clip_grad_norm`.
    #[serde(rename = "optimizer.clip_grad_norm")]
    ClipNorm {
        /// New clipping norm, or none.
        value: Option<f64>,
    },
    /// Set or remove `loss.epsilon`.
    #[serde(rename = "loss.epsilon")]
    LossEpsilon {
        /// New epsilon, or none.
        value: Option<f64>,
    },
    /// Set or remove `loss.clamp`.
    #[serde(rename = "loss.clamp")]
    LossClamp {
        /// New clamp, or none.
        value: Option<f64>,
    },
    /// Set `optimizer.eps`.
    #[serde(rename = "optimizer.eps")]
    OptimizerEps {
        /// New denominator epsilon.
        value: f64,
    },
    /// Set `optimizer.beta2`.
    #[serde(rename = "optimizer.beta2")]
    Beta2 {
        /// New second-moment decay.
        value: f64,
    },
    /// Set `optimizer.momentum`.
    #[serde(rename = "optimizer.momentum")]
    Momentum {
        /// New momentum.
        value: f64,
    },
    /// Set the `eps` of every norm layer (`layer_norm`, `rms_norm`, `batch_norm`), nested ones included.
    #[serde(rename = "model.layer_norm.eps")]
    NormEps {
        /// New variance epsilon.
        value: f64,
    },
    /// Set the scenario's `seed`.
    #[serde(rename = "seed")]
    Seed {
        /// New seed.
        value: u64,
    },
    /// Pad each sequence by up to this fraction (`data.padding.max_fraction`).
    #[serde(rename = "data.padding.max_fraction")]
    PaddingFraction {
        /// New largest padded fraction, in [0, 1].
        value: f64,
    },
    /// Set `data.seq_len` of generated sequences.
    #[serde(rename = "data.seq_len")]
    SeqLen {
        /// New sequence length.
        value: u32,
    },
    /// Set `p` of every dropout layer and every recurrent dropout that is on.
    #[serde(rename = "model.dropout.p")]
    DropoutP {
        /// New dropout probability, in [0, 1).
        value: f64,
    },
    /// Set `train.precision`.
    #[serde(rename = "train.precision")]
    Precision {
        /// New precision.
        value: Precision,
    },
    /// Set `train.loss_scale.init`.
    #[serde(rename = "train.loss_scale.init")]
    LossScaleInit {
        /// New first scale.
        value: f64,
    },
    /// Set `train.loss_scale.growth_interval`.
    #[serde(rename = "train.loss_scale.growth_interval")]
    GrowthInterval {
        /// New number of clean steps before growth.
        value: u32,
    },
    /// Set `train.schedule.warmup_steps`.
    #[serde(rename = "train.schedule.warmup_steps")]
    WarmupSteps {
        /// New warmup length (0: none).
        value: u32,
    },
    /// Set `train.accumulate`.
    #[serde(rename = "train.accumulate")]
    Accumulate {
        /// New number of micro-batches per step.
        value: u32,
    },
}

/// How a numeric knob is searched and bisected.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Scale {
    /// Multiplicative (bisect on a log scale).
    Log,
    /// Additive.
    Linear,
    /// Whole numbers.
    Integer,
    /// Multiplicative in the distance to 1 (`β₂`, momentum: 0.999 → 0.9999 is a step like 0.99 → 0.999).
    Complement,
}

impl Scale {
    /// The coordinate a scan or bisection moves in: `ln v` (log), `ln(1 − v)` (complement),
    /// `v` itself (linear, integer); `None` where it is not defined.
    pub fn coord(self, v: f64) -> Option<f64> {
        match self {
            Scale::Log => (v > 0.0).then(|| v.ln()),
            Scale::Complement => (v < 1.0).then(|| (1.0 - v).ln()),
            Scale::Linear | Scale::Integer => Some(v),
        }
    }

    /// The value at a coordinate (the inverse of [`Scale::coord`]).
    pub fn value(self, x: f64) -> f64 {
        match self {
            Scale::Log => x.exp(),
            Scale::Complement => 1.0 - x.exp(),
            Scale::Linear | Scale::Integer => x,
        }
    }

    /// Whether steps on this scale are factors (log, complement) rather than differences.
    pub fn is_multiplicative(self) -> bool {
        matches!(self, Scale::Log | Scale::Complement)
    }
}

impl Mutation {
    /// The knob this mutation sets.
    pub fn knob(&self) -> Knob {
        match self {
            Mutation::Lr { .. } => Knob::Lr,
            Mutation::InitScale { .. } => Knob::InitScale,
            Mutation::InputScale { .. } => Knob::InputScale,
            Mutation::InputMean { .. } => Knob::InputMean,
            Mutation::InputStd { .. } => Knob::InputStd,
            Mutation::TargetScale { .. } => Knob::TargetScale,
            Mutation::BatchSize { .. } => Knob::BatchSize,
            Mutation::Epochs { .. } => Knob::Epochs,
            Mutation::Inject { .. } => Knob::Inject,
            Mutation::Dtype { .. } => Knob::Dtype,
            Mutation::Optimizer { .. } => Knob::Optimizer,
            Mutation::ClipNorm { .. } => Knob::ClipNorm,
            Mutation::LossEpsilon { .. } => Knob::LossEpsilon,
            Mutation::LossClamp { .. } => Knob::LossClamp,
            Mutation::OptimizerEps { .. } => Knob::OptimizerEps,
            Mutation::Beta2 { .. } => Knob::Beta2,
            Mutation::Momentum { .. } => Knob::Momentum,
            Mutation::NormEps { .. } => Knob::NormEps,
            Mutation::Seed { .. } => Knob::Seed,
            Mutation::PaddingFraction { .. } => Knob::PaddingFraction,
            Mutation::SeqLen { .. } => Knob::SeqLen,
            Mutation::DropoutP { .. } => Knob::DropoutP,
            Mutation::Precision { .. } => Knob::Precision,
            Mutation::LossScaleInit { .. } => Knob::LossScaleInit,
            Mutation::GrowthInterval { .. } => Knob::GrowthInterval,
            Mutation::WarmupSteps { .. } => Knob::WarmupSteps,
            Mutation::Accumulate { .. } => Knob::Accumulate,
        }
    }

    /// The numeric value and its scale, for numeric knobs.
    pub fn numeric(&self) -> Option<(f64, Scale)> {
        match *self {
            Mutation::Lr { value } | Mutation::InitScale { value } | Mutation::TargetScale { value } => Some((value, Scale::Log)),
            Mutation::InputScale { value, .. } | Mutation::InputStd { value } => Some((value, Scale::Log)),
            Mutation::Inject { value, .. } => Some((value, Scale::Log)),
            Mutation::InputMean { value } | Mutation::PaddingFraction { value } | Mutation::DropoutP { value } => Some((value, Scale::Linear)),
            Mutation::BatchSize { value } | Mutation::Epochs { value } | Mutation::SeqLen { value } => Some((f64::from(value), Scale::Integer)),
            Mutation::GrowthInterval { value } | Mutation::WarmupSteps { value } | Mutation::Accumulate { value } => Some((f64::from(value), Scale::Integer)),
            Mutation::LossScaleInit { value } => Some((value, Scale::Log)),
            Mutation::ClipNorm { value: Some(v) } | Mutation::LossEpsilon { value: Some(v) } | Mutation::LossClamp { value: Some(v) } => Some((v, Scale::Log)),
            Mutation::OptimizerEps { value } | Mutation::NormEps { value } => Some((value, Scale::Log)),
            Mutation::Beta2 { value } | Mutation::Momentum { value } => Some((value, Scale::Complement)),
            _ => None,
        }
    }

    /// The same mutation with a new numeric value (integers are rounded).
    pub fn with_value(&self, v: f64) -> Mutation {
        let mut m = self.clone();
        let int = v.round().clamp(1.0, f64::from(u32::MAX)) as u32;
        match &mut m {
            Mutation::Lr { value } | Mutation::InitScale { value } | Mutation::TargetScale { value } => *value = v,
            Mutation::InputScale { value, .. } | Mutation::InputStd { value } | Mutation::InputMean { value } => *value = v,
            Mutation::Inject { value, .. } => *value = v,
            Mutation::BatchSize { value } | Mutation::Epochs { value } | Mutation::SeqLen { value } | Mutation::GrowthInterval { value } | Mutation::Accumulate { value } => *value = int,
            // A warmup of 0 steps is none: the one integer knob that may reach 0.
            Mutation::WarmupSteps { value } => *value = v.round().clamp(0.0, f64::from(u32::MAX)) as u32,
            Mutation::LossScaleInit { value } => *value = v,
            Mutation::PaddingFraction { value } => *value = v.clamp(0.0, 1.0),
            Mutation::DropoutP { value } => *value = v.clamp(0.0, 0.99),
            Mutation::ClipNorm { value } | Mutation::LossEpsilon { value } | Mutation::LossClamp { value } => *value = Some(v),
            Mutation::OptimizerEps { value } | Mutation::NormEps { value } | Mutation::Beta2 { value } | Mutation::Momentum { value } => *value = v,
            Mutation::Dtype { .. } | Mutation::Optimizer { .. } | Mutation::Seed { .. } | Mutation::Precision { .. } => {}
        }
        m
    }

    /// The knob's value in the base scenario, where the minimizer bisects back to.
    pub fn base_value(&self, base: &Scenario) -> Option<f64> {
        Some(match self {
            Mutation::Lr { .. } => base.optimizer.lr,
            Mutation::InitScale { .. } => base.model.init_scale,
            Mutation::InputScale { .. } => 1.0,
            Mutation::InputMean { .. } => match base.data.inputs {
                InputSpec::Normal { mean, .. } => mean,
                InputSpec::Uniform { low, high } => (low + high) / 2.0,
                _ => return None,
            },
            Mutation::InputStd { .. } => match base.data.inputs {
                InputSpec::Normal { std, .. } => std,
                InputSpec::Uniform { low, high } => (high - low) / 12f64.sqrt(),
                _ => return None,
            },
            Mutation::TargetScale { .. } => base.data.target_scale,
            Mutation::BatchSize { .. } => base.train.batch_size.or(rows(base))? as f64,
            Mutation::Epochs { .. } => base.train.epochs as f64,
            Mutation::ClipNorm { .. } => base.optimizer.clip_grad_norm?,
            Mutation::LossEpsilon { .. } => base.loss.epsilon?,
            Mutation::LossClamp { .. } => base.loss.clamp?,
            Mutation::OptimizerEps { .. } => base.optimizer.eps,
            Mutation::Beta2 { .. } => base.optimizer.beta2,
            Mutation::Momentum { .. } => base.optimizer.momentum,
            Mutation::NormEps { .. } => base.model.all_layers().into_iter().find_map(|l| match l {
                Layer::LayerNorm { eps } | Layer::BatchNorm { eps, .. } | Layer::RmsNorm { eps: Some(eps) } => Some(*eps),
                _ => None,
            })?,
            Mutation::PaddingFraction { .. } => base.data.padding.as_ref().and_then(|p| p.max_fraction).unwrap_or(0.0),
            Mutation::SeqLen { .. } => base.data.seq_len? as f64,
            Mutation::DropoutP { .. } => base.model.all_layers().into_iter().map(Layer::dropout_p).find(|p| *p > 0.0).unwrap_or(0.0),
            Mutation::LossScaleInit { .. } => base.train.loss_scale.as_ref()?.init,
            Mutation::GrowthInterval { .. } => base.train.loss_scale.as_ref()?.growth_interval as f64,
            Mutation::WarmupSteps { .. } => base.train.schedule.as_ref()?.warmup_steps as f64,
            Mutation::Accumulate { .. } => base.train.accumulate as f64,
            // An injection's base is "none": bisect its fraction towards zero; a seed has no order.
            Mutation::Inject { .. } | Mutation::Dtype { .. } | Mutation::Optimizer { .. } | Mutation::Seed { .. } | Mutation::Precision { .. } => return None,
        })
    }

    /// Applies the mutation; returns false (and leaves `s` alone) where the knob does not apply.
    pub fn apply(&self, s: &mut Scenario) -> bool {
        if !self.knob().applies(s) {
            return false;
        }
        match *self {
            Mutation::Lr { value } => s.optimizer.lr = value,
            Mutation::InitScale { value } => s.model.init_scale = value,
            Mutation::InputScale { feature, value } => {
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
            }
            Mutation::InputMean { value } => match &mut s.data.inputs {
                InputSpec::Normal { mean, .. } => *mean = value,
                InputSpec::Uniform { low, high } => {
                    let half = (*high - *low) / 2.0;
                    (*low, *high) = (value - half, value + half);
                }
                _ => return false,
            },
            Mutation::InputStd { value } => match &mut s.data.inputs {
                InputSpec::Normal { std, .. } => *std = value,
                InputSpec::Uniform { low, high } => {
                    let (mid, half) = ((*low + *high) / 2.0, value * 3f64.sqrt());
                    (*low, *high) = (mid - half, mid + half);
                }
                _ => return false,
            },
            Mutation::TargetScale { value } => s.data.target_scale = value,
            Mutation::BatchSize { value } => s.train.batch_size = Some(value as usize),
            Mutation::Epochs { value } => s.train.epochs = value as usize,
            Mutation::Inject { what, split, value } => {
                if split != SplitSel::Train && s.data.validation.is_none() {
                    return false;
                }
                s.data.inject.push(Injection { value: what, split, into: InjectInto::Inputs, fraction: Some(value), rows: vec![], columns: vec![], magnitude: 1e6 });
            }
            Mutation::Dtype { value } => s.train.dtype = value,
            Mutation::Optimizer { value } => s.optimizer.kind = value,
            Mutation::ClipNorm { value } => s.optimizer.clip_grad_norm = value,
            Mutation::LossEpsilon { value } => s.loss.epsilon = value,
            Mutation::LossClamp { value } => s.loss.clamp = value,
            Mutation::OptimizerEps { value } => s.optimizer.eps = value,
            Mutation::Beta2 { value } => s.optimizer.beta2 = value,
            Mutation::Momentum { value } => s.optimizer.momentum = value,
            Mutation::NormEps { value } => s.model.for_each_layer_mut(&mut |l| match l {
                Layer::LayerNorm { eps } | Layer::BatchNorm { eps, .. } => *eps = value,
                Layer::RmsNorm { eps } => *eps = Some(value),
                _ => {}
            }),
            Mutation::Seed { value } => s.seed = value,
            Mutation::PaddingFraction { value } => s.data.padding = Some(PaddingSpec { max_fraction: Some(value), lengths: vec![] }),
            Mutation::SeqLen { value } => s.data.seq_len = Some(value as usize),
            Mutation::Precision { value } => s.train.precision = value,
            Mutation::LossScaleInit { value } => s.train.loss_scale.get_or_insert_with(Default::default).init = value,
            Mutation::GrowthInterval { value } => s.train.loss_scale.get_or_insert_with(Default::default).growth_interval = value as usize,
            Mutation::WarmupSteps { value } => s.train.schedule.get_or_insert_with(Default::default).warmup_steps = value as usize,
            Mutation::Accumulate { value } => s.train.accumulate = value as usize,
            Mutation::DropoutP { value } => s.model.for_each_layer_mut(&mut |l| match l {
                Layer::Dropout { p } => *p = value,
                Layer::Lstm { recurrent_dropout, .. } | Layer::Gru { recurrent_dropout, .. } if *recurrent_dropout > 0.0 => *recurrent_dropout = value,
                _ => {}
            }),
        }
        true
    }
}

/// The setting a mutation writes: its knob, and for injections what they write where
/// (several injections can be added; every other knob has one value).
pub(crate) fn slot(m: &Mutation) -> (Knob, Option<(InjectValue, SplitSel)>) {
    match m {
        Mutation::Inject { what, split, .. } => (Knob::Inject, Some((*what, *split))),
        _ => (m.knob(), None),
    }
}

/// The candidate with no knob set twice: for each setting, only its last mutation is kept.
pub fn normalize(muts: &[Mutation]) -> Vec<Mutation> {
    let mut out: Vec<Mutation> = Vec::with_capacity(muts.len());
    for m in muts {
        out.retain(|o| slot(o) != slot(m));
        out.push(m.clone());
    }
    out
}

/// A scenario with mutations applied, if every one applies and the result validates.
pub fn mutate(base: &Scenario, mutations: &[Mutation]) -> Option<Scenario> {
    try_mutate(base, mutations).ok()
}

/// A scenario with mutations applied, or why not: the mutation that does not
/// apply, or the first validation problem of the result.
pub fn try_mutate(base: &Scenario, mutations: &[Mutation]) -> std::result::Result<Scenario, String> {
    let mut s = base.clone();
    for m in mutations {
        if !m.apply(&mut s) {
            return Err(format!("`{m}` does not apply to this scenario"));
        }
    }
    match validate(&s).into_iter().next() {
        None => Ok(s),
        Some(p) => Err(format!("invalid `{}`: {}", p.key, p.message)),
    }
}

impl std::fmt::Display for Mutation {
    /// `optimizer.lr = 0.01`, `data.scale[3] = 100`, `data.inject.nan.train = 0.001`, `train.dtype = f16` (3 significant digits).
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.knob())?;
        match self {
            Mutation::InputScale { feature: Some(i), .. } => write!(f, "[{i}]")?,
            Mutation::Inject { what, split, .. } => write!(f, ".{}.{}", what.name(), split.name())?,
            _ => {}
        }
        let off = |v: Option<f64>| v.map_or("null".to_string(), crate::human);
        match (self.numeric(), self) {
            (Some((v, Scale::Complement)), _) => write!(f, " = {}", crate::human_near_one(v)),
            (Some((v, _)), _) => write!(f, " = {}", crate::human(v)),
            (None, Mutation::Seed { value }) => write!(f, " = {value}"),
            (None, Mutation::Dtype { value }) => write!(f, " = {}", value.name()),
            (None, Mutation::Precision { value }) => write!(f, " = {}", value.name()),
            (None, Mutation::Optimizer { value }) => write!(f, " = {}", value.name()),
            (None, Mutation::ClipNorm { value } | Mutation::LossEpsilon { value } | Mutation::LossClamp { value }) => write!(f, " = {}", off(*value)),
            (None, _) => Ok(()),
        }
    }
}

/// `optimizer.lr = 0.01, train.dtype = f16`: a candidate in a line.
pub fn describe(muts: &[Mutation]) -> String {
    muts.iter().map(Mutation::to_string).collect::<Vec<_>>().join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn base() -> Scenario {
        crate::scenario::seed("s000_ex1_bce_mlp")
    }

    #[test]
    fn knobs_apply_and_report_their_base() {
        let b = base();
        let m = Mutation::Lr { value: 0.5 };
        let s = mutate(&b, std::slice::from_ref(&m)).unwrap();
        assert_eq!((s.optimizer.lr, m.base_value(&b)), (0.5, Some(1e-3)));
        let s = mutate(&b, &[Mutation::InputScale { feature: Some(3), value: 100.0 }]).unwrap();
        assert_eq!(s.data.scale, vec![1.0, 1.0, 1.0, 100.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0]);
        assert_eq!(Mutation::InputScale { feature: Some(3), value: 2.0 }.knob(), Knob::InputScale);
        assert_eq!(Mutation::InputScale { feature: Some(3), value: 2.0 }.to_string(), "data.scale[3] = 2");
        assert_eq!(Mutation::Inject { what: InjectValue::Nan, split: SplitSel::Train, value: 0.1 }.to_string(), "data.inject.nan.train = 0.1");
        assert_eq!(describe(&[Mutation::Dtype { value: DTypeName::F16 }, Mutation::ClipNorm { value: None }]), "train.dtype = f16, optimizer.clip_grad_norm = null");
    }

    #[test]
    fn inapplicable_or_invalid_mutations_are_refused() {
        let b = base();
        assert!(mutate(&b, &[Mutation::InputScale { feature: Some(99), value: 2.0 }]).is_none(), "no feature 99");
        assert!(mutate(&b, &[Mutation::Lr { value: -1.0 }]).is_none(), "negative lr fails validation");
        assert!(mutate(&b, &[Mutation::Lr { value: f64::NAN }]).is_none());
        assert_eq!(try_mutate(&b, &[Mutation::Lr { value: -1.0 }]).unwrap_err(), "invalid `optimizer.lr`: must be a positive finite number, got -1");
        assert!(mutate(&b, &[Mutation::Inject { what: InjectValue::Nan, split: SplitSel::Validation, value: 0.1 }]).is_none(), "no validation split");
    }

    #[test]
    fn normalized_candidates_set_each_knob_once() {
        let m = normalize(&[
            Mutation::InputScale { feature: None, value: 2.0 },
            Mutation::Lr { value: 0.1 },
            Mutation::InputScale { feature: Some(1), value: 5.0 },
            Mutation::Inject { what: InjectValue::Zero, split: SplitSel::Train, value: 0.1 },
            Mutation::Inject { what: InjectValue::Outlier, split: SplitSel::Train, value: 0.1 },
        ]);
        assert_eq!(m.iter().map(|m| m.knob()).collect::<Vec<_>>(), [Knob::Lr, Knob::InputScale, Knob::Inject, Knob::Inject]);
        assert_eq!(m[1], Mutation::InputScale { feature: Some(1), value: 5.0 }, "the last setting wins");
    }

    #[test]
    fn serde_tags_are_knob_names() {
        let all = [
            Mutation::Lr { value: 1.0 },
            Mutation::InitScale { value: 1.0 },
            Mutation::InputScale { feature: None, value: 1.0 },
            Mutation::InputMean { value: 1.0 },
            Mutation::InputStd { value: 1.0 },
            Mutation::TargetScale { value: 1.0 },
            Mutation::BatchSize { value: 1 },
            Mutation::Epochs { value: 1 },
            Mutation::Inject { what: InjectValue::Zero, split: SplitSel::Train, value: 0.1 },
            Mutation::Dtype { value: DTypeName::F16 },
            Mutation::Optimizer { value: OptimizerKind::Adam },
            Mutation::ClipNorm { value: None },
            Mutation::LossEpsilon { value: None },
            Mutation::LossClamp { value: None },
            Mutation::OptimizerEps { value: 1e-8 },
            Mutation::Beta2 { value: 0.999 },
            Mutation::Momentum { value: 0.9 },
            Mutation::NormEps { value: 1e-5 },
            Mutation::Seed { value: 7 },
            Mutation::Precision { value: Precision::AmpBf16 },
            Mutation::LossScaleInit { value: 1024.0 },
            Mutation::GrowthInterval { value: 100 },
            Mutation::WarmupSteps { value: 0 },
            Mutation::Accumulate { value: 4 },
        ];
        for m in all {
            let json = serde_json::to_value(&m).unwrap();
            assert_eq!(json["knob"].as_str(), Some(m.knob().name()), "{json}");
            assert_eq!(serde_json::from_value::<Mutation>(json).unwrap(), m);
        }
    }

    #[test]
    fn mixed_precision_knobs_apply_where_their_tables_are() {
        let b = base();
        let amp = mutate(&b, &[Mutation::Precision { value: Precision::AmpF16 }, Mutation::Accumulate { value: 4 }]).unwrap();
        assert_eq!((amp.train.precision, amp.train.accumulate), (Precision::AmpF16, 4));
        assert_eq!(Mutation::Precision { value: Precision::AmpF16 }.to_string(), "train.precision = amp_f16");
        // Autocast needs f32 master weights; the scaler's and the warmup's knobs need their tables.
        assert!(mutate(&b, &[Mutation::Dtype { value: DTypeName::F16 }, Mutation::Precision { value: Precision::AmpF16 }]).is_none());
        for m in [Mutation::LossScaleInit { value: 8.0 }, Mutation::GrowthInterval { value: 3 }, Mutation::WarmupSteps { value: 10 }] {
            assert!(mutate(&b, std::slice::from_ref(&m)).is_none(), "{m}");
            assert_eq!(m.base_value(&b), None);
        }
        let mut s = b.clone();
        s.train.loss_scale = Some(LossScaleSpec::default());
        s.train.schedule = Some(ScheduleSpec { warmup_steps: 50, ..Default::default() });
        let m = mutate(&s, &[Mutation::LossScaleInit { value: 8.0 }, Mutation::GrowthInterval { value: 3 }, Mutation::WarmupSteps { value: 0 }]).unwrap();
        let ls = m.train.loss_scale.unwrap();
        assert_eq!((ls.init, ls.growth_interval, m.train.schedule.unwrap().warmup_steps), (8.0, 3, 0));
        assert_eq!(Mutation::WarmupSteps { value: 7 }.base_value(&s), Some(50.0));
        assert_eq!(Mutation::WarmupSteps { value: 7 }.with_value(0.2), Mutation::WarmupSteps { value: 0 }, "a warmup can shrink to none");
        // The space around it moves them, and the screening corners try no warmup first.
        let space = crate::search::space::Space::of(&s);
        assert_eq!((space.loss_scale_init.is_some(), space.growth_interval, space.warmup, space.accumulate), (true, Some((1, 8000)), Some((0, 200)), Some((1, 8))));
        assert!(space.corners().iter().position(|c| c == &vec![Mutation::WarmupSteps { value: 0 }]) < space.corners().iter().position(|c| c == &vec![Mutation::WarmupSteps { value: 200 }]));
        assert!(space.categorical().contains(&Mutation::Precision { value: Precision::AmpBf16 }));
        // With a scaler the dtype does not move (it must stay f32); the precision does.
        assert!(space.dtypes.is_empty(), "{:?}", space.dtypes);
    }

    #[test]
    fn arbitrary_bytes_never_panic() {
        use arbitrary::{Arbitrary, Unstructured};
        let b = base();
        for seed in 0..500u32 {
            let bytes: Vec<u8> = (0..64).map(|i| (seed.wrapping_mul(2654435761).rotate_left(i) & 0xff) as u8).collect();
            if let Ok(ms) = Vec::<Mutation>::arbitrary(&mut Unstructured::new(&bytes)) {
                let _ = mutate(&b, &ms);
            }
        }
    }
}
