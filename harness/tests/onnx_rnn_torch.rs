//! Recurrent models written in PyTorch (`scenarios/onnx/make_models.py`): `LstmClassifier`
//! (`nn.LSTM(4, 16, batch_first=True)`, its last step into a Linear of 3 classes) and
//! `GruClassifier` (an embedding of 16 tokens, `nn.GRU(8, 16, batch_first=True)`, the mean over
//! the steps into a Linear), exported as ONNX (an `LSTM`/`GRU` node, its weights sliced into ONNX's
//! gate order) and imported onto nanhunt's `lstm`/`gru` layers. Against the original `nn.Module`
//! (rebuilt by the same script with the same seed, not read back from the file): the loss and
//! every parameter's gradient at step 0 agree within f32 tolerance on the same inputs, and the
//! losses still agree after several Adam steps. Needs PyTorch 2.15 (feature `torch-tests`).
#![cfg(feature = "torch-tests")]

mod common;

use std::process::Command;

const SEQ: usize = 12;
const CLASSES: usize = 3;
const ROWS: usize = 6;

/// The original module's cross-entropy on `x` and `labels`, its gradients by parameter name (a
/// recurrent weight transposed to nanhunt's `(in, gates·hidden)`) and its losses over `steps`
/// full-batch Adam steps at `lr`.
const TORCH: &str = r#"
import json, sys
import torch
import torch.nn.functional as F
sys.path.insert(0, sys.argv[1])
import make_models
d = json.load(open(sys.argv[2]))
torch.manual_seed(0)
m = getattr(make_models, d["model"])()
x = torch.tensor(d["x"])
x = x.reshape(x.shape[0], d["seq"], -1) if d["floats"] else x.long()
y = torch.tensor(d["labels"])
transposed = lambda n, p: n.startswith("rnn.weight")
print(json.dumps(make_models.answer(m, lambda: F.cross_entropy(m(x), y), d["lr"], d["steps"], transposed)))
"#;

/// The class of each row.
fn labels() -> Vec<usize> {
    (0..ROWS).map(|i| (i * 2 + 1) % CLASSES).collect()
}

/// One-hot rows of the labels, the targets nanhunt's cross-entropy reads.
fn one_hot() -> Vec<Vec<f64>> {
    labels().iter().map(|&l| (0..CLASSES).map(|k| f64::from(u8::from(k == l))).collect()).collect()
}

/// Loads the scenario `data` (its `[data]` inputs) over `file`, runs the module `model` on `x`
/// in PyTorch, and checks the loss and gradients at step 0 and the losses of `steps` Adam steps.
fn agrees(file: &str, model: &str, data: &str, x: &[Vec<f64>], floats: bool) {
    let (steps, lr) = (6usize, 1e-2);
    let dir = common::tempdir();
    std::fs::copy(common::repo().join("scenarios/onnx").join(file), dir.path().join(file)).unwrap();
    let targets: Vec<String> = one_hot().iter().map(|r| format!("{r:?}")).collect();
    let text = format!(
        "name = \"onnx_rnn_vs_torch\"\n[data]\nseq_len = {SEQ}\n{data}\ntargets = {{ kind = \"values\", values = [{}] }}\n[model]\nonnx = \"{file}\"\n[loss]\nkind = \"cross_entropy\"\n[optimizer]\nkind = \"adam\"\nlr = {lr:?}\n[train]\nepochs = {steps}\nbatch_size = {ROWS}\n",
        targets.join(", ")
    );
    let s = nanhunt::load(&common::write(dir.path(), "s.toml", &text)).unwrap();
    let data = serde_json::json!({ "model": model, "x": x, "floats": floats, "seq": SEQ, "labels": labels(), "lr": lr, "steps": steps });
    common::write(dir.path(), "data.json", &data.to_string());
    let out = common::output_within(
        Command::new(common::torch_python()).arg("-c").arg(TORCH).arg(common::repo().join("scenarios/onnx")).arg(dir.path().join("data.json")),
        std::time::Duration::from_secs(300),
    );
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let theirs: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();

    let (loss, grads) = nanhunt::run::first_gradients(&s, x, &one_hot()).unwrap();
    // Full-batch training: each step's batch is every row, so the mean loss and Adam agree.
    let o = nanhunt::run(&s);
    let ours: Vec<f64> = o.trace.rows.iter().map(|r| r.train_loss).collect();
    assert_eq!(ours.len(), steps, "{o:?}");
    common::agrees_with_torch(loss, &grads, &ours, &theirs);
}

#[test]
fn the_imported_lstm_classifier_agrees_with_its_pytorch_module_at_step_0_and_after_adam_steps() {
    // 6 rows of 12 steps × 4 features.
    let x: Vec<Vec<f64>> = (0..ROWS).map(|i| (0..SEQ * 4).map(|j| ((i * 31 + j * 7) as f64 * 0.37).sin() * 1.5).collect()).collect();
    let rows: Vec<String> = x.iter().map(|r| format!("{r:?}")).collect();
    agrees("lstm.onnx", "LstmClassifier", &format!("features = 4\ninputs = {{ kind = \"values\", rows = [{}] }}", rows.join(", ")), &x, true);
}

#[test]
fn the_imported_gru_classifier_agrees_with_its_pytorch_module_at_step_0_and_after_adam_steps() {
    let ids: Vec<Vec<u32>> = (0..ROWS as u32).map(|i| (0..SEQ as u32).map(|j| (i * 5 + j * (i + 3)) % 16).collect()).collect();
    let rows: Vec<String> = ids.iter().map(|r| format!("{r:?}")).collect();
    let x: Vec<Vec<f64>> = ids.iter().map(|r| r.iter().map(|&v| f64::from(v)).collect()).collect();
    agrees("gru.onnx", "GruClassifier", &format!("inputs = {{ kind = \"tokens\", vocab = 16, rows = [{}] }}", rows.join(", ")), &x, false);
}
