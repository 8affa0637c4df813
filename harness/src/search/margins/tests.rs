//! Margins on bundled seeds and hand-made nets, each threshold checked by hand arithmetic or by
//! running both of its sides again.

use super::super::mutation::mutate;
use super::*;
use crate::scenario::Domain;
use crate::search::Target;

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
    // Seed 002 ex1 as written overflows at lr 0.01 (unscaled features, 1e5). Its MSE's Hessian
    // (2/3)·[X 1]ᵀ[X 1] has largest eigenvalue λ = 9.3333e10 (PyTorch 2.15, eigvalsh in f64), so
    // plain SGD is stable up to 2/λ = 2.1429e-11. Above it the error along that direction grows
    // by |1 − lr·λ| a step and the loss by its square; a fix must settle, so the loss may not end
    // more than a decade above its first step over the 9 steps after it: lr·λ − 1 ≤ 10^(1/18),
    // lr ≤ 2.1365/λ = 2.289e-11. A learning rate a decade or more above that stays finite for
    // the 10 epochs but is still diverging: no fix.
    let lambda = 9.3333e10;
    let mut base = crate::scenario::seed("s002_ex1_linreg_sgd");
    base.search = Some(crate::scenario::SearchSpec { knobs: Some(vec![Knob::Lr]), lr: Some([1e-14, 0.1]), ..Default::default() });
    let m = margins(&base, &MarginOptions::default()).unwrap();
    assert_eq!(m.base_outcome, Status::Nonfinite);
    let fix = m.knobs[0].lower.as_ref().expect("a smaller lr fixes it");
    assert!(fix.verified && fix.stays_finite_at >= 2.0 / lambda && fix.stays_finite_at <= 2.1365 / lambda, "between 2/λ and 2.1365/λ: {fix:?}");
    let run = |v: f64| crate::run::run(&mutate(&base, &[Mutation::new(Knob::Lr, v)]).unwrap());
    let settles = |v: f64| run(v).outcome == Status::Finite && crate::run::still_growing(&run(v)).is_none();
    assert!(settles(fix.stays_finite_at) && !settles(fix.flips_at), "{fix:?}");
    // 4.09e-10 (what the search called the fix while a finite run was enough) stays finite, and
    // its loss grows by (4.09e-10·λ − 1)² = 1.40e3 a step.
    let o = run(4.09e-10);
    assert_eq!(o.outcome, Status::Finite);
    let (a, b) = (o.trace.rows[1].train_loss, o.trace.rows[2].train_loss);
    assert!(((b / a) / (4.09e-10f64 * lambda - 1.0).powi(2) - 1.0).abs() < 0.01, "{}", b / a);
}

#[test]
fn fewer_epochs_that_stop_before_the_overflow_are_no_fix() {
    // Seed 002 ex1 overflows at step 3 of 10 full-batch epochs; 2 epochs stay finite only because
    // they stop first (the loss rises ~17.9 decades from step 1 to 2), and 1 epoch is the base's
    // own first step. Neither is a fix: the side below has none, and says why.
    let mut base = crate::scenario::seed("s002_ex1_linreg_sgd");
    base.search = Some(crate::scenario::SearchSpec { knobs: Some(vec![Knob::Epochs]), ..Default::default() });
    let m = margins(&base, &MarginOptions::default()).unwrap();
    let epochs = &m.knobs[0];
    assert!(epochs.lower.is_none() && epochs.lower_unsearched.is_none(), "{epochs:?}");
    let g = epochs.lower_growing.as_ref().expect("the nearest finite value is named");
    assert!(g.at == 2.0 && g.why.starts_with("finite but diverging at step 2"), "{g:?}");
    let run = |e: u32| crate::run::run(&mutate(&base, &[Mutation::new(Knob::Epochs, e)]).unwrap());
    let two = run(2);
    assert!(two.outcome == Status::Finite && two.trace.rows[1].train_loss / two.trace.rows[0].train_loss > 1e17);
    let s = side::Searcher { base: &base, opts: &MarginOptions::default(), base_rows: Some(crate::run::run(&base).trace.rows) };
    assert_eq!(s.no_fix(&run(1)).as_deref(), Some("the base's own run stopped after 1 of the 3 steps it takes to fail"));
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

#[test]
fn a_summed_loss_overflows_f16_where_the_mean_does_not() {
    // 100 rows, prediction 0, target 30 (the fixture's header): the mean of the squared errors is
    // 900, their sum 100 · 30² = 90000 > 65504, so `loss.reduction = sum` goes to +Inf in the loss
    // at step 1; the kinds that can stand in for mse on these targets stay finite: mae sums to
    // 100 · 30 = 3000, huber (δ = 1) to 100 · (30 − 0.5) = 2950 (PyTorch 2.15: inf, 3000, 2950).
    let base = crate::scenario::load(&std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/knobs/mse_sum_f16.toml")).unwrap();
    let m = margins(&base, &MarginOptions::default()).unwrap();
    assert_eq!(m.base_outcome, Status::Finite);
    let rows: Vec<(Knob, &str, bool)> = m.categorical.iter().map(|c| (c.knob, c.value.as_str(), c.flips)).collect();
    assert_eq!(rows, [(Knob::LossKind, "mae", false), (Knob::LossKind, "huber", false), (Knob::LossReduction, "sum", true)]);
    let at = m.categorical[2].location.as_ref().expect("the sum flips");
    assert_eq!((at.phase, at.kind, at.step), (crate::scenario::Phase::Loss, crate::run::Kind::PosInf, 1));
}

#[test]
fn the_l2_normalize_eps_fails_in_f32_once_it_rounds_to_zero() {
    // `x / clamp(norm(x, dim=-1, keepdim=true), min=eps)` on rows whose relu units are both 0:
    // the norm is 0, so the row is 0 / eps, which is 0 while eps is at least f32's smallest
    // subnormal 2⁻¹⁴⁹ after rounding. An eps of at most 2⁻¹⁵⁰ = 7.0065e-46 (half of it, a tie
    // that rounds to even: 0) rounds to 0 in f32 and the row is 0/0 = NaN at step 1. So the
    // margin below the base 1e-12 is the factor 7.0065e-46 / 1e-12, and nothing above flips.
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../scenarios/layers/expr_l2_normalize_zero_rows_fix_eps.toml");
    let mut s = crate::scenario::load(&path).unwrap();
    s.search = Some(crate::scenario::SearchSpec { knobs: Some(vec![Knob::Const]), decades: Some(10.0), ..Default::default() });
    let m = margins(&s, &MarginOptions::default()).unwrap();
    assert_eq!(m.knobs.len(), 1, "one constant, one row: {m:?}");
    let eps = &m.knobs[0];
    assert_eq!((eps.knob, eps.label().as_str(), eps.scale, eps.base), (Knob::Const, "model.layers.2.consts.eps", Scale::Log, 1e-12));
    let lower = eps.lower.as_ref().expect("a small enough eps flips");
    let tie = 2f64.powi(-150);
    assert!(lower.verified && lower.flips_at <= tie && lower.stays_finite_at > tie && lower.stays_finite_at < 1.01 * tie, "{lower:?}");
    assert_eq!(lower.location.as_ref().map(|l| (l.kind, l.step)), Some((crate::run::Kind::Nan, 1)));
    assert!(eps.upper.is_none() && eps.upper_unsearched.is_none(), "a larger eps only shrinks the zero rows' 0 / eps: {eps:?}");
}
