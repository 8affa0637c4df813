//! The instability score: how close a finite run came to overflow, read from
//! its trace. It steers the guided engine towards the mutants most likely to
//! flip next, as GRIST and RANUM steer input generation by gradients.

use crate::run::{Outcome, Status, TraceRow};
use crate::scenario::DTypeName;

/// log10 of the largest finite value of a dtype.
pub fn log10_max(d: DTypeName) -> f64 {
    match d {
        DTypeName::F16 => 65504f64.log10(),
        DTypeName::F32 | DTypeName::Bf16 => f64::from(f32::MAX).log10(),
        DTypeName::F64 => f64::MAX.log10(),
    }
}

/// The score of an outcome: infinite for a flip, otherwise in roughly [0, 2]:
/// the larger of the peak activation and peak gradient norm as a fraction of
/// the dtype's range (in decades), plus how many of those decades the loss grew.
pub fn score(o: &Outcome, dtype: DTypeName) -> f64 {
    if o.outcome == Status::Nonfinite {
        return f64::INFINITY;
    }
    let range = log10_max(dtype);
    let decades = |v: f64| if v.is_finite() && v > 0.0 { v.log10().max(0.0) / range } else { 0.0 };
    let rows = &o.trace.rows;
    let act = rows.iter().flat_map(|r| r.max_abs.iter().copied()).map(decades).fold(0.0, f64::max);
    let grad = rows.iter().filter_map(|r| r.grad_norm).map(decades).fold(0.0, f64::max);
    let loss = |r: &TraceRow| r.train_loss.abs();
    let growth = match (rows.first(), rows.iter().map(loss).filter(|l| l.is_finite()).reduce(f64::max)) {
        (Some(first), Some(peak)) if loss(first) > 0.0 && peak > loss(first) => (peak / loss(first)).log10() / range,
        _ => 0.0,
    };
    act.max(grad) + growth
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::run::Trace;

    fn outcome(rows: Vec<TraceRow>) -> Outcome {
        let mut o = Outcome::error("t", String::new());
        o.outcome = Status::Finite;
        o.trace = Trace { layers: vec!["l".into()], rows, dropped: 0, scaled: false };
        o
    }

    #[test]
    fn closer_to_overflow_scores_higher() {
        let row = |loss: f64, act: f64| TraceRow { train_loss: loss, max_abs: vec![act], grad_norm: Some(1.0), ..Default::default() };
        let calm = score(&outcome(vec![row(1.0, 10.0), row(0.5, 10.0)]), DTypeName::F32);
        let hot = score(&outcome(vec![row(1.0, 1e19), row(1e9, 1e20)]), DTypeName::F32);
        // calm: 1 decade of 38.53; hot: 20 decades + 9 decades of growth.
        assert!((calm - 1.0 / f64::from(f32::MAX).log10()).abs() < 1e-12);
        assert!((hot - 29.0 / f64::from(f32::MAX).log10()).abs() < 1e-12);
        assert!(score(&outcome(vec![row(1.0, 1e3)]), DTypeName::F16) > score(&outcome(vec![row(1.0, 1e3)]), DTypeName::F32));
    }
}
