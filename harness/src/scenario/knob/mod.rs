//! Knobs: the settings of a scenario a hunt may move, named by one list.
//!
//! A knob is named by its dotted key (`optimizer.lr`) in `[search] knobs`, in
//! mutations, thresholds and summaries alike. The list in `for_each_knob!`
//! below writes each knob once: its variant, its key and its definition, a unit
//! struct implementing [`Def`] (in `optimizer.rs`, `data.rs`, `train.rs`,
//! `model.rs`, `loss.rs`): its scale and margin, whether it applies to a scenario, how to
//! read and set it, and its default search domain. This file makes the name
//! from the list (the [`Knob`] enum, its keys, `Display`, `FromStr` and serde)
//! and leaves the definitions aside, so that naming a knob (`[search] knobs`,
//! `[expect] min_margin`) does not reach the `Scenario` a definition reads and
//! sets; `table.rs` makes the table of definitions from the same list, with
//! the methods that need it ([`Knob::entry`], [`Knob::applies`], [`Knob::get`],
//! ...). Mutations (`search::mutation`) are a knob and a [`Value`], and a search
//! space (`search::space`) a list of knobs with their domains. Adding a knob is
//! its `impl Def` plus one line in the list (and its place in the search's
//! seeded orders, `search/space/order.rs`).

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use strum::VariantArray;

/// Calls the macro `$then!` on the list of knobs, one line each: its doc lines, its variant, its key
/// and its definition (relative to this module), as `Lr("optimizer.lr") => optimizer::Lr,`.
macro_rules! for_each_knob {
    ($then:ident) => {
        $then! {
            /// `optimizer.lr`.
            Lr("optimizer.lr") => optimizer::Lr,
            /// `model.init_scale`.
            InitScale("model.init_scale") => model::InitScale,
            /// `data.scale`: per-feature input multipliers.
            InputScale("data.scale") => data::InputScale,
            /// `data.inputs.mean` of synthetic inputs.
            InputMean("data.inputs.mean") => data::InputMean,
            /// `data.inputs.std` of synthetic inputs.
            InputStd("data.inputs.std") => data::InputStd,
            /// `data.target_scale`.
            TargetScale("data.target_scale") => data::TargetScale,
            /// `train.batch_size`.
            BatchSize("train.batch_size") => train::BatchSize,
            /// `train.epochs`.
            Epochs("train.epochs") => train::Epochs,
            /// `data.inject`: an added injection into one split.
            Inject("data.inject") => data::Inject,
            /// `train.dtype`.
            Dtype("train.dtype") => train::Dtype,
            /// `optimizer.kind`.
            Optimizer("optimizer.kind") => optimizer::Optimizer,
            /// `optimizer.clip_grad_norm`.
            ClipNorm("optimizer.clip_grad_norm") => optimizer::ClipNorm,
            /// `loss.epsilon`.
            LossEpsilon("loss.epsilon") => loss::LossEpsilon,
            /// `loss.clamp`.
            LossClamp("loss.clamp") => loss::LossClamp,
            /// `optimizer.eps`: the update's denominator epsilon (Adam, AdamW, RMSprop).
            OptimizerEps("optimizer.eps") => optimizer::OptimizerEps,
            /// `optimizer.beta2`: Adam's second-moment decay (searched on `1 − β₂`).
            Beta2("optimizer.beta2") => optimizer::Beta2,
            /// `optimizer.momentum` (SGD, RMSprop; searched on `1 − momentum`).
            Momentum("optimizer.momentum") => optimizer::Momentum,
            /// `eps` of every norm layer (`layer_norm`, `rms_norm`, `batch_norm`).
            NormEps("model.layer_norm.eps") => model::NormEps,
            /// `seed`: the scenario's random streams (moved only when `[search] knobs` lists it).
            Seed("seed") => train::Seed,
            /// `data.padding.max_fraction`: how much of each sequence may be padding (1: whole rows).
            PaddingFraction("data.padding.max_fraction") => data::PaddingFraction,
            /// `data.seq_len` of generated sequences.
            SeqLen("data.seq_len") => data::SeqLen,
            /// `p` of every `dropout` layer and every recurrent dropout already on.
            DropoutP("model.dropout.p") => model::DropoutP,
            /// `train.precision`: autocast to f16 or bf16 over f32 master weights, or none.
            Precision("train.precision") => train::Autocast,
            /// `train.loss_scale.init`: the loss scaler's first scale.
            LossScaleInit("train.loss_scale.init") => train::LossScaleInit,
            /// `train.loss_scale.growth_interval`: clean steps before the scale grows.
            GrowthInterval("train.loss_scale.growth_interval") => train::GrowthInterval,
            /// `train.schedule.warmup_steps`: the linear warmup's length.
            WarmupSteps("train.schedule.warmup_steps") => train::WarmupSteps,
            /// `train.accumulate`: micro-batches per optimizer step.
            Accumulate("train.accumulate") => train::Accumulate,
            /// `loss.kind`: another kind that reads the prediction alike and takes the data's targets.
            LossKind("loss.kind") => loss::Kind,
            /// `loss.reduction`: mean or sum.
            LossReduction("loss.reduction") => loss::LossReduction,
            /// `consts`: each named constant of the scenario's expressions (`loss.consts.eps`,
            /// `model.layers.2.consts.T`), moved alone; the value names which.
            Const("consts") => consts::Const,
            /// `loss.label_smoothing`: `cross_entropy`'s label smoothing, in [0, 1].
            LabelSmoothing("loss.label_smoothing") => loss::LabelSmoothing,
            /// `data.targets.ignore_fraction`: the chance that a class-index target is `ignore_index`.
            IgnoreFraction("data.targets.ignore_fraction") => data::IgnoreFraction,
        }
    };
}

/// Makes the [`Knob`] enum and its keys from the list (the definitions are `table.rs`'s).
macro_rules! names {
    ($($(#[doc = $doc:literal])* $variant:ident($key:literal) => $def:ty,)*) => {
        /// A setting of a scenario that a search may move (declared in the order of the list).
        #[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, VariantArray)]
        pub enum Knob {
            $($(#[doc = $doc])* $variant,)*
        }

        /// Each knob's key, in the list's order.
        static KEYS: [&str; COUNT] = [$($key,)*];
    };
}

for_each_knob!(names);

mod consts;
mod data;
mod def;
mod loss;
mod model;
mod optimizer;
mod table;
mod train;
mod value;

pub use consts::value_of as const_value;
pub use def::{around, around_one, Ctx, Def, Domain, End, Entry, Spec};
pub use value::{intern, Added, ConstAt, ConstRange, Constant, Factor, Fields, KnobValue, Scale, Value};

/// The number of knobs.
const COUNT: usize = <Knob as VariantArray>::VARIANTS.len();

impl Knob {
    /// Every knob, in the list's order.
    pub const ALL: &'static [Knob] = <Knob as VariantArray>::VARIANTS;

    /// The number of knobs.
    pub const COUNT: usize = COUNT;

    /// Its key, as the file format writes it (`optimizer.lr`).
    pub fn key(self) -> &'static str {
        KEYS[self as usize]
    }

    /// Whether a dotted key of the scenario file (as in a report's diff) is set by this knob.
    pub fn sets_key(self, key: &str) -> bool {
        let name = self.key();
        name == key || name.strip_prefix(key).is_some_and(|rest| rest.starts_with('.'))
    }
}

/// The knobs fuzzer bytes name: the first 27, those of the enum the saved fuzz inputs were
/// written with, picked as `arbitrary`'s derive picked a variant of 27 (`(x · 27) >> 32` of a
/// `u32`), so a saved input decodes as before. The knobs added since (`loss.kind`,
/// `loss.reduction`, `consts`, `loss.label_smoothing`, `data.targets.ignore_fraction`) are not drawn from bytes; a fuzz target reaches other losses through the
/// scenario's own bytes.
const FUZZED: u64 = 27;

impl<'a> arbitrary::Arbitrary<'a> for Knob {
    fn arbitrary(u: &mut arbitrary::Unstructured<'a>) -> arbitrary::Result<Knob> {
        let x = u64::from(<u32 as arbitrary::Arbitrary>::arbitrary(u)?);
        Ok(Knob::ALL[((x * FUZZED) >> 32) as usize])
    }

    fn size_hint(_: usize) -> (usize, Option<usize>) {
        (4, Some(4))
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
