//! Knobs: the settings of a scenario a hunt may move, as one typed enum.
//!
//! A knob is named by its dotted key (`optimizer.lr`) in `[search] knobs`, in
//! mutations, thresholds and summaries alike, and this file is the one place
//! that decides which knobs apply to a scenario. Adding a knob means adding a
//! variant here; the compiler then lists every `match` that must handle it.

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use strum::{IntoStaticStr, VariantArray, VariantNames};

use super::{input_shape, InputSpec, Layer, Named, Scenario};

/// A setting of a scenario that a search may move.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, IntoStaticStr, VariantArray, VariantNames, arbitrary::Arbitrary)]
pub enum Knob {
    /// `optimizer.lr`.
    #[strum(serialize = "optimizer.lr")]
    Lr,
    /// `model.init_scale`.
    #[strum(serialize = "model.init_scale")]
    InitScale,
    /// `data.scale`: per-feature input multipliers.
    #[strum(serialize = "data.scale")]
    InputScale,
    /// `data.inputs.mean` of synthetic inputs.
    #[strum(serialize = "data.inputs.mean")]
    InputMean,
    /// `data.inputs.std` of synthetic inputs.
    #[strum(serialize = "data.inputs.std")]
    InputStd,
    /// `data.target_scale`.
    #[strum(serialize = "data.target_scale")]
    TargetScale,
    /// `train.batch_size`.
    #[strum(serialize = "train.batch_size")]
    BatchSize,
    /// `train.epochs`.
    #[strum(serialize = "train.epochs")]
    Epochs,
    /// `data.inject`: an added injection into one split.
    #[strum(serialize = "data.inject")]
    Inject,
    /// `train.dtype`.
    #[strum(serialize = "train.dtype")]
    Dtype,
    /// `optimizer.kind`.
    #[strum(serialize = "optimizer.kind")]
    Optimizer,
    /// `optimizer.clip_grad_norm`.
    #[strum(serialize = "optimizer.clip_grad_norm")]
    ClipNorm,
    /// `loss.epsilon`.
    #[strum(serialize = "loss.epsilon")]
    LossEpsilon,
    /// `loss.clamp`.
    #[strum(serialize = "loss.clamp")]
    LossClamp,
    /// `optimizer.eps`: the update's denominator epsilon (Adam, AdamW, RMSprop).
    #[strum(serialize = "optimizer.eps")]
    OptimizerEps,
    /// `optimizer.beta2`: Adam's second-moment decay (searched on `1 − β₂`).
    #[strum(serialize = "optimizer.beta2")]
    Beta2,
    /// `optimizer.momentum` (SGD, RMSprop; searched on `1 − momentum`).
    #[strum(serialize = "optimizer.momentum")]
    Momentum,
    /// `eps` of every norm layer (`layer_norm`, `rms_norm`, `batch_norm`).
    #[strum(serialize = "model.layer_norm.eps")]
    NormEps,
    /// `seed`: the scenario's random streams (moved only when `[search] knobs` lists it).
    #[strum(serialize = "seed")]
    Seed,
    /// `data.padding.max_fraction`: how much of each sequence may be padding (1: whole rows).
    #[strum(serialize = "data.padding.max_fraction")]
    PaddingFraction,
    /// `data.seq_len` of generated sequences.
    #[strum(serialize = "data.seq_len")]
    SeqLen,
    /// `p` of every `dropout` layer and every recurrent dropout already on.
    #[strum(serialize = "model.dropout.p")]
    DropoutP,
    /// `train.precision`: autocast to f16 or bf16 over f32 master weights, or none.
    #[strum(serialize = "train.precision")]
    Precision,
    /// `train.loss_scale.init`: the loss scaler's first scale.
    #[strum(serialize = "train.loss_scale.init")]
    LossScaleInit,
    /// `train.loss_scale.growth_interval`: clean steps before the scale grows.
    #[strum(serialize = "train.loss_scale.growth_interval")]
    GrowthInterval,
    /// `train.schedule.warmup_steps`: the linear warmup's length.
    #[strum(serialize = "train.schedule.warmup_steps")]
    WarmupSteps,
    /// `train.accumulate`: micro-batches per optimizer step.
    #[strum(serialize = "train.accumulate")]
    Accumulate,
}

impl Knob {
    /// Whether this knob means anything for `s`: input scales need a known
    /// feature count, the input mean and spread need synthetic inputs, only
    /// some losses take an epsilon or a clamp, only some optimizers an eps,
    /// a β₂ or a momentum, a norm eps needs a `layer_norm` layer, autocast an f32
    /// model, the dtype a model without autocast or a scaler, the scaler's knobs a scaler and
    /// the warmup a `[train.schedule]`.
    pub fn applies(self, s: &Scenario) -> bool {
        let synthetic = matches!(s.data.inputs, InputSpec::Normal { .. } | InputSpec::Uniform { .. });
        let tokens = matches!(s.data.inputs, InputSpec::Tokens { .. });
        let explicit_lengths = s.data.padding.as_ref().is_some_and(|p| !p.lengths.is_empty());
        match self {
            Knob::InputScale => input_shape(&s.data).is_some() && !tokens,
            Knob::Inject => !tokens,
            // Padding is masked by attention and pooling; explicit lengths are not a fraction.
            Knob::PaddingFraction => s.data.seq_len.is_some() && !explicit_lengths && s.model.all_layers().iter().any(|l| matches!(l, Layer::Attention { .. } | Layer::MeanPool | Layer::MaxPool)),
            Knob::SeqLen => s.data.seq_len.is_some() && !explicit_lengths && (synthetic || matches!(&s.data.inputs, InputSpec::Tokens { rows, .. } if rows.is_empty())),
            Knob::InputMean | Knob::InputStd => synthetic,
            Knob::LossEpsilon => s.loss.kind.takes_epsilon(),
            Knob::LossClamp => s.loss.kind.takes_clamp(),
            Knob::OptimizerEps => s.optimizer.kind.takes_eps(),
            Knob::Beta2 => s.optimizer.kind.takes_beta2(),
            Knob::Momentum => s.optimizer.kind.takes_momentum(),
            Knob::DropoutP => s.model.all_layers().iter().any(|l| l.dropout_p() > 0.0 || matches!(l, Layer::Dropout { .. })),
            Knob::NormEps => s.model.all_layers().iter().any(|l| matches!(l, Layer::LayerNorm { .. } | Layer::RmsNorm { .. } | Layer::BatchNorm { .. })),
            // Autocast and the scaler keep f32 master weights: under either, the precision
            // moves, not the dtype. The scaler's knobs need a scaler that is on.
            Knob::Precision => s.train.dtype == super::DTypeName::F32,
            Knob::Dtype => s.train.precision.low().is_none() && !s.train.loss_scale.as_ref().is_some_and(|l| l.enabled),
            Knob::LossScaleInit | Knob::GrowthInterval => s.train.loss_scale.as_ref().is_some_and(|l| l.enabled),
            Knob::WarmupSteps => s.train.schedule.is_some(),
            Knob::Seed | Knob::Lr | Knob::InitScale | Knob::TargetScale | Knob::BatchSize | Knob::Epochs | Knob::Optimizer | Knob::ClipNorm | Knob::Accumulate => true,
        }
    }

    /// Whether an absent `[search] knobs` (all knobs) includes this one: all but the seed,
    /// which only moves when asked for, as a finding that needs another seed is a different question.
    pub fn by_default(self) -> bool {
        self != Knob::Seed
    }

    /// Whether the knob moves continuously (a value on a scale), so that it has a margin that
    /// `nanhunt margins` measures and `[expect] min_margin` can hold: not the seed, an injection,
    /// the clipping switch or a choice among dtypes, optimizers or precisions.
    pub fn has_margin(self) -> bool {
        match self {
            Knob::Lr | Knob::InitScale | Knob::InputScale | Knob::InputMean | Knob::InputStd | Knob::TargetScale | Knob::BatchSize | Knob::Epochs => true,
            Knob::LossEpsilon | Knob::LossClamp | Knob::OptimizerEps | Knob::Beta2 | Knob::Momentum | Knob::NormEps | Knob::PaddingFraction | Knob::SeqLen => true,
            Knob::DropoutP | Knob::LossScaleInit | Knob::GrowthInterval | Knob::WarmupSteps | Knob::Accumulate => true,
            Knob::Inject | Knob::Dtype | Knob::Optimizer | Knob::ClipNorm | Knob::Seed | Knob::Precision => false,
        }
    }

    /// Whether a dotted key of the scenario file (as in a report's diff) is set by this knob.
    pub fn sets_key(self, key: &str) -> bool {
        let name = self.name();
        name == key || name.strip_prefix(key).is_some_and(|rest| rest.starts_with('.'))
    }
}

impl std::fmt::Display for Knob {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl Serialize for Knob {
    fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.serialize_str(self.name())
    }
}

impl<'de> Deserialize<'de> for Knob {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        <Knob as VariantArray>::VARIANTS.iter().find(|k| k.name() == text).copied().ok_or_else(|| serde::de::Error::unknown_variant(&text, <Knob as VariantNames>::VARIANTS))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_unknown_names_list_the_knobs() {
        for k in <Knob as VariantArray>::VARIANTS {
            let json = serde_json::to_string(k).unwrap();
            assert_eq!(serde_json::from_str::<Knob>(&json).unwrap(), *k);
        }
        assert_eq!(serde_json::to_string(&Knob::Lr).unwrap(), "\"optimizer.lr\"");
        let err = serde_json::from_str::<Knob>("\"lr\"").unwrap_err().to_string();
        assert!(err.contains("unknown variant `lr`") && err.contains("`optimizer.lr`"), "{err}");
    }

    #[test]
    fn a_knob_sets_its_own_key_and_no_other() {
        assert!(Knob::Lr.sets_key("optimizer.lr"));
        assert!(!Knob::Lr.sets_key("optimizer.lr_decay"));
        assert!(Knob::InputMean.sets_key("data.inputs"), "a whole-table change covers the knob");
        assert!(!Knob::InputScale.sets_key("data.scale_groups"));
    }
}
