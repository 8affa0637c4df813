//! The verdict's classes on hand-made runs whose f64 values are known in closed form.

use super::*;
use crate::run::{run_with, Kind, RunOptions};
use crate::scenario::{from_str, Phase, TensorId};

fn verdict_of(body: &str) -> Verdict {
    let s = from_str(&format!("name = \"t\"\n{body}"), "t.toml").unwrap();
    let o = run_with(&s, &RunOptions { verdict: true, ..RunOptions::default() });
    match o.verdict.clone() {
        Some(v) => v,
        None => panic!("no verdict: {o:?}"),
    }
}

const MSE_SGD: &str = "[loss]\nkind = \"mse\"\n[optimizer]\nkind = \"sgd\"\nlr = 0.1\n";

#[test]
fn exp_overflowing_f16_is_precision_overflow() {
    // exp(12) = 162754.79 (hand: e^12) is finite in f64, beyond f16's largest value 65504.
    let v = verdict_of(&format!(
        "[data]\ninputs = {{ kind = \"values\", rows = [[12.0]] }}\ntargets = {{ kind = \"values\", values = [0.0] }}\n[model]\nlayers = [{{ type = \"exp\" }}]\n{MSE_SGD}[train]\ndtype = \"f16\"\n"
    ));
    assert_eq!((v.class, v.precision, v.op.as_str()), (Class::Precision, Some(Loss::Overflow), "layers.0.exp.output"), "{v}");
    let value = v.op_f64.as_ref().and_then(|c| c.value).unwrap();
    assert!((value - 162_754.791_419).abs() < 1e-3, "{value}");
    assert_eq!(v.step_f64.finite, Some(true), "{}", v.step_f64.detail);
    assert_eq!(v.key(), "precision/overflow");
    assert!(v.reason.contains("65504"), "{}", v.reason);
}

#[test]
fn log_of_a_zero_input_is_math() {
    // log(0) = −∞ in f32 and in f64 alike.
    let v = verdict_of(&format!("[data]\ninputs = {{ kind = \"values\", rows = [[0.0]] }}\ntargets = {{ kind = \"values\", values = [0.0] }}\n[model]\nlayers = [{{ type = \"log\" }}]\n{MSE_SGD}"));
    assert_eq!((v.class, v.precision), (Class::Math, None), "{v}");
    assert_eq!(v.op_f64.as_ref().map(|c| (c.value, c.inputs_finite)), Some((None, true)));
    assert_eq!(v.step_f64.finite, Some(false), "{}", v.step_f64.detail);
}

#[test]
fn a_finite_run_or_a_run_without_the_option_has_no_verdict() {
    let s = from_str(
        &format!("name = \"t\"\n[data]\ninputs = {{ kind = \"values\", rows = [[1.0]] }}\ntargets = {{ kind = \"values\", values = [0.0] }}\n[model]\nlayers = [{{ type = \"exp\" }}]\n{MSE_SGD}"),
        "t.toml",
    )
    .unwrap();
    assert_eq!(run_with(&s, &RunOptions { verdict: true, ..RunOptions::default() }).verdict, None);
    let mut bad = s.clone();
    bad.train.dtype = crate::scenario::DTypeName::F16;
    bad.data = from_str(
        &format!("name = \"t\"\n[data]\ninputs = {{ kind = \"values\", rows = [[12.0]] }}\ntargets = {{ kind = \"values\", values = [0.0] }}\n[model]\nlayers = [{{ type = \"exp\" }}]\n{MSE_SGD}"),
        "t.toml",
    )
    .unwrap()
    .data;
    let o = run_with(&bad, &RunOptions::default());
    assert_eq!((o.outcome, o.verdict), (Status::Nonfinite, None));
}

fn site(kind: Kind) -> Location {
    Location { step: 1, epoch: 1, fold: 0, phase: Phase::Forward, tensor: TensorId::Named("ln".into()), kind, index: 0, ..Location::default() }
}

fn finite() -> StepCheck {
    StepCheck { finite: Some(true), detail: "finite".into() }
}

#[test]
fn a_reference_finite_inside_the_range_from_finite_inputs_is_a_kernel_disagreement() {
    // A code model's kernel gave NaN where its f64 reference gives 0.83: f32 holds 0.83.
    let op = OpCheck { op: "ln".into(), value: Some(0.83), inputs_finite: true, reference: true, backward: false };
    let none = Hints::default();
    let v = classify(&site(Kind::Nan), Some(op.clone()), finite(), DTypeName::F32, none, "ln");
    assert_eq!((v.class, v.key().as_str(), v.op.as_str()), (Class::KernelDisagreement, "kernel_disagreement", "ln"));
    // The same from nanhunt's own kernel (PyTorch's order of operations) is the dtype's rounding;
    // an underflow to 0 where a rule says so.
    let own = OpCheck { reference: false, ..op.clone() };
    assert_eq!(classify(&site(Kind::Nan), Some(own.clone()), finite(), DTypeName::F32, none, "ln").key(), "precision/rounding");
    let log0 = Hints { rule: Some(Rule::LogOfZero), ..none };
    assert_eq!(classify(&site(Kind::Nan), Some(own), finite(), DTypeName::F32, log0, "ln").key(), "precision/underflow");
    // Beyond f16's range it is the range, not the kernel.
    let big = OpCheck { value: Some(1e5), ..op.clone() };
    assert_eq!(classify(&site(Kind::PosInf), Some(big), finite(), DTypeName::F16, none, "ln").key(), "precision/overflow");
    // Non-finite inputs: not a kernel's fault.
    let fed = OpCheck { inputs_finite: false, ..op };
    assert_eq!(classify(&site(Kind::Nan), Some(fed), finite(), DTypeName::F32, none, "ln").class, Class::Precision);
}

#[test]
fn without_an_op_check_the_replay_decides_and_without_either_it_is_undetermined() {
    let (none, eps) = (Hints::default(), Hints { eps: Some("optimizer.eps = 1e-8 rounds to 0 in f16"), ..Hints::default() });
    assert_eq!(classify(&site(Kind::Nan), None, finite(), DTypeName::F16, eps, "adam").key(), "precision/eps_underflow");
    // The rule that explains the value comes first: an overflow next to an eps that rounds away.
    let both = Hints { rule: Some(Rule::Overflow), ..eps };
    assert_eq!(classify(&site(Kind::PosInf), None, finite(), DTypeName::F16, both, "adam").key(), "precision/overflow");
    assert_eq!(classify(&site(Kind::NegInf), None, finite(), DTypeName::F16, none, "x").key(), "precision/overflow");
    assert_eq!(classify(&site(Kind::Nan), None, finite(), DTypeName::F16, none, "x").key(), "precision/rounding");
    let diverged = StepCheck { finite: Some(false), detail: "in f64 the run goes non-finite too".into() };
    assert_eq!(classify(&site(Kind::Nan), None, diverged, DTypeName::F32, none, "x").key(), "math");
    let none_ran = StepCheck { finite: None, detail: "the run could not be replayed in f64: no f64 kernel".into() };
    let v = classify(&site(Kind::Nan), None, none_ran, DTypeName::F32, none, "x");
    assert_eq!(v.class, Class::Undetermined);
    assert!(v.reason.contains("no f64 kernel"), "{}", v.reason);
}

#[test]
fn an_op_non_finite_in_f64_is_math_unless_the_run_in_f64_stays_finite() {
    // log of an exact 0: −∞ in f64 too. If the whole run in f64 stays finite, the 0 was the dtype's (an underflow upstream).
    let op = OpCheck { op: "layers.2.log.output".into(), value: None, inputs_finite: true, reference: false, backward: false };
    let log0 = Hints { rule: Some(Rule::LogOfZero), ..Hints::default() };
    let v = classify(&site(Kind::NegInf), Some(op.clone()), finite(), DTypeName::F16, log0, "log");
    assert_eq!(v.key(), "precision/underflow", "{v}");
    let diverged = StepCheck { finite: Some(false), detail: "in f64 the run goes non-finite too".into() };
    assert_eq!(classify(&site(Kind::NegInf), Some(op.clone()), diverged, DTypeName::F16, log0, "log").key(), "math");
    let none_ran = StepCheck { finite: None, detail: "cut off".into() };
    assert_eq!(classify(&site(Kind::NegInf), Some(op), none_ran, DTypeName::F16, log0, "log").key(), "math");
}

#[test]
fn a_value_that_ends_a_divergence_is_math_even_where_f64_holds_it() {
    // The weights grew ×10 a step (the cause's chain): f64's range would only hold it a few steps longer.
    let op = OpCheck { op: "loss (mse)".into(), value: Some(4.66e45), inputs_finite: true, reference: false, backward: false };
    let grew = Hints { rule: Some(Rule::Overflow), diverged: Some("the weights grew ×10 a step, two decades by step 3 (lr 1)"), ..Hints::default() };
    let v = classify(&site(Kind::PosInf), Some(op.clone()), finite(), DTypeName::F32, grew, "loss");
    assert_eq!(v.key(), "math", "{v}");
    assert!(v.reason.contains("a real divergence: the weights grew"), "{}", v.reason);
    assert_eq!(classify(&site(Kind::PosInf), Some(op), finite(), DTypeName::F32, Hints { diverged: None, ..grew }, "loss").key(), "precision/overflow");
}

/// One value through `layers` in f16, MSE against `target`, SGD.
fn f16_run(x: &str, target: f64, layers: &str) -> String {
    format!("[data]\ninputs = {{ kind = \"values\", rows = [{x}] }}\ntargets = {{ kind = \"values\", values = [{target}] }}\n[model]\nlayers = [{layers}]\n{MSE_SGD}[train]\ndtype = \"f16\"\n")
}

#[test]
fn a_backward_that_overflows_f16_but_not_f64_is_precision_overflow_by_its_own_recompute() {
    // x = 0.01 is 0.01000213623046875 in f16; 1/x rounds to 100, the MSE's gradient 2·(100 − 0)
    // = 200 reaches the reciprocal, whose backward −200/x² = −1999145.78 is past f16's 65504.
    // PyTorch 2.15 (f16): h.grad = −inf; the same backward on f64 copies: −1999145.781543369.
    let v = verdict_of(&f16_run("[0.01]", 0.0, "{ type = \"linear\", out = 1, init = { kind = \"constant\", value = 1.0 } }, { type = \"reciprocal\" }"));
    assert_eq!((v.class, v.precision, v.op.as_str()), (Class::Precision, Some(Loss::Overflow), "layers.1.reciprocal (backward)"), "{v}");
    let c = v.op_f64.as_ref().expect("the backward's op check");
    assert!(c.backward && c.inputs_finite && !c.reference, "{c:?}");
    let value = c.value.expect("finite in f64");
    assert!((value - -1_999_145.781_543_369).abs() < 1e-6, "{value}");
    assert!(v.reason.starts_with("its backward computed in f64 from the same inputs and upstream gradient it is ") && v.reason.contains("beyond f16's largest value 65504"), "{}", v.reason);
    assert_eq!(v.step_f64.finite, Some(true), "{}", v.step_f64.detail);
}

#[test]
fn a_sqrt_backward_at_zero_is_math_infinite_in_f64_too() {
    // sqrt(w·x) with w = 0: the MSE's gradient 2·(0 − 1) = −2 reaches the sqrt, whose backward
    // −2 / (2·sqrt(0)) is −inf in f64 as in f32 (scenarios/diagnosis/sqrt_at_zero.toml).
    let body = format!(
        "[data]\ninputs = {{ kind = \"values\", rows = [[1.0]] }}\ntargets = {{ kind = \"values\", values = [1.0] }}\n[model]\nlayers = [{{ type = \"linear\", out = 1, init = {{ kind = \"constant\", value = 0.0 }} }}, {{ type = \"sqrt\" }}]\n{MSE_SGD}"
    );
    let v = verdict_of(&body);
    assert_eq!((v.class, v.op.as_str()), (Class::Math, "layers.1.sqrt (backward)"), "{v}");
    let c = v.op_f64.as_ref().expect("the backward's op check");
    assert_eq!((c.value, c.inputs_finite, c.backward), (None, true, true));
    assert!(v.reason.starts_with("its backward computed in f64 from the same inputs and upstream gradient, it is not finite either (-Inf in f32)"), "{}", v.reason);
}

#[test]
fn a_dropout_op_check_draws_the_runs_mask() {
    // Dropout p = 0.5 scales a kept 40000 by 2: 80000 is past f16's 65504, +inf. The op check
    // with the run's mask gives 80000 at the first bad (kept) value; without a mask it would
    // read 40000, inside f16's range, and blame rounding; with another mask, maybe a dropped 0.
    let v = verdict_of(&f16_run("[40000.0, 40000.0, 40000.0, 40000.0, 40000.0, 40000.0, 40000.0, 40000.0]", 0.0, "{ type = \"dropout\", p = 0.5 }, { type = \"linear\", out = 1 }"));
    assert_eq!((v.key().as_str(), v.op.as_str()), ("precision/overflow", "layers.0.dropout.output"), "{v}");
    assert_eq!(v.op_f64.as_ref().and_then(|c| c.value), Some(80000.0), "{v}");
}

#[test]
fn a_batch_norm_op_check_in_validation_reads_the_steps_running_statistics() {
    // Three training rows in batches of two leave a one-row batch: its unbiased variance 0/0 =
    // NaN enters the running variance (0.9·v + 0.1·NaN = NaN), and validation normalises by it.
    // Fresh statistics (0 and 1) would give a finite value; the step's give NaN, read from them.
    let body = "[data]\nn = 5\nfeatures = 2\ninputs = { kind = \"normal\" }\ntargets = { kind = \"linear\" }\nvalidation = { fraction = 0.4 }\n[model]\nlayers = [{ type = \"batch_norm\" }, { type = \"linear\", out = 1 }]\n";
    let v = verdict_of(&format!("{body}{MSE_SGD}[train]\nbatch_size = 2\n"));
    assert_eq!((v.class, v.op.as_str()), (Class::Math, "validation.layers.0.batch_norm.output"), "{v}");
    let c = v.op_f64.as_ref().expect("the validation's op check");
    assert_eq!((c.value, c.inputs_finite), (None, false), "the running variance it read is NaN: {c:?}");
}

#[test]
fn an_op_finite_alone_in_f64_in_a_run_that_fails_in_f64_too_is_math_and_says_both() {
    // The focal scenario: at the flagged row the loss's backward in f64 is −1.34e-20, but the f64
    // run saturates another row's sigmoid to exactly 1 and goes NaN in the same step.
    let op = OpCheck { op: "loss (focal) (backward)".into(), value: Some(-1.34e-20), inputs_finite: true, reference: false, backward: true };
    let failed = StepCheck { finite: Some(false), detail: "in f64 the run goes non-finite too: NaN in `x`".into() };
    let v = classify(&site(Kind::Nan), Some(op), failed, DTypeName::F32, Hints::default(), "loss");
    assert_eq!(v.key(), "math", "{v}");
    assert!(
        v.reason.starts_with("its backward computed in f64 from the same inputs and upstream gradient it is ") && v.reason.contains("at this element, but in f64 the run goes non-finite too"),
        "{}",
        v.reason
    );
}

#[test]
fn a_where_whose_unselected_exp_overflows_is_an_overflow_in_the_why_and_the_verdict() {
    // issue 28's audit: where(x > 100, exp(x*100), x) at x = 1.28 (a linear of weight 1 on the
    // input 1.28) selects x; exp(128) is past ln(f32 max) = 88.72, +inf, and the 0 that `where`
    // sends it makes 0 · inf = NaN (PyTorch 2.15: x.grad is nan in f32; in f64, where e¹²⁸ =
    // 3.9e55 is finite, x.grad = 2 · 1.28 = 2.56, the MSE's gradient through the selected x).
    let layers = "{ type = \"linear\", out = 1, init = { kind = \"constant\", value = 1.0 } }, { type = \"expr\", expr = \"where(x > 100, exp(x*100), x)\" }";
    let s = from_str(
        &format!("name = \"t\"\n[data]\ninputs = {{ kind = \"values\", rows = [[1.28]] }}\ntargets = {{ kind = \"values\", values = [0.0] }}\n[model]\nlayers = [{layers}]\n{MSE_SGD}"),
        "t.toml",
    )
    .unwrap();
    let o = run_with(&s, &RunOptions { verdict: true, ..RunOptions::default() });
    let c = o.cause.as_ref().expect("a rule explains it");
    assert_eq!((c.rule, c.op.as_str()), (Rule::Overflow, "layers.1.expr (backward)"), "{c}");
    assert!(c.reason.contains("exp(128) overflowed f32 to +∞") && c.reason.contains("does not select"), "{}", c.reason);
    let v = o.verdict.expect("a verdict");
    assert_eq!((v.key().as_str(), v.op.as_str()), ("precision/overflow", "layers.1.expr (backward)"), "{v}");
    let value = v.op_f64.as_ref().and_then(|c| c.value).expect("finite in f64");
    assert!((value - 2.0 * f64::from(1.28f32)).abs() < 1e-12, "{value}");
}
