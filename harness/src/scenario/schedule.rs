//! `[train.schedule]`: the learning rate over the steps, as PyTorch's `lr_scheduler`
//! composes it: a linear warmup (`LinearLR`) for `warmup_steps`, then one decay
//! (`StepLR`, `ExponentialLR` or `CosineAnnealingLR`), chained as `SequentialLR` does,
//! the decay counting its own steps from the end of the warmup.

use serde::{Deserialize, Serialize};
use strum::{IntoStaticStr, VariantArray};

/// A learning-rate schedule.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, arbitrary::Arbitrary)]
#[serde(deny_unknown_fields)]
pub struct ScheduleSpec {
    /// Steps of linear warmup from `warmup_start_factor · lr` to `lr` (0: none).
    #[serde(default)]
    pub warmup_steps: usize,
    /// The warmup's first multiplier (`LinearLR`'s `start_factor`; 0 as in transformers'
    /// `get_linear_schedule_with_warmup`).
    #[serde(default)]
    pub warmup_start_factor: f64,
    /// What follows the warmup.
    #[serde(default)]
    pub decay: Decay,
    /// `step`: steps between multiplications by `gamma` (`StepLR`'s `step_size`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub step_size: Option<usize>,
    /// `step` and `exponential`: the multiplier.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gamma: Option<f64>,
    /// `cosine`: the half period in steps (`CosineAnnealingLR`'s `T_max`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub decay_steps: Option<usize>,
    /// `cosine`: the lowest learning rate (`eta_min`).
    #[serde(default)]
    pub eta_min: f64,
}

/// The decay after the warmup.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, IntoStaticStr, VariantArray, arbitrary::Arbitrary)]
#[serde(rename_all = "snake_case")]
#[strum(serialize_all = "snake_case")]
pub enum Decay {
    /// The base learning rate.
    #[default]
    Constant,
    /// `lr · gamma^⌊t / step_size⌋`.
    Step,
    /// `lr · gamma^t`.
    Exponential,
    /// `eta_min + (lr − eta_min)(1 + cos(π t / decay_steps)) / 2`.
    Cosine,
}

impl ScheduleSpec {
    /// The learning rate of the optimizer step that follows `t` scheduler steps (`t = 0` for
    /// the first), from the base rate `lr`: PyTorch's closed forms, the decay's own count
    /// starting at 0 when the warmup ends.
    pub fn lr(&self, lr: f64, t: usize) -> f64 {
        let w = self.warmup_steps;
        if t < w {
            let s = self.warmup_start_factor;
            return lr * (s + (1.0 - s) * t as f64 / w as f64);
        }
        let u = (t - w) as f64;
        let gamma = self.gamma.unwrap_or(1.0);
        match self.decay {
            Decay::Constant => lr,
            Decay::Step => lr * gamma.powi(((t - w) / self.step_size.unwrap_or(1).max(1)).min(i32::MAX as usize) as i32),
            Decay::Exponential => lr * gamma.powf(u),
            Decay::Cosine => {
                let tmax = self.decay_steps.unwrap_or(1).max(1) as f64;
                self.eta_min + (lr - self.eta_min) * (1.0 + (std::f64::consts::PI * u / tmax).cos()) / 2.0
            }
        }
    }
}
