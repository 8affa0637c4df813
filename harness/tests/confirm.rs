//! Confirmation against a real PyTorch (feature `torch-tests`; `.ci/run` installs
//! torch and enables it). Every seed base goes non-finite in PyTorch at the step
//! and phase nanhunt names, or stays finite with it; a finite seed's losses
//! agree step by step within the stated tolerance; a hunt's minimized repro
//! confirms. Without an interpreter that has torch these tests fail: they never
//! pass vacuously.
#![cfg(feature = "torch-tests")]

mod common;

use std::path::PathBuf;

use nanhunt::report::torch::{confirm, scratch, Confirmation, TorchVerdict};

/// The interpreter with torch: `NANHUNT_TORCH_PYTHON`, else `.venv-torch/bin/python`.
fn python() -> PathBuf {
    common::torch_python()
}

fn confirmed(path: &std::path::Path) -> Confirmation {
    confirmed_scenario(&nanhunt::load(path).unwrap())
}

fn confirmed_scenario(s: &nanhunt::Scenario) -> Confirmation {
    let work = scratch().unwrap();
    let c = confirm(s, &python(), &work).unwrap_or_else(|e| panic!("{}: {e}", s.name));
    std::fs::remove_dir_all(&work).ok();
    c
}

#[test]
fn every_seed_base_is_confirmed_in_pytorch() {
    let mut seen = 0;
    for entry in std::fs::read_dir(common::repo().join("scenarios/seeds")).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_stem().unwrap().to_string_lossy().into_owned();
        if path.extension().is_none_or(|e| e != "toml") || name.contains("_fix_") {
            continue;
        }
        let c = confirmed(&path);
        assert!(c.verdict.agrees(), "{name}: {c}");
        seen += 1;
    }
    assert!(seen >= 15, "only {seen} seed bases");
    // Seed 002 ex1, as the issue states it: step 3, the loss.
    let c = confirmed(&common::seed("s002_ex1_linreg_sgd"));
    assert_eq!(c.verdict, TorchVerdict::Confirmed);
    let p = c.pytorch.unwrap();
    assert_eq!((p.step, p.phase, p.tensor.to_string().as_str()), (3, nanhunt::Phase::Loss, "loss"));
}

#[test]
fn a_finite_seed_mlp_has_the_same_losses_step_by_step() {
    // Seed 000 ex3: an MSE MLP fitting random targets with Adam in f32; the tolerance is 1e-4
    // relative. The two start one rounding apart (kernels add in different orders) and the
    // gap grows exponentially as the fit turns chaotic: measured on this machine's AVX-512
    // products, at most 4.4e-7 over the first 1000 steps, 4e-3 by step 2000 and 3.6e-2 by 2944
    // of its 3200. So the first 1000 steps are compared.
    let text = std::fs::read_to_string(common::seed("s000_ex3_mse_regression")).unwrap().replace("[train]", "[train]\nmax_steps = 1000");
    let dir = common::tempdir();
    let c = confirmed(&common::write(dir.path(), "ex3.toml", &text));
    assert_eq!(c.verdict, TorchVerdict::BothFinite);
    assert_eq!((c.loss_differs, c.compared, c.tolerance), (None, 1000, 1e-4), "{c}");
}

#[test]
fn a_hunt_repro_is_confirmed() {
    // A short hunt of seed 000 ex1 finds its failure in f16 (eps = 1e-8 rounds to 0 in Adam's
    // update); its minimized repro goes non-finite in PyTorch at the same step and phase.
    let dir = common::tempdir();
    let o = common::nanhunt(&["hunt", common::seed("s000_ex1_bce_mlp").to_str().unwrap(), "--time", "20s", "--shrink-time", "10s", "--first", "--seed", "1", "--out", dir.path().to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(1), "{}", common::stderr(&o));
    let report = std::fs::read_dir(dir.path()).unwrap().map(|e| e.unwrap().path()).find(|p| p.join("repro.toml").is_file()).expect("a report");
    let c = confirmed(&report.join("repro.toml"));
    assert_eq!(c.verdict, TorchVerdict::Confirmed, "{c}");
    // The CLI records it in the report's summary.
    let o = common::nanhunt(&["confirm", report.to_str().unwrap(), "--python", python().to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(0), "{}", common::stderr(&o));
    assert!(std::fs::read_to_string(report.join("summary.md")).unwrap().contains("**PyTorch:** Confirmed in PyTorch"));
}

/// Every layer, optimizer and data path in one place, trained long enough to compare.
fn vocabulary(layers: &str, optimizer: &str, dtype: &str) -> String {
    format!(
        r#"name = "vocabulary"
seed = 7
[data]
n = 40
features = 3
inputs = {{ kind = "normal" }}
targets = {{ kind = "linear" }}
validation = {{ kfold = 2 }}
[model]
init = {{ kind = "torch" }}
layers = [{layers}]
[loss]
kind = "huber"
delta = 0.5
[optimizer]
{optimizer}
[train]
epochs = 6
batch_size = 8
shuffle = true
dtype = "{dtype}"
"#
    )
}

#[test]
fn every_layer_optimizer_and_data_path_agrees_with_pytorch() {
    // Two folds, shuffled mini-batches and validation, through every smooth layer, with each
    // optimizer and clipping; f32 losses agree within 1e-4 at every step of both folds.
    let dense = r#"{ type = "linear", out = 8 }, { type = "batch_norm", momentum = 0.2 }, { type = "gelu" }, { type = "layer_norm", eps = 1e-5 }, { type = "linear", out = 8 }, { type = "softplus" }, { type = "tanh" }, { type = "linear", out = 4 }, { type = "softmax" }, { type = "pow", exponent = 2.0 }, { type = "sigmoid" }, { type = "abs" }, { type = "exp" }, { type = "identity" }, { type = "linear", out = 6 }, { type = "silu" }, { type = "rms_norm" }, { type = "elu", alpha = 1.5 }, { type = "rms_norm", eps = 1e-5 }, { type = "leaky_relu", negative_slope = 0.1 }, { type = "linear", out = 1 }"#;
    let optimizers = [
        "kind = \"adamw\"\nlr = 1e-2\nweight_decay = 0.1\nclip_grad_norm = 0.5",
        "kind = \"rmsprop\"\nlr = 1e-3\nmomentum = 0.9\nweight_decay = 1e-3",
        "kind = \"sgd\"\nlr = 0.05\nmomentum = 0.9\nnesterov = true\nclip_grad_value = 0.1",
        "kind = \"adam\"\nlr = 1e-2\nweight_decay = 1e-2",
    ];
    let dir = common::tempdir();
    for (i, o) in optimizers.iter().enumerate() {
        let path = common::write(dir.path(), &format!("v{i}.toml"), &vocabulary(dense, o, "f32"));
        let c = confirmed(&path);
        assert_eq!((c.verdict, c.loss_differs), (TorchVerdict::BothFinite, None), "{o}: {c}");
        assert_eq!(c.compared, 2 * 6 * 3, "{o}: two folds of 6 epochs of 3 batches (20 rows, batch 8)");
    }
    // A recurrent layer on sequences, and the same stack in f16 and bf16.
    let seq =
        common::write(dir.path(), "rnn.toml", &vocabulary(r#"{ type = "rnn", hidden = 5 }, { type = "linear", out = 1 }"#, optimizers[3], "f32").replace("features = 3", "features = 2\nseq_len = 3"));
    let c = confirmed(&seq);
    assert_eq!((c.verdict, c.loss_differs), (TorchVerdict::BothFinite, None), "rnn: {c}");
    for dtype in ["f16", "bf16"] {
        let path = common::write(dir.path(), &format!("{dtype}.toml"), &vocabulary(dense, optimizers[0], dtype));
        let c = confirmed(&path);
        assert!(c.verdict.agrees(), "{dtype}: {c}");
    }
    // Sequences of features with padding: linear and norms per position, attention with a
    // finite fill and the safe softmax inside nested residual blocks, every pooling.
    let attention = r#"{ type = "linear", out = 8 }, { type = "positional_embedding" }, { type = "residual", layers = [{ type = "rms_norm" }, { type = "residual", layers = [{ type = "attention", heads = 2, mask_fill = "finite_min" }] }, { type = "gelu" }] }, { type = "residual", layers = [{ type = "layer_norm" }, { type = "attention", heads = 4, causal = true, softmax = "safe" }] }"#;
    for (pool, dtype) in [("mean_pool", "f32"), ("max_pool", "f32"), ("last", "f32"), ("mean_pool", "bf16")] {
        let layers = format!("{attention}, {{ type = \"{pool}\" }}, {{ type = \"linear\", out = 1 }}");
        // A fully padded row's max is -inf (in both): max_pool's rows keep at least one position.
        let fraction = if pool == "max_pool" { 0.8 } else { 1.0 };
        let text = vocabulary(&layers, optimizers[0], dtype).replace("features = 3", &format!("features = 2\nseq_len = 5\npadding = {{ max_fraction = {fraction} }}"));
        let c = confirmed(&common::write(dir.path(), &format!("{pool}_{dtype}.toml"), &text));
        match dtype {
            "f32" => assert_eq!((c.verdict, c.loss_differs), (TorchVerdict::BothFinite, None), "{pool}: {c}"),
            _ => assert!(c.verdict.agrees(), "{pool} {dtype}: {c}"),
        }
    }
    // Gated RNNs with dropout (the masks are exported), convolutions over sequences and images.
    let cases = [
        (
            "gated",
            "features = 2\nseq_len = 6",
            r#"{ type = "lstm", hidden = 6, return_sequences = true, recurrent_dropout = 0.3 }, { type = "dropout", p = 0.2 }, { type = "gru", hidden = 4, activation = "relu", recurrent_dropout = 0.1 }, { type = "linear", out = 1 }"#,
        ),
        (
            "conv1d",
            "features = 3\nseq_len = 9",
            r#"{ type = "conv1d", channels = 4, kernel = 3, stride = 2, padding = 1 }, { type = "gelu" }, { type = "conv1d", channels = 2, kernel = 2 }, { type = "flatten" }, { type = "linear", out = 1 }"#,
        ),
        (
            "cnn",
            "image = { channels = 2, height = 9, width = 8 }",
            r#"{ type = "conv2d", channels = 4, kernel = 3, padding = 1 }, { type = "batch_norm" }, { type = "relu" }, { type = "max_pool2d", kernel = 2 }, { type = "dropout", p = 0.1 }, { type = "conv2d", channels = 3, kernel = 2, stride = 2 }, { type = "avg_pool2d", kernel = 2 }, { type = "flatten" }, { type = "linear", out = 1 }"#,
        ),
    ];
    for (name, shape, layers) in cases {
        let text = vocabulary(layers, optimizers[3], "f32").replace("features = 3", shape);
        let c = confirmed(&common::write(dir.path(), &format!("{name}.toml"), &text));
        assert_eq!((c.verdict, c.loss_differs), (TorchVerdict::BothFinite, None), "{name}: {c}");
    }
}

#[test]
fn every_registry_op_agrees_with_pytorch_in_f32_and_under_autocast() {
    // Each op of the registry with its defaults (`ops::examples`, so a new op is confirmed here
    // without a line of its own) between two linear layers. Read through a sigmoid, inside every
    // op's domain, the losses agree step by step in f32 and under bf16 autocast (its autocast
    // class is what repro.py casts by). Read raw, sqrt and log go NaN at once and flawed_square
    // in its first backward, in both (through a sigmoid too); reciprocal of values near 0 stays finite but amplifies
    // the linear layer's last-place differences past 1e-4 by step 10 (as before the registry),
    // so raw runs are held to the verdict only.
    let confirm_with = |layer: &nanhunt::scenario::Layer, sigmoid: bool, precision: &str| {
        let kind = <&str>::from(layer);
        let text = vocabulary(r#"{ type = "linear", out = 4 }, { type = "linear", out = 1 }"#, "kind = \"sgd\"\nlr = 0.05", "f32").replace("dtype = \"f32\"", &format!("precision = \"{precision}\""));
        let mut s = nanhunt::scenario::from_str(&text, "registry.toml").unwrap();
        s.name = format!("{kind}_{precision}_{}", if sigmoid { "sigmoid" } else { "raw" });
        s.model.layers.insert(1, layer.clone());
        if sigmoid {
            s.model.layers.insert(1, nanhunt::scenario::Layer::Sigmoid(Default::default()));
        }
        (s.name.clone(), confirmed_scenario(&s))
    };
    let (ops, mut compared, mut confirmed_raw) = (nanhunt::ops::examples(), 0, 0);
    for layer in &ops {
        for precision in ["f32", "amp_bf16"] {
            let (name, c) = confirm_with(layer, true, precision);
            assert!(c.verdict.agrees(), "{name}: {c}");
            if c.verdict == TorchVerdict::BothFinite {
                assert_eq!((c.loss_differs, c.compared), (None, 2 * 6 * 3), "{name}: {c}");
                compared += 1;
            }
        }
        let (name, c) = confirm_with(layer, false, "f32");
        assert!(c.verdict.agrees(), "{name}: {c}");
        confirmed_raw += usize::from(c.verdict == TorchVerdict::Confirmed);
    }
    // Only flawed_square's backward fails whatever it reads.
    assert_eq!(compared, 2 * (ops.len() - 1), "runs through a sigmoid whose losses were compared");
    assert!(confirmed_raw >= 3, "sqrt, log and flawed_square go non-finite read raw: {confirmed_raw}");
}

#[test]
fn softsign_logsigmoid_normalize_and_clamp_agree_with_pytorch() {
    // Issue 26's four registry ops in one stack: softsign and logsigmoid, normalize with its
    // defaults and with p = 1.5, and a clamp that holds some values at its bounds (so their
    // gradient is 0). f32 losses agree within 1e-4 at every step of both folds; f16, bf16 and
    // autocast (normalize computes in f32 there, as `linalg_vector_norm` does) agree on the verdict.
    let dense = r#"{ type = "linear", out = 8 }, { type = "softsign" }, { type = "linear", out = 8 }, { type = "logsigmoid" }, { type = "normalize" }, { type = "linear", out = 6 }, { type = "clamp", min = -0.5, max = 0.5 }, { type = "normalize", p = 1.5, eps = 1e-4 }, { type = "linear", out = 1 }"#;
    let adam = "kind = \"adam\"\nlr = 1e-2";
    let dir = common::tempdir();
    let c = confirmed(&common::write(dir.path(), "ops_f32.toml", &vocabulary(dense, adam, "f32")));
    assert_eq!((c.verdict, c.loss_differs), (TorchVerdict::BothFinite, None), "f32: {c}");
    assert_eq!(c.compared, 2 * 6 * 3, "two folds of 6 epochs of 3 batches");
    for dtype in ["f16", "bf16"] {
        let c = confirmed(&common::write(dir.path(), &format!("ops_{dtype}.toml"), &vocabulary(dense, adam, dtype)));
        assert!(c.verdict.agrees(), "{dtype}: {c}");
    }
    for precision in ["amp_f16", "amp_bf16"] {
        let text = format!("{}precision = \"{precision}\"\n", vocabulary(dense, adam, "f32"));
        let c = confirmed(&common::write(dir.path(), &format!("ops_{precision}.toml"), &text));
        assert!(c.verdict.agrees(), "{precision}: {c}");
    }
}

#[test]
fn mixed_precision_the_scaler_schedules_and_accumulation_agree_with_pytorch() {
    // Autocast (f16 and bf16) over f32 master weights, GradScaler from a first scale of 2²⁰
    // (so the first steps overflow and are skipped, in both), a warmup into a cosine decay,
    // and two micro-batches per step, on the dense stack and on attention over sequences.
    let dense = r#"{ type = "linear", out = 8 }, { type = "gelu" }, { type = "layer_norm" }, { type = "linear", out = 8 }, { type = "dropout", p = 0.2 }, { type = "tanh" }, { type = "softmax" }, { type = "linear", out = 1 }"#;
    let attention = r#"{ type = "linear", out = 8 }, { type = "residual", layers = [{ type = "layer_norm" }, { type = "attention", heads = 2, causal = true }] }, { type = "mean_pool" }, { type = "linear", out = 1 }"#;
    let amp = |precision: &str, init: &str| {
        format!("precision = \"{precision}\"\naccumulate = 2\n[train.loss_scale]\ninit = {init}\ngrowth_interval = 3\n[train.schedule]\nwarmup_steps = 2\ndecay = \"cosine\"\ndecay_steps = 8\n")
    };
    let text = |layers: &str, shape: &str, precision: &str, init: &str| format!("{}{}", vocabulary(layers, "kind = \"adamw\"\nlr = 1e-2", "f32").replace("features = 3", shape), amp(precision, init));
    let dir = common::tempdir();
    for (name, layers, shape) in [("dense", dense, "features = 3"), ("attention", attention, "features = 2\nseq_len = 4")] {
        for precision in ["amp_f16", "amp_bf16"] {
            let c = confirmed(&common::write(dir.path(), &format!("{name}_{precision}.toml"), &text(layers, shape, precision, "1048576.0")));
            assert_eq!((c.verdict, c.loss_differs), (TorchVerdict::BothFinite, None), "{name} {precision}: {c}");
            assert_eq!(c.compared, 2 * 6 * 2, "{name}: two folds of 6 epochs of 2 steps (3 micro-batches of 8 of 20 rows, 2 per step)");
        }
    }
    // From 2³⁰, f16 overflows step after step: both see the scale collapse at the same step.
    let c = confirmed(&common::write(dir.path(), "collapse.toml", &text(dense, "features = 3", "amp_f16", "1073741824.0")));
    assert_eq!(c.verdict, TorchVerdict::Confirmed, "{c}");
    assert!(c.to_string().contains("`loss_scale`"), "{c}");
}

#[test]
fn every_diagnosis_and_real_report_scenario_is_confirmed() {
    // One per diagnosis rule, each failing (or warning) in closed form: sqrt, log, exp, flawed
    // backward, Adam in f16, clamp in f16, the loss's backward; the public reports; and ours
    // that cover a layer family no report does (scenarios/layers); the imported ONNX models
    // (scenarios/onnx, beside their .onnx files and the script that made them).
    let dirs = ["scenarios/diagnosis", "scenarios/real", "scenarios/layers", "scenarios/onnx"].map(|d| std::fs::read_dir(common::repo().join(d)).unwrap());
    for entry in dirs.into_iter().flatten() {
        let path = entry.unwrap().path();
        if path.extension().is_none_or(|e| e != "toml") {
            continue;
        }
        let c = confirmed(&path);
        assert!(c.verdict.agrees(), "{}: {c}", path.display());
        // The GPT compiles node by node (`onnx` layers, one torch call each): 3 epochs of 4 steps.
        if path.ends_with("scenarios/onnx/gpt.toml") {
            assert_eq!((c.verdict, c.compared), (TorchVerdict::BothFinite, 12), "{c}");
        }
    }
}

#[test]
fn a_minimized_image_report_is_confirmed_in_pytorch() {
    // Issue 25: once an image scenario's rows were cut, its repro.toml held `data.features`
    // beside `data.image` and did not load, so `confirm` exited 2. Here the base fails at once
    // (SGD lr 1e30: the second step's forward overflows f32); its repro keeps one of 8 images.
    let text = "name = \"images\"\nseed = 3\n[data]\nn = 8\nimage = { channels = 2, height = 4, width = 4 }\ninputs = { kind = \"normal\" }\ntargets = { kind = \"normal\" }\n[model]\nlayers = [{ type = \"conv2d\", channels = 2, kernel = 2 }, { type = \"relu\" }, { type = \"max_pool2d\", kernel = 2 }, { type = \"flatten\" }, { type = \"linear\", out = 1 }]\n[loss]\nkind = \"mse\"\n[optimizer]\nkind = \"sgd\"\nlr = 1e30\n[train]\nepochs = 4\nbatch_size = 4\n";
    let dir = common::tempdir();
    let p = common::write(dir.path(), "images.toml", text);
    let out = dir.path().join("out");
    let o = common::nanhunt(&["hunt", p.to_str().unwrap(), "--first", "--time", "5s", "--out", out.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(1), "{}", common::stderr(&o));
    let report = std::fs::read_dir(&out).unwrap().map(|e| e.unwrap().path()).find(|p| p.join("repro.toml").is_file()).expect("a report");
    assert!(std::fs::read_to_string(report.join("repro.toml")).unwrap().contains("data rows: 8 → 1"), "the rows were cut");
    let o = common::nanhunt(&["confirm", report.to_str().unwrap(), "--python", python().to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(0), "{}{}", common::stdout(&o), common::stderr(&o));
    assert!(std::fs::read_to_string(report.join("summary.md")).unwrap().contains("**PyTorch:** Confirmed in PyTorch"));
}

#[test]
fn pooling_and_reductions_in_f16_and_bf16_agree_with_pytorch() {
    // issue 25: every pooling and reducing layer in f16 and bf16, as softmax and layer norm are
    // above: avg_pool2d (kernel 2 and 3, a non-square image), max_pool2d, mean_pool and max_pool
    // with and without padding, conv1d + flatten (f16), and the mean losses (huber, mse, mae).
    let optimizer = "kind = \"sgd\"\nlr = 0.05\nmomentum = 0.9";
    let image = r#"{ type = "conv2d", channels = 4, kernel = 3, padding = 1 }, { type = "relu" }, { type = "max_pool2d", kernel = 2 }, { type = "conv2d", channels = 3, kernel = 2 }, { type = "avg_pool2d", kernel = 2 }, { type = "flatten" }, { type = "linear", out = 1 }"#;
    let seq = |pool: &str| format!(r#"{{ type = "linear", out = 8 }}, {{ type = "gelu" }}, {{ type = "{pool}" }}, {{ type = "linear", out = 1 }}"#);
    // conv1d + flatten in bf16 drifts past 2e-2 by step 12 of fold 1 (2.97 vs 3.06, measured
    // 2026-12-05), a convolution's rounding rather than a reduction's: f16 only here.
    const BOTH: &[&str] = &["f16", "bf16"];
    let cases = [
        ("cnn", BOTH, "image = { channels = 2, height = 8, width = 8 }".to_string(), image.to_string(), "huber"),
        ("avg3", BOTH, "image = { channels = 1, height = 7, width = 6 }".to_string(), r#"{ type = "avg_pool2d", kernel = 3 }, { type = "flatten" }, { type = "linear", out = 1 }"#.to_string(), "mse"),
        ("mean_masked", BOTH, "features = 2\nseq_len = 5\npadding = { max_fraction = 1.0 }".to_string(), seq("mean_pool"), "mae"),
        ("max_masked", BOTH, "features = 2\nseq_len = 5\npadding = { max_fraction = 0.8 }".to_string(), seq("max_pool"), "huber"),
        ("mean", BOTH, "features = 2\nseq_len = 5".to_string(), seq("mean_pool"), "mse"),
        ("max", BOTH, "features = 2\nseq_len = 5".to_string(), seq("max_pool"), "huber"),
        (
            "conv1d",
            &["f16"][..],
            "features = 3\nseq_len = 9".to_string(),
            r#"{ type = "conv1d", channels = 4, kernel = 3, stride = 2, padding = 1 }, { type = "flatten" }, { type = "linear", out = 1 }"#.to_string(),
            "mae",
        ),
    ];
    let dir = common::tempdir();
    for (name, dtypes, shape, layers, loss) in &cases {
        for dtype in *dtypes {
            let delta = if *loss == "huber" { "\ndelta = 0.5" } else { "" };
            let text = vocabulary(layers, optimizer, dtype).replace("features = 3", shape).replace("kind = \"huber\"\ndelta = 0.5", &format!("kind = \"{loss}\"{delta}"));
            let c = confirmed(&common::write(dir.path(), &format!("{name}_{dtype}.toml"), &text));
            assert_eq!((c.verdict, c.loss_differs), (TorchVerdict::BothFinite, None), "{name} {dtype}: {c}");
            assert_eq!(c.compared, 2 * 6 * 3, "{name} {dtype}");
        }
    }
}

/// Sixteen sequences of one feature near `mean` (std 100), pooled, then a linear layer of
/// weight 1e-4 against targets of 2: a pooled 20000 predicts about 2, so nothing else
/// overflows. One step: its loss (about 1e-5) is the pooled forward's, compared exactly
/// enough; later steps would compare the optimizer's last-place rounding of w.
fn large_sequence(mean: f64, padding: &str, dtype: &str) -> String {
    format!(
        r#"name = "large_sequence"
seed = 3
[data]
n = 16
features = 1
seq_len = 5
{padding}
inputs = {{ kind = "normal", mean = {mean}, std = 100.0 }}
targets = {{ kind = "normal", mean = 2.0, std = 0.0 }}
[model]
layers = [{{ type = "mean_pool" }}, {{ type = "linear", out = 1, init = {{ kind = "constant", value = 1e-4 }} }}]
[loss]
kind = "mse"
[optimizer]
kind = "sgd"
lr = 1e-9
[train]
batch_size = 16
dtype = "{dtype}"
"#
    )
}

#[test]
fn half_pooling_over_large_values_fails_only_where_pytorch_fails() {
    // issue 25: an f16 image of 20000s through avg_pool2d stays finite in both (nanhunt's f16
    // sum overflowed: a false finding); a masked mean_pool of five positions near 20000 rounds
    // its sum (~100000) to f16 before dividing, +inf in both at the same step and phase; the
    // unmasked mean (f32 sum, one rounding) stays finite in both, in f16 and bf16.
    let dir = common::tempdir();
    let image = &common::large_image("f16");
    let c = confirmed(&common::write(dir.path(), "image.toml", image));
    assert_eq!((c.verdict, c.loss_differs), (TorchVerdict::BothFinite, None), "{c}");
    let c = confirmed(&common::write(dir.path(), "masked.toml", &large_sequence(20000.0, "padding = { lengths = [5, 5, 4, 5, 5, 5, 5, 5, 5, 5, 5, 5, 5, 5, 5, 5] }", "f16")));
    assert_eq!(c.verdict, TorchVerdict::Confirmed, "{c}");
    let p = c.pytorch.as_ref().unwrap();
    assert_eq!((p.step, p.phase, p.tensor.to_string().as_str()), (1, nanhunt::Phase::Forward, "layers.0.mean_pool.output"), "{c}");
    for dtype in ["f16", "bf16"] {
        let c = confirmed(&common::write(dir.path(), &format!("plain_{dtype}.toml"), &large_sequence(20000.0, "", dtype)));
        assert_eq!((c.verdict, c.loss_differs), (TorchVerdict::BothFinite, None), "{dtype}: {c}");
    }
}

#[test]
fn bce_torch_in_f16_agrees_with_pytorch_at_p_0_and_1() {
    // PyTorch's binary_cross_entropy in f16: EPSILON (1e-12) is 0 there, so its gradient at p = 0 or 1 is
    // ±inf or 0/0 while its value stays finite. tensorflow#38457 with it and a clamp that rounds to 0 and 1:
    // the NaN gradients at p = 0 are dropped by the clamp's backward, and both stay finite (nanhunt's
    // loss was NaN at step 3). A saturated sigmoid: both fail in the sigmoid's output gradient at step 1.
    let real = std::fs::read_to_string(common::repo().join("scenarios/real/tf38457_f16_tanh_bce.toml")).unwrap();
    let text = real.replace("kind = \"bce\"\nclamp = 1e-7\nepsilon = 1e-7", "kind = \"bce_torch\"\nclamp = 2.98e-8");
    assert_ne!(text, real);
    let dir = common::tempdir();
    let c = confirmed(&common::write(dir.path(), "tf38457_bce_torch.toml", &text));
    assert_eq!((c.verdict, c.loss_differs, c.compared), (TorchVerdict::BothFinite, None, 4), "{c}");
    let sigmoid = "name = \"saturated\"\n[data]\ninputs = { kind = \"values\", rows = [[-30.0], [30.0]] }\ntargets = { kind = \"values\", values = [1.0, 1.0] }\n[model]\ninit = { kind = \"constant\", value = 1.0 }\nlayers = [{ type = \"linear\", out = 1 }, { type = \"sigmoid\" }]\n[loss]\nkind = \"bce_torch\"\n[optimizer]\nkind = \"sgd\"\nlr = 0.01\n[train]\nbatch_size = 2\ndtype = \"f16\"\n";
    let c = confirmed(&common::write(dir.path(), "saturated.toml", sigmoid));
    assert_eq!(c.verdict, TorchVerdict::Confirmed, "{c}");
    let p = c.pytorch.unwrap();
    assert_eq!((p.step, p.phase, p.tensor.to_string().as_str()), (1, nanhunt::Phase::Backward, "layers.1.sigmoid.output.grad"));
}
