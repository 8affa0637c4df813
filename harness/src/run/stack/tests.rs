//! The depth estimate against Candle's own graphs: for every layer family, in every way a
//! step runs it (plain, tapped, under autocast, with a padding mask, every loss), the nodes
//! Candle's backward sorts are at most the estimate, and a recurrent step adds at most its
//! levels.

use candle_core::{DType, Device, Tensor};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use strum::VariantArray;

use super::*;
use crate::ops::loss::Loss;
use crate::run::model::Model;
use crate::run::net::Net;
use crate::scenario::{plan, InShape, LossKind, LossSpec, ModelSpec};

/// A two-row input of `shape` (token ids below 3), and a mask that pads the last position of row 1.
fn input(shape: Shape, dev: &Device) -> (Tensor, Option<Tensor>) {
    let rows = 2;
    let wave = |n: usize| (0..n).map(|i| (0.3 + i as f32).sin()).collect::<Vec<f32>>();
    match shape {
        Shape::Flat(w) => (Tensor::from_vec(wave(rows * w), (rows, w), dev).unwrap(), None),
        Shape::Seq { len, width } => {
            let mask: Vec<f32> = (0..rows * len).map(|i| if i == rows * len - 1 && len > 1 { 0.0 } else { 1.0 }).collect();
            (Tensor::from_vec(wave(rows * len * width), (rows, len, width), dev).unwrap(), Some(Tensor::from_vec(mask, (rows, len), dev).unwrap()))
        }
        Shape::Tokens { len, .. } => (Tensor::from_vec((0..rows * len).map(|i| (i % 3) as u32).collect::<Vec<_>>(), (rows, len), dev).unwrap(), None),
        Shape::Image { channels, height, width } => (Tensor::from_vec(wave(rows * channels * height * width), (rows, channels, height, width), dev).unwrap(), None),
    }
}

/// The most nodes Candle's backward visits over one step of `layers` fed `input`, and the estimate.
fn counted(layers: &str, input_shape: InShape) -> (u64, u64) {
    let dev = Device::Cpu;
    let spec: ModelSpec = toml::from_str(&format!("layers = [{layers}]")).unwrap();
    let plan = plan(&spec, input_shape).unwrap_or_else(|e| panic!("{layers}: {e:?}"));
    let shape = input_shape.shape();
    let (x, mask) = input(shape, &dev);
    let mut most = 0;
    for (autocast, tapped, masked) in [(None, false, false), (None, true, false), (Some(DType::F16), false, false), (Some(DType::BF16), true, false), (None, false, true)] {
        let model = Model::new(&spec, &plan, &mut ChaCha8Rng::seed_from_u64(0), DType::F32, &dev).unwrap().with_autocast(autocast, &dev);
        model.dropout_step(ChaCha8Rng::seed_from_u64(1));
        let mask = mask.as_ref().filter(|_| masked);
        let outs = if tapped { model.forward_tapped(&x, mask).unwrap().0 } else { model.forward(&x, mask).unwrap() };
        let pred = model.to_loss(outs.last().unwrap()).unwrap();
        let y = pred.ones_like().unwrap().affine(0.5, 0.0).unwrap().detach();
        for kind in LossKind::VARIANTS {
            let spec: LossSpec = toml::from_str(&format!("kind = \"{}\"\nepsilon = 1e-7\nclamp = 1e-7\ndelta = 1.0", <&str>::from(*kind))).unwrap();
            // A loss that does not take this output (cross-entropy of one column) is not counted.
            let Ok(l) = Loss(spec.clone()).apply(&pred, &y) else {
                continue;
            };
            // What the step adds to the loss: the division of accumulation and the loss scale.
            let seed = l.broadcast_div(&Tensor::new(2f32, &dev).unwrap()).unwrap().affine(65536.0, 0.0).unwrap();
            most = most.max(seed.sorted_nodes().len() as u64);
        }
    }
    assert!(most > 0, "{layers}: no loss took the output");
    (most, levels(&plan, shape))
}

fn flat(w: usize) -> InShape {
    InShape { features: w, seq_len: None, vocab: None, image: None }
}

fn seq(len: usize) -> InShape {
    InShape { features: 4, seq_len: Some(len), vocab: None, image: None }
}

#[test]
fn the_estimate_bounds_every_layer_familys_graph() {
    let img = InShape { features: 2 * 4 * 4, seq_len: None, vocab: None, image: Some((2, 4, 4)) };
    let tokens = InShape { features: 1, seq_len: Some(3), vocab: Some(3), image: None };
    let cases: Vec<(&str, InShape)> = vec![
        ("{ type = \"linear\", out = 4 }", flat(4)),
        ("{ type = \"linear\", out = 4 }, { type = \"relu\" }, { type = \"sigmoid\" }, { type = \"tanh\" }, { type = \"gelu\" }, { type = \"softplus\" }", flat(4)),
        ("{ type = \"linear\", out = 4 }, { type = \"identity\" }, { type = \"softmax\" }, { type = \"sqrt\" }, { type = \"log\" }, { type = \"reciprocal\" }", flat(4)),
        ("{ type = \"linear\", out = 4 }, { type = \"abs\" }, { type = \"exp\" }, { type = \"pow\", exponent = 3.0 }, { type = \"flawed_square\" }, { type = \"silu\" }", flat(4)),
        ("{ type = \"linear\", out = 4 }, { type = \"elu\" }, { type = \"leaky_relu\" }, { type = \"dropout\", p = 0.5 }", flat(4)),
        ("{ type = \"linear\", out = 4 }, { type = \"softsign\" }, { type = \"logsigmoid\" }, { type = \"normalize\" }, { type = \"clamp\", min = -1.0 }, { type = \"normalize\", p = 3.0 }", flat(4)),
        ("{ type = \"linear\", out = 4 }, { type = \"layer_norm\" }, { type = \"rms_norm\" }, { type = \"batch_norm\" }", flat(4)),
        ("{ type = \"residual\", layers = [{ type = \"linear\", out = 4 }, { type = \"tanh\" }] }", flat(4)),
        ("{ type = \"attention\", heads = 2, causal = true }, { type = \"mean_pool\" }", seq(3)),
        ("{ type = \"attention\", heads = 2, softmax = \"safe\" }, { type = \"max_pool\" }", seq(3)),
        ("{ type = \"positional_embedding\" }, { type = \"conv1d\", channels = 4, kernel = 2, padding = 1 }, { type = \"last\" }", seq(3)),
        ("{ type = \"conv1d\", channels = 2, kernel = 3, stride = 2 }, { type = \"flatten\" }", seq(5)),
        ("{ type = \"embedding\", dim = 4 }, { type = \"last\" }", tokens),
        ("{ type = \"conv2d\", channels = 3, kernel = 3, padding = 1 }, { type = \"max_pool2d\", kernel = 2 }, { type = \"flatten\" }", img),
        ("{ type = \"conv2d\", channels = 3, kernel = 2, stride = 2 }, { type = \"avg_pool2d\", kernel = 2 }, { type = \"flatten\" }", img),
    ];
    for (layers, shape) in cases {
        let (nodes, estimate) = counted(layers, shape);
        eprintln!("{nodes:>6} nodes, estimate {estimate:>6}: {layers}");
        assert!(nodes > 0, "{layers}: no graph");
        assert!(nodes <= estimate, "{layers}: Candle's graph has {nodes} nodes, over the estimate of {estimate}");
    }
}

#[test]
fn a_recurrent_step_adds_at_most_its_levels() {
    let cells = [
        "{ type = \"rnn\", hidden = 3 }",
        "{ type = \"lstm\", hidden = 3 }",
        "{ type = \"lstm\", hidden = 3, return_sequences = true, recurrent_dropout = 0.5 }, { type = \"mean_pool\" }",
        "{ type = \"gru\", hidden = 3, activation = \"relu\" }",
        "{ type = \"gru\", hidden = 3, return_sequences = true, recurrent_dropout = 0.5 }, { type = \"max_pool\" }",
    ];
    for layers in cells {
        let (short, long) = (counted(layers, seq(2)), counted(layers, seq(10)));
        let per_step = (long.0 - short.0) as f64 / 8.0;
        let allowed = (long.1 - short.1) as f64 / 8.0;
        eprintln!("{layers}: {per_step} nodes per step, {allowed} allowed; {short:?} {long:?}");
        assert!(per_step <= allowed, "{layers}: {per_step} nodes per step, over the {allowed} the estimate allows");
        assert!(long.0 <= long.1, "{layers}: {long:?}");
    }
}

/// Nodes one more `layer` adds after `prefix`, and what the estimate allows for it.
fn per_layer(prefix: &str, layer: &str, shape: InShape) -> (f64, f64) {
    let stack = |k: usize| counted(&format!("{prefix}{}", vec![layer; k].join(", ")), shape);
    let (one, five) = (stack(1), stack(5));
    ((five.0 - one.0) as f64 / 4.0, (five.1 - one.1) as f64 / 4.0)
}

#[test]
fn each_layer_adds_at_most_its_levels() {
    let linear = "{ type = \"linear\", out = 4 }, ";
    let img = InShape { features: 2 * 4 * 4, seq_len: None, vocab: None, image: Some((2, 4, 4)) };
    let flat_layers = [
        "{ type = \"linear\", out = 4 }",
        "{ type = \"relu\" }",
        "{ type = \"sigmoid\" }",
        "{ type = \"tanh\" }",
        "{ type = \"gelu\" }",
        "{ type = \"softplus\" }",
        "{ type = \"identity\" }",
        "{ type = \"softmax\" }",
        "{ type = \"sqrt\" }",
        "{ type = \"log\" }",
        "{ type = \"reciprocal\" }",
        "{ type = \"abs\" }",
        "{ type = \"exp\" }",
        "{ type = \"pow\", exponent = 3.0 }",
        "{ type = \"flawed_square\" }",
        "{ type = \"silu\" }",
        "{ type = \"elu\" }",
        "{ type = \"leaky_relu\" }",
        "{ type = \"dropout\", p = 0.5 }",
        "{ type = \"layer_norm\" }",
        "{ type = \"rms_norm\" }",
        "{ type = \"batch_norm\" }",
        "{ type = \"residual\", layers = [{ type = \"tanh\" }] }",
    ];
    let mut cases: Vec<(&str, &str, InShape)> = flat_layers.iter().map(|l| (linear, *l, flat(4))).collect();
    cases.extend([
        ("", "{ type = \"attention\", heads = 2, causal = true }", seq(3)),
        ("", "{ type = \"positional_embedding\" }", seq(3)),
        ("", "{ type = \"conv1d\", channels = 4, kernel = 3, padding = 1 }", seq(3)),
        ("", "{ type = \"conv1d\", channels = 4, kernel = 5, padding = 2 }", seq(5)),
        ("", "{ type = \"conv2d\", channels = 2, kernel = 3, padding = 1 }", img),
        ("", "{ type = \"conv2d\", channels = 2, kernel = 5, padding = 2 }", img),
        ("", "{ type = \"conv2d\", channels = 2, kernel = 1 }, { type = \"max_pool2d\", kernel = 1 }, { type = \"avg_pool2d\", kernel = 1 }", img),
    ]);
    let over: Vec<String> = cases
        .into_iter()
        .filter_map(|(prefix, layer, shape)| {
            let (nodes, allowed) = per_layer(prefix, layer, shape);
            eprintln!("{nodes:>5} nodes per layer, {allowed:>5} allowed: {layer}");
            (nodes > allowed).then(|| format!("{layer}: {nodes} nodes per layer, over the {allowed} the estimate allows"))
        })
        .collect();
    assert!(over.is_empty(), "{over:#?}");
}

/// Set in the child process of [`a_code_model_60000_ops_deep_trains_on_its_own_stack`].
const CHILD: &str = "NANHUNT_DEEP_CODE_MODEL_CHILD";

#[test]
fn a_code_model_60000_ops_deep_trains_on_its_own_stack() {
    if std::env::var_os(CHILD).is_none() {
        // An overflow aborts the whole process, so the run happens in a child: this test alone.
        let name = "run::stack::tests::a_code_model_60000_ops_deep_trains_on_its_own_stack";
        let out = std::process::Command::new(std::env::current_exe().unwrap()).args(["--exact", name, "--nocapture"]).env(CHILD, "1").output().unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success() && !err.contains("overflowed"), "{:?}\n{err}", out.status);
        return;
    }
    use crate::run::code::{CodeModel, Watch};
    // 60,000 tanh ops in a row: the walk alone needs 14 MB, more than a main thread's 8 MiB.
    let model =
        CodeModel::new("deep", |store| store.get("w", 1, candle_nn::init::Init::Const(0.5)), |w: &Tensor, x: &Tensor, _: &mut Watch| (0..60_000).try_fold(x.broadcast_mul(w)?, |h, _| h.tanh()));
    let text = "name = \"deep\"\n[data]\ninputs = { kind = \"values\", rows = [[1.0], [-1.0]] }\ntargets = { kind = \"values\", values = [0.5, 0.0] }\n[loss]\nkind = \"mse\"\n[optimizer]\nkind = \"sgd\"\nlr = 0.1\n";
    let o = crate::run_module(&model, &model.scenario(text, "deep.toml").unwrap());
    assert_eq!(o.outcome, crate::run::Status::Finite, "{:?}", o.error);
    assert_eq!(o.steps, 1, "one epoch of one full batch");
}
