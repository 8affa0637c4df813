//! The dynamic loss scaler (`[train.loss_scale]`), as `torch.amp.GradScaler` runs it.
//!
//! The loss is multiplied by the scale before backward, and the gradients by
//! `inv_scale = f32(1 / f64(scale))` after (`unscale_`). A step whose *scaled*
//! gradients hold a non-finite value is skipped and the scale multiplied by
//! `backoff_factor`; after `growth_interval` clean steps in a row it is multiplied
//! by `growth_factor`, unless that overflows f32 (`_amp_update_scale_`, in
//! `aten/src/ATen/native/cpu/AmpGradScalerKernels.cpp`; `growth_cap = false` grows it to inf,
//! as PyTorch did before 2.1, pytorch#98828). The scale is an f32, as
//! PyTorch keeps it. PyTorch has no lower bound on the scale; `min_scale` and the
//! skip fraction are nanhunt's, to tell a scaler doing its job from one whose run
//! no longer trains.

use std::collections::VecDeque;

use candle_core::Tensor;

use super::trace::TraceRow;
use super::watch::extent;
use crate::error::Result;
use crate::scenario::LossScaleSpec;

/// The scaler's state across steps.
#[derive(Debug, Clone)]
pub(crate) struct Scaler {
    spec: LossScaleSpec,
    /// The scale the next step's loss is multiplied by.
    pub(crate) scale: f32,
    /// Clean steps since the last backoff or growth.
    tracker: usize,
    /// The last `collapse_window` decisions, `true` where the step was skipped.
    recent: VecDeque<bool>,
    /// Skipped steps in `recent`.
    skipped_recent: usize,
    /// Skipped steps in all.
    pub(crate) skipped: usize,
    /// Growths refused because the grown scale would overflow f32.
    capped: usize,
}

/// Why a scaler's run no longer trains.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Trouble {
    /// The scale fell to 0 or below `min_scale`.
    Underflow(String),
    /// Too many of the last `collapse_window` steps were skipped.
    Collapse(String),
    /// The scale grew to inf (`growth_cap = false`), so every step is skipped from then on.
    Overflow(String),
}

impl Scaler {
    /// A scaler as `spec` sets it up; `None` when it is off.
    pub(crate) fn new(spec: Option<&LossScaleSpec>) -> Option<Scaler> {
        let spec = spec.filter(|s| s.enabled)?;
        Some(Scaler { scale: spec.init as f32, spec: spec.clone(), tracker: 0, recent: VecDeque::with_capacity(spec.collapse_window + 1), skipped_recent: 0, skipped: 0, capped: 0 })
    }

    /// `unscale_`: the gradients times `f32(1 / f64(scale))`, and whether any scaled one was
    /// not finite (PyTorch checks the values it is given, before multiplying).
    pub(crate) fn unscale(&self, grads: &[Tensor]) -> Result<(Vec<Tensor>, bool)> {
        let inv = (1.0 / f64::from(self.scale)) as f32;
        let mut found_inf = false;
        let mut out = Vec::with_capacity(grads.len());
        for g in grads {
            // One pass of magnitudes' bits (`extent`): the full stats come later, unscaled.
            found_inf |= extent(g)?.first_bad.is_some();
            out.push(if inv == 1.0 { g.clone() } else { g.affine(f64::from(inv), 0.0)? });
        }
        Ok((out, found_inf))
    }

    /// `update()`: backs off after a skipped step, grows after `growth_interval` clean ones.
    pub(crate) fn update(&mut self, found_inf: bool) {
        if found_inf {
            self.scale = (f64::from(self.scale) * self.spec.backoff_factor) as f32;
            self.tracker = 0;
            self.skipped += 1;
        } else if self.tracker + 1 == self.spec.growth_interval {
            let grown = (f64::from(self.scale) * self.spec.growth_factor) as f32;
            if grown.is_finite() || !self.spec.growth_cap {
                self.scale = grown;
            } else {
                self.capped += 1;
            }
            self.tracker = 0;
        } else {
            self.tracker += 1;
        }
        self.recent.push_back(found_inf);
        self.skipped_recent += usize::from(found_inf);
        if self.recent.len() > self.spec.collapse_window {
            self.skipped_recent -= usize::from(self.recent.pop_front() == Some(true));
        }
    }

    /// Whether the run no longer trains: the scale underflowed, or more than
    /// `max_skip_fraction` of the last `collapse_window` steps were skipped.
    pub(crate) fn trouble(&self) -> Option<Trouble> {
        if self.scale.is_infinite() {
            return Some(Trouble::Overflow(format!(
                "the loss scale grew past f32's max to inf (growth_cap = false, as GradScaler before PyTorch 2.1 capped its growth, pytorch#98828) and stays inf: {} step(s) skipped",
                self.skipped
            )));
        }
        let min = self.spec.min_scale.unwrap_or(0.0);
        if f64::from(self.scale) <= 0.0 || f64::from(self.scale) < min {
            let floor = if min > 0.0 { format!("below min_scale {min:e}") } else { "to 0".into() };
            return Some(Trouble::Underflow(format!("the loss scale fell {floor} ({:e}) after {} skipped steps", self.scale, self.skipped)));
        }
        let w = self.spec.collapse_window;
        if self.skipped_recent as f64 > self.spec.max_skip_fraction * w as f64 {
            return Some(Trouble::Collapse(format!(
                "{} of the last {} steps were skipped for non-finite gradients (more than max_skip_fraction {}); the loss scale is down to {:e}",
                self.skipped_recent,
                self.recent.len(),
                self.spec.max_skip_fraction,
                self.scale
            )));
        }
        None
    }
}

impl Scaler {
    /// Warnings about a scale that stopped moving: held at its cap (growing it would overflow
    /// f32), or ended one backoff above `min_scale` after skipping steps.
    pub(crate) fn warnings(&self) -> Vec<String> {
        let mut out = Vec::new();
        if self.capped > 0 {
            out.push(format!(
                "the loss scale sat at its cap {:e} for {} growth interval(s): growing it would overflow f32, so the scaled gradients never overflow and the scaler guards nothing",
                self.scale, self.capped
            ));
        }
        if let Some(min) = self.spec.min_scale.filter(|m| *m > 0.0 && self.skipped > 0) {
            let scale = f64::from(self.scale);
            if scale >= min && scale * self.spec.backoff_factor < min {
                out.push(format!("the loss scale ended at its floor, {scale:e}, one backoff above min_scale {min:e}: one more skipped step and the run collapses"));
            }
        }
        out
    }
}

/// The steps a run's loss scaler skipped, in words (`None` if it skipped none or had none):
/// "3 of 6 steps skipped: inf/NaN gradients at steps 1, 2, 4" (the first 20 named).
pub(crate) fn skipped_steps(rows: &[TraceRow]) -> Option<String> {
    let decided: Vec<&TraceRow> = rows.iter().filter(|r| r.skipped.is_some()).collect();
    let skipped: Vec<&TraceRow> = decided.iter().copied().filter(|r| r.skipped == Some(true)).collect();
    if skipped.is_empty() {
        return None;
    }
    let folds = rows.iter().any(|r| r.fold > 0);
    let name = |r: &TraceRow| if folds { format!("{} (fold {})", r.step, r.fold) } else { r.step.to_string() };
    let mut at: Vec<String> = skipped.iter().take(20).map(|r| name(r)).collect();
    if skipped.len() > 20 {
        at.push("…".into());
    }
    let steps = if skipped.len() == 1 { "step" } else { "steps" };
    Some(format!("{} of {} steps skipped: inf/NaN gradients at {steps} {}", skipped.len(), decided.len(), at.join(", ")))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scaler(toml: &str) -> Scaler {
        Scaler::new(Some(&toml::from_str::<LossScaleSpec>(toml).unwrap())).unwrap()
    }

    #[test]
    fn backs_off_and_skips_exactly_at_overflow_and_grows_after_the_interval() {
        // init 1024, interval 3; overflow at steps 2 and 3, clean otherwise. By hand:
        // step 1 clean (tracker 1), 2 skip → 512, 3 skip → 256, 4, 5 clean, 6 clean → 512
        // (3 in a row), 7, 8 clean, 9 → 1024.
        let mut s = scaler("init = 1024.0\ngrowth_interval = 3");
        let overflow = [false, true, true, false, false, false, false, false, false];
        let mut scales = Vec::new();
        for &o in &overflow {
            s.update(o);
            scales.push(s.scale);
        }
        assert_eq!(scales, [1024.0, 512.0, 256.0, 256.0, 256.0, 512.0, 512.0, 512.0, 1024.0]);
        assert_eq!(s.skipped, 2);
        assert_eq!(s.trouble(), None);
    }

    #[test]
    fn growth_stops_short_of_f32_overflow_with_a_warning() {
        let mut s = scaler("init = 2.0e38\ngrowth_interval = 1");
        assert!(s.warnings().is_empty());
        s.update(false);
        s.update(false);
        assert_eq!(s.scale, 2.0e38, "4e38 is not an f32: the scale stays");
        assert_eq!(s.warnings(), ["the loss scale sat at its cap 2e38 for 2 growth interval(s): growing it would overflow f32, so the scaled gradients never overflow and the scaler guards nothing"]);
    }

    #[test]
    fn without_its_growth_cap_the_scale_doubles_to_inf_and_stays_there() {
        // pytorch#98828 (torch 2.0): from 2¹⁶ with growth_interval 1 the scale doubles every
        // clean step: 2¹²⁷ after 111 of them (f32's largest power of two, max ≈ 3.40e38 < 2¹²⁸),
        // and the 112th makes 2¹²⁸ = inf. A skipped step then halves inf to inf.
        let mut s = scaler("growth_interval = 1\ngrowth_cap = false");
        for _ in 0..111 {
            s.update(false);
        }
        assert_eq!(s.scale, 2f32.powi(127));
        assert_eq!(s.trouble(), None);
        s.update(false);
        assert_eq!(s.scale, f32::INFINITY);
        s.update(true);
        assert_eq!(s.scale, f32::INFINITY, "inf · 0.5 = inf");
        assert!(matches!(s.trouble(), Some(Trouble::Overflow(ref why)) if why.contains("to inf") && why.contains("1 step(s) skipped")), "{:?}", s.trouble());
        assert!(s.warnings().is_empty(), "no growth was refused");
        // With the cap (PyTorch ≥ 2.1) the 112th growth is refused: 2¹²⁷ stays.
        let mut capped = scaler("growth_interval = 1");
        for _ in 0..112 {
            capped.update(false);
        }
        assert_eq!((capped.scale, capped.capped), (2f32.powi(127), 1));
    }

    #[test]
    fn a_scale_one_backoff_above_min_scale_is_a_warning() {
        // 8 → 4 → 2: 2 · 0.5 = 1 is below min_scale 1.5, so one more skip underflows.
        let mut s = scaler("init = 8.0\nmin_scale = 1.5");
        s.update(true);
        assert!(s.warnings().is_empty(), "4 · 0.5 = 2 is not below 1.5");
        s.update(true);
        assert_eq!(s.warnings(), ["the loss scale ended at its floor, 2e0, one backoff above min_scale 1.5e0: one more skipped step and the run collapses"]);
    }

    #[test]
    fn skipped_steps_are_counted_and_named() {
        let row = |step: usize, fold: usize, skipped: Option<bool>| TraceRow { step, fold, skipped, ..Default::default() };
        let rows: Vec<TraceRow> = [true, true, false, true, false, false].iter().enumerate().map(|(i, &s)| row(i + 1, 0, Some(s))).collect();
        assert_eq!(skipped_steps(&rows).as_deref(), Some("3 of 6 steps skipped: inf/NaN gradients at steps 1, 2, 4"));
        assert_eq!(skipped_steps(&rows[2..3]), None, "none skipped");
        assert_eq!(skipped_steps(&[row(1, 0, None)]), None, "no scaler");
        assert_eq!(skipped_steps(&[row(1, 0, Some(false)), row(1, 1, Some(true))]).as_deref(), Some("1 of 2 steps skipped: inf/NaN gradients at step 1 (fold 1)"));
    }

    #[test]
    fn unscaling_multiplies_by_the_reciprocal_and_reports_scaled_non_finite_values() {
        let dev = candle_core::Device::Cpu;
        let s = scaler("init = 4.0");
        let (g, inf) = s.unscale(&[Tensor::new(&[8.0f32, -2.0], &dev).unwrap()]).unwrap();
        assert_eq!((g[0].to_vec1::<f32>().unwrap(), inf), (vec![2.0, -0.5], false));
        let (_, inf) = s.unscale(&[Tensor::new(&[f32::INFINITY, 1.0], &dev).unwrap()]).unwrap();
        assert!(inf);
    }

    #[test]
    fn a_collapse_is_more_than_the_fraction_of_the_window_skipped_and_an_underflow_is_below_min() {
        let mut s = scaler("collapse_window = 4\nmax_skip_fraction = 0.5\ninit = 8.0\nmin_scale = 0.5");
        for o in [true, false, true] {
            s.update(o);
        }
        assert_eq!(s.trouble(), None, "2 of 3 is not more than half of 4");
        s.update(true);
        assert!(matches!(s.trouble(), Some(Trouble::Collapse(_))), "3 of 4");
        s.update(false);
        s.update(false);
        // Window now [true, true, false, false]... scale 8 → 4 → 2 → 1: still ≥ 0.5.
        assert_eq!(s.scale, 1.0);
        assert_eq!(s.trouble(), None);
        s.update(true);
        s.update(false);
        s.update(false);
        s.update(false);
        assert_eq!(s.scale, 0.5);
        assert_eq!(s.trouble(), None, "0.5 is not below 0.5");
        s.update(true);
        assert!(matches!(s.trouble(), Some(Trouble::Underflow(_))), "{:?}", s.trouble());
    }
}
