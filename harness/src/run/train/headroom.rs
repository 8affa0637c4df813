//! Precursors in the trace: how close a step's values came to their dtype's
//! largest value (headroom, in bits) and how many of its gradient values
//! were subnormal (on their way to being flushed to zero), with a warning in
//! the outcome when either crossed its threshold before anything went
//! non-finite. Each layer output is held against the dtype it is held in: under
//! autocast the low dtype, or f32 for an op on autocast's f32 list (a loss, softmax,
//! layer norm) or a layer kept in f32 (`precision = "f32"`), as `Net::output_dtypes`
//! says; the gradients against the low dtype, scaled by the loss scale if any.

use candle_core::{DType, Tensor};

use super::{At, Runner};
use crate::run::cause::Limits;
use crate::run::trace::TraceRow;
use crate::run::watch::Stats;
use crate::scenario::DTypeName;

/// Headroom, in bits, under which a run gets a warning.
pub(crate) const LOW_HEADROOM_BITS: f64 = 4.0;
/// Fraction of subnormal gradient values over which a run gets a warning.
pub(crate) const MANY_SUBNORMALS: f64 = 0.01;

/// The worst a run came to either threshold, and where.
#[derive(Debug, Clone, Copy, Default)]
pub(super) struct Worst {
    /// Lowest headroom, the magnitude behind it, the dtype it was held against, and where.
    headroom: Option<(f64, f64, DTypeName, At)>,
    /// Largest fraction of subnormal gradient values, and where.
    subnormal: Option<(f64, At)>,
}

/// `log2(max / largest)`: how many doublings the largest value could take before overflowing.
pub(crate) fn headroom(max: f64, largest: f64) -> f64 {
    (max / largest).log2()
}

impl Runner<'_> {
    /// Fills the row's headroom (over layer outputs, each against the dtype it is held in,
    /// `dtypes` by output, the compute dtype where that is empty, and gradients) and subnormal
    /// fraction (of gradient values), and keeps the worst of each while everything is still finite.
    pub(super) fn note_margins(&mut self, at: At, row: &mut TraceRow, (g_stats, grads): (&[Stats], &[Tensor]), dtypes: &[DType]) {
        let finite = |m: f64| if m.is_finite() { m } else { 0.0 };
        let low = self.compute_dtype();
        let held = |l: usize| dtypes.get(l).and_then(|d| crate::run::dtype_name(*d)).unwrap_or(low);
        // With a loss scaler the gradients lived scaled in the low dtype: their headroom is that
        // of the scaled values (what overflows and makes the scaler skip).
        let scale = row.loss_scale.unwrap_or(1.0);
        let outputs = row.max_abs.iter().enumerate().map(|(l, m)| (finite(*m), held(l)));
        let gradients = g_stats.iter().map(|s| (finite(s.max_abs * scale), low));
        let (room, largest, d) = outputs.chain(gradients).fold((f64::INFINITY, 0.0, low), |worst, (m, d)| {
            let room = headroom(Limits::of(d).max, m);
            if room < worst.0 {
                (room, m, d)
            } else {
                worst
            }
        });
        let len: usize = grads.iter().map(Tensor::elem_count).sum();
        let tiny: usize = g_stats.iter().map(|s| s.tiny).sum();
        let share = tiny as f64 / len.max(1) as f64;
        (row.headroom, row.grad_subnormal) = (Some(room), Some(share));
        if self.first.is_some() {
            return;
        }
        if self.worst.headroom.is_none_or(|(h, _, _, _)| room < h) {
            self.worst.headroom = Some((room, largest, d, at));
        }
        if self.worst.subnormal.is_none_or(|(f, _)| share > f) {
            self.worst.subnormal = Some((share, at));
        }
    }

    /// Warnings for thresholds crossed before anything went non-finite.
    pub(super) fn margin_warnings(&self) -> Vec<String> {
        // The subnormal share is of the gradients as the optimizer reads them: in the master dtype.
        let (gdt, glim) = (<&str>::from(self.s.train.dtype), Limits::of(self.s.train.dtype));
        let mut out = Vec::new();
        if let Some((h, largest, d, at)) = self.worst.headroom.filter(|(h, _, _, _)| *h < LOW_HEADROOM_BITS) {
            let (dt, lim) = (<&str>::from(d), Limits::of(d));
            out.push(format!("headroom fell to {h:.1} bits at step {} (fold {}): a value of magnitude {} against {dt}'s largest {}", at.step, at.fold, crate::human(largest), crate::human(lim.max)));
        }
        if let Some((f, at)) = self.worst.subnormal.filter(|(f, _)| *f > MANY_SUBNORMALS) {
            out.push(format!(
                "{:.1}% of the gradient values were subnormal in {gdt} at step {} (fold {}): below {} they lose precision, and below {} they flush to 0",
                f * 100.0,
                at.step,
                at.fold,
                crate::human(glim.min_normal),
                crate::human(glim.min_subnormal)
            ));
        }
        out
    }
}
