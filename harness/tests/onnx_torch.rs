//! An MLP written in PyTorch, exported as ONNX (`scenarios/onnx/make_models.py`) and imported:
//! against the original `nn.Module` (rebuilt by the same script with the same seed, not read back
//! from the file), its loss and every parameter's gradient at step 0 agree within f32 tolerance
//! on the same inputs, and its losses still agree after several Adam steps. Needs PyTorch 2.15
//! (feature `torch-tests`, `NANHUNT_TORCH_PYTHON` or `.venv-torch/`): it never passes vacuously.
#![cfg(feature = "torch-tests")]

mod common;

use std::path::PathBuf;
use std::process::Command;

/// The interpreter with torch: `NANHUNT_TORCH_PYTHON`, else `.venv-torch/bin/python`.
fn python() -> PathBuf {
    common::torch_python()
}

/// The original module's loss, gradients (a weight's transposed to nanhunt's `(in, out)`) and
/// its losses over `steps` full-batch Adam steps at `lr`, on the rows in `data.json`.
const TORCH: &str = r#"
import json, sys
import torch
sys.path.insert(0, sys.argv[1])
import make_models
d = json.load(open(sys.argv[2]))
torch.manual_seed(0)
m = make_models.Mlp()
x, y = torch.tensor(d["x"]), torch.tensor(d["y"])
print(json.dumps(make_models.answer(m, lambda: torch.nn.functional.mse_loss(m(x), y), d["lr"], d["steps"])))
"#;

fn scenario(x: &[Vec<f64>], y: &[Vec<f64>], steps: usize, lr: f64) -> String {
    let rows = |t: &[Vec<f64>]| t.iter().map(|r| format!("[{}]", r.iter().map(|v| format!("{v:?}")).collect::<Vec<_>>().join(", "))).collect::<Vec<_>>().join(", ");
    let targets = y.iter().map(|r| format!("{:?}", r[0])).collect::<Vec<_>>().join(", ");
    format!(
        "name = \"onnx_mlp_vs_torch\"\n[data]\ninputs = {{ kind = \"values\", rows = [{}] }}\ntargets = {{ kind = \"values\", values = [{targets}] }}\n[model]\nonnx = \"mlp.onnx\"\n[loss]\nkind = \"mse\"\n[optimizer]\nkind = \"adam\"\nlr = {lr:?}\n[train]\nepochs = {steps}\nbatch_size = {}\n",
        rows(x),
        x.len()
    )
}

#[test]
fn the_imported_mlp_agrees_with_its_pytorch_module_at_step_0_and_after_adam_steps() {
    let (n, steps, lr) = (12usize, 8usize, 1e-2);
    let x: Vec<Vec<f64>> = (0..n).map(|i| (0..4).map(|j| ((i * 4 + j) as f64 * 0.7).sin() * 1.5).collect()).collect();
    let y: Vec<Vec<f64>> = (0..n).map(|i| vec![(i as f64 * 0.3).cos()]).collect();
    let dir = common::tempdir();
    let folder = common::repo().join("scenarios/onnx");
    std::fs::copy(folder.join("mlp.onnx"), dir.path().join("mlp.onnx")).unwrap();
    let path = common::write(dir.path(), "s.toml", &scenario(&x, &y, steps, lr));
    let s = nanhunt::load(&path).unwrap();
    let data = serde_json::json!({ "x": x, "y": y, "lr": lr, "steps": steps });
    common::write(dir.path(), "data.json", &data.to_string());
    let out = common::output_within(Command::new(python()).arg("-c").arg(TORCH).arg(&folder).arg(dir.path().join("data.json")), std::time::Duration::from_secs(300));
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let torch: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();

    let (loss, grads) = nanhunt::run::first_gradients(&s, &x, &y).unwrap();
    let names: Vec<&str> = grads.iter().map(|g| g.0.as_str()).collect();
    assert_eq!(names, ["layers.fc1.weight", "layers.fc1.bias", "layers.fc2.weight", "layers.fc2.bias", "layers.fc3.weight", "layers.fc3.bias"]);
    // Full-batch training: each step's batch is every row, in any order, so MSE and Adam agree.
    let o = nanhunt::run(&s);
    let ours: Vec<f64> = o.trace.rows.iter().map(|r| r.train_loss).collect();
    assert_eq!(ours.len(), steps, "{o:?}");
    common::agrees_with_torch(loss, &grads, &ours, &torch);
}
