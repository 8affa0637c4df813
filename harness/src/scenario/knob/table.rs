//! The knob table: each knob's [`Entry`], made from the list in `knob/mod.rs`
//! (`for_each_knob!`), and the methods of [`Knob`] that read it.
//!
//! The name of a knob (`knob/mod.rs`) is a leaf that does not reach `Scenario`;
//! this file is where a knob meets its definition, the [`Def`](super::Def) that
//! reads and sets a scenario.

use super::def::Entry;
use super::value::{Scale, Value};
use super::{consts, data, loss, model, optimizer, train, Knob, COUNT};
use crate::scenario::Scenario;

/// Makes the table of entries from the list: each knob's definition, erased.
macro_rules! entries {
    ($($(#[doc = $doc:literal])* $variant:ident($key:literal) => $def:ty,)*) => {
        /// Each knob's entry, in the list's order.
        static TABLE: [Entry; COUNT] = [$(Entry::of::<$def>(),)*];
    };
}

for_each_knob!(entries);

impl Knob {
    /// Its definition, with the value type erased.
    pub fn entry(self) -> &'static Entry {
        &TABLE[self as usize]
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
}
