//! Mixed precision, the loss scaler, accumulation and the schedule in whole runs, on
//! one-weight models whose every step can be worked out by hand.

use crate::run::{run, Kind, Status};
use crate::scenario::{from_str, Phase};

fn scenario(body: &str) -> crate::Scenario {
    from_str(&format!("name = \"t\"\n{body}"), "t.toml").unwrap()
}

/// `pred = w·x + b` from w = b = 0 on one row, MSE, SGD at `lr`.
fn one_weight(x: f64, y: f64, lr: f64, train: &str) -> crate::Scenario {
    scenario(&format!(
        "[data]\ninputs = {{ kind = \"values\", rows = [[{x:?}]] }}\ntargets = {{ kind = \"values\", values = [{y:?}] }}\n[model]\ninit = {{ kind = \"constant\", value = 0.0 }}\nlayers = [{{ type = \"linear\", out = 1 }}]\n[loss]\nkind = \"mse\"\n[optimizer]\nkind = \"sgd\"\nlr = {lr:?}\n[train]\n{train}"
    ))
}

#[test]
fn the_scaler_skips_exactly_the_overflowing_steps_and_grows_after_its_interval() {
    // x = 1, y = 0.5, pred = 0: dL/dpred = 2(0 − 0.5) = −1, scaled to −scale, which backward
    // casts to f16 at the linear's output. 2¹⁷ and 2¹⁶ both round to −inf in f16 (largest
    // 65504): steps 1 and 2 are skipped, the scale halving each time; 2¹⁵ fits, so step 3
    // applies w = b = 0.1 (lr 0.1 times the unscaled −1). Steps 3 and 4 are two clean steps
    // in a row: the scale doubles for step 5. By hand: pred 0.2 after step 3, the gradient
    // −0.6 at step 4 gives w = b = 0.16, and step 5's −0.36 · 2¹⁶ = −23593 fits.
    let s = one_weight(1.0, 0.5, 0.1, "epochs = 5\nprecision = \"amp_f16\"\n[train.loss_scale]\ninit = 131072.0\ngrowth_interval = 2");
    let o = run(&s);
    assert_eq!(o.outcome, Status::Finite, "skipped steps are expected events: {:?}", o.first_nonfinite);
    let scales: Vec<f64> = o.trace.rows.iter().map(|r| r.loss_scale.unwrap()).collect();
    let skipped: Vec<bool> = o.trace.rows.iter().map(|r| r.skipped.unwrap()).collect();
    assert_eq!(scales, [131072.0, 65536.0, 32768.0, 32768.0, 65536.0]);
    assert_eq!(skipped, [true, true, false, false, false]);
    assert_eq!(o.skipped_steps.as_deref(), Some("2 of 5 steps skipped: inf/NaN gradients at steps 1, 2"));
    // The loss of each step is the unscaled one: 0.25 before any update; after step 3 the f32
    // master w = b = 0.1 reach the linear as f16(0.1) = 0.0999755859375 each, so the loss is
    // (0.5 − 0.199951171875)² exactly; then about (0.5 − 0.32)² (f16 weights again).
    let loss: Vec<f64> = o.trace.rows.iter().map(|r| r.train_loss).collect();
    assert_eq!(&loss[..3], [0.25, 0.25, 0.25]);
    let gap = 1229.0f32 / 4096.0; // 0.5 − 0.199951171875, exact
    assert_eq!(loss[3], f64::from(gap * gap));
    assert!((loss[4] - 0.0324).abs() < 2e-3 * 0.0324, "{loss:?}");
    assert!(o.trace.to_csv().map(|c| String::from_utf8(c).unwrap()).unwrap().starts_with("step,epoch,fold,train_loss,val_loss,grad_norm,param_norm,lr,headroom,grad_subnormal,loss_scale,skipped,"));
}

#[test]
fn a_forward_that_always_overflows_the_low_dtype_is_a_scale_collapse() {
    // 1e5 is a fine f32 input but +inf once autocast casts it to f16 for the linear layer:
    // every step is skipped. With the default window of 20 and fraction 0.5, the 11th skip is
    // more than half: a collapse at step 11, after 11 halvings of 2¹⁶.
    let s = one_weight(1e5, 0.5, 0.1, "epochs = 30\nprecision = \"amp_f16\"\n[train.loss_scale]");
    let o = run(&s);
    let f = o.first_nonfinite.clone().expect("a collapse");
    assert_eq!((o.outcome, f.step, f.phase, f.tensor.to_string().as_str(), f.kind), (Status::Nonfinite, 11, Phase::Update, "loss_scale", Kind::ScaleCollapse));
    assert_eq!(o.trace.rows[10].loss_scale, Some(65536.0 / 1024.0));
    let c = o.cause.expect("explained");
    assert!(c.reason.contains("11 of the last 11 steps were skipped") && c.reason.contains("layers.0.linear.output"), "{}", c.reason);
    // It names the value its last skipped step hit, with that value's diagnosis: what it keys by.
    let sk = c.skipped.as_deref().expect("the skipped value");
    assert_eq!((sk.location.step, sk.location.phase, sk.location.tensor.to_string().as_str(), sk.location.kind), (11, Phase::Forward, "layers.0.linear.output", Kind::Nan));
    let why = sk.cause.as_ref().expect("diagnosed");
    assert_eq!((why.rule, why.op.as_str()), (crate::run::Rule::Overflow, "layers.0.linear"));
    assert!(why.reason.contains("is 100000, beyond f16's largest value 65504") && c.reason.contains(&why.reason), "{}", c.reason);
    // Without a scaler the same run fails at its first forward, in the f16 linear: inf · (w = 0).
    let o = run(&one_weight(1e5, 0.5, 0.1, "precision = \"amp_f16\""));
    let f = o.first_nonfinite.unwrap();
    assert_eq!((f.step, f.phase, f.tensor.to_string().as_str(), f.kind), (1, Phase::Forward, "layers.0.linear.output", Kind::Nan));
}

#[test]
fn f32_master_weights_take_updates_below_the_low_dtype_resolution() {
    // w = 1, b = 0, x = 1, y = 4: dL/dw = dL/db = 2(1 − 4) = −6, so each step adds about 6e-5
    // to both at lr 1e-5. An f16 at 1 has spacing 2⁻¹⁰ ≈ 9.8e-4: w + 6e-5 rounds back to 1 in
    // pure f16, while the f32 master weight of amp_f16 keeps every step. (b, near 0, moves in
    // both; its share of the norm is b²/2 < 1e-7.)
    let body = |train: &str| {
        scenario(&format!(
            "[data]\ninputs = {{ kind = \"values\", rows = [[1.0]] }}\ntargets = {{ kind = \"values\", values = [4.0] }}\n[model]\ninit = {{ kind = \"constant\", value = 1.0 }}\nlayers = [{{ type = \"linear\", out = 1 }}]\n[loss]\nkind = \"mse\"\n[optimizer]\nkind = \"sgd\"\nlr = 1e-5\n[train]\nepochs = 3\n{train}"
        ))
    };
    let norms = |o: &crate::run::Outcome| o.trace.rows.iter().map(|r| r.param_norm.unwrap()).collect::<Vec<_>>();
    let amp = norms(&run(&body("precision = \"amp_f16\"")));
    let pure = norms(&run(&body("dtype = \"f16\"")));
    assert!((amp[0] - 1.00006).abs() < 1e-6 && (amp[2] - 1.00018).abs() < 2e-6, "w = 1 + 6e-5 per step in f32: {amp:?}");
    assert!(pure.iter().all(|n| (n - 1.0).abs() < 1e-7), "w stays 1 in f16: {pure:?}");
}

#[test]
fn accumulating_k_micro_batches_is_one_batch_of_k_times_the_rows_for_sgd() {
    let rows = "[[0.5, -1.0], [1.5, 2.0], [-0.25, 0.75], [2.0, -0.5], [1.0, 1.0], [-1.5, 0.25], [0.75, -2.0], [0.1, 0.3]]";
    let targets = "[1.0, -0.5, 0.25, 2.0, -1.0, 0.5, 1.5, -0.75]";
    let body = |train: &str| {
        scenario(&format!(
            "seed = 3\n[data]\ninputs = {{ kind = \"values\", rows = {rows} }}\ntargets = {{ kind = \"values\", values = {targets} }}\n[model]\nlayers = [{{ type = \"linear\", out = 3 }}, {{ type = \"tanh\" }}, {{ type = \"linear\", out = 1 }}]\n[loss]\nkind = \"mse\"\n[optimizer]\nkind = \"sgd\"\nlr = 0.1\nmomentum = 0.9\n[train]\nepochs = 4\n{train}"
        ))
    };
    let whole = run(&body(""));
    let micro = run(&body("batch_size = 2\naccumulate = 4"));
    assert_eq!((whole.steps, micro.steps), (4, 4), "four micro-batches of 2 make one step");
    for (a, b) in whole.trace.rows.iter().zip(&micro.trace.rows) {
        // The same gradient, summed in another order: equal to f32 rounding.
        assert!((a.train_loss - b.train_loss).abs() <= 1e-6 * a.train_loss.abs(), "{} vs {}", a.train_loss, b.train_loss);
        let (pa, pb) = (a.param_norm.unwrap(), b.param_norm.unwrap());
        assert!((pa - pb).abs() <= 1e-6 * pa, "{pa} vs {pb}");
    }
    // Not the same as 4 steps per epoch of 2 rows each.
    assert_eq!(run(&body("batch_size = 2")).steps, 16);
}

#[test]
fn the_trace_lr_column_follows_the_schedule() {
    let o = run(&one_weight(1.0, 0.5, 0.1, "epochs = 4\n[train.schedule]\nwarmup_steps = 2\ndecay = \"step\"\nstep_size = 1\ngamma = 0.5"));
    let lr: Vec<f64> = o.trace.rows.iter().map(|r| r.lr).collect();
    assert_eq!(lr, [0.0, 0.05, 0.1, 0.05]);
    // A zero learning rate leaves the first step's parameters where they were.
    assert_eq!(o.trace.rows[0].param_norm, Some(0.0));
}

#[test]
fn autocast_in_f32_storage_is_autocast_on_half_tensors_bit_for_bit() {
    // A small pre-norm transformer with dropout, under each low dtype with a scaler, run with the
    // low dtype in f32 storage (the CPU's way) and on real half tensors (other devices' way):
    // the same trace, bit for bit.
    let text = |precision: &str| {
        format!(
            "seed = 5\n[data]\nn = 24\nseq_len = 6\ninputs = {{ kind = \"tokens\", vocab = 11 }}\ntargets = {{ kind = \"next_token\" }}\n[model]\nlayers = [{{ type = \"embedding\", dim = 8 }}, {{ type = \"positional_embedding\" }}, {{ type = \"residual\", layers = [{{ type = \"layer_norm\" }}, {{ type = \"attention\", heads = 2, causal = true }}] }}, {{ type = \"residual\", layers = [{{ type = \"layer_norm\" }}, {{ type = \"linear\", out = 16 }}, {{ type = \"gelu\" }}, {{ type = \"dropout\", p = 0.1 }}, {{ type = \"linear\", out = 8 }}] }}, {{ type = \"linear\", out = 11 }}]\n[loss]\nkind = \"cross_entropy\"\n[optimizer]\nkind = \"adamw\"\nlr = 1e-2\n[train]\nepochs = 3\nbatch_size = 8\nprecision = \"{precision}\"\n[train.loss_scale]\ninit = 1048576.0\ngrowth_interval = 2\n"
        )
    };
    for precision in ["amp_bf16", "amp_f16"] {
        let s = scenario(&text(precision));
        let f32_storage = run(&s);
        crate::run::model::HALF_TENSORS.with(|h| h.set(true));
        let half = run(&s);
        crate::run::model::HALF_TENSORS.with(|h| h.set(false));
        assert_eq!(f32_storage.outcome, Status::Finite, "{precision}");
        // bf16 has f32's range: only f16's gradients overflow at 2²⁰.
        assert_eq!(f32_storage.trace.rows.iter().any(|r| r.skipped == Some(true)), precision == "amp_f16", "{precision}");
        let (a, b) = (f32_storage.trace.to_csv().unwrap(), half.trace.to_csv().unwrap());
        assert!(a == b, "{precision}:\n{}\n{}", String::from_utf8_lossy(&a), String::from_utf8_lossy(&b));
    }
}

#[test]
fn pytorch_111739s_first_step_overflow_is_skipped_not_reported() {
    // GradScaler's first scale 2¹⁶ is above f16's largest 65504, so the output's gradient of ±1
    // scales to ±inf: step 1 is skipped and the scale halves; from 2¹⁵ the gradients fit (the
    // weights' are 0.5 and 0.25 times the output's, the bias's equal to it) and nothing skips.
    let s = crate::scenario::load(&std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../scenarios/real/pt111739_amp_first_step_overflow.toml")).unwrap();
    let o = run(&s);
    assert_eq!((o.outcome, o.steps), (Status::Finite, 5));
    let skipped: Vec<bool> = o.trace.rows.iter().map(|r| r.skipped.unwrap()).collect();
    let scales: Vec<f64> = o.trace.rows.iter().map(|r| r.loss_scale.unwrap()).collect();
    assert_eq!(skipped, [true, false, false, false, false]);
    assert_eq!(scales, [65536.0, 32768.0, 32768.0, 32768.0, 32768.0]);
    // The skipped step changed nothing: step 2 sees step 1's loss.
    assert_eq!(o.trace.rows[0].train_loss, o.trace.rows[1].train_loss);
    // Step 2's headroom is the scaled gradients': the bias's is ±1 · 2¹⁵ against f16's 65504.
    let h = o.trace.rows[1].headroom.unwrap();
    assert!((h - (65504.0f64 / 32768.0).log2()).abs() < 1e-12, "{h}");
}

#[test]
fn headroom_holds_each_layer_output_against_the_dtype_it_is_held_in() {
    // x = 10⁴ through a linear layer of weight and bias 1: 10001, which f16 holds as 10000 (its
    // spacing there is 8), log2(65504 / 10000) = 2.7 bits below f16's largest, under the 4-bit
    // threshold; in f32 it is 114.8 bits below 3.4e38. Then `x * 1e-4` brings it to about 1
    // against a target of 1, so every other value (the loss, the scaled gradients) is small.
    let body = |precision: &str| {
        format!(
            "[data]\ninputs = {{ kind = \"values\", rows = [[10000.0]] }}\ntargets = {{ kind = \"values\", values = [1.0] }}\n[model]\ninit = {{ kind = \"constant\", value = 1.0 }}\nlayers = [{{ type = \"linear\", out = 1{precision} }}, {{ type = \"expr\", expr = \"x * 1e-4\" }}]\n[loss]\nkind = \"mse\"\n[optimizer]\nkind = \"sgd\"\nlr = 1e-9\n[train]\nepochs = 1\nprecision = \"amp_f16\""
        )
    };
    let low = run(&scenario(&body("")));
    assert_eq!(low.outcome, Status::Finite);
    let h = low.trace.rows[0].headroom.unwrap();
    assert!((h - (65504.0f64 / 10000.0).log2()).abs() < 1e-12, "{h}");
    assert!(low.warnings.iter().any(|w| w.starts_with("headroom fell to 2.7 bits at step 1") && w.contains("against f16's largest 65504")), "{:?}", low.warnings);
    // Kept in f32, the same 10001 is far from f32's largest: no warning, and the row's headroom
    // is the smallest of the rest (the expression's output, in f32 too, and the gradients in f16).
    let kept = run(&scenario(&body(", precision = \"f32\"")));
    assert_eq!(kept.outcome, Status::Finite);
    assert!(!kept.warnings.iter().any(|w| w.starts_with("headroom")), "{:?}", kept.warnings);
    assert!(kept.trace.rows[0].headroom.unwrap() > 4.0, "{:?}", kept.trace.rows[0].headroom);
}
