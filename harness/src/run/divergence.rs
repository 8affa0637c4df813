//! Divergence is not stability: a run whose loss climbs ten decades while
//! every value stays finite will overflow with a few more epochs. This flags
//! it as an outcome field next to stagnation: the training loss rising more
//! than `loss_decades` decades above its running minimum, or the parameter
//! norm growing more than `param_growth` times its value after the first step.
//!
//! [`still_growing`] says when a finite run is no fix for a failing one: it
//! diverges, or its loss ends decades above where it started; [`growth_before`]
//! reads the trace for a divergence that came before a first non-finite value
//! (which the cause then names as the chain's start).

use crate::run::{Outcome, Stagnation, Status, TraceRow};
use crate::scenario::DivergenceSpec;

/// Decades the parameter norm (over its value after the first step) or the loss (over its running
/// minimum) must grow before a first non-finite value for that value to end a divergence.
pub const CHAIN_DECADES: f64 = 2.0;

/// How a run grew before it failed.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Growth {
    /// Whether the parameter norm grew (the weights); otherwise the loss.
    pub(crate) weights: bool,
    /// Growth per step over the (up to 3) steps before the failure.
    pub(crate) per_step: f64,
    /// The first step at which it had grown [`CHAIN_DECADES`].
    pub(crate) step: usize,
}

/// Growth per step the parameter norm must still show over the last steps before a failure for
/// the weights to be what diverges (otherwise the loss is, if it grew).
const STILL_GROWING: f64 = 2.0;

/// The divergence in fold `fold`'s trace rows before step `before`: the parameter norm grown
/// [`CHAIN_DECADES`] over its value after the first step and still growing ×[`STILL_GROWING`] a
/// step, else the training loss grown that far over its first value and still growing. `None`
/// if neither did.
pub(crate) fn growth_before(rows: &[TraceRow], fold: usize, before: usize) -> Option<Growth> {
    let rows: Vec<&TraceRow> = rows.iter().filter(|r| r.fold == fold && r.step < before).collect();
    // The first step it had grown the decades by, and its growth per step over the last (up to 3).
    let grown = |get: fn(&TraceRow) -> Option<f64>| -> Option<(usize, f64)> {
        let pts: Vec<(usize, f64)> = rows.iter().filter_map(|r| get(r).filter(|v| v.is_finite() && *v > 0.0).map(|v| (r.step, v))).collect();
        let first = pts.first()?.1;
        let at = pts.iter().position(|&(_, v)| (v / first).log10() >= CHAIN_DECADES)?;
        let last = pts.len() - 1;
        let from = last - last.min(3);
        let per_step = (pts[last].1 / pts[from].1).powf(1.0 / (pts[last].0 - pts[from].0) as f64);
        Some((pts[at].0, per_step))
    };
    if let Some((step, per_step)) = grown(|r| r.param_norm).filter(|g| g.1 >= STILL_GROWING) {
        return Some(Growth { weights: true, per_step, step });
    }
    let (step, per_step) = grown(|r| Some(r.train_loss.abs())).filter(|g| g.1 > 1.0)?;
    Some(Growth { weights: false, per_step, step })
}

/// Decades the training loss may end above its first step's in a run that is called settled.
pub const SETTLE_DECADES: f64 = 1.0;

/// Why a finite run still grows, so that a change which leaves it like this is no fix: its
/// divergence was flagged, or its last fold's training loss ended more than
/// [`SETTLE_DECADES`] above that fold's first step's. `None` for a run that settles, or that
/// is not finite (its own outcome says so).
pub fn still_growing(o: &Outcome) -> Option<String> {
    if o.outcome != Status::Finite {
        return None;
    }
    if let Some(d) = &o.divergence {
        return Some(format!("finite but diverging at step {}: {}", d.step, d.detail));
    }
    let last = o.trace.rows.last()?;
    let first = o.trace.rows.iter().find(|r| r.fold == last.fold)?;
    let (a, b) = (first.train_loss.abs(), last.train_loss.abs());
    (a > 0.0 && a.is_finite() && b.is_finite() && (b / a).log10() > SETTLE_DECADES)
        .then(|| format!("finite but growing: its training loss ends at {} after {} at step {}, {:.1} decades up", crate::human(b), crate::human(a), first.step, (b / a).log10()))
}

/// Follows one fold's loss and parameter norm.
pub(crate) struct DivergenceWatch {
    spec: DivergenceSpec,
    min_loss: f64,
    first_param_norm: Option<f64>,
}

impl DivergenceWatch {
    /// A fresh watch (one per fold).
    pub(crate) fn new(spec: &DivergenceSpec) -> Self {
        DivergenceWatch { spec: spec.clone(), min_loss: f64::INFINITY, first_param_norm: None }
    }

    /// Takes one step's training loss and parameter norm (after the update); the first step that diverges is flagged.
    pub(crate) fn check(&mut self, step: usize, loss: f64, param_norm: Option<f64>) -> Option<Stagnation> {
        if loss.is_finite() {
            let min = self.min_loss;
            self.min_loss = min.min(loss.abs());
            // A minimum of exactly 0 has no decades to rise from.
            if min > 0.0 && min.is_finite() && (loss.abs() / min).log10() > self.spec.loss_decades {
                let detail = format!("training loss {loss:e} is {:.1} decades above its running minimum {min:e} (limit {})", (loss.abs() / min).log10(), self.spec.loss_decades);
                return Some(Stagnation { step, reason: "loss_growth".into(), detail, ..Stagnation::default() });
            }
        }
        let p = param_norm.filter(|p| p.is_finite())?;
        let p0 = *self.first_param_norm.get_or_insert(p);
        (p0 > 0.0 && p / p0 > self.spec.param_growth).then(|| {
            let detail = format!("parameter norm {p:e} is {:.3e} times its {p0:e} after the first step (limit {:e})", p / p0, self.spec.param_growth);
            Stagnation { step, reason: "param_growth".into(), detail, ..Stagnation::default() }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loss_rising_past_its_decades_is_flagged_once_over() {
        let mut w = DivergenceWatch::new(&DivergenceSpec { loss_decades: 2.0, param_growth: 1e9 });
        // Losses 1, 0.5, 10, 49, 51: 51 / 0.5 = 102, just over 2 decades.
        for (step, loss) in [(1, 1.0), (2, 0.5), (3, 10.0), (4, 49.0)] {
            assert!(w.check(step, loss, None).is_none(), "step {step}");
        }
        let d = w.check(5, 51.0, None).expect("over 2 decades");
        assert_eq!((d.step, d.reason.as_str()), (5, "loss_growth"));
        let mut p = DivergenceWatch::new(&DivergenceSpec { loss_decades: 100.0, param_growth: 10.0 });
        assert!(p.check(1, 1.0, Some(2.0)).is_none() && p.check(2, 1.0, Some(20.0)).is_none());
        assert_eq!(p.check(3, 1.0, Some(20.5)).map(|d| d.reason), Some("param_growth".into()));
    }

    #[test]
    fn growth_before_a_failure_is_read_from_the_trace() {
        let row = |step, train_loss, param_norm| TraceRow { step, train_loss, param_norm, ..Default::default() };
        // Weights 1, 3, 30, 300, 3000 after steps 1-5: ×100 over step 1's by step 4 (300 ≥ 100);
        // the last 3 steps grew 3000 / 3 = 1000 = 10³, ×10 a step.
        let rows: Vec<TraceRow> = [1.0, 3.0, 30.0, 300.0, 3000.0].iter().enumerate().map(|(i, &p)| row(i + 1, 1.0, Some(p))).collect();
        let g = growth_before(&rows, 0, 6).expect("grew");
        assert!(g.weights && g.step == 4 && (g.per_step - 10.0).abs() < 1e-12, "{g:?}");
        assert_eq!(growth_before(&rows, 0, 4), None, "by step 3 only ×30");
        assert_eq!(growth_before(&rows, 1, 6), None, "another fold");
        // Weights that grew but stopped (×1.5 a step over the last 3): the loss, over its first
        // value: 1, 0.1, 4, 99.9, 100 (a loss that fell and came back is no divergence).
        let rows: Vec<TraceRow> = [(1.0, 1.0), (0.1, 100.0), (4.0, 100.0), (99.9, 150.0), (100.0, 337.5)].iter().enumerate().map(|(i, &(l, p))| row(i + 1, l, Some(p))).collect();
        let g = growth_before(&rows, 0, 6).expect("100 over the first 1");
        assert_eq!((g.weights, g.step), (false, 5));
        assert!((g.per_step - 1000f64.powf(1.0 / 3.0)).abs() < 1e-12, "{g:?}");
        let fell: Vec<TraceRow> = [23.0, 0.001, 0.02, 0.1].iter().enumerate().map(|(i, &l)| row(i + 1, l, None)).collect();
        assert_eq!(growth_before(&fell, 0, 5), None, "100 over its minimum, not over its start");
    }

    #[test]
    fn a_finite_run_whose_loss_ends_a_decade_up_still_grows() {
        let row = |step, fold, train_loss| crate::run::TraceRow { step, fold, train_loss, ..Default::default() };
        let mut o = Outcome::error("s", String::new());
        (o.outcome, o.error) = (Status::Finite, None);
        // 2 → 19.9 is under a decade (×9.95); 2 → 20.1 is over (×10.05).
        o.trace.rows = vec![row(1, 0, 2.0), row(2, 0, 19.9)];
        assert_eq!(still_growing(&o), None);
        o.trace.rows[1].train_loss = 20.1;
        assert!(still_growing(&o).is_some_and(|w| w.contains("ends at 20.1 after 2 at step 1")), "{:?}", still_growing(&o));
        // Only the last fold counts: it starts again at 100.
        o.trace.rows.extend([row(1, 1, 100.0), row(2, 1, 30.0)]);
        assert_eq!(still_growing(&o), None);
        o.divergence = Some(Stagnation { step: 2, reason: "loss_growth".into(), detail: "up".into(), ..Default::default() });
        assert_eq!(still_growing(&o).as_deref(), Some("finite but diverging at step 2: up"));
        o.outcome = Status::Nonfinite;
        assert_eq!(still_growing(&o), None, "a non-finite run says so itself");
    }
}
