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
//! optimizer) are tried value by value. A side not searched to its end (out of
//! time, or a run there timed out or could not run) says why, and is never
//! reported as "none within range".

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use super::finding::Target;
use super::minimize::bisect;
use super::mutation::{try_mutate, Mutation, Scale};
use super::space::Space;
use crate::error::{Error, Result};
use crate::run::{run_with, Location, Outcome, RunOptions, Status};
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
    /// Knob sides searched at once (0 or 1: one after the other). The result does not depend on it.
    pub jobs: usize,
    /// Ranges searched in place of the space's, by knob (`check` searches as far as a `min_margin` asks).
    pub ranges: BTreeMap<Knob, (f64, f64)>,
}

/// The threshold on one side of a knob's base value. `flips_at` and `stays_finite_at` straddle
/// it: for a finite base the first is the threshold, for a failing base the second (the fix).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Bound {
    /// The value on the flipping side nearest the threshold (non-finite, or diverging under `--target diverge`).
    pub flips_at: f64,
    /// The value on the other side nearest it, where the run stays finite.
    pub stays_finite_at: f64,
    /// How far the threshold is from the base: a factor for multiplicative knobs (below 1 downwards;
    /// on `1 − v` for complement ones, above 1 towards 1), a distance for linear ones.
    pub margin: f64,
    /// Where the run first goes wrong on the flipping side.
    pub location: Option<Location>,
    /// Checked by running both sides: at the threshold the outcome changed, 1% back towards the base it did not.
    pub verified: bool,
}

/// The margins of one numeric knob.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct KnobMargin {
    /// The knob.
    pub knob: Knob,
    /// How it moves: `log`, `complement` (log of `1 − v`), `linear` or `integer`.
    pub scale: Scale,
    /// Its base value.
    pub base: f64,
    /// The threshold below the base, or none within the space's range.
    pub lower: Option<Bound>,
    /// The threshold above the base, or none within the space's range.
    pub upper: Option<Bound>,
    /// Why the side below was not searched to the end of its range (out of time, or a run there
    /// timed out or could not run): `lower` is then none without meaning "none within range".
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lower_unsearched: Option<String>,
    /// Why the side above was not searched to the end of its range, as for `lower_unsearched`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub upper_unsearched: Option<String>,
}

impl KnobMargin {
    /// The threshold of a bound: where a finite base flips, or where a failing one is fixed.
    pub fn threshold(b: &Bound, failing: bool) -> f64 {
        if failing {
            b.stays_finite_at
        } else {
            b.flips_at
        }
    }

    /// A bound's margin as a size: the factor either way (at least 1) for multiplicative knobs, the distance for others.
    pub fn size(&self, b: &Bound) -> f64 {
        if self.is_factor() {
            b.margin.max(1.0 / b.margin)
        } else {
            b.margin
        }
    }

    /// Whether margins are factors (log and complement knobs, and integer ones on positive values) rather than distances.
    pub fn is_factor(&self) -> bool {
        is_factor(self.scale, self.base)
    }
}

/// Whether a knob on this scale at this base value has margins that are factors rather than distances.
pub(crate) fn is_factor(scale: Scale, base: f64) -> bool {
    match scale {
        Scale::Log | Scale::Complement => true,
        Scale::Integer => base > 0.0,
        Scale::Linear => false,
    }
}

/// One value of a categorical knob, tried alone.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Categorical {
    /// The knob.
    pub knob: Knob,
    /// The value tried.
    pub value: String,
    /// Whether the run at this value flips (goes non-finite, or diverges under `--target diverge`).
    pub flips: bool,
    /// Where the run first goes non-finite, if it does.
    pub location: Option<Location>,
    /// Why this value says nothing (not run for want of time, or its run timed out or could not run).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unsearched: Option<String>,
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

impl Margins {
    /// Whether the base fails, so thresholds are fixes.
    pub fn failing(&self) -> bool {
        self.base_location.is_some()
    }
}

/// The margins of `base` within its search space (or the ranges `opts` gives). An error when no
/// knob with a margin can move (as `hunt` says when none can), or when the base itself times out
/// or cannot run: then there is nothing to measure from.
pub fn margins(base: &Scenario, opts: &MarginOptions) -> Result<Margins> {
    let space = Space::of(base);
    let nothing = |message: &str| Error::Invalid { location: base.name.clone(), key: "search".into(), message: message.into() };
    if space.is_empty() {
        return Err(nothing("no knob can move: check `[search].knobs`"));
    }
    if space.numeric().is_empty() && space.categorical().is_empty() {
        return Err(nothing("no knob with a margin can move (the seed, injections and clipping have none): check `[search].knobs`"));
    }
    let s = Searcher { base, opts };
    let base_run = s.run(&[]);
    if let Some(why) = unusable(&base_run.1) {
        return Err(Error::Unmeasured { name: base.name.clone(), message: format!("the base run {why}, so it has no margins") });
    }
    let failing = base_run.0;
    // Every side of every numeric knob is one independent search.
    let numeric: Vec<(Mutation, Scale, f64, [f64; 2])> = space
        .numeric()
        .into_iter()
        .filter_map(|(m, (lo, hi))| {
            let b = m.base_value(base)?;
            let scale = m.numeric().map_or(Scale::Log, |(_, s)| s);
            let (lo, hi) = opts.ranges.get(&m.knob()).copied().unwrap_or((lo, hi));
            Some((m, scale, b, [lo.min(b), hi.max(b)]))
        })
        .collect();
    let sides: Vec<(usize, f64)> = (0..numeric.len()).flat_map(|i| numeric[i].3.map(|end| (i, end))).collect();
    // Why a side was not searched to its end, by (knob index, whether it is the side below).
    let unsearched = std::sync::Mutex::new(BTreeMap::new());
    let bound = |&(i, end): &(usize, f64)| {
        let (m, _, b, _) = &numeric[i];
        let side = if end == *b { Ok(None) } else { s.bound(m, *b, end, failing) };
        side.unwrap_or_else(|why| {
            unsearched.lock().unwrap_or_else(std::sync::PoisonError::into_inner).insert((i, end < *b), why);
            None
        })
    };
    let categorical_muts = space.categorical();
    let category = |m: &Mutation| {
        let value = m.to_string().split(" = ").nth(1).unwrap_or_default().to_string();
        if s.out_of_time() {
            return Categorical { knob: m.knob(), value, flips: false, location: None, unsearched: Some("not run: out of time".into()) };
        }
        let (flips, o) = s.run(std::slice::from_ref(m));
        let unsearched = unusable(&o);
        Categorical { knob: m.knob(), value, flips: flips && unsearched.is_none(), location: o.first_nonfinite, unsearched }
    };
    let (bounds, categorical): (Vec<Option<Bound>>, Vec<Categorical>) = if opts.jobs > 1 {
        match rayon::ThreadPoolBuilder::new().num_threads(opts.jobs).stack_size(crate::run::stack::WORKER_STACK).build() {
            Ok(pool) => pool.install(|| (sides.par_iter().map(bound).collect(), categorical_muts.par_iter().map(category).collect())),
            Err(_) => (sides.iter().map(bound).collect(), categorical_muts.iter().map(category).collect()),
        }
    } else {
        (sides.iter().map(bound).collect(), categorical_muts.iter().map(category).collect())
    };
    let mut bounds = bounds.into_iter();
    let mut why = unsearched.into_inner().unwrap_or_else(std::sync::PoisonError::into_inner);
    let knobs = numeric
        .into_iter()
        .enumerate()
        .map(|(i, (m, scale, base, _))| {
            let (lower, upper) = (bounds.next().flatten(), bounds.next().flatten());
            KnobMargin { knob: m.knob(), scale, base, lower, upper, lower_unsearched: why.remove(&(i, true)), upper_unsearched: why.remove(&(i, false)) }
        })
        .collect();
    Ok(Margins { scenario: base.name.clone(), base_outcome: base_run.1.outcome, base_location: failing.then_some(base_run.1.first_nonfinite).flatten(), knobs, categorical })
}

/// Why a run says nothing about its value: it timed out, or could not run.
fn unusable(o: &Outcome) -> Option<String> {
    let detail = || o.error.as_deref().map_or(String::new(), |e| format!(": {e}"));
    match o.outcome {
        Status::Finite | Status::Nonfinite => None,
        Status::Timeout => Some(format!("timed out{}", detail())),
        Status::Error => Some(format!("could not run{}", detail())),
    }
}

struct Searcher<'a> {
    base: &'a Scenario,
    opts: &'a MarginOptions,
}

impl Searcher<'_> {
    /// Runs the base with mutations; whether it hits the target, and the outcome.
    fn run(&self, muts: &[Mutation]) -> (bool, Outcome) {
        let s = match try_mutate(self.base, muts) {
            Ok(s) => s,
            Err(why) => return (false, Outcome::error(&self.base.name, why)),
        };
        let deadline = self.opts.run_timeout.map(|t| Instant::now() + t);
        let o = run_with(&s, &RunOptions { deadline, ..RunOptions::default() });
        (self.opts.target.hits(&o), o)
    }

    fn out_of_time(&self) -> bool {
        self.opts.deadline.is_some_and(|d| Instant::now() >= d)
    }

    /// The threshold between the base value `b` and `end`: the first scanned value whose
    /// outcome differs from the base's, bisected back towards the last one that does not. `Ok(None)`
    /// when the whole side was run without a change; `Err` says why it was not searched to `end`
    /// (out of time, or a run there timed out or could not run), which is not the same.
    fn bound(&self, m: &Mutation, b: f64, end: f64, failing: bool) -> std::result::Result<Option<Bound>, String> {
        let scale = m.numeric().map_or(Scale::Log, |(_, s)| s);
        let whole = |v: f64| if scale == Scale::Integer { v.round() } else { v };
        let show = |v: f64| if scale == Scale::Complement { crate::human_near_one(v) } else { crate::human(v) };
        // Whether the outcome at `v` differs from the base's, or why the run there says nothing.
        let changed = |v: f64| {
            let v = whole(v);
            let (hit, o) = self.run(&[m.with_value(v)]);
            match unusable(&o) {
                Some(why) => Err(format!("unknown: the run at {} {why}", show(v))),
                None => Ok((hit != failing, o)),
            }
        };
        // Scan outwards, denser near the base: geometric steps on a log, complement or (positive)
        // integer knob, even ones on a linear one.
        let scan = if scale == Scale::Integer { Scale::Log } else { scale };
        let scan = if scan.coord(b).is_some() && scan.coord(end).is_some() { scan } else { Scale::Linear };
        let (to, back) = (|x: f64| scan.coord(x).unwrap_or(x), |x: f64| scan.value(x));
        let mut prev = b;
        let mut found = None;
        for k in 1..=SCAN {
            if self.out_of_time() {
                return Err(if k == 1 { "not searched: out of time".into() } else { format!("searched to {} only: out of time", show(prev)) });
            }
            let v = whole(back(to(b) + (to(end) - to(b)) * (k as f64 / SCAN as f64).powi(2)));
            if changed(v)?.0 {
                found = Some(v);
                break;
            }
            prev = v;
        }
        let Some(found) = found else { return Ok(None) };
        // A run that says nothing while bisecting leaves the threshold unverified.
        let mut silent = false;
        let (like_base_at, changes_at) = bisect(
            prev,
            found,
            scale,
            &mut |v| {
                changed(v).map_or_else(
                    |_| {
                        silent = true;
                        false
                    },
                    |c| c.0,
                )
            },
            &|| self.out_of_time(),
        );
        // Verified independently: changed at the threshold, unchanged 1% of the way back.
        let at = changed(changes_at).ok();
        // 1% of the value's distance back (of `1 − v`'s, on a complement knob).
        let towards = match scale {
            Scale::Integer => like_base_at,
            Scale::Complement => 1.0 - ((1.0 - changes_at) - 0.01 * ((1.0 - changes_at) - (1.0 - b))),
            Scale::Log | Scale::Linear => changes_at - 0.01 * (changes_at - b),
        };
        let back_at = changed(towards).ok();
        let margin = match scan {
            Scale::Log => changes_at / b,
            Scale::Complement => (1.0 - b) / (1.0 - changes_at),
            Scale::Linear | Scale::Integer => (changes_at - b).abs(),
        };
        let verified = !silent && at.as_ref().is_some_and(|a| a.0) && back_at.as_ref().is_some_and(|a| !a.0);
        let (flips_at, stays_finite_at, location) =
            if failing { (like_base_at, changes_at, back_at.and_then(|a| a.1.first_nonfinite)) } else { (changes_at, like_base_at, at.and_then(|a| a.1.first_nonfinite)) };
        Ok(Some(Bound { flips_at, stays_finite_at, margin, location, verified }))
    }
}

#[cfg(test)]
mod tests {
    use super::super::mutation::mutate;
    use super::*;
    use crate::scenario::Domain;

    #[test]
    fn a_finite_base_gets_verified_flip_thresholds() {
        // Seed 002 ex1 with standardized features is finite at lr 0.01; lr ≥ ~26 overflows
        // (the fuzz regression's threshold): the upper lr bound is that threshold.
        let base = crate::scenario::seed("s002_ex1_linreg_sgd_fix_standardize");
        let mut base = base;
        base.search = Some(crate::scenario::SearchSpec { knobs: Some(vec![Knob::Lr]), lr: Some([1e-4, 1e3]), ..Default::default() });
        let m = margins(&base, &MarginOptions::default()).unwrap();
        assert_eq!(m.base_outcome, Status::Finite);
        let lr = m.knobs.iter().find(|k| k.knob == Knob::Lr).expect("lr");
        let up = lr.upper.as_ref().expect("lr flips within range");
        assert!(up.verified && up.flips_at > 1.0 && up.flips_at < 1e3, "{up:?}");
        assert!((up.margin - up.flips_at / 0.01).abs() < 1e-9 * up.margin);
        // Checked again here by running both sides.
        let flips = |v: f64| Target::Nonfinite.hits(&crate::run::run(&mutate(&base, &[Mutation::new(Knob::Lr, v)]).unwrap()));
        assert!(flips(up.flips_at) && !flips(up.stays_finite_at));
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
        let m = margins(&s, &MarginOptions::default()).unwrap();
        assert_eq!(m.base_outcome, Status::Finite);
        let clamp = m.knobs.iter().find(|k| k.knob == Knob::LossClamp).expect("clamp is a value knob");
        let lower = clamp.lower.as_ref().expect("a smaller clamp flips");
        assert_eq!(lower.flips_at, 2.44e-4, "{lower:?}");
        assert!(lower.verified && lower.stays_finite_at > 2f64.powi(-12), "{lower:?}");
        assert_eq!(lower.location.as_ref().map(|l| (l.phase, l.kind, l.step)), Some((crate::scenario::Phase::Loss, crate::run::Kind::Nan, 1)));
    }

    #[test]
    fn a_longer_growth_interval_collapses_pytorch_40497s_fixed_scaler() {
        // The fix grows the scale back every 10 clean steps between rare overflowing batches; a
        // long enough interval lets the backoffs win and the scale fall below min_scale 128.
        let mut s = crate::scenario::load(&std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../scenarios/real/pt40497_amp_scale_collapse_fix_growth_interval.toml")).unwrap();
        s.search = Some(crate::scenario::SearchSpec { knobs: Some(vec![Knob::GrowthInterval]), ..Default::default() });
        let m = margins(&s, &MarginOptions::default()).unwrap();
        assert_eq!(m.base_outcome, Status::Finite);
        let up = m.knobs[0].upper.as_ref().expect("a longer interval flips within 4x");
        assert!(up.verified && up.flips_at > 10.0 && up.flips_at <= 40.0, "{up:?}");
        assert_eq!(up.location.as_ref().map(|l| (l.phase, l.tensor.clone(), l.kind)), Some((crate::scenario::Phase::Update, crate::scenario::TensorId::LossScale, crate::run::Kind::ScaleCollapse)));
        // Both sides, run again here.
        let collapses = |v: f64| crate::run::run(&mutate(&s, &[Mutation::new(Knob::GrowthInterval, v as u32)]).unwrap()).first_nonfinite.is_some_and(|l| l.kind == crate::run::Kind::ScaleCollapse);
        assert!(collapses(up.flips_at) && !collapses(up.stays_finite_at), "{up:?}");
    }

    #[test]
    fn a_failing_base_gets_its_fix() {
        // Seed 002 ex1 as written overflows at lr 0.01 (unscaled features, 1e5): its curvature
        // (2/n)·XᵀX is about 9e10, so only a learning rate many decades smaller stays finite
        // for its 10 epochs. The fix search finds the largest one.
        let mut base = crate::scenario::seed("s002_ex1_linreg_sgd");
        base.search = Some(crate::scenario::SearchSpec { knobs: Some(vec![Knob::Lr]), lr: Some([1e-14, 0.1]), ..Default::default() });
        let m = margins(&base, &MarginOptions::default()).unwrap();
        assert_eq!(m.base_outcome, Status::Nonfinite);
        let fix = m.knobs[0].lower.as_ref().expect("a smaller lr fixes it");
        assert!(fix.verified && fix.stays_finite_at < 1e-6 && fix.stays_finite_at > 2e-11, "between 1e-6 and the 2/λ bound 2e-11: {fix:?}");
        let finite = |v: f64| crate::run::run(&mutate(&base, &[Mutation::new(Knob::Lr, v)]).unwrap()).outcome == Status::Finite;
        assert!(finite(fix.stays_finite_at) && !finite(fix.flips_at), "{fix:?}");
    }

    /// A two-layer net in f16 whose first layer starts at exactly 0, so its ReLU units are dead:
    /// their gradients, Adam's moments and (with a constant-row layer norm) the variance are exactly 0.
    fn dead_units_in_f16(extra_layers: &str, eps: f64) -> Scenario {
        let text = format!(
            "name = \"dead\"\nseed = 1\n[data]\nn = 32\nfeatures = 3\ninputs = {{ kind = \"normal\" }}\ntargets = {{ kind = \"normal\" }}\n\
             [model]\nlayers = [{{ type = \"linear\", out = 4, init = {{ kind = \"constant\", value = 0.0 }} }}, {extra_layers}{{ type = \"linear\", out = 1 }}]\n\
             [loss]\nkind = \"mse\"\n[optimizer]\nkind = \"adam\"\nlr = 1e-3\neps = {eps:e}\n[train]\nepochs = 1\ndtype = \"f16\"\n"
        );
        crate::scenario::from_str(&text, "dead.toml").unwrap()
    }

    #[test]
    fn adam_eps_flips_where_f16_rounds_it_to_zero() {
        // f16's smallest subnormal is 2⁻²⁴; eps ≤ 2⁻²⁵ = 2.98023e-8 (half of it, ties to even)
        // rounds to 0. A dead unit has m = v = 0, so its update is 0 / (√0 + 0) = NaN; any eps that
        // survives the rounding gives 0 / eps = 0. Rounded to 3 digits away from the base: 2.98e-8.
        let mut s = dead_units_in_f16("{ type = \"relu\" }, ", 1e-4);
        s.search = Some(crate::scenario::SearchSpec { knobs: Some(vec![Knob::OptimizerEps]), decades: Some(6.0), ..Default::default() });
        let m = margins(&s, &MarginOptions { jobs: 2, ..Default::default() }).unwrap();
        assert_eq!(m.base_outcome, Status::Finite);
        let eps = &m.knobs[0];
        assert_eq!((eps.knob, eps.scale), (Knob::OptimizerEps, Scale::Log));
        let lower = eps.lower.as_ref().expect("a small enough eps flips");
        assert_eq!(lower.flips_at, 2.98e-8, "{lower:?}");
        assert!(lower.verified && lower.stays_finite_at > 2f64.powi(-25), "{lower:?}");
        let at = lower.location.as_ref().expect("located");
        assert_eq!((at.phase, at.kind, at.step), (crate::scenario::Phase::Update, crate::run::Kind::Nan, 1));
        assert!(["layers.0.linear.weight", "layers.2.linear.weight"].contains(&at.tensor.to_string().as_str()), "a dead unit's weight: {at:?}");
        assert!(eps.upper.is_none(), "a larger eps only damps the update");
    }

    #[test]
    fn layer_norm_eps_in_f16_is_applied_in_f32() {
        // A layer norm over rows whose values are all equal (the dead layer's output, 0): its variance
        // is exactly 0, so it divides 0 by √(0 + eps). PyTorch's kernel computes an f16 layer norm in
        // f32, so eps ≤ 2⁻²⁵, which f16 rounds to 0, still guards the division; the run flips only far
        // below, where the gradient through the norm, which grows as 1/√eps, passes f16's 65504.
        let mut s = dead_units_in_f16("{ type = \"layer_norm\", eps = 1e-5 }, ", 1e-3);
        s.optimizer.kind = crate::scenario::OptimizerKind::Sgd;
        s.search = Some(crate::scenario::SearchSpec { knobs: Some(vec![Knob::NormEps]), decades: Some(8.0), ..Default::default() });
        let m = margins(&s, &MarginOptions::default()).unwrap();
        assert_eq!(m.base_outcome, Status::Finite);
        let lower = m.knobs[0].lower.as_ref().expect("a small enough eps flips");
        assert!(lower.verified && lower.flips_at < 2f64.powi(-25) / 100.0, "{lower:?}");
        let at = lower.location.as_ref().expect("located");
        assert_eq!((at.phase, at.kind), (crate::scenario::Phase::Backward, crate::run::Kind::NegInf), "{at:?}");
    }

    #[test]
    fn beta2_and_momentum_move_on_their_distance_to_one() {
        let mut s = dead_units_in_f16("", 1e-3);
        s.optimizer.beta2 = 0.999;
        let space = Space::of(&s);
        let (lo, hi) = space.domain(Knob::Beta2).and_then(Domain::range).expect("Adam has a β₂");
        // 3 decades either side of 1 − 0.999 = 1e-3: from 1 (clamped to β₂ = 0) to 1e-6.
        assert!(lo == 0.0 && (1.0 - hi - 1e-6).abs() < 1e-15, "{lo} {hi}");
        assert!(space.domain(Knob::Momentum).is_none(), "Adam takes no momentum");
        s.optimizer.kind = crate::scenario::OptimizerKind::Sgd;
        let (lo, hi) = Space::of(&s).domain(Knob::Momentum).and_then(Domain::range).expect("SGD takes a momentum");
        assert!(lo == 0.0 && (1.0 - hi - 1e-3).abs() < 1e-15, "from no momentum up to 0.999: {lo} {hi}");
        assert!(Space::of(&s).domain(Knob::OptimizerEps).is_none() && Space::of(&s).domain(Knob::Beta2).is_none(), "SGD has no eps or β₂");
        assert!(Space::of(&s).domain(Knob::Seed).is_none(), "the seed moves only when asked for");
        s.search = Some(crate::scenario::SearchSpec { knobs: Some(vec![Knob::Seed]), ..Default::default() });
        assert!(Space::of(&s).domain(Knob::Seed) == Some(&Domain::Seeds) && !Space::of(&s).is_empty());
    }
}
