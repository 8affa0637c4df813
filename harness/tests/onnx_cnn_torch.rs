//! A CNN with batch norm and pooling written in PyTorch (`scenarios/onnx/make_models.py`'s
//! `Cnn`: Conv2d, BatchNorm2d, ReLU, MaxPool2d, Conv2d, ReLU, AvgPool2d, Flatten, Linear),
//! exported as ONNX under a dynamic batch and imported as a chain of registry layers. Against
//! the original `nn.Module` in train() mode (rebuilt by the same script with the same seed, not
//! read back from the file): its loss and every parameter's gradient at step 0 agree within f32
//! tolerance on the same images, and its losses still agree after several Adam steps, the batch
//! norm normalising by each batch's statistics in both. Needs PyTorch 2.15 (feature
//! `torch-tests`, `NANHUNT_TORCH_PYTHON` or `.venv-torch/`): it never passes vacuously.
#![cfg(feature = "torch-tests")]

mod common;

use std::process::Command;

const SIDE: usize = 14;
const CLASSES: usize = 3;

/// The original module's cross-entropy on the images and classes in `data.json`, its gradients
/// (a linear weight's transposed to nanhunt's `(in, out)`; a convolution's kept as
/// `(out, in, k, k)`, as nanhunt holds it) and its losses over `steps` full-batch Adam steps.
const TORCH: &str = r#"
import json, sys
import torch
import torch.nn.functional as F
sys.path.insert(0, sys.argv[1])
import make_models
d = json.load(open(sys.argv[2]))
torch.manual_seed(0)
m = make_models.Cnn()
m.train()
x = torch.tensor(d["x"]).reshape(-1, 1, 14, 14)
y = torch.tensor(d["y"])
print(json.dumps(make_models.answer(m, lambda: F.cross_entropy(m(x), y), d["lr"], d["steps"])))
"#;

fn scenario(x: &[Vec<f64>], y: &[Vec<f64>], steps: usize, lr: f64) -> String {
    let list = |t: &[Vec<f64>]| t.iter().map(|r| format!("[{}]", r.iter().map(|v| format!("{v:?}")).collect::<Vec<_>>().join(", "))).collect::<Vec<_>>().join(", ");
    format!(
        "name = \"onnx_cnn_vs_torch\"\n[data]\nimage = {{ channels = 1, height = {SIDE}, width = {SIDE} }}\ninputs = {{ kind = \"values\", rows = [{}] }}\ntargets = {{ kind = \"values\", values = [{}] }}\n[model]\nonnx = \"cnn.onnx\"\n[loss]\nkind = \"cross_entropy\"\n[optimizer]\nkind = \"adam\"\nlr = {lr:?}\n[train]\nepochs = {steps}\nbatch_size = {}\n",
        list(x),
        list(y),
        x.len()
    )
}

#[test]
fn the_imported_cnn_agrees_with_its_pytorch_module_at_step_0_and_after_adam_steps() {
    let (n, steps, lr) = (8usize, 6usize, 1e-2);
    let x: Vec<Vec<f64>> = (0..n).map(|i| (0..SIDE * SIDE).map(|j| ((i * SIDE * SIDE + j) as f64 * 0.37).sin() * 1.2 + (i as f64 - 3.5) * 0.1).collect()).collect();
    let classes: Vec<usize> = (0..n).map(|i| (i * 2) % CLASSES).collect();
    let y: Vec<Vec<f64>> = classes.iter().map(|&c| (0..CLASSES).map(|k| f64::from(u8::from(k == c))).collect()).collect();
    let dir = common::tempdir();
    let folder = common::repo().join("scenarios/onnx");
    std::fs::copy(folder.join("cnn.onnx"), dir.path().join("cnn.onnx")).unwrap();
    let path = common::write(dir.path(), "s.toml", &scenario(&x, &y, steps, lr));
    let s = nanhunt::load(&path).unwrap();
    let data = serde_json::json!({ "x": x, "y": classes, "lr": lr, "steps": steps });
    common::write(dir.path(), "data.json", &data.to_string());
    let out = common::output_within(Command::new(common::torch_python()).arg("-c").arg(TORCH).arg(&folder).arg(dir.path().join("data.json")), std::time::Duration::from_secs(300));
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let torch: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();

    let (loss, grads) = nanhunt::run::first_gradients(&s, &x, &y).unwrap();
    let names: Vec<&str> = grads.iter().map(|g| g.0.as_str()).collect();
    let want = ["conv1.weight", "conv1.bias", "bn.weight", "bn.bias", "conv2.weight", "conv2.bias", "fc.weight", "fc.bias"].map(|p| format!("layers.{p}"));
    assert_eq!(names, want, "every parameter of the module, and the running statistics none");
    // Full-batch training: each step's batch is every image, so the batch statistics, the mean loss and Adam agree.
    let o = nanhunt::run(&s);
    let ours: Vec<f64> = o.trace.rows.iter().map(|r| r.train_loss).collect();
    assert_eq!(ours.len(), steps, "{o:?}");
    common::agrees_with_torch(loss, &grads, &ours, &torch);
}
