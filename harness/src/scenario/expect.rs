//! The `[expect]` table: what `nanhunt check` expects of a scenario, and the
//! phases of a training step it can name.

use serde::{Deserialize, Serialize};
use strum::{IntoStaticStr, VariantArray};

use std::collections::BTreeMap;

use super::{Knob, Named, TensorId};

/// What a regression check expects.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, arbitrary::Arbitrary)]
#[serde(deny_unknown_fields)]
pub struct Expect {
    /// `finite` or `nonfinite`.
    pub outcome: ExpectedOutcome,
    /// Phase of the first non-finite value.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<Phase>,
    /// Tensor of the first non-finite value (written as its name).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tensor: Option<TensorId>,
    /// The first non-finite value must appear at or before this step.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub within_steps: Option<usize>,
    /// With `outcome = "finite"`: each listed knob, moved alone, must stay finite over at least
    /// this factor from its base in both directions (linear knobs: this distance), as
    /// `nanhunt margins` measures it, searched that far whatever `[search]` says; e.g.
    /// `{ "optimizer.lr" = 10.0 }`. Only knobs with a margin ([`Knob::has_margin`]).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub min_margin: BTreeMap<Knob, f64>,
    /// With `outcome = "finite"`: over this many seeds from the scenario's own, at most this
    /// fraction may go non-finite; e.g. `{ seeds = 200, rate = 0.01 }`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_failure_rate: Option<FailureRate>,
}

/// A bound on the failure rate over a sweep of seeds.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize, arbitrary::Arbitrary)]
#[serde(deny_unknown_fields)]
pub struct FailureRate {
    /// Seeds to run, from the scenario's `seed` on.
    pub seeds: u64,
    /// Largest fraction of them that may go non-finite.
    pub rate: f64,
}

impl Expect {
    /// Every value stays finite.
    pub fn finite() -> Self {
        Expect { outcome: ExpectedOutcome::Finite, phase: None, tensor: None, within_steps: None, min_margin: BTreeMap::new(), max_failure_rate: None }
    }

    /// The first non-finite value is in `tensor` during `phase`.
    pub fn nonfinite_at(phase: Phase, tensor: &TensorId) -> Self {
        Expect { outcome: ExpectedOutcome::Nonfinite, phase: Some(phase), tensor: Some(tensor.clone()), within_steps: None, min_margin: BTreeMap::new(), max_failure_rate: None }
    }

    /// A finite run expected to diverge in this phase (`loss` or `update`), named by its tensor (`loss`, `parameters`).
    pub fn diverges_at(phase: Phase, tensor: &TensorId) -> Self {
        Expect { outcome: ExpectedOutcome::Diverges, ..Expect::nonfinite_at(phase, tensor) }
    }
}

/// The expected outcome of a check.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, IntoStaticStr, VariantArray, arbitrary::Arbitrary)]
#[serde(rename_all = "snake_case")]
#[strum(serialize_all = "snake_case")]
pub enum ExpectedOutcome {
    /// Every value stays finite.
    Finite,
    /// Something goes NaN or infinite.
    Nonfinite,
    /// Every value stays finite, but the run diverges (`[train.divergence]`); `phase` and
    /// `tensor` then name where: `loss` (phase `loss`) or `parameters` (phase `update`).
    Diverges,
}

/// Where in a training step a value was computed. Part of the file format
/// (`[expect] phase`) and of every run's outcome.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, IntoStaticStr, VariantArray, arbitrary::Arbitrary)]
#[serde(rename_all = "snake_case")]
#[strum(serialize_all = "snake_case")]
pub enum Phase {
    /// The data, after injection and preprocessing, before any step.
    #[default]
    Data,
    /// A layer's output in the training forward pass.
    Forward,
    /// The training loss.
    Loss,
    /// A parameter's gradient.
    Backward,
    /// A parameter after the optimizer's update.
    Update,
    /// The validation forward pass or loss.
    Validation,
}

impl std::fmt::Display for Phase {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}
