//! Knobs: the settings of a scenario a hunt may move, as one table.
//!
//! A knob is named by its dotted key (`optimizer.lr`) in `[search] knobs`, in
//! mutations, thresholds and summaries alike. Each knob is one unit struct
//! implementing [`Def`] (in `optimizer.rs`, `data.rs`, `train.rs`, `model.rs`):
//! its key, scale and margin, whether it applies to a scenario, how to read and
//! set it, and its default search domain. The table below lists each once and
//! makes the [`Knob`] enum from it; mutations (`search::mutation`) are a knob
//! and a [`Value`], and a search space (`search::space`) a list of knobs with
//! their domains. Adding a knob is its `impl Def` plus one line here (and its
//! place in the search's seeded orders, `search/space/order.rs`).

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use strum::VariantArray;

use super::Scenario;

mod data;
mod def;
mod model;
mod optimizer;
mod train;
mod value;

pub use def::{around, around_one, Ctx, Def, Domain, End, Entry, Spec};
pub use value::{Added, Factor, Fields, KnobValue, Scale, Value};

/// Makes the [`Knob`] enum and its table of entries from one list: a variant and its definition.
macro_rules! table {
    ($($(#[doc = $doc:literal])* $variant:ident => $def:ty,)*) => {
        /// A setting of a scenario that a search may move (declared in the order of the table).
        #[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, VariantArray, arbitrary::Arbitrary)]
        pub enum Knob {
            $($(#[doc = $doc])* $variant,)*
        }

        /// The number of knobs.
        const COUNT: usize = [$(stringify!($variant)),*].len();

        /// Each knob's entry, in the table's order.
        static TABLE: [Entry; COUNT] = [$(Entry::of::<$def>(),)*];

        /// Each knob's key, in the table's order.
        static KEYS: [&str; COUNT] = [$(<$def as Def>::SPEC.key,)*];
    };
}

table! {
    /// `optimizer.lr`.
    Lr => optimizer::Lr,
    /// `model.init_scale`.
    InitScale => model::InitScale,
    /// `data.scale`: per-feature input multipliers.
    InputScale => data::InputScale,
    /// `data.inputs.mean` of synthetic inputs.
    InputMean => data::InputMean,
    /// `data.inputs.std` of synthetic inputs.
    InputStd => data::InputStd,
    /// `data.target_scale`.
    TargetScale => data::TargetScale,
    /// `train.batch_size`.
    BatchSize => train::BatchSize,
    /// `train.epochs`.
    Epochs => train::Epochs,
    /// `data.inject`: an added injection into one split.
    Inject => data::Inject,
    /// `train.dtype`.
    Dtype => train::Dtype,
    /// `optimizer.kind`.
    Optimizer => optimizer::Optimizer,
    /// `optimizer.clip_grad_norm`.
    ClipNorm => optimizer::ClipNorm,
    /// `loss.epsilon`.
    LossEpsilon => model::LossEpsilon,
    /// `loss.clamp`.
    LossClamp => model::LossClamp,
    /// `optimizer.eps`: the update's denominator epsilon (Adam, AdamW, RMSprop).
    OptimizerEps => optimizer::OptimizerEps,
    /// `optimizer.beta2`: Adam's second-moment decay (searched on `1 − β₂`).
    Beta2 => optimizer::Beta2,
    /// `optimizer.momentum` (SGD, RMSprop; searched on `1 − momentum`).
    Momentum => optimizer::Momentum,
    /// `eps` of every norm layer (`layer_norm`, `rms_norm`, `batch_norm`).
    NormEps => model::NormEps,
    /// `seed`: the scenario's random streams (moved only when `[search] knobs` lists it).
    Seed => train::Seed,
    /// `data.padding.max_fraction`: how much of each sequence may be padding (1: whole rows).
    PaddingFraction => data::PaddingFraction,
    /// `data.seq_len` of generated sequences.
    SeqLen => data::SeqLen,
    /// `p` of every `dropout` layer and every recurrent dropout already on.
    DropoutP => model::DropoutP,
    /// `train.precision`: autocast to f16 or bf16 over f32 master weights, or none.
    Precision => train::Autocast,
    /// `train.loss_scale.init`: the loss scaler's first scale.
    LossScaleInit => train::LossScaleInit,
    /// `train.loss_scale.growth_interval`: clean steps before the scale grows.
    GrowthInterval => train::GrowthInterval,
    /// `train.schedule.warmup_steps`: the linear warmup's length.
    WarmupSteps => train::WarmupSteps,
    /// `train.accumulate`: micro-batches per optimizer step.
    Accumulate => train::Accumulate,
}

impl Knob {
    /// Every knob, in the table's order.
    pub const ALL: &'static [Knob] = <Knob as VariantArray>::VARIANTS;

    /// The number of knobs.
    pub const COUNT: usize = COUNT;

    /// Its definition, with the value type erased.
    pub fn entry(self) -> &'static Entry {
        &TABLE[self as usize]
    }

    /// Its key, as the file format writes it (`optimizer.lr`).
    pub fn key(self) -> &'static str {
        self.entry().spec.key
    }

    /// Whether this knob means anything for `s` (each definition's `applies`: input scales
    /// need a known feature count, the input mean and spread synthetic inputs, only some losses
    /// take an epsilon or a clamp, only some optimizers an eps, a β₂ or a momentum, ...).
    pub fn applies(self, s: &Scenario) -> bool {
        (self.entry().applies)(s)
    }

    /// Whether an absent `[search] knobs` (all knobs) includes this one: all but the seed,
    /// which only moves when asked for, as a finding that needs another seed is a different question.
    pub fn by_default(self) -> bool {
        self.entry().spec.by_default
    }

    /// Whether the knob moves continuously (a value on a scale), so that it has a margin that
    /// `nanhunt margins` measures and `[expect] min_margin` can hold: not the seed, an injection,
    /// the clipping switch or a choice among dtypes, optimizers or precisions.
    pub fn has_margin(self) -> bool {
        self.entry().spec.margin
    }

    /// The scale its number moves on; none for a choice or the seed.
    pub fn scale(self) -> Option<Scale> {
        self.entry().spec.scale
    }

    /// Its value in `s`, as the search measures it; none where it has none.
    pub fn get(self, s: &Scenario) -> Option<Value> {
        (self.entry().get)(s)
    }

    /// Whether a dotted key of the scenario file (as in a report's diff) is set by this knob.
    pub fn sets_key(self, key: &str) -> bool {
        let name = self.key();
        name == key || name.strip_prefix(key).is_some_and(|rest| rest.starts_with('.'))
    }
}

impl From<&Knob> for &'static str {
    fn from(k: &Knob) -> &'static str {
        k.key()
    }
}

impl std::fmt::Display for Knob {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.key())
    }
}

impl std::str::FromStr for Knob {
    type Err = String;

    /// A knob by its key; an error lists every key.
    fn from_str(text: &str) -> Result<Knob, String> {
        Knob::ALL.iter().find(|k| k.key() == text).copied().ok_or_else(|| format!("unknown knob `{text}`, expected one of {}", KEYS.map(|k| format!("`{k}`")).join(", ")))
    }
}

impl Serialize for Knob {
    fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.serialize_str(self.key())
    }
}

impl<'de> Deserialize<'de> for Knob {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        Knob::ALL.iter().find(|k| k.key() == text).copied().ok_or_else(|| serde::de::Error::unknown_variant(&text, &KEYS))
    }
}

#[cfg(test)]
mod tests;
