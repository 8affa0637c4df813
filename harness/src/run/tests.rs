//! The runner's watch: each phase reports its own first non-finite value, with
//! hand-made scenarios whose failure point is known in closed form.

use crate::run::{run, run_with, Kind, RunOptions, Status};
use crate::scenario::{from_str, Named, Phase};

fn scenario(body: &str) -> crate::Scenario {
    from_str(&format!("name = \"t\"\n{body}"), "t.toml").unwrap()
}

const ONE_ROW: &str = "[data]\ninputs = { kind = \"values\", rows = [[1.0]] }\ntargets = { kind = \"values\", values = [0.0] }\n";

#[test]
fn forward_phase_names_the_layer() {
    // sqrt(−1) = NaN in the first layer's output.
    let s = scenario("[data]\ninputs = { kind = \"values\", rows = [[-1.0]] }\ntargets = { kind = \"values\", values = [0.0] }\n[model]\nlayers = [{ type = \"sqrt\" }]\n[loss]\nkind = \"mse\"\n[optimizer]\nkind = \"sgd\"\nlr = 0.1");
    let f = run(&s).first_nonfinite.unwrap();
    assert_eq!((f.step, f.phase, f.tensor.to_string().as_str(), f.kind), (1, Phase::Forward, "layers.0.sqrt.output", Kind::Nan));
}

#[test]
fn backward_phase_names_the_gradient() {
    // w = 0: forward sqrt(0·1) = 0 is finite, but d sqrt/du at 0 is +inf, so dL/dw = inf·… is not.
    let s = scenario(&format!("{ONE_ROW}[model]\nlayers = [{{ type = \"linear\", out = 1, init = {{ kind = \"constant\", value = 0.0 }} }}, {{ type = \"sqrt\" }}]\n[loss]\nkind = \"mse\"\n[optimizer]\nkind = \"sgd\"\nlr = 0.1"));
    let o = run(&s);
    let f = o.first_nonfinite.unwrap();
    assert_eq!((f.step, f.phase), (1, Phase::Backward));
    // Born in the sqrt's backward: the gradient of the linear layer's output, found by the tapped re-run.
    assert_eq!(f.tensor, crate::scenario::TensorId::OutputGrad("layers.0.linear".into()));
    assert_eq!(o.last_finite_loss, Some(0.0));
}

#[test]
fn update_phase_names_the_parameter() {
    // w = 1, x = 1, y = 0: dL/dw = 2(w·x − y)·x = 2; w − 3e38·2 overflows f32 to −inf.
    let s = scenario(&format!(
        "{ONE_ROW}[model]\ninit = {{ kind = \"constant\", value = 1.0 }}\nlayers = [{{ type = \"linear\", out = 1 }}]\n[loss]\nkind = \"mse\"\n[optimizer]\nkind = \"sgd\"\nlr = 3e38"
    ));
    let f = run(&s).first_nonfinite.unwrap();
    assert_eq!((f.step, f.phase, f.tensor.to_string().as_str(), f.kind), (1, Phase::Update, "layers.0.linear.weight", Kind::NegInf));
}

#[test]
fn validation_phase_while_training_stays_finite() {
    // Seed 004's pattern: training is fine, the validation rows overflow: (1e30 − 0)² = inf in f32.
    let s = scenario(&format!("{ONE_ROW}validation = {{ inputs = {{ kind = \"values\", rows = [[1e30]] }}, targets = {{ kind = \"values\", values = [0.0] }} }}\n[model]\ninit = {{ kind = \"constant\", value = 1.0 }}\nlayers = [{{ type = \"linear\", out = 1 }}]\n[loss]\nkind = \"mse\"\n[optimizer]\nkind = \"sgd\"\nlr = 0.01\n[train]\nepochs = 3"));
    let o = run(&s);
    let f = o.first_nonfinite.unwrap();
    assert_eq!((f.step, f.epoch, f.phase, f.tensor.to_string().as_str()), (1, 1, Phase::Validation, "validation.loss"));
    assert!(o.trace.rows[0].train_loss.is_finite());
}

#[test]
fn data_that_overflows_the_dtype_is_caught_as_data() {
    // Seed 002 ex1's 1e5 features are finite in f64 but exceed f16's largest value, 65504.
    let mut s = crate::scenario::seed("s002_ex1_linreg_sgd");
    s.train.dtype = crate::scenario::DTypeName::F16;
    let f = run(&s).first_nonfinite.unwrap();
    assert_eq!((f.step, f.phase, f.tensor.to_string().as_str(), f.kind), (0, Phase::Data, "data.train.inputs", Kind::PosInf));
    assert_eq!(f.index, 1, "row 0, column 1: 1e5 is the first value over 65504");
    // Rows [1, 1e5], [2, 2e5], [3, 3e5]: the three second-column values overflow.
    assert_eq!((f.shape.as_slice(), f.coords.as_slice(), f.count), ([3, 2].as_slice(), [0, 1].as_slice(), 3));
    assert_eq!(f.rows, [0, 1, 2], "every row holds one");
    assert!(f.to_string().contains("`data.train.inputs`[0, 1]") && f.to_string().contains("3 of its 6 elements"), "{f}");
}

fn small_adam(dtype: &str, eps: f64) -> crate::Scenario {
    scenario(&format!("[data]\nn = 64\nfeatures = 4\ninputs = {{ kind = \"normal\" }}\ntargets = {{ kind = \"binary\" }}\n[model]\nlayers = [{{ type = \"linear\", out = 8 }}, {{ type = \"gelu\" }}, {{ type = \"layer_norm\" }}, {{ type = \"linear\", out = 1 }}, {{ type = \"sigmoid\" }}]\n[loss]\nkind = \"bce\"\nclamp = 0.001\n[optimizer]\nkind = \"adam\"\nlr = 0.01\neps = {eps}\n[train]\nepochs = 3\nbatch_size = 16\ndtype = \"{dtype}\""))
}

#[test]
fn half_precision_dtypes_train() {
    // Adam's eps must be representable: 1e-4 is the usual choice for half precision.
    for dtype in ["f16", "bf16", "f64"] {
        let o = run(&small_adam(dtype, 1e-4));
        assert_eq!(o.outcome, Status::Finite, "{dtype}: {:?} {:?}", o.first_nonfinite, o.error);
        assert_eq!((o.steps, o.dtype_name()), (12, dtype));
    }
}

#[test]
fn adam_default_eps_underflows_in_f16() {
    // 1e-8 rounds to 0 in f16 (smallest subnormal ≈ 6e-8): a gradient element whose square
    // underflows leaves denom = 0, and m / 0 is infinite in the update.
    let o = run(&small_adam("f16", 1e-8));
    assert_eq!(o.first_nonfinite.map(|f| f.phase), Some(Phase::Update));
    assert_eq!(run(&small_adam("f32", 1e-8)).outcome, Status::Finite);
}

#[test]
fn kfold_trains_a_model_per_fold() {
    let s = scenario("[data]\nn = 30\nfeatures = 2\ninputs = { kind = \"normal\" }\ntargets = { kind = \"linear\", noise = 0.1 }\nvalidation = { kfold = 3 }\n[model]\nlayers = [{ type = \"linear\", out = 1 }]\n[loss]\nkind = \"huber\"\ndelta = 1.0\n[optimizer]\nkind = \"rmsprop\"\nlr = 0.01\n[train]\nepochs = 2\nbatch_size = 10");
    let o = run(&s);
    assert_eq!(o.steps, 3 * 2 * 2, "3 folds × 2 epochs × 20 rows / 10");
    let folds: Vec<usize> = o.trace.rows.iter().map(|r| r.fold).collect();
    assert_eq!(folds, [0, 0, 0, 0, 1, 1, 1, 1, 2, 2, 2, 2]);
    assert!(o.trace.rows.iter().filter(|r| r.val_loss.is_some()).count() == 6, "validation after every epoch of every fold");
}

#[test]
fn no_watch_checks_the_loss_only() {
    // The NaN of sqrt(−1) reaches the loss: without the watch it is found there.
    let s = scenario("[data]\ninputs = { kind = \"values\", rows = [[-1.0]] }\ntargets = { kind = \"values\", values = [0.0] }\n[model]\nlayers = [{ type = \"sqrt\" }]\n[loss]\nkind = \"mse\"\n[optimizer]\nkind = \"sgd\"\nlr = 0.1");
    let o = run_with(&s, &RunOptions { watch: false, ..RunOptions::default() });
    assert_eq!(o.first_nonfinite.unwrap().phase, Phase::Loss);
    assert!(o.trace.rows[0].max_abs.is_empty());
}

#[test]
fn oversized_run_is_an_error_outcome_not_a_panic() {
    let s = scenario("[data]\nn = 2000000000\nfeatures = 1000\ninputs = { kind = \"normal\" }\ntargets = { kind = \"binary\" }\n[model]\nlayers = [{ type = \"linear\", out = 1 }]\n[loss]\nkind = \"mse\"\n[optimizer]\nkind = \"sgd\"\nlr = 0.1");
    let o = run(&s);
    assert_eq!(o.outcome, Status::Error);
    assert!(o.error.unwrap().starts_with("refused:"));
}

#[test]
fn divergence_is_flagged_where_closed_form_says() {
    // One row x = 1, y = 0, weight 1 and bias 0, MSE, SGD at lr 1: s = w + b starts at 1 and
    // each step makes it s·(1 − 4·lr) = −3s, so the loss s² is 9^(k−1) at step k (hand
    // computation). With 6 decades allowed over the running minimum 1, step 8 (9^7 ≈ 4.8e6)
    // is the first over; every value stays finite (9^9 ≈ 3.9e8 at step 10).
    let s = scenario(&format!("{ONE_ROW}[model]\ninit = {{ kind = \"constant\", value = 1.0 }}\nlayers = [{{ type = \"linear\", out = 1 }}]\n[loss]\nkind = \"mse\"\n[optimizer]\nkind = \"sgd\"\nlr = 1.0\n[train]\nepochs = 10"));
    let o = run(&s);
    assert_eq!(o.outcome, Status::Finite);
    let losses: Vec<f64> = o.trace.rows.iter().map(|r| r.train_loss).collect();
    assert_eq!(&losses[..3], &[1.0, 9.0, 81.0], "the hand-computed losses");
    let d = o.divergence.clone().expect("diverging");
    assert_eq!((d.step, d.reason.as_str()), (8, "loss_growth"));
}

#[test]
fn the_fused_watch_names_what_the_unfused_one_does() {
    // The fused update gathers the watch's stats of gradients and parameters in its own pass, and
    // layer outputs get an integer-max pass; checking every tensor on its own must give the same
    // first non-finite value (phase, tensor, element) and the same trace bits, in every phase.
    let phases = [
        ("[data]\ninputs = { kind = \"values\", rows = [[-1.0]] }\ntargets = { kind = \"values\", values = [0.0] }\n[model]\nlayers = [{ type = \"sqrt\" }]\n[loss]\nkind = \"mse\"\n[optimizer]\nkind = \"sgd\"\nlr = 0.1".to_string(), Phase::Forward),
        (format!("{ONE_ROW}[model]\nlayers = [{{ type = \"linear\", out = 1, init = {{ kind = \"constant\", value = 0.0 }} }}, {{ type = \"sqrt\" }}]\n[loss]\nkind = \"mse\"\n[optimizer]\nkind = \"adam\"\nlr = 0.1"), Phase::Backward),
        (format!("{ONE_ROW}[model]\ninit = {{ kind = \"constant\", value = 1.0 }}\nlayers = [{{ type = \"linear\", out = 1 }}]\n[loss]\nkind = \"mse\"\n[optimizer]\nkind = \"sgd\"\nlr = 3e38"), Phase::Update),
        ("[data]\ninputs = { kind = \"values\", rows = [[1e10]] }\ntargets = { kind = \"values\", values = [1e10] }\n[model]\nlayers = [{ type = \"linear\", out = 1, init = { kind = \"constant\", value = 0.0 } }]\n[loss]\nkind = \"mse\"\n[optimizer]\nkind = \"adam\"\nlr = 1e-3".to_string(), Phase::Update),
        (format!("{ONE_ROW}validation = {{ inputs = {{ kind = \"values\", rows = [[1e30]] }}, targets = {{ kind = \"values\", values = [0.0] }} }}\n[model]\ninit = {{ kind = \"constant\", value = 1.0 }}\nlayers = [{{ type = \"linear\", out = 1 }}]\n[loss]\nkind = \"mse\"\n[optimizer]\nkind = \"sgd\"\nlr = 0.01"), Phase::Validation),
    ];
    let mut all: Vec<(crate::Scenario, Option<Phase>)> = phases.iter().map(|(body, p)| (scenario(body), Some(*p))).collect();
    let seeds = std::fs::read_dir(crate::scenario::seeds_dir()).unwrap();
    let mut names: Vec<String> = seeds.map(|e| e.unwrap().path().file_stem().unwrap().to_string_lossy().into_owned()).collect();
    names.sort();
    all.extend(names.iter().map(|n| (crate::scenario::seed(n), None)));
    let mut phases_seen = std::collections::BTreeSet::new();
    for (s, phase) in &all {
        let run = |fused| run_with(s, &RunOptions { fused, ..RunOptions::default() });
        let (a, b) = (run(true), run(false));
        assert_eq!((&a.first_nonfinite, a.outcome, a.steps), (&b.first_nonfinite, b.outcome, b.steps), "{}", s.name);
        assert_eq!(format!("{:?}", a.trace.rows), format!("{:?}", b.trace.rows), "{}", s.name);
        if let Some(f) = &a.first_nonfinite {
            phases_seen.insert(f.phase.name());
            assert!(phase.is_none_or(|p| p == f.phase), "{}: {f}", s.name);
        }
    }
    for p in [Phase::Data, Phase::Forward, Phase::Loss, Phase::Backward, Phase::Update, Phase::Validation] {
        assert!(phases_seen.contains(p.name()), "no scenario fails in phase {p}: {phases_seen:?}");
    }
    // Adam's second moment in f32: grad = 2·(0 − 1e10)·1e10 = −2e20 squares past 3.4e38, named by the fused pass too.
    let v = run(&all[3].0).first_nonfinite.unwrap();
    assert_eq!((v.tensor.to_string().as_str(), v.kind), ("optim.layers.0.linear.weight.exp_avg_sq", Kind::PosInf));
}

#[test]
fn expect_accepts_the_output_gradient_sites_runs_print() {
    // Each bundled scenario below goes non-finite in a layer output's gradient; its own site,
    // written back as its `[expect]`, validates (it was refused before).
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    for f in ["scenarios/diagnosis/sqrt_at_zero.toml", "scenarios/diagnosis/zero_times_inf.toml", "scenarios/seeds/s002_ex3_flawed_backward.toml"] {
        let mut s = crate::scenario::load(&root.join(f)).unwrap();
        let at = run(&s).first_nonfinite.expect("goes non-finite");
        assert!(at.tensor.is_output_grad(), "{f}: {at}");
        s.expect = Some(crate::scenario::Expect::nonfinite_at(at.phase, &at.tensor));
        let problems = crate::scenario::validate(&s);
        assert!(problems.is_empty(), "{f}: {problems:?}");
    }
}

/// tensorflow#38457's scenario with PyTorch's BCE (`bce_torch`) and a clamp that rounds to 0 and 1
/// in f16, so the tanh's negative outputs reach the loss as p = 0.
fn tf38457_bce_torch() -> crate::Scenario {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let mut s = crate::scenario::load(&root.join("scenarios/real/tf38457_f16_tanh_bce.toml")).unwrap();
    s.loss = crate::scenario::LossSpec { kind: crate::scenario::LossKind::BceTorch, clamp: Some(2.98e-8), epsilon: None, ..s.loss };
    s
}

#[test]
fn bce_torch_in_f16_stays_finite_where_pytorch_does() {
    // At step 3, p = 0 and y = 0: PyTorch's loss is 0 and its gradient 0/0 = NaN (EPSILON is 0 in f16),
    // which the clamp's backward drops (p came from a tanh below 0). nanhunt's loss was NaN there.
    // PyTorch 2.15's losses for this scenario (its `export-torch` repro): 3.83984375, 0.2449951171875,
    // 0, 0.2076416015625.
    let o = run(&tf38457_bce_torch());
    assert_eq!(o.outcome, Status::Finite, "{:?}", o.first_nonfinite);
    let losses: Vec<f64> = o.trace.rows.iter().map(|r| r.train_loss).collect();
    assert_eq!(losses, [3.83984375, 0.2449951171875, 0.0, 0.2076416015625]);
}

#[test]
fn bce_torch_in_f16_fails_in_the_backward_where_pytorch_does() {
    // sigmoid(−30) = 0 in f16 with y = 1: PyTorch's loss is 100 (the log clamped at −100), mean 50 with
    // the row sigmoid(30) = 1, y = 1 (loss −0); its gradient is 0.5·(0 − 1)/0 = −inf and, at p = y = 1,
    // 0/0 = NaN, born in the sigmoid's output gradient at step 1 (PyTorch 2.15 `confirm`: the same site).
    let s = scenario("[data]\ninputs = { kind = \"values\", rows = [[-30.0], [30.0]] }\ntargets = { kind = \"values\", values = [1.0, 1.0] }\n[model]\ninit = { kind = \"constant\", value = 1.0 }\nlayers = [{ type = \"linear\", out = 1 }, { type = \"sigmoid\" }]\n[loss]\nkind = \"bce_torch\"\n[optimizer]\nkind = \"sgd\"\nlr = 0.01\n[train]\nbatch_size = 2\ndtype = \"f16\"");
    let o = run(&s);
    let f = o.first_nonfinite.unwrap();
    assert_eq!((f.step, f.phase, f.kind), (1, Phase::Backward, Kind::NegInf));
    assert_eq!(f.tensor, crate::scenario::TensorId::OutputGrad("layers.1.sigmoid".into()));
    assert_eq!(o.trace.rows[0].train_loss, 50.0);
}

#[test]
fn expressions_are_diagnosed_naming_the_sub_expression_and_column() {
    // tensorflow#3290 (PyTorch 2.15 also has a NaN square root in `layers.0.expr.output` at
    // step 1): the one-pass variance rounds negative, and its `sqrt` starts at column 38 of the
    // expression (counted by hand). pytorch#68425: `where`'s unselected `exp(x)`, column 15,
    // overflows f32 for x > ln(3.4e38) = 88.7 and gets 0 back: 0 · ∞ = NaN (PyTorch 2.15 too),
    // an overflow of f32's range.
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let load = |f: &str| crate::scenario::load(&root.join("scenarios/real").join(f)).unwrap();
    let c = run(&load("tf3290_moments_negative_variance.toml")).cause.expect("a rule explains it");
    assert_eq!((c.rule, c.op.as_str()), (crate::run::cause::Rule::OutsideDomain, "layers.0.expr"));
    assert!(c.reason.starts_with("sqrt of a negative number -") && c.reason.contains("(column 38)"), "{}", c.reason);
    let c = run(&load("pt68425_where_exp_unselected_branch.toml")).cause.expect("a rule explains it");
    assert_eq!((c.rule, c.op.as_str()), (crate::run::cause::Rule::Overflow, "layers.1.expr (backward)"));
    assert!(c.reason.contains("`exp(x)` (column 15)") && c.reason.contains("does not select"), "{}", c.reason);
}

#[test]
fn an_all_ignored_cross_entropy_and_an_f16_info_nce_say_why() {
    // layers/cross_entropy_all_ignored_batch and layers/expr_named_losses_ignored_batch: a batch
    // of 2 rows whose labels are both -100 (80% are) is 0/0 = NaN at step 1 (PyTorch 2.15 too), as
    // `[loss] kind` and inside an expression. layers/info_nce_f16_small_temperature: logits of
    // embeddings with dot products of thousands over T = 0.01 pass f16's 65504 (PyTorch 2.15: nan).
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../scenarios/layers");
    let load = |f: &str| crate::scenario::load(&root.join(f)).unwrap();
    for (file, op) in [("cross_entropy_all_ignored_batch.toml", "loss (cross_entropy)"), ("expr_named_losses_ignored_batch.toml", "loss (expr)")] {
        let c = run(&load(file)).cause.expect("a rule explains it");
        assert_eq!((c.rule, c.op.as_str()), (crate::run::cause::Rule::DivisionByZero, op), "{file}: {c}");
        assert!(c.reason.contains("every target of the batch (2 of 2) is ignore_index -100") && c.reason.contains("0 / 0 = NaN") && c.reason.contains("fix:"), "{file}: {}", c.reason);
    }
    let c = run(&load("info_nce_f16_small_temperature.toml")).cause.expect("a rule explains it");
    assert_eq!((c.rule, c.op.as_str()), (crate::run::cause::Rule::Overflow, "loss (info_nce)"), "{c}");
    // PyTorch 2.15 on the exported first batch: 748 of the 1024 f16 logits are inf, and row 0's
    // dot product with its positive is 1067.36 (f64 of the f16 embeddings).
    assert!(
        c.reason.contains("temperature T = 0.01: 1.07e3 / 0.01 = 1.07e5 is past f16's largest value 65504") && c.reason.contains("(748 of the 1024 logits are)") && c.reason.contains("∞ − ∞ = NaN"),
        "{}",
        c.reason
    );
}

#[test]
fn an_expression_loss_that_reads_the_mask_lists_it_with_the_prediction_and_targets() {
    // `sum(cross_entropy(p, y, reduction='none') * mask) / sum(mask)` over the second batch,
    // rows 5 to 8 of length 0: the 16 mask entries are all 0 (the scenario's header), so
    // sum(mask) = 0 and the loss is 0/0. The cause lists p, y and mask, mask with its 16 zeros.
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let s = crate::scenario::load(&root.join("scenarios/layers/expr_masked_token_cross_entropy_all_padded.toml")).unwrap();
    let c = run(&s).cause.expect("a rule explains it");
    let names: Vec<&str> = c.inputs.iter().map(|o| o.name.as_str()).collect();
    assert_eq!(names, ["p", "y", "mask"], "{c}");
    let mask = &c.inputs[2];
    assert_eq!((mask.zeros, mask.min, mask.max, mask.nan), (16, 0.0, 0.0, 0), "{c}");
    // An expression that does not read the mask lists p and y only.
    let mut plain = s.clone();
    plain.loss.expr = Some("sum(cross_entropy(p, y, reduction='none')) / sum(y * 0)".into());
    let c = run(&plain).cause.expect("a rule explains it");
    assert_eq!(c.inputs.iter().map(|o| o.name.as_str()).collect::<Vec<_>>(), ["p", "y"], "{c}");
}
