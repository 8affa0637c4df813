//! Code models in the runner: a hand-computed step, findings named by the
//! model's own checks, its card, and the errors a user can make.

use candle_core::{Module, Tensor};
use candle_nn::init::Init;

use super::{CodeModel, Watch};
use crate::run::{run, Status};
use crate::scenario::Phase;

/// `y = x·wᵀ + b`, a candle-nn `Linear` whose weight starts at `w0` and bias at 0.
fn linear(features: usize, w0: f64) -> CodeModel {
    CodeModel::new(
        "linear",
        move |store| Ok(candle_nn::Linear::new(store.get("fc.weight", (1, features), Init::Const(w0))?, Some(store.get("fc.bias", 1, Init::Const(0.0))?))),
        |m: &candle_nn::Linear, x: &Tensor, _: &mut Watch| m.forward(x),
    )
}

const TWO_ROWS: &str = r#"
name = "code"
[data]
inputs = { kind = "values", rows = [[1.0, 2.0], [3.0, -1.0]] }
targets = { kind = "values", values = [1.0, 0.0] }
[loss]
kind = "mse"
[optimizer]
kind = "sgd"
lr = 0.1
[train]
epochs = 2
dtype = "f64"
"#;

#[test]
fn a_code_linear_model_takes_the_hand_computed_sgd_steps() {
    let model = linear(2, 0.5);
    let o = run(&model.scenario(TWO_ROWS, "code.toml").unwrap());
    assert_eq!(o.outcome, Status::Finite, "{:?}", o.error);
    // Step 1: predictions 0.5·1 + 0.5·2 = 1.5 and 0.5·3 − 0.5·1 = 1, loss ((0.5)² + 1²)/2 = 0.625.
    // dL/dpred = (0.5, 1); dW = 0.5·(1, 2) + 1·(3, −1) = (3.5, 0), db = 1.5; at lr 0.1
    // W = (0.15, 0.5), b = −0.15. Step 2: predictions 1 and −0.2, loss (0 + 0.04)/2 = 0.02.
    let losses: Vec<f64> = o.trace.rows.iter().map(|r| r.train_loss).collect();
    assert_eq!(losses.len(), 2);
    assert!((losses[0] - 0.625).abs() < 1e-12 && (losses[1] - 0.02).abs() < 1e-12, "{losses:?}");
    let card = o.model.expect("a code model's card");
    assert_eq!(card.name, "linear");
    assert_eq!(card.params, [("fc.weight".to_string(), vec![1, 2]), ("fc.bias".to_string(), vec![1])]);
    // The hash is of the initial values: another start is another hash.
    assert_eq!(run(&model.scenario(TWO_ROWS, "code.toml").unwrap()).model.unwrap().init_hash, card.init_hash);
    assert_ne!(run(&linear(2, 0.25).scenario(TWO_ROWS, "code.toml").unwrap()).model.unwrap().init_hash, card.init_hash);
}

#[test]
fn a_non_finite_value_is_named_by_the_check_that_saw_it() {
    // log(fc(x)) with both weights −1: fc = −1 − 2 = −3 for row 1 (and −2 for row 2), whose
    // log is NaN at step 1, first in the tensor the check named `log`.
    let model = CodeModel::new(
        "log",
        |store| Ok(candle_nn::Linear::new(store.get("fc.weight", (1, 2), Init::Const(-1.0))?, None)),
        |m: &candle_nn::Linear, x: &Tensor, w: &mut Watch| {
            let h = m.forward(x)?;
            w.check("fc", &h);
            let l = h.log()?;
            w.check("log", &l);
            Ok(l)
        },
    );
    let o = run(&model.scenario(TWO_ROWS, "code.toml").unwrap());
    let f = o.first_nonfinite.expect("log of −3");
    assert_eq!((f.step, f.phase, f.tensor.to_string().as_str(), f.index), (1, Phase::Forward, "log", 0));
    assert_eq!(o.trace.layers, ["fc", "log", "model.output"]);
}

#[test]
fn without_checks_the_watch_still_sees_the_gradients_and_the_update() {
    // w = 1, x = 1, y = 0: dL/dw = 2; w − 3e38·2 overflows f32 to −inf in the update.
    let text =
        "name = \"t\"\n[data]\ninputs = { kind = \"values\", rows = [[1.0]] }\ntargets = { kind = \"values\", values = [0.0] }\n[loss]\nkind = \"mse\"\n[optimizer]\nkind = \"sgd\"\nlr = 3e38\n";
    let f = run(&linear(1, 1.0).scenario(text, "t.toml").unwrap()).first_nonfinite.unwrap();
    assert_eq!((f.step, f.phase, f.tensor.to_string().as_str()), (1, Phase::Update, "fc.weight"));
}

#[test]
fn a_scenario_read_back_without_its_model_is_refused_with_how_to_run_it() {
    let s = linear(2, 0.5).scenario(TWO_ROWS, "code.toml").unwrap();
    let text = toml::to_string(&s).unwrap();
    assert!(text.contains("code = \"linear\""), "{text}");
    let back = crate::scenario::from_str(&text, "repro.toml").unwrap();
    let o = run(&back);
    assert_eq!(o.outcome, Status::Error);
    assert!(o.error.as_deref().unwrap_or("").contains("run_module"), "{:?}", o.error);
    assert_eq!(crate::run_module(&linear(2, 0.5), &back).outcome, Status::Finite);
}

#[test]
fn a_layer_stack_beside_the_code_is_a_located_error() {
    let text = format!("{TWO_ROWS}[model]\nlayers = [{{ type = \"relu\" }}]\n");
    let e = linear(2, 0.5).scenario(&text, "code.toml").unwrap_err().to_string();
    let line = text.lines().position(|l| l.starts_with("layers")).unwrap() + 1;
    assert!(e.starts_with(&format!("code.toml:{line}:1: invalid `model.layers`")), "{e}");
}

#[test]
fn checks_that_change_between_forwards_are_an_error_not_a_panic() {
    let model = CodeModel::new(
        "moody",
        |store| Ok(candle_nn::Linear::new(store.get("fc.weight", (1, 2), Init::Const(0.5))?, None)),
        |m: &candle_nn::Linear, x: &Tensor, w: &mut Watch| {
            let h = m.forward(x)?;
            if w.training() {
                w.check("only_in_training", &h);
            }
            Ok(h)
        },
    );
    let o = run(&model.scenario(TWO_ROWS, "code.toml").unwrap());
    assert_eq!(o.outcome, Status::Error);
    assert!(o.error.as_deref().unwrap_or("").contains("same names"), "{:?}", o.error);
}

#[test]
fn a_code_model_with_random_init_is_the_same_run_twice_and_another_with_another_seed() {
    let model = CodeModel::new("mlp", |store| candle_nn::linear(2, 1, store.var_builder().pp("fc")), |m: &candle_nn::Linear, x: &Tensor, _: &mut Watch| m.forward(x));
    let trace = |seed: u64| {
        let s = crate::Scenario { seed, ..model.scenario(&TWO_ROWS.replace("epochs = 2", "epochs = 5"), "code.toml").unwrap() };
        run(&s).trace.rows.iter().map(|r| r.train_loss.to_bits()).collect::<Vec<_>>()
    };
    assert_eq!(trace(1), trace(1));
    assert_ne!(trace(1), trace(2));
}

#[test]
fn init_scale_multiplies_a_code_models_random_initial_weights() {
    // One weight w from N(0, 1), x = 1, y = 0: the first loss is w², so scaling w by 3 scales
    // it by 9 (to f32 rounding of 3·w and its square).
    let model =
        CodeModel::new("w", |store| Ok(candle_nn::Linear::new(store.get("w", (1, 1), Init::Randn { mean: 0.0, stdev: 1.0 })?, None)), |m: &candle_nn::Linear, x: &Tensor, _: &mut Watch| m.forward(x));
    let text = |scale: f64| {
        format!("name = \"t\"\n[data]\ninputs = {{ kind = \"values\", rows = [[1.0]] }}\ntargets = {{ kind = \"values\", values = [0.0] }}\n[model]\ninit_scale = {scale}\n[loss]\nkind = \"mse\"\n[optimizer]\nkind = \"sgd\"\nlr = 0.1\n")
    };
    let first = |scale: f64| run(&model.scenario(&text(scale), "t.toml").unwrap()).trace.rows[0].train_loss;
    let (one, three) = (first(1.0), first(3.0));
    assert!(one > 0.0 && (three / one - 9.0).abs() < 1e-5, "{one} {three}");
}

#[test]
fn under_autocast_a_code_model_casts_its_matmuls_and_keeps_f32_master_weights() {
    // The forward casts x and w to autocast's dtype, as torch.autocast casts a linear's operands.
    let model = |w0: f64| {
        CodeModel::new(
            "cast",
            move |store| Ok(candle_nn::Linear::new(store.get("w", (1, 1), Init::Const(w0))?, None)),
            |m: &candle_nn::Linear, x: &Tensor, w: &mut Watch| match w.autocast() {
                Some(low) => candle_nn::Linear::new(m.weight().to_dtype(low)?, None).forward(&x.to_dtype(low)?),
                None => m.forward(x),
            },
        )
    };
    let text = |precision: &str, lr: f64, epochs: usize| {
        format!("name = \"t\"\n[data]\ninputs = {{ kind = \"values\", rows = [[1.0]] }}\ntargets = {{ kind = \"values\", values = [0.0] }}\n[loss]\nkind = \"mse\"\n[optimizer]\nkind = \"sgd\"\nlr = {lr}\n[train]\nepochs = {epochs}\nprecision = \"{precision}\"\n")
    };
    let losses = |w0: f64, precision: &str, lr: f64, epochs: usize| {
        let o = run(&model(w0).scenario(&text(precision, lr, epochs), "t.toml").unwrap());
        assert_eq!(o.outcome, Status::Finite, "{:?}", o.error);
        assert_eq!(o.dtype_name(), precision);
        o.trace.rows.iter().map(|r| r.train_loss).collect::<Vec<_>>()
    };
    // w = 1 + 2⁻¹⁰: bf16 (8 significant bits) rounds it to 1, so with x = 1, y = 0 the first loss
    // is 1 under amp_bf16 and (1 + 2⁻¹⁰)² (in f32) without it.
    let w0 = 1.0 + 2f64.powi(-10);
    assert_eq!(losses(w0, "amp_bf16", 0.1, 1), [1.0]);
    assert_eq!(losses(w0, "f32", 0.1, 1), [(w0 * w0) as f32 as f64]);
    // From w = 1 at lr 5e-4 each step subtracts 5e-4·2·pred = 0.001, under half bf16's spacing
    // below 1 (2⁻⁹): a bf16 master weight would round 0.999 back to 1 and never move. The f32
    // master keeps it: 0.999 is seen as 1 (loss 1), 0.998 (under the midpoint 1 − 2⁻⁹) as
    // 255/256, so the third loss is (255/256)², exact in f32.
    assert_eq!(losses(1.0, "amp_bf16", 5e-4, 3), [1.0, 1.0, (255.0f64 / 256.0).powi(2)]);
}

#[test]
fn a_check_name_the_trace_cannot_hold_or_the_watch_uses_is_refused() {
    for (name, why) in [("a,b", "commas"), ("loss", "watch's own"), ("fc.weight", "parameter's name"), ("x.grad", "watch's own")] {
        let model = CodeModel::new(
            "named",
            |store| Ok(candle_nn::Linear::new(store.get("fc.weight", (1, 2), Init::Const(0.5))?, None)),
            move |m: &candle_nn::Linear, x: &Tensor, w: &mut Watch| {
                let h = m.forward(x)?;
                w.check(name, &h);
                Ok(h)
            },
        );
        let o = run(&model.scenario(TWO_ROWS, "code.toml").unwrap());
        assert_eq!(o.outcome, Status::Error);
        assert!(o.error.as_deref().unwrap_or("").contains(why), "{name}: {:?}", o.error);
    }
}

#[test]
fn parameters_made_in_the_forward_or_differently_per_build_are_refused() {
    let late = CodeModel::new("late", |store| Ok(store.clone()), |store: &super::ParamStore, x: &Tensor, _: &mut Watch| x.matmul(&store.get("w", (2, 1), Init::Const(1.0))?));
    let o = run(&late.scenario(TWO_ROWS, "code.toml").unwrap());
    assert!(o.error.as_deref().unwrap_or("").contains("in `build`"), "{:?}", o.error);
    // A build whose parameters depend on how often it ran (as a hash map's order can).
    let count = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let moody = CodeModel::new(
        "moody",
        move |store| {
            let name = if count.fetch_add(1, std::sync::atomic::Ordering::Relaxed) == 0 { "a" } else { "b" };
            Ok(candle_nn::Linear::new(store.get(name, (1, 2), Init::Const(0.5))?, None))
        },
        |m: &candle_nn::Linear, x: &Tensor, _: &mut Watch| m.forward(x),
    );
    let o = run(&moody.scenario(TWO_ROWS, "code.toml").unwrap());
    assert!(o.error.as_deref().unwrap_or("").contains("same parameters"), "{:?}", o.error);
}

/// `head(layer_norm(fc(x)))` with candle-nn's `LayerNorm` (contiguous input, with a bias: the
/// fused op without a backward), or with `nanhunt::nn`'s.
fn normed(name: &str) -> CodeModel {
    CodeModel::new(
        name,
        |store| {
            let vb = store.var_builder();
            let fc = candle_nn::linear(2, 3, vb.pp("fc"))?;
            let ln = candle_nn::layer_norm(3, 1e-5, vb.pp("ln"))?;
            Ok((fc, ln, candle_nn::linear(3, 1, vb.pp("head"))?))
        },
        |(fc, ln, head): &(candle_nn::Linear, candle_nn::LayerNorm, candle_nn::Linear), x: &Tensor, _: &mut Watch| head.forward(&ln.forward(&fc.forward(x)?)?),
    )
}

#[test]
fn parameters_behind_candle_nns_layer_norm_have_no_gradient_and_that_is_the_finding() {
    // candle-nn's fused layer norm has no f64 kernel: f32.
    let o = run(&normed("ln").scenario(&TWO_ROWS.replace("f64", "f32"), "code.toml").unwrap());
    assert_eq!((o.outcome, o.outcome.exit_code()), (Status::Nonfinite, 1), "{:?}", o.error);
    let f = o.first_nonfinite.expect("the finding");
    // The fused layer norm cuts the graph: neither its gain and shift nor the linear below get one.
    assert_eq!((f.kind, f.step, f.phase, f.tensor.to_string().as_str(), f.shape.as_slice()), (crate::run::Kind::NoGradient, 1, Phase::Backward, "fc.weight.grad", &[3usize, 2][..]));
    assert_eq!(f.to_string(), "no gradient in `fc.weight.grad` during backward at step 1 (epoch 1, fold 0)");
    let c = o.cause.expect("a cause");
    assert!(c.reason.starts_with("4 of the model's 6 parameters got no gradient from the backward: `fc.weight`, `fc.bias`, `ln.weight`, `ln.bias`."), "{}", c.reason);
    assert!(c.reason.contains("(candle#2168)"), "{}", c.reason);
    // The step stops there: no update with made-up zeros.
    assert_eq!(o.steps, 1);
}

#[test]
fn a_parameter_whose_gradient_is_always_exactly_zero_is_a_warning_and_an_unused_one_a_finding() {
    // `fc(x) + (dead − dead)`: d loss / d dead = g − g = 0 exactly, at both steps.
    let zero = CodeModel::new(
        "zero",
        |store| Ok((candle_nn::Linear::new(store.get("fc.weight", (1, 2), Init::Const(0.5))?, None), store.get("dead", 1, Init::Const(1.0))?)),
        |(fc, dead): &(candle_nn::Linear, Tensor), x: &Tensor, _: &mut Watch| fc.forward(x)?.broadcast_add(&(dead - dead)?),
    );
    let o = run(&zero.scenario(TWO_ROWS, "code.toml").unwrap());
    assert_eq!(o.outcome, Status::Finite, "{:?}", o.first_nonfinite);
    assert!(o.warnings.contains(&"parameter `dead` was never updated: its gradient was exactly 0 at each of the run's 2 steps".to_string()), "{:?}", o.warnings);
    // Made but not used: the backward does not reach it at all.
    let unused = CodeModel::new(
        "unused",
        |store| Ok((candle_nn::Linear::new(store.get("fc.weight", (1, 2), Init::Const(0.5))?, None), store.get("spare", 1, Init::Const(1.0))?)),
        |(fc, _): &(candle_nn::Linear, Tensor), x: &Tensor, _: &mut Watch| fc.forward(x),
    );
    let o = run(&unused.scenario(TWO_ROWS, "code.toml").unwrap());
    let f = o.first_nonfinite.expect("the finding");
    assert_eq!((f.kind, f.tensor.to_string().as_str()), (crate::run::Kind::NoGradient, "spare.grad"));
    assert!(o.cause.unwrap().reason.starts_with("1 of the model's 2 parameters got no gradient from the backward: `spare`. Nothing on the loss's graph reaches it, so it would never train"));
}

/// candle-nn's fused rms norm (no f64 kernel) times `scale`, checked as `scaled` without an f64
/// reference, then a linear head.
fn scaled_rms_norm(scale: f64) -> CodeModel {
    CodeModel::new(
        "scaled_rms_norm",
        |store| Ok(candle_nn::Linear::new(store.get("head.weight", (1, 2), Init::Const(0.5))?, None)),
        move |head: &candle_nn::Linear, x: &Tensor, watch: &mut Watch| {
            let h = candle_nn::ops::rms_norm(x, &Tensor::ones(2, x.dtype(), x.device())?, 1e-5)?.affine(scale, 0.0)?;
            watch.check("scaled", &h);
            head.forward(&h)
        },
    )
}

#[test]
fn a_code_check_without_a_reference_says_why_and_a_half_run_is_replayed_in_f32() {
    let verdict = |model: CodeModel, dtype: &str| {
        let s = model.scenario(&TWO_ROWS.replace("dtype = \"f64\"", &format!("dtype = \"{dtype}\"")), "code.toml").unwrap();
        crate::run::run_with(&s, &crate::run::RunOptions { verdict: true, ..crate::run::RunOptions::default() }).verdict.expect("a verdict")
    };
    // f32: row [3, −1] has rms sqrt(5), so 3/sqrt(5)·3e38 = 4.0e38 passes f32's 3.4e38. Candle's
    // rms norm has no f64 kernel and `scaled` no reference: undetermined, saying why.
    let v = verdict(scaled_rms_norm(3e38), "f32");
    assert_eq!(v.class, crate::run::verdict::Class::Undetermined, "{v}");
    assert!(v.reason.contains("`scaled` is a code model's tensor without an f64 reference (`Watch::check_op` gives its op one)"), "{}", v.reason);
    assert!(v.reason.contains("could not be replayed in f64"), "{}", v.reason);
    // f16: the scale 1e5 itself is past f16's 65504 (+inf); in f32 the run stays finite
    // (values up to 1.34e5), so the dtype loses it: precision, overflow.
    let v = verdict(scaled_rms_norm(1e5), "f16");
    assert_eq!(v.key(), "precision/overflow", "{v}");
    assert_eq!(v.step_f64.finite, Some(true), "{}", v.step_f64.detail);
    assert!(v.step_f64.detail.contains("could not be replayed in f64") && v.step_f64.detail.contains("in f32 the run stays finite through step 1"), "{}", v.step_f64.detail);
}
