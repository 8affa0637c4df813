//! The f64 verdict on a run's first non-finite value: is it the dtype's
//! precision, the math itself, or a kernel that disagrees with its own math?
//!
//! Two checks, both from what the failing run had at hand (runs are
//! deterministic): the producing op computed in f64 from the same inputs
//! ([`OpCheck`], made by the runner when it flags the value: a registry node's
//! forward on its inputs cast to f64 with the step's dropout mask and running
//! statistics, the loss on its prediction and targets, a gradient by the backward
//! of the ops that read the tensor from their inputs and upstream gradients, or
//! a code model's check against the f64 reference it gave `Watch::check_op`), and
//! the whole run replayed in f64 from the same initial weights and data to that
//! step ([`StepCheck`], under a time limit: `run::run_with`). `run::judge` reads
//! them (this file holds only the verdict's types):
//! - *math*: non-finite in f64 too (log 0, 0/0, a real divergence);
//! - *precision*: finite in f64, and the dtype loses it: its range overflows, an
//!   epsilon rounds to 0, a value underflows to 0, or rounding inside the op cancels
//!   what it needs (the diagnosis rule, where one explains the value, says which);
//! - *kernel disagreement*: a kernel that is not nanhunt's own (PyTorch's
//!   numerics) gives a non-finite value where its f64 reference gives a finite one
//!   inside the dtype's range, from finite inputs;
//! - *undetermined*: neither check could run (their reasons are kept, with why the op
//!   has no check: a code model's tensor without a `Watch::check_op` reference, a code
//!   model's gradient, an update or data value). A run in f16 or bf16 whose f64 replay
//!   cannot run (a kernel without f64) is replayed in f32: finite there, it is precision.
//!
//! A verdict costs about one more run: it is computed once per failing run when
//! asked (`RunOptions::verdict`), and in hunts once per minimized trigger.

use std::time::Duration;

use serde::{Deserialize, Serialize};
use strum::IntoStaticStr;

/// How long the f64 replay of a verdict may take at most.
pub const REPLAY_LIMIT: Duration = Duration::from_secs(20);

/// The verdict's class.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize, IntoStaticStr)]
#[serde(rename_all = "snake_case")]
#[strum(serialize_all = "snake_case")]
pub enum Class {
    /// Finite in f64: the dtype loses it (see [`Loss`]).
    Precision,
    /// Non-finite in f64 too: the math itself (log 0, 0/0, a real divergence).
    Math,
    /// A kernel's result differs from its f64 reference far beyond rounding, from finite inputs.
    KernelDisagreement,
    /// Neither the op nor the step could be computed in f64.
    Undetermined,
}

/// How the dtype loses a value that is finite in f64.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize, IntoStaticStr)]
#[serde(rename_all = "snake_case")]
#[strum(serialize_all = "snake_case")]
pub enum Loss {
    /// The value is beyond the dtype's largest one.
    Overflow,
    /// Rounding inside the op cancels what it needs (a difference of near-equal values).
    Cancellation,
    /// An epsilon rounds to 0 in the dtype (or a clamp's `1 − c` to 1) and no longer guards.
    EpsUnderflow,
    /// A value that is not 0 rounds to 0 in the dtype (then log 0, 1/0, 0·∞).
    Underflow,
    /// Lost inside the op, where no rule says how: an intermediate value overflowed or
    /// underflowed, or a difference cancelled.
    Rounding,
}

/// The producing op computed in f64 from the failing step's own inputs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OpCheck {
    /// The op (`layers.1.exp`, `loss (bce)`, a code model's check name).
    pub op: String,
    /// Its value at the bad element in f64 (`null` in JSON when not finite).
    pub value: Option<f64>,
    /// Whether every input it read was finite.
    pub inputs_finite: bool,
    /// Whether the f64 value came from a reference the code model gave, not nanhunt's own kernel.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub reference: bool,
    /// Whether it is a gradient, computed by the op's backward from the step's inputs and the
    /// gradient that reached the op (`inputs_finite` covers both).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub backward: bool,
}

/// The whole run replayed in f64 up to the failing step.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StepCheck {
    /// Finite through that step (`None`: the replay could not run or was cut off).
    pub finite: Option<bool>,
    /// What happened, in words.
    pub detail: String,
}

/// The verdict on the first non-finite value.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Verdict {
    /// Precision, math, kernel disagreement (or undetermined).
    pub class: Class,
    /// For precision: how the dtype loses it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub precision: Option<Loss>,
    /// The op it names.
    pub op: String,
    /// Why, in words with the numbers.
    pub reason: String,
    /// The op in f64 from the same inputs, where it could be computed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub op_f64: Option<OpCheck>,
    /// The run replayed in f64 to the failing step.
    pub step_f64: StepCheck,
}

impl Verdict {
    /// The verdict as a grouping key: `precision/overflow`, `math`, `kernel_disagreement`, ...
    pub fn key(&self) -> String {
        let class: &str = self.class.into();
        match self.precision {
            Some(l) => format!("{class}/{}", <&str>::from(l)),
            None => class.to_string(),
        }
    }
}

impl std::fmt::Display for Verdict {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let class = match (self.class, self.precision) {
            (Class::Precision, Some(l)) => format!("precision ({})", l.words()),
            (Class::Precision, None) => "precision".into(),
            (Class::Math, _) => "math".into(),
            (Class::KernelDisagreement, _) => "kernel disagreement".into(),
            (Class::Undetermined, _) => "undetermined".into(),
        };
        write!(f, "{class} in {}: {}", self.op, self.reason)
    }
}

impl Loss {
    /// In words.
    pub fn words(self) -> &'static str {
        match self {
            Loss::Overflow => "overflow of the dtype's range",
            Loss::Cancellation => "cancellation",
            Loss::EpsUnderflow => "eps underflow",
            Loss::Underflow => "underflow to 0",
            Loss::Rounding => "lost inside the op: an intermediate overflow or underflow, or cancellation",
        }
    }
}
