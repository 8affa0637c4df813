//! The minimizer on scenarios whose minimal form is known in closed form.

use super::*;
use crate::run::run;
use crate::scenario::{from_str, InputSpec, Knob};

/// One step of linear regression with weights fixed at 1 and targets 0 under MAE, so each
/// row's error is its feature sum. A "hot" row has |error| 1.8e38: one is finite in f32, but
/// two overflow the sum inside the mean (f32 max ≈ 3.4e38). The flip needs any two hot rows.
fn two_hot_rows() -> Scenario {
    let mut rows = ["[0.5, 0.5]"; 12];
    for i in [2, 6, 9] {
        rows[i] = "[1.8e38, 0.0]";
    }
    from_str(
        &format!(
            "name = \"hot\"\n[data]\ninputs = {{ kind = \"values\", rows = [{}] }}\ntargets = {{ kind = \"values\", values = [{}] }}\n[model]\ninit = {{ kind = \"constant\", value = 1.0 }}\nlayers = [{{ type = \"linear\", out = 1 }}]\n[loss]\nkind = \"mae\"\n[optimizer]\nkind = \"sgd\"\nlr = 0.01",
            rows.join(", "),
            ["0.0"; 12].join(", ")
        ),
        "hot.toml",
    )
    .unwrap()
}

#[test]
fn ddmin_returns_a_one_minimal_row_set() {
    let base = two_hot_rows();
    let mut m = Minimizer::new(&base, Target::Nonfinite, None);
    let min = m.minimize(&[]).expect("the base flips");
    let cut = min.rows.clone().expect("rows were cut");
    assert_eq!((cut.total, cut.kept.len()), (12, 2), "two hot rows are needed and enough");
    assert!(cut.kept.iter().all(|r| [2, 6, 9].contains(r)), "{:?}", cut.kept);
    assert!(min.complete);
    let InputSpec::Values { rows } = &min.repro.data.inputs else { panic!("materialized") };
    assert!(rows.iter().all(|r| r == &vec![1.8e38, 0.0]), "features are never dropped: {rows:?}");
    // The kept rows rebuild the same repro, for reports made later.
    let built = rebuild(&base, &min.mutations, min.rows.as_ref(), &Default::default()).unwrap();
    assert_eq!(format!("{:?}", built.repro), format!("{:?}", min.repro));
    assert!(Target::Nonfinite.hits(&built.outcome));
    // 1-minimal, checked by running: removing any one row un-flips it.
    for drop in 0..rows.len() {
        let keep: Vec<usize> = (0..rows.len()).filter(|r| *r != drop).collect();
        assert!(!Target::Nonfinite.hits(&run(&rows::select_rows(&min.repro, &keep))));
    }
    // And the schedule is cut to the first non-finite step.
    assert_eq!((min.repro.train.epochs, min.repro.train.max_steps), (1, Some(1)));
    assert!(Target::Nonfinite.hits(&run(&min.repro)));
}

/// One step of the same regression on 1024 rows, 40 of them hot with |error| 1e37 (every 6th of
/// the first 240): the mean's sum overflows f32 (max ≈ 3.40282e38) with 35 hot rows (3.5e38) and
/// not with 34 (3.4e38). Halving keeps the first 256 rows (all 40 hot ones); neither of their
/// halves holds 35, and a 1-minimal set of 35 would take more runs than the row budget has left.
fn many_hot_rows() -> Scenario {
    let hot = |i: usize| i.is_multiple_of(6) && i < 240;
    let rows: Vec<&str> = (0..1024).map(|i| if hot(i) { "[1e37, 0.0]" } else { "[0.5, 0.5]" }).collect();
    let text = format!(
        "name = \"many\"\n[data]\ninputs = {{ kind = \"values\", rows = [{}] }}\ntargets = {{ kind = \"values\", values = [{}] }}\n[model]\ninit = {{ kind = \"constant\", value = 1.0 }}\nlayers = [{{ type = \"linear\", out = 1 }}]\n[loss]\nkind = \"mae\"\n[optimizer]\nkind = \"sgd\"\nlr = 0.01",
        rows.join(", "),
        ["0.0"; 1024].join(", ")
    );
    from_str(&text, "many.toml").unwrap()
}

#[test]
fn the_row_shrink_keeps_to_its_run_budget_and_says_rows_not_minimized() {
    // Issue 27: a 4096-row base spent a hunt on 62,097 row-shrink runs and left its flip unminimized.
    let base = many_hot_rows();
    let mut m = Minimizer::new(&base, Target::Nonfinite, None);
    let min = m.minimize(&[]).expect("the base flips");
    // Runs outside the rows: the candidate, the knob repro, the materialized rows, the schedule
    // cut; halving 1024 → 512 → 256 takes 2, the two halves of 256 that do not flip 2 more.
    assert_eq!(min.runs, 4 + 4, "{} runs", min.runs);
    assert!(min.complete, "knobs are minimal: the trigger is registered, rows or not");
    let cut = min.rows.clone().expect("rows were cut as far as the budget went");
    assert!(!cut.minimized);
    assert_eq!(cut.kept, (0..256).collect::<Vec<_>>());
    // What is kept still flips, checked by running it again, and rebuilds the same repro.
    assert!(Target::Nonfinite.hits(&run(&min.repro)));
    let built = rebuild(&base, &min.mutations, min.rows.as_ref(), &Default::default()).unwrap();
    assert_eq!(format!("{:?}", built.repro), format!("{:?}", min.repro));
    let said = min.reductions();
    assert!(said.iter().any(|r| r.starts_with(&format!("data rows: 1024 → {} (rows not minimized", cut.kept.len()))), "{said:?}");
    // The flag survives the trigger's record; a record without it (written before) reads as minimal.
    let json = serde_json::to_string(&cut).unwrap();
    assert_eq!(serde_json::from_str::<RowCut>(&json).unwrap(), cut);
    assert!(serde_json::from_str::<RowCut>(r#"{"total": 3, "kept": [1]}"#).unwrap().minimized);
    assert!(!serde_json::to_string(&RowCut { total: 3, kept: vec![1], minimized: true }).unwrap().contains("minimized"));
}

#[test]
fn halving_finds_one_needed_row_in_few_runs() {
    // One needed row of 4096: halving alone reaches it in 12 levels of at most 2 tests, and a
    // 1-minimal set of one row needs no further test.
    let mut runs = 0;
    let (kept, minimal) = rows::shrink_rows(
        4096,
        &mut |keep| {
            runs += 1;
            keep.contains(&3001)
        },
        &|| false,
        ROW_RUNS,
    );
    assert_eq!((kept, minimal), (vec![3001], true));
    assert!(runs <= 24, "{runs} runs");
}

#[test]
fn unneeded_mutations_are_dropped_and_lr_bisected_to_its_threshold() {
    // Seed 002 ex1 standardized is finite at lr 0.01; a large lr (plus an irrelevant dtype
    // change and more epochs) flips it. Only lr is needed; its threshold is bisected.
    let base = crate::scenario::seed("s002_ex1_linreg_sgd_fix_standardize");
    let candidate = [Mutation::new(Knob::Epochs, 40u32), Mutation::new(Knob::Lr, 50.0), Mutation::new(Knob::ClipNorm, None)];
    let mut m = Minimizer::new(&base, Target::Nonfinite, None);
    let min = m.minimize(&candidate).expect("flips");
    let knobs: Vec<Knob> = min.mutations.iter().map(Mutation::knob).collect();
    assert!(knobs.contains(&Knob::Lr) && !knobs.contains(&Knob::ClipNorm), "{knobs:?}");
    let t = min.thresholds.iter().find(|t| t.knob == Knob::Lr).expect("lr threshold");
    assert!(t.flips_at > t.stays_finite_at && t.flips_at / t.stays_finite_at < 1.002, "{t:?}");
    // 3 significant digits.
    let digits = t.flips_at / 10f64.powi(t.flips_at.log10().floor() as i32 - 2);
    assert!((digits - digits.round()).abs() < 1e-6, "{}", t.flips_at);
    // Checked independently: at the threshold it flips, just below it stays finite.
    let at = |v: f64| {
        let muts: Vec<Mutation> = min.mutations.iter().map(|m| if m.knob() == Knob::Lr { m.with_value(v) } else { m.clone() }).collect();
        Target::Nonfinite.hits(&run(&mutate(&base, &muts).unwrap()))
    };
    assert!(at(t.flips_at) && !at(t.stays_finite_at));
}

#[test]
fn rounding_goes_away_from_the_base() {
    assert_eq!(round3_away(0.037213, 0.01), 0.0373);
    assert_eq!(round3_away(0.037213, 0.1), 0.0372);
    assert_eq!(round3_away(12345.0, 1.0), 12400.0);
}

#[test]
fn materialized_rows_load_for_every_input_kind() {
    // Issue 25: an image scenario's rows were written with `data.features` beside `data.image`,
    // which does not load, so its hunt reports could not be replayed.
    let image = "name = \"img\"\n[data]\nn = 4\nimage = { channels = 2, height = 3, width = 3 }\ninputs = { kind = \"normal\" }\ntargets = { kind = \"normal\" }\n[model]\nlayers = [{ type = \"conv2d\", channels = 2, kernel = 2 }, { type = \"flatten\" }, { type = \"linear\", out = 1 }]\n[loss]\nkind = \"mse\"\n[optimizer]\nkind = \"sgd\"\nlr = 0.1";
    let mut scenarios = vec![from_str(image, "img.toml").unwrap()];
    let bundled = crate::scenario::seeds_dir().parent().unwrap().to_path_buf();
    for dir in ["seeds", "real", "diagnosis"] {
        for e in std::fs::read_dir(bundled.join(dir)).unwrap() {
            scenarios.push(crate::scenario::load(&e.unwrap().path()).unwrap());
        }
    }
    let mut cut = 0;
    for s in scenarios {
        let Some((m, n)) = materialize(&s) else { continue };
        for keep in [(0..n).collect::<Vec<_>>(), vec![n - 1]] {
            let text = toml::to_string(&rows::select_rows(&m, &keep)).unwrap();
            from_str(&text, "repro.toml").unwrap_or_else(|e| panic!("{}: {e}\n{text}", s.name));
        }
        cut += 1;
    }
    assert!(cut >= 20, "rows were written out for {cut} scenarios, the image one among them");
}

#[test]
fn a_knob_that_only_moves_where_a_divergence_shows_is_not_needed() {
    // pytorch#1381's base with a large input mean and scale, lr 0.157 and a summed loss: the
    // weights diverge (the chain diagnosis) and the first overflow is +Inf in the loss at step 3.
    // Without the sum they still diverge, and the first bad value is a NaN in a weight's
    // gradient: kept to the site, the sum is "needed"; kept to the mechanism (a
    // divergence, in f32) it is not, nor is the input scale once the others are at their
    // thresholds. (A hunt found this trigger with the binary before.)
    let base = crate::scenario::load(&std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../scenarios/real/pt1381_batch_norm_single_row.toml")).unwrap();
    let candidate = [
        Mutation::new(Knob::InputMean, 93.5),
        Mutation::new(Knob::Lr, 0.157),
        Mutation::new(Knob::LossReduction, crate::scenario::Reduction::Sum),
        Mutation::new(Knob::InputScale, crate::scenario::Factor { feature: None, value: 358.0 }),
    ];
    let class = crate::search::root_cause::class_of;
    let raw = run(&mutate(&base, &candidate).unwrap());
    assert_eq!(class(&raw).as_deref(), Some("divergence|divergence|full precision"));
    let site = Site::of(&raw);
    let strict = Minimizer::new(&base, Target::Nonfinite, None).same_site(site.clone()).minimize(&candidate).unwrap();
    assert_eq!(strict.mutations.len(), 4, "each knob is needed for +Inf in the loss: {:?}", strict.mutations);
    let loose = Minimizer::new(&base, Target::Nonfinite, None).same_site(site).by_mechanism(class).minimize(&candidate).unwrap();
    assert!(loose.complete && loose.mutations.len() < 4, "{:?}", loose.mutations);
    // Its mechanism is the flip's, and each knob left is needed for it.
    let class_with = |muts: &[Mutation]| mutate(&base, muts).map(|s| run(&s)).filter(|o| Target::Nonfinite.hits(o)).and_then(|o| class(&o));
    assert_eq!(class_with(&loose.mutations), class(&raw));
    for i in 0..loose.mutations.len() {
        let mut without = loose.mutations.clone();
        without.remove(i);
        assert_ne!(class_with(&without), class(&raw), "{} is not needed", loose.mutations[i]);
    }
}
