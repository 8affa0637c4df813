//! `[train.schedule]`: the learning rate over the steps, as PyTorch's `lr_scheduler`
//! composes it: a linear warmup (`LinearLR`) for `warmup_steps`, then one decay
//! (`StepLR`, `ExponentialLR` or `CosineAnnealingLR`), chained as `SequentialLR` does,
//! the decay counting its own steps from the end of the warmup.

use serde::{Deserialize, Serialize};
use strum::{IntoStaticStr, VariantArray};

/// A learning-rate schedule.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, arbitrary::Arbitrary)]
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

#[cfg(test)]
mod tests {
    use super::*;

    fn lrs(toml: &str, n: usize) -> Vec<f64> {
        let s: ScheduleSpec = toml::from_str(toml).unwrap();
        (0..n).map(|t| s.lr(0.1, t)).collect()
    }

    /// Equal to PyTorch's value up to its recursive forms' rounding.
    fn close(ours: &[f64], torch: &[f64]) {
        for (t, (a, b)) in ours.iter().zip(torch).enumerate() {
            assert!((a - b).abs() <= 1e-12 * b.abs(), "step {t}: {a} vs PyTorch {b}");
        }
    }

    // PyTorch 2.15, SGD lr 0.1, `opt.param_groups[0]["lr"]` before each of the first steps, with
    // `scheduler.step()` after each `opt.step()`.

    #[test]
    fn warmup_then_cosine_is_sequential_lr_of_linear_lr_and_cosine_annealing_lr() {
        // SequentialLR([LinearLR(start_factor=0.25, total_iters=4), CosineAnnealingLR(T_max=6, eta_min=0.01)], milestones=[4])
        let torch = [
            0.025,
            0.043750000000000004,
            0.06250000000000001,
            0.08125000000000002,
            0.1,
            0.09397114317029975,
            0.07750000000000001,
            0.055000000000000014,
            0.032500000000000015,
            0.01602885682970026,
            0.01,
            0.01602885682970026,
        ];
        close(&lrs("warmup_steps = 4\nwarmup_start_factor = 0.25\ndecay = \"cosine\"\ndecay_steps = 6\neta_min = 0.01", 12), &torch);
    }

    #[test]
    fn step_and_exponential_decays_are_step_lr_and_exponential_lr() {
        // StepLR(step_size=3, gamma=0.5): exact powers of two.
        assert_eq!(lrs("decay = \"step\"\nstep_size = 3\ngamma = 0.5", 8), [0.1, 0.1, 0.1, 0.05, 0.05, 0.05, 0.025, 0.025]);
        // ExponentialLR(gamma=0.9).
        close(&lrs("decay = \"exponential\"\ngamma = 0.9", 6), &[0.1, 0.09000000000000001, 0.08100000000000002, 0.07290000000000002, 0.06561000000000002, 0.05904900000000002]);
        // SequentialLR([LinearLR(start_factor=0.5, total_iters=2), ExponentialLR(gamma=0.9)], milestones=[2]).
        close(
            &lrs("warmup_steps = 2\nwarmup_start_factor = 0.5\ndecay = \"exponential\"\ngamma = 0.9", 6),
            &[0.05, 0.07500000000000001, 0.1, 0.09000000000000001, 0.08100000000000002, 0.07290000000000002],
        );
    }

    #[test]
    fn the_default_warmup_starts_at_zero_as_transformers_does() {
        // get_linear_schedule_with_warmup's lambda: step / warmup before the warmup ends.
        assert_eq!(lrs("warmup_steps = 4", 6), [0.0, 0.025, 0.05, 0.07500000000000001, 0.1, 0.1]);
    }
}
