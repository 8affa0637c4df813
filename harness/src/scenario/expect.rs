//! The `[expect]` table: what `nanhunt check` expects of a scenario, and the
//! phases of a training step it can name.

use serde::{Deserialize, Serialize};
use strum::{IntoStaticStr, VariantArray};

use super::Named;

/// What a regression check expects.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, arbitrary::Arbitrary)]
#[serde(deny_unknown_fields)]
pub struct Expect {
    /// `finite` or `nonfinite`.
    pub outcome: ExpectedOutcome,
    /// Phase of the first non-finite value.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<Phase>,
    /// Tensor name of the first non-finite value.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tensor: Option<String>,
    /// The first non-finite value must appear at or before this step.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub within_steps: Option<usize>,
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
}


/// Where in a training step a value was computed. Part of the file format
/// (`[expect] phase`) and of every run's outcome.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, IntoStaticStr, VariantArray, arbitrary::Arbitrary)]
#[serde(rename_all = "snake_case")]
#[strum(serialize_all = "snake_case")]
pub enum Phase {
    /// The data, after injection and preprocessing, before any step.
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
