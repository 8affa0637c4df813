//! Every diagnosis rule, on a scenario that triggers it, and every bundled seed that goes
//! non-finite: the rule, the operation and the facts the reason states. Expected numbers
//! come from the scenarios' headers (IEEE limits, hand arithmetic).

use nanhunt::run::Rule;
use nanhunt::{run, Status};

mod common;

fn diagnose(path: &std::path::Path) -> nanhunt::run::Cause {
    let o = run(&nanhunt::load(path).unwrap());
    assert_eq!(o.outcome, Status::Nonfinite, "{}", path.display());
    o.cause.unwrap_or_else(|| panic!("{}: no diagnosis for {:?}", path.display(), o.first_nonfinite))
}

fn scenario(name: &str) -> std::path::PathBuf {
    common::repo().join("scenarios/diagnosis").join(format!("{name}.toml"))
}

fn check(c: &nanhunt::run::Cause, rule: Rule, op: &str, facts: &[&str]) {
    assert_eq!(c.rule, rule, "{c}");
    assert!(c.op.contains(op), "op `{}` should name `{op}`", c.op);
    for f in facts {
        assert!(c.reason.contains(f), "reason should say `{f}`: {}", c.reason);
    }
}

#[test]
fn each_rule_on_the_scenario_that_triggers_it() {
    // f16's smallest subnormal is 2⁻²⁴ = 5.96e-8; 1e-8 rounds to 0.
    check(&diagnose(&scenario("adam_eps_f16")), Rule::EpsRoundsToZero, "adam update of `layers.0.linear.weight`", &["eps = 1e-8 rounds to 0 in f16", "5.96e-8", "0 / 0"]);
    // 1 − 1e-4 rounds to 1 in f16 (spacing below 1 is 2⁻¹¹).
    check(&diagnose(&scenario("clamp_f16")), Rule::OneMinusEpsRoundsToOne, "loss (bce)", &["1 − 1e-4 rounds to 1 in f16", "log(1 − p) = log 0", "sigmoid before it saturated"]);
    // sqrt(0) with target 1: the MSE's gradient 2(0 − 1) = −2 arrives at an infinite derivative.
    check(&diagnose(&scenario("sqrt_at_zero")), Rule::DerivativeAtZero, "layers.1.sqrt (backward)", &["1/(2√x) is infinite at x = 0", "gradient arriving here (-2)"]);
    // The same with target 0: the gradient arriving is 2(0 − 0) = 0, and 0 · ∞ = NaN.
    check(&diagnose(&scenario("zero_times_inf")), Rule::ZeroTimesInf, "layers.1.sqrt (backward)", &["exactly 0", "0 · ∞ is NaN"]);
    // −log(1e-39) = 89.8 is finite; its derivative 1/1e-39 is past f32's 3.40e38 (1/max = 2.94e-39).
    check(&diagnose(&scenario("loss_backward_overflow")), Rule::Overflow, "loss (bce) (backward)", &["log(p)", "p = 1e-39", "2.94e-39"]);
    // ln(f32::MAX) = 88.72.
    check(&diagnose(&scenario("exp_overflow")), Rule::Overflow, "layers.1.exp", &["exp(100) overflows f32", "88.7"]);
    check(&diagnose(&scenario("log_negative")), Rule::OutsideDomain, "layers.0.log", &["log of a negative number (-1)"]);
    // √(f32::MAX) = 1.84e19.
    check(&diagnose(&scenario("mse_overflow")), Rule::Overflow, "loss (mse)", &["|p − y| = 1e20", "1.84e19"]);
    // grad = 2·(0 − 100)·100 = −20000, 0.001 · 20000² = 4e5 > 65504; √(65504 / 0.001) = 8093.
    check(&diagnose(&scenario("adam_v_overflow_f16")), Rule::Overflow, "adam state `optim.layers.0.linear.weight.exp_avg_sq`", &["0.001 · (-20000)²", "|grad| > 8.09e3"]);
}

#[test]
fn each_failing_seed_gets_its_diagnosis() {
    let seed = |n: &str| diagnose(&common::seed(n));
    // x = [1, 2, 3, 0, 5] through 1/x: the 0 in row 3 becomes +Inf at preprocessing step 0.
    check(&seed("s001_ex2_reciprocal_preprocessing"), Rule::DataNotFinite, "data.preprocess.0 (reciprocal)", &["finite until preprocessing step 0"]);
    check(&seed("s001_ex3_bce_saturated"), Rule::LogOfZero, "loss (bce)", &["log of exactly 0", "0·(−∞) = NaN", "sigmoid before it saturated"]);
    // (2/3)·XᵀX for X = [[1, 1e5], [2, 2e5], [3, 3e5]] (with the bias column): λ ≈ (2/3)·14·(1 + 1e10) = 9.33e10.
    check(&seed("s002_ex1_linreg_sgd"), Rule::LrAboveStabilityBound, "sgd on mse", &["lr 0.01", "2/λ = 2.14e-11", "λ = 9.33e10"]);
    check(&seed("s002_ex2_log_loss_zero"), Rule::LogOfZero, "loss (bce)", &["log of exactly 0 in row 0 (p = 0)"]);
    check(&seed("s002_ex3_flawed_backward"), Rule::DivisionByZero, "layers.1.flawed_square (backward)", &["divides the upstream gradient by exactly 0"]);
    // ... and it is named where it is born: the gradient of the layer below the flawed square.
    let o = run(&nanhunt::load(&common::seed("s002_ex3_flawed_backward")).unwrap());
    assert_eq!(o.first_nonfinite.unwrap().tensor, "layers.0.linear.output.grad");
    check(&seed("s003_ex3_ratio_loss_zero_target"), Rule::DivisionByZero, "loss (mean_abs_ratio)", &["the target in row 3 is 0"]);
    check(&seed("s004_ex2_nan_validation"), Rule::DataNotFinite, "data", &["`data.validation.inputs`", "before any preprocessing"]);
}

#[test]
fn data_beyond_the_dtype_is_an_overflow_of_the_conversion() {
    // Seed 002 ex1's 1e5 features exceed f16's largest value 65504.
    let mut s = nanhunt::load(&common::seed("s002_ex1_linreg_sgd")).unwrap();
    s.train.dtype = nanhunt::scenario::DTypeName::F16;
    let c = run(&s).cause.expect("diagnosed");
    check(&c, Rule::Overflow, "conversion to f16", &["65504"]);
}

#[test]
fn a_gradient_is_named_where_it_is_born() {
    // Each scenario's first non-finite value is a layer output's gradient, found by the tapped
    // re-run; without it the watch would name `layers.0.linear.weight.grad`. Two runs agree
    // on the location and the trace.
    for name in ["sqrt_at_zero", "zero_times_inf", "loss_backward_overflow"] {
        let s = nanhunt::load(&scenario(name)).unwrap();
        let (a, b) = (run(&s), run(&s));
        let f = a.first_nonfinite.clone().unwrap();
        assert_eq!((f.tensor.to_string().as_str(), f.phase, f.step), ("layers.0.linear.output.grad", nanhunt::Phase::Backward, 1), "{name}");
        assert_eq!(a.first_nonfinite, b.first_nonfinite, "{name}");
        assert_eq!(a.trace.to_csv().unwrap(), b.trace.to_csv().unwrap(), "{name}: the same trace, bit for bit");
    }
}

#[test]
fn a_finite_run_warns_of_low_headroom_and_subnormal_gradients() {
    // 30000 in f16 against its largest value 65504: log2(65504 / 30000) bits, at every step.
    let o = run(&nanhunt::load(&scenario("low_headroom_f16")).unwrap());
    assert_eq!(o.outcome, Status::Finite);
    let bits = (65504f64 / 30000.0).log2();
    assert!(o.trace.rows.iter().all(|r| r.headroom == Some(bits)), "{:?}", o.trace.rows);
    assert!(o.warnings.iter().any(|w| w.starts_with("headroom fell to 1.1 bits at step 1") && w.contains("30000") && w.contains("65504")), "{:?}", o.warnings);
    // The weight's gradient 2·(0 − 0.01)·0.001 = −2e-5 is below f16's smallest normal 2⁻¹⁴ = 6.1e-5;
    // the bias's −0.02 is not: 1 of 2 gradient values.
    let o = run(&nanhunt::load(&scenario("subnormal_grads_f16")).unwrap());
    assert_eq!(o.outcome, Status::Finite);
    assert_eq!(o.trace.rows[0].grad_subnormal, Some(0.5));
    assert!(o.warnings.iter().any(|w| w.starts_with("50.0% of the gradient values were subnormal in f16 at step 1")), "{:?}", o.warnings);
    // Neither warns of its dtype in f32, whose range holds both with room to spare. The first's
    // output is its target, so its loss and gradients are exactly 0 at both steps: its parameters
    // never move, a warning of its own.
    let never = "2 parameters were never updated: their gradients were exactly 0 at each of the run's 2 steps: `layers.0.linear.weight`, `layers.0.linear.bias`";
    for (name, want) in [("low_headroom_f16", vec![never]), ("subnormal_grads_f16", vec![])] {
        let mut s = nanhunt::load(&scenario(name)).unwrap();
        s.train.dtype = nanhunt::scenario::DTypeName::F32;
        assert_eq!(run(&s).warnings, want, "{name}");
    }
}

#[test]
fn the_model_vocabulary_reports_are_diagnosed_and_the_tiny_gpt_flips_where_the_hunt_found_it() {
    let real = |name: &str| common::repo().join("scenarios/real").join(format!("{name}.toml"));
    // pytorch#41508: the fourth row has length 0, so each of its queries sees no key.
    check(&diagnose(&real("pt41508_attention_fully_masked_row")), Rule::FullyMaskedRow, "layers.0.attention.probs", &["of row 3", "exp(−inf − (−inf)) = NaN", "softmax = \"safe\""]);
    // keras#13221: recurrent dropout 0.2 scales the kept units by 1/0.8 = 1.25.
    check(&diagnose(&real("keras13221_lstm_relu_recurrent_dropout")), Rule::Overflow, "layers.1.lstm", &["relu cell's state is unbounded", "1/(1 − 0.2) = 1.25"]);
    // The tiny GPT is finite as written; padding up to the whole sequence (max_fraction = 1, what
    // a 60 s hunt found) pads some row fully, and its causal attention's first probabilities go NaN.
    let base = nanhunt::load(&real("tiny_gpt")).unwrap();
    let mut s = base.clone();
    s.data.padding = Some(nanhunt::scenario::PaddingSpec { max_fraction: Some(1.0), lengths: vec![] });
    let o = run(&s);
    let f = o.first_nonfinite.as_ref().expect("padding every position of some row flips it");
    assert_eq!((f.phase, f.tensor.to_string().as_str()), (nanhunt::Phase::Forward, "layers.2.residual.layers.1.attention.probs.output"));
    assert_eq!(run(&base).outcome, Status::Finite);
    assert_eq!(o.cause.unwrap().rule, Rule::FullyMaskedRow);
}

#[test]
fn bundled_real_bases_get_the_norm_and_naive_cross_entropy_rules() {
    let real = |n: &str| diagnose(&common::repo().join("scenarios/real").join(format!("{n}.toml")));
    // pytorch#1381: a one-row batch makes the unbiased running variance 0/(1 − 1) = NaN.
    check(&real("pt1381_batch_norm_single_row"), Rule::DivisionByZero, "layers.1.batch_norm", &["running variance", "0/0 = NaN"]);
    // Softmax then log: a probability below f32's smallest subnormal 1.4e-45 is 0, its target 0.
    check(&real("tf_deep_mnist_log_zero"), Rule::LogOfZero, "loss (naive_cross_entropy)", &["rounds to 0 in f32", "0·log 0 = 0·(−∞) = NaN"]);
}
