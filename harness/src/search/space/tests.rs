//! Tests of search spaces: what they draw, their ranges, and their neighbourhoods.

use super::*;
use crate::scenario::{DTypeName, SearchSpec, SplitSel, Value};
use crate::search::mutation::Mutation;

fn base() -> Scenario {
    crate::scenario::seed("s000_ex1_bce_mlp")
}

#[test]
fn draws_stay_inside_the_space() {
    let b = base();
    let space = Space::of(&b);
    let mut runner = seeded_runner(1);
    let strategy = space.mutation();
    for _ in 0..300 {
        let m = draw(&strategy, &mut runner);
        if let (Some((v, _)), Some((lo, hi))) = (m.numeric(), space.domain(m.knob).and_then(Domain::range)) {
            let slack = 1e-9 * lo.abs().max(hi.abs()).max(1.0);
            assert!(lo - slack <= v && v <= hi + slack, "{m} outside [{lo}, {hi}]");
        }
        match (m.knob, m.value) {
            (Knob::Lr, Value::Real(value)) => assert!((1e-6..=1.0 + 1e-12).contains(&value), "{value}"),
            (_, Value::Dtype(value)) => assert_ne!(value, b.train.dtype),
            (_, Value::Inject(a)) => assert_eq!(a.split, SplitSel::Train, "no validation split in this scenario"),
            _ => {}
        }
    }
}

#[test]
fn search_table_limits_the_knobs() {
    let mut b = base();
    b.search = Some(SearchSpec { knobs: Some(vec![Knob::Lr]), lr: Some([0.5, 2.0]), ..Default::default() });
    let space = Space::of(&b);
    let mut runner = seeded_runner(2);
    let strategy = space.mutation();
    for _ in 0..50 {
        let m = draw(&strategy, &mut runner);
        let (Knob::Lr, Value::Real(value)) = (m.knob, m.value) else { panic!("only lr may move: {m}") };
        assert!((0.5..=2.0 + 1e-12).contains(&value));
    }
}

#[test]
fn clamp_keeps_guided_moves_inside_the_space() {
    let b = base();
    let space = Space::of(&b);
    assert_eq!(space.clamp(Mutation::new(Knob::Epochs, u32::MAX)), Mutation::new(Knob::Epochs, 400u32), "4 × the base's 100 epochs");
    assert_eq!(space.clamp(Mutation::new(Knob::Lr, 1e9)), Mutation::new(Knob::Lr, 1e-3 * 1e3));
    assert_eq!(space.clamp(Mutation::new(Knob::Dtype, DTypeName::F16)), Mutation::new(Knob::Dtype, DTypeName::F16));
}

#[test]
fn neighbourhood_is_seeded_and_starts_with_dtypes() {
    let b = base();
    let a = neighbourhood(&b, 8, 7);
    assert_eq!(a, neighbourhood(&b, 8, 7));
    assert_ne!(a, neighbourhood(&b, 8, 8));
    assert_eq!(a.len(), 8);
    assert_eq!(a[0], vec![Mutation::new(Knob::Dtype, DTypeName::F16)]);
    assert_eq!(a[1], vec![Mutation::new(Knob::Dtype, DTypeName::Bf16)]);
}

#[test]
fn every_knob_combination_around_an_amp_transformer_runs_without_an_error() {
    // A hunt's candidates around pytorch#40497's fix (precision, scaler, accumulation, dtype
    // attempts, sequence length, padding, ...), two steps each: a candidate is refused by
    // validation or runs; none fails inside the runner (a dtype mismatch would).
    let mut s = crate::scenario::load(&std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../scenarios/real/pt40497_amp_scale_collapse_fix_growth_interval.toml")).unwrap();
    s.train.max_steps = Some(2);
    let space = Space::of(&s);
    let strategy = space.candidate();
    let mut runner = seeded_runner(3);
    let mut ran = 0;
    for _ in 0..80 {
        let candidate = crate::search::mutation::normalize(&draw(&strategy, &mut runner));
        let Some(m) = crate::search::mutation::mutate(&s, &candidate) else { continue };
        let o = crate::run::run(&m);
        assert!(o.error.is_none(), "{}: {:?}", crate::search::mutation::describe(&candidate), o.error);
        ran += 1;
    }
    assert!(ran > 40, "most candidates are valid: {ran}");
}

#[test]
fn narrowed_spaces_move_a_decade_around_the_centre() {
    let mut b = base();
    b.data.inputs = crate::scenario::InputSpec::Normal { mean: 0.0, std: 1.0 };
    let space = Space::of(&b).narrowed(1.0);
    let range = |k| space.domain(k).and_then(Domain::range).unwrap();
    // lr: 1e-3 · 10^±3, centre √(1e-6 · 1) = 1e-3, one decade either side.
    let (lo, hi) = range(Knob::Lr);
    assert!((lo / 1e-4 - 1.0).abs() < 1e-12 && (hi / 1e-2 - 1.0).abs() < 1e-12, "{lo} {hi}");
    // The input mean's ±10² shrinks by 10; β₂ = 0.999 (1 − β₂ from 1e-6 to 1, clamped at β₂ = 0): 1 − β₂ centred on 1e-3.
    let (lo, hi) = range(Knob::InputMean);
    assert!((lo + 10.0).abs() < 1e-12 && (hi - 10.0).abs() < 1e-12, "{lo} {hi}");
    let (lo, hi) = range(Knob::Beta2);
    assert!(((1.0 - hi) / 1e-4 - 1.0).abs() < 1e-9 && ((1.0 - lo) / 1e-2 - 1.0).abs() < 1e-9, "{lo} {hi}");
    // Whole numbers and choices stay as they were; a candidate has at most two mutations.
    assert_eq!(space.domain(Knob::Epochs), Space::of(&b).domain(Knob::Epochs));
    assert_eq!(space.domain(Knob::Dtype), Space::of(&b).domain(Knob::Dtype));
    assert_eq!(space.max_mutations, 2);
}

#[test]
fn the_screening_sweep_tries_riskier_ends_then_other_values_then_safer_ends() {
    let space = Space::of(&base());
    let corners: Vec<Mutation> = space.corners().into_iter().map(|c| c.into_iter().next().unwrap()).collect();
    // lr = 1e-3 · 10³ first; clipping switched on at 1 last; every dtype other than f32 between.
    assert_eq!(corners[0], Mutation::new(Knob::Lr, 1.0));
    assert_eq!(corners.last(), Some(&Mutation::new(Knob::ClipNorm, 1.0)));
    let at = |m: &Mutation| corners.iter().position(|c| c == m).unwrap();
    assert!(at(&Mutation::new(Knob::Epochs, 400u32)) < at(&Mutation::new(Knob::Dtype, DTypeName::F16)));
    assert!(at(&Mutation::new(Knob::Dtype, DTypeName::Bf16)) < at(&Mutation::new(Knob::Epochs, 1u32)));
    assert!(!space.corners().iter().any(|c| c[0].knob == Knob::Seed), "the seed has no corner");
}

#[test]
fn eps_like_knobs_reach_down_to_where_the_dtype_rounds_them_to_zero() {
    // An Adam eps of 1e-4 searched 3 decades either way stopped at 1e-7 and never tried the 1e-8
    // people use. It now goes down to half f32's smallest subnormal 2⁻¹⁴⁹ (2⁻¹⁵⁰, where it rounds
    // to 0), in f16 to half of 2⁻²⁴; the top end stays 3 decades up.
    let mut s = crate::scenario::seed("s000_ex1_bce_mlp");
    s.optimizer.eps = 1e-4;
    let (lo, hi) = Space::of(&s).domain(crate::scenario::Knob::OptimizerEps).and_then(crate::scenario::Domain::range).expect("Adam has an eps");
    assert!(lo == 2f64.powi(-150) && (hi / 1e-1 - 1.0).abs() < 1e-12, "{lo} {hi}");
    s.train.dtype = crate::scenario::DTypeName::F16;
    let (lo, _) = Space::of(&s).domain(crate::scenario::Knob::OptimizerEps).and_then(crate::scenario::Domain::range).unwrap();
    assert_eq!(lo, 2f64.powi(-25));
    // A base eps already below the limit keeps its own 3 decades.
    s.optimizer.eps = 1e-9;
    assert!((Space::of(&s).domain(crate::scenario::Knob::OptimizerEps).and_then(crate::scenario::Domain::range).unwrap().0 / 1e-12 - 1.0).abs() < 1e-12);
}

#[test]
fn candidates_around_an_sgd_base_set_only_knobs_that_apply() {
    // tensorflow#38457 (SGD): draws that switch to Adam and move the momentum were refused as
    // "does not apply" (42 errors in a 10 s hunt); the hunt now runs what is `effective`.
    let b = crate::scenario::load(&std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../scenarios/real/tf38457_f16_tanh_bce.toml")).unwrap();
    let space = Space::of(&b);
    let strategy = space.candidate();
    let mut runner = seeded_runner(5);
    let mut refused = 0;
    for _ in 0..3000 {
        let drawn = crate::search::mutation::normalize(&draw(&strategy, &mut runner));
        refused += usize::from(crate::search::try_mutate(&b, &drawn).is_err_and(|e| e.contains("does not apply")));
        let c = crate::search::effective(&b, &drawn);
        assert!(!c.is_empty() && c.iter().all(|m| drawn.contains(m)), "{drawn:?} -> {c:?}");
        if let Err(e) = crate::search::try_mutate(&b, &c) {
            assert!(!e.contains("does not apply"), "{e}");
        }
    }
    assert!(refused > 0, "some draws set a knob another makes meaningless");
}

#[test]
fn a_constant_passed_as_label_smoothing_is_drawn_only_inside_zero_to_one() {
    // `label_smoothing=ls` with ls = 0.1: on a log scale 3 decades up it reached 100, past
    // PyTorch's [0, 1], and every such candidate was a check error in errors.jsonl.
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../scenarios/layers/expr_named_losses_ignored_batch.toml");
    let mut b = crate::scenario::load(&path).unwrap();
    b.loss.expr = Some("cross_entropy(p, y, label_smoothing=ls) + 0.01 * mean(p ** T)".into());
    b.loss.consts = [("ls".to_string(), 0.1), ("T".to_string(), 2.0)].into_iter().collect();
    assert!(crate::scenario::validate(&b).is_empty());
    let space = Space::of(&b);
    let Some(Domain::Consts(ranges)) = space.domain(Knob::Const) else { panic!("the loss's constants are knobs") };
    let ls = ranges.iter().find(|r| r.at.name == "ls").unwrap();
    assert_eq!((ls.scale, ls.low, ls.high), (Scale::Linear, 0.0, 1.0));
    // A constant fed to no bounded parameter keeps its log range 3 decades up.
    let t = ranges.iter().find(|r| r.at.name == "T").unwrap();
    assert_eq!((t.scale, t.high), (Scale::Log, 2000.0));
    let mut runner = seeded_runner(7);
    let mut seen = 0;
    for space in [space.clone(), space.narrowed(1.0)] {
        let strategy = space.mutation();
        let corners = space.corners().into_iter().flatten();
        for m in (0..400).map(|_| draw(&strategy, &mut runner)).chain(corners) {
            let Value::Const(c) = m.value else { continue };
            if c.at.name == "ls" {
                seen += 1;
                assert!((0.0..=1.0).contains(&c.value), "{m}");
                let s = crate::search::mutation::mutate(&b, std::slice::from_ref(&m)).expect("applies");
                assert!(crate::scenario::validate(&s).is_empty(), "{m}");
            }
        }
    }
    assert!(seen > 20, "{seen} draws of ls");
}
