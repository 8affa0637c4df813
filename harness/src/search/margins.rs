//! Stability margins: how far each knob of a scenario can move, alone, before
//! the run flips; and for a run that already fails, how far each must move to
//! fix it (the fix search a bug report needs).
//!
//! For every numeric knob of the search space and each direction, values are
//! scanned outwards from the base on the knob's scale until the outcome
//! changes, then bisected to three significant digits between the last value
//! like the base and the first unlike it, so the threshold found is the one
//! nearest the base. Each threshold is verified: at it the outcome has changed,
//! 1% of the way back towards the base it has not. Categorical knobs (dtype,
//! optimizer) are tried value by value.

use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use super::finding::Target;
use super::minimize::bisect;
use super::mutation::{mutate, Mutation, Scale};
use super::space::Space;
use crate::run::{run_with, Location, RunOptions, Status};
use crate::scenario::{Knob, Scenario};

/// Points of the outward scan on each side of the base.
const SCAN: usize = 16;

/// How to search margins.
#[derive(Debug, Clone, Default)]
pub struct MarginOptions {
    /// What counts as a flip.
    pub target: Target,
    /// Stop refining once this instant has passed (bounds are then marked unverified).
    pub deadline: Option<Instant>,
    /// Wall-time limit of one run.
    pub run_timeout: Option<Duration>,
}

/// The threshold on one side of a knob's base value.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Bound {
    /// The value nearest the base at which the outcome changes (flips, or for a failing base, is fixed).
    pub changes_at: f64,
    /// The nearest value on the base's side with the base's outcome.
    pub like_base_at: f64,
    /// How far the threshold is: the factor from the base (log knobs) or the distance (linear knobs).
    pub margin: f64,
    /// Where the run first goes non-finite at the threshold (for a finite base) or at the base side (for a failing one).
    pub location: Option<Location>,
    /// Checked by running both sides: at `changes_at` the outcome changed, 1% back towards the base it did not.
    pub verified: bool,
}

/// The margins of one numeric knob.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct KnobMargin {
    /// The knob.
    pub knob: Knob,
    /// Its base value.
    pub base: f64,
    /// The threshold below the base, or none within the space's range.
    pub lower: Option<Bound>,
    /// The threshold above the base, or none within the space's range.
    pub upper: Option<Bound>,
}

/// One value of a categorical knob, tried alone.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Categorical {
    /// The knob.
    pub knob: Knob,
    /// The value tried.
    pub value: String,
    /// Whether the outcome differs from the base's (flips a finite base, fixes a failing one).
    pub changes: bool,
    /// Where the run first goes non-finite, if it does.
    pub location: Option<Location>,
}

/// All margins of a scenario.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Margins {
    /// The scenario's name.
    pub scenario: String,
    /// `finite` or `nonfinite`: thresholds flip a finite base, and fix a failing one.
    pub base_outcome: Status,
    /// Where the base goes non-finite, if it does.
    pub base_location: Option<Location>,
    /// Numeric knobs.
    pub knobs: Vec<KnobMargin>,
    /// Categorical knobs.
    pub categorical: Vec<Categorical>,
}

/// The margins of `base` within its search space.
pub fn margins(base: &Scenario, opts: &MarginOptions) -> Margins {
    let s = Searcher { base, opts };
    let base_run = s.run(&[]);
    let failing = opts.target.hits(&base_run.1);
    let space = Space::of(base);
    let knobs = space
        .numeric()
        .into_iter()
        .filter_map(|(m, (lo, hi))| {
            let b = m.base_value(base)?;
            let side = |end: f64| (end != b).then(|| s.bound(&m, b, end, failing)).flatten();
            Some(KnobMargin { knob: m.knob(), base: b, lower: side(lo.min(b)), upper: side(hi.max(b)) })
        })
        .collect();
    let categorical = space
        .categorical()
        .into_iter()
        .map(|m| {
            let (flips, o) = s.run(std::slice::from_ref(&m));
            let value = m.to_string().split(" = ").nth(1).unwrap_or_default().to_string();
            Categorical { knob: m.knob(), value, changes: flips != failing, location: o.first_nonfinite }
        })
        .collect();
    Margins { scenario: base.name.clone(), base_outcome: base_run.1.outcome, base_location: base_run.1.first_nonfinite, knobs, categorical }
}

struct Searcher<'a> {
    base: &'a Scenario,
    opts: &'a MarginOptions,
}

impl Searcher<'_> {
    /// Runs the base with mutations; whether it hits the target, and the outcome.
    fn run(&self, muts: &[Mutation]) -> (bool, crate::run::Outcome) {
        let Some(s) = mutate(self.base, muts) else { return (false, crate::run::Outcome::error(&self.base.name, "invalid mutation".into())) };
        let deadline = self.opts.run_timeout.map(|t| Instant::now() + t);
        let o = run_with(&s, &RunOptions { deadline, ..RunOptions::default() });
        (self.opts.target.hits(&o), o)
    }

    fn out_of_time(&self) -> bool {
        self.opts.deadline.is_some_and(|d| Instant::now() >= d)
    }

    /// The threshold between the base value `b` and `end`: the first scanned value whose
    /// outcome differs from the base's, bisected back towards the last one that does not.
    fn bound(&self, m: &Mutation, b: f64, end: f64, failing: bool) -> Option<Bound> {
        let scale = m.numeric().map_or(Scale::Log, |(_, s)| s);
        let whole = |v: f64| if scale == Scale::Integer { v.round() } else { v };
        let changed = |v: f64| {
            let (hit, o) = self.run(&[m.with_value(whole(v))]);
            (hit != failing, o)
        };
        // Scan outwards, denser near the base: geometric steps on a log or integer knob, even ones on a linear one.
        let log = scale != Scale::Linear && b > 0.0 && end > 0.0;
        let (to, back) = (|x: f64| if log { x.ln() } else { x }, |x: f64| if log { x.exp() } else { x });
        let mut prev = b;
        let mut found = None;
        for k in 1..=SCAN {
            if self.out_of_time() {
                return None;
            }
            let v = whole(back(to(b) + (to(end) - to(b)) * (k as f64 / SCAN as f64).powi(2)));
            if changed(v).0 {
                found = Some(v);
                break;
            }
            prev = v;
        }
        let (like_base_at, changes_at) = bisect(prev, found?, scale, &mut |v| changed(v).0, &|| self.out_of_time());
        // Verified independently: changed at the threshold, unchanged 1% of the way back.
        let (at, o) = changed(changes_at);
        let towards = if scale == Scale::Integer { like_base_at } else { changes_at - 0.01 * (changes_at - b) };
        let (back_changed, back_o) = changed(towards);
        let margin = if log { changes_at / b } else { (changes_at - b).abs() };
        let location = if failing { back_o.first_nonfinite } else { o.first_nonfinite };
        Some(Bound { changes_at, like_base_at, margin, location, verified: at && !back_changed })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_finite_base_gets_verified_flip_thresholds() {
        // Seed 002 ex1 with standardized features is finite at lr 0.01; lr ≥ ~26 overflows
        // (the fuzz regression's threshold): the upper lr bound is that threshold.
        let base = crate::scenario::seed("s002_ex1_linreg_sgd_fix_standardize");
        let mut base = base;
        base.search = Some(crate::scenario::SearchSpec { knobs: Some(vec![Knob::Lr]), lr: Some([1e-4, 1e3]), ..Default::default() });
        let m = margins(&base, &MarginOptions::default());
        assert_eq!(m.base_outcome, Status::Finite);
        let lr = m.knobs.iter().find(|k| k.knob == Knob::Lr).expect("lr");
        let up = lr.upper.as_ref().expect("lr flips within range");
        assert!(up.verified && up.changes_at > 1.0 && up.changes_at < 1e3, "{up:?}");
        assert!((up.margin - up.changes_at / 0.01).abs() < 1e-9 * up.margin);
        // Checked again here by running both sides.
        let flips = |v: f64| Target::Nonfinite.hits(&crate::run::run(&mutate(&base, &[Mutation::Lr { value: v }]).unwrap()));
        assert!(flips(up.changes_at) && !flips(up.like_base_at));
        assert!(lr.lower.is_none(), "smaller learning rates stay finite");
    }

    #[test]
    fn the_f16_clamp_threshold_is_two_to_the_minus_12() {
        // Seed 001 ex3's clamp fix in f16 with SGD at 1e-3 and clamp 1e-3 stays finite. f16 has
        // 10 mantissa bits, so just below 1 its spacing is 2⁻¹¹: 1 − c rounds to 1 once c ≤ 2⁻¹²
        // (half a spacing, ties to even) = 2.44140625e-4. Then a saturated p = 1 is not clipped
        // and (1 − y)·log(1 − p) is 0·(−∞) = NaN. Rounded to 3 digits away from the base: 2.44e-4.
        let mut s = crate::scenario::seed("s001_ex3_bce_saturated_fix_eps_clamp");
        s.train.dtype = crate::scenario::DTypeName::F16;
        (s.optimizer.kind, s.optimizer.lr, s.loss.clamp) = (crate::scenario::OptimizerKind::Sgd, 1e-3, Some(1e-3));
        s.search = Some(crate::scenario::SearchSpec { knobs: Some(vec![Knob::LossClamp]), ..Default::default() });
        let m = margins(&s, &MarginOptions::default());
        assert_eq!(m.base_outcome, Status::Finite);
        let clamp = m.knobs.iter().find(|k| k.knob == Knob::LossClamp).expect("clamp is a value knob");
        let lower = clamp.lower.as_ref().expect("a smaller clamp flips");
        assert_eq!(lower.changes_at, 2.44e-4, "{lower:?}");
        assert!(lower.verified && lower.like_base_at > 2f64.powi(-12), "{lower:?}");
        assert_eq!(lower.location.as_ref().map(|l| (l.phase, l.kind, l.step)), Some((crate::scenario::Phase::Loss, crate::run::Kind::Nan, 1)));
    }

    #[test]
    fn a_failing_base_gets_its_fix() {
        // Seed 002 ex1 as written overflows at lr 0.01 (unscaled features, 1e5): its curvature
        // (2/n)·XᵀX is about 9e10, so only a learning rate many decades smaller stays finite
        // for its 10 epochs. The fix search finds the largest one.
        let mut base = crate::scenario::seed("s002_ex1_linreg_sgd");
        base.search = Some(crate::scenario::SearchSpec { knobs: Some(vec![Knob::Lr]), lr: Some([1e-14, 0.1]), ..Default::default() });
        let m = margins(&base, &MarginOptions::default());
        assert_eq!(m.base_outcome, Status::Nonfinite);
        let fix = m.knobs[0].lower.as_ref().expect("a smaller lr fixes it");
        assert!(fix.verified && fix.changes_at < 1e-6 && fix.changes_at > 2e-11, "between 1e-6 and the 2/λ bound 2e-11: {fix:?}");
        let finite = |v: f64| crate::run::run(&mutate(&base, &[Mutation::Lr { value: v }]).unwrap()).outcome == Status::Finite;
        assert!(finite(fix.changes_at) && !finite(fix.like_base_at), "{fix:?}");
    }
}
