//! `train.precision` and `[train.loss_scale]`: mixed precision as frameworks run it
//! (autocast over f32 master weights) and dynamic loss scaling (PyTorch's `GradScaler`).
//!
//! Under `amp_f16` or `amp_bf16` the parameters and the optimizer state stay in
//! `train.dtype` (f32); the layers on PyTorch's autocast "lower precision" list
//! (linear, attention's products, convolution, recurrent cells) compute in the low
//! dtype, and those on its "fp32" list (softmax, norms, losses, exp, log, pow)
//! in f32. The scaler multiplies the loss by its scale before backward, divides
//! the gradients by it after, skips any step whose gradients are not finite and
//! backs off, and grows the scale after `growth_interval` clean steps.

use serde::{Deserialize, Serialize};
use strum::{IntoStaticStr, VariantArray};

use super::DTypeName;

/// How the forward and backward pass mix dtypes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, IntoStaticStr, VariantArray, arbitrary::Arbitrary)]
#[serde(rename_all = "snake_case")]
#[strum(serialize_all = "snake_case")]
pub enum Precision {
    /// Everything in `train.dtype`.
    #[default]
    F32,
    /// Autocast to IEEE half over f32 master weights.
    AmpF16,
    /// Autocast to bfloat16 over f32 master weights.
    AmpBf16,
}

impl Precision {
    /// The dtype autocast computes its lower-precision ops in, if any.
    pub fn low(self) -> Option<DTypeName> {
        match self {
            Precision::F32 => None,
            Precision::AmpF16 => Some(DTypeName::F16),
            Precision::AmpBf16 => Some(DTypeName::Bf16),
        }
    }

    /// Whether this is the default (no autocast), for leaving it out of a written scenario.
    pub fn is_default(&self) -> bool {
        *self == Precision::F32
    }
}

/// What a run computed in, as its outcome names it: the dtype (`f16`), or under autocast the
/// precision (`amp_f16`), whose findings are not the f32 ones.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, IntoStaticStr, VariantArray, strum::EnumString)]
#[serde(rename_all = "snake_case")]
#[strum(serialize_all = "snake_case")]
pub enum RunDType {
    /// Everything in f32.
    F32,
    /// Everything in f64.
    F64,
    /// Everything in IEEE half.
    F16,
    /// Everything in bfloat16.
    Bf16,
    /// Autocast to IEEE half over f32 master weights.
    AmpF16,
    /// Autocast to bfloat16 over f32 master weights.
    AmpBf16,
}

impl RunDType {
    /// A run of `dtype` under `precision` (autocast needs f32 master weights, checked by validation).
    pub fn of(dtype: DTypeName, precision: Precision) -> RunDType {
        match (precision, dtype) {
            (Precision::AmpF16, _) => RunDType::AmpF16,
            (Precision::AmpBf16, _) => RunDType::AmpBf16,
            (Precision::F32, DTypeName::F32) => RunDType::F32,
            (Precision::F32, DTypeName::F64) => RunDType::F64,
            (Precision::F32, DTypeName::F16) => RunDType::F16,
            (Precision::F32, DTypeName::Bf16) => RunDType::Bf16,
        }
    }

    /// The dtype whose limits the run meets: autocast's low dtype, or the dtype itself.
    pub fn compute(self) -> DTypeName {
        match self {
            RunDType::F32 => DTypeName::F32,
            RunDType::F64 => DTypeName::F64,
            RunDType::F16 | RunDType::AmpF16 => DTypeName::F16,
            RunDType::Bf16 | RunDType::AmpBf16 => DTypeName::Bf16,
        }
    }
}

impl std::fmt::Display for RunDType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.into())
    }
}

/// Dynamic loss scaling, with `torch.amp.GradScaler`'s parameters and defaults.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, arbitrary::Arbitrary)]
#[serde(deny_unknown_fields)]
pub struct LossScaleSpec {
    /// `false` turns the scaler off (the loss is not scaled and no step is skipped).
    #[serde(default = "yes")]
    pub enabled: bool,
    /// The first scale (`init_scale`, 2¹⁶).
    #[serde(default = "init")]
    pub init: f64,
    /// Factor the scale grows by after `growth_interval` clean steps.
    #[serde(default = "growth")]
    pub growth_factor: f64,
    /// Factor the scale shrinks by after a step with non-finite gradients.
    #[serde(default = "backoff")]
    pub backoff_factor: f64,
    /// Consecutive clean steps before the scale grows.
    #[serde(default = "interval")]
    pub growth_interval: usize,
    /// `false`: the scale grows past f32's max to inf, as GradScaler did before PyTorch capped
    /// its growth (pytorch#98828, fixed by #98876 in 2.1); then every scaled loss is inf, every
    /// step is skipped, and the backoff leaves inf at inf.
    #[serde(default = "yes", skip_serializing_if = "is_true")]
    pub growth_cap: bool,
    /// A scale below this (or 0) is a finding: the scale underflowed. Absent: only 0.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_scale: Option<f64>,
    /// Steps over which skipped steps are counted for a scale collapse.
    #[serde(default = "window")]
    pub collapse_window: usize,
    /// More than this fraction of any `collapse_window` consecutive steps skipped is a
    /// finding: the run no longer trains (scale collapse).
    #[serde(default = "fraction")]
    pub max_skip_fraction: f64,
}

impl Default for LossScaleSpec {
    fn default() -> Self {
        toml::from_str("").expect("every LossScaleSpec field has a default")
    }
}

fn yes() -> bool {
    true
}
fn is_true(b: &bool) -> bool {
    *b
}
fn init() -> f64 {
    65536.0
}
fn growth() -> f64 {
    2.0
}
fn backoff() -> f64 {
    0.5
}
fn interval() -> usize {
    2000
}
fn window() -> usize {
    20
}
fn fraction() -> f64 {
    0.5
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scenario::Named;

    #[test]
    fn a_runs_dtype_is_named_by_its_precision_under_autocast() {
        // Every (dtype, precision) pair: autocast names the precision, else the dtype.
        for &d in DTypeName::VARIANTS {
            for &p in Precision::VARIANTS {
                let r = RunDType::of(d, p);
                let name = if p.low().is_some() { p.name() } else { d.name() };
                assert_eq!((r.to_string().as_str(), r.name()), (name, name));
                assert_eq!(serde_json::to_value(r).unwrap().as_str(), Some(name));
                assert_eq!(name.parse::<RunDType>().ok(), Some(r));
                assert_eq!(r.compute(), p.low().unwrap_or(d));
            }
        }
        assert!("amp_f32".parse::<RunDType>().is_err() && "".parse::<RunDType>().is_err());
    }
}
